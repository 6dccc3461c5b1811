//! Container attribution: from a process's cgroup path to the container id
//! and Kubernetes pod uid that fleets label their dashboards with.
//!
//! Runtimes name cgroups in two families. With the cgroupfs driver the id is
//! a plain path segment (`/docker/<id>`, `/kubepods/burstable/pod<uid>/<id>`);
//! with the systemd driver it sits inside unit names
//! (`docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
//! `kubepods-burstable-pod<uid_with_underscores>.slice`). The parser is pure
//! and tested on real-looking paths of each; `/proc` is read by the caller.

/// What a cgroup path says about the process's container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The cgroup v2 path (or the most specific v1 path).
    pub cgroup: String,
    /// Full container id (64 hex digits for docker, containerd and cri-o).
    pub container_id: Option<String>,
    /// Kubernetes pod uid, dashed form (`1234abcd-...`).
    pub pod_uid: Option<String>,
    /// `docker`, `containerd`, `cri-o` or `podman` when the path says so.
    pub runtime: Option<&'static str>,
}

/// Parses the content of `/proc/PID/cgroup` (v2 `0::/path` or v1
/// `N:controllers:/path` lines).
pub fn parse_proc_cgroup(text: &str) -> ContainerInfo {
    // Prefer the unified (v2) line; on v1 hosts take the line that names a
    // container, else the first path.
    let mut paths: Vec<&str> = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(_controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" {
            paths.insert(0, path);
        } else {
            paths.push(path);
        }
    }
    let with_container = paths.iter().map(|p| parse_cgroup_path(p)).find(|i| i.container_id.is_some());
    with_container.unwrap_or_else(|| paths.first().map(|p| parse_cgroup_path(p)).unwrap_or_default())
}

/// Parses one cgroup path.
pub fn parse_cgroup_path(path: &str) -> ContainerInfo {
    let mut info = ContainerInfo { cgroup: path.to_string(), ..Default::default() };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for (i, segment) in segments.iter().enumerate() {
        let unit = segment.strip_suffix(".scope").or_else(|| segment.strip_suffix(".slice")).unwrap_or(segment);
        if let Some(uid) = pod_uid_of(unit) {
            info.pod_uid = Some(uid);
        }
        // systemd driver: `<prefix>-<id>.scope`.
        if let Some((prefix, id)) = unit.rsplit_once('-')
            && is_container_id(id) && !prefix.ends_with("conmon") {
                info.container_id = Some(id.to_string());
                info.runtime = runtime_of_prefix(prefix);
                continue;
            }
        // cgroupfs driver: the id is a segment of its own.
        if is_container_id(unit) {
            info.container_id = Some(unit.to_string());
            let parent = if i > 0 { segments[i - 1] } else { "" };
            info.runtime = match parent {
                "docker" => Some("docker"),
                "libpod_parent" => Some("podman"),
                _ if parent.starts_with("pod") || info.pod_uid.is_some() => None, // kubelet: runtime not in the path
                _ => None,
            };
        }
    }
    info
}

fn runtime_of_prefix(prefix: &str) -> Option<&'static str> {
    match prefix {
        "docker" => Some("docker"),
        "cri-containerd" => Some("containerd"),
        "crio" => Some("cri-o"),
        "libpod" => Some("podman"),
        _ => None,
    }
}

/// Container ids are 64 lowercase hex digits for every runtime here.
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_with_underscores>`
/// (systemd): the uid in its dashed form.
fn pod_uid_of(unit: &str) -> Option<String> {
    let start = if unit.starts_with("pod") {
        3
    } else {
        unit.rfind("-pod")? + 4
    };
    let raw = &unit[start..];
    let uid = raw.replace('_', "-");
    let is_uuid = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) { b == b'-' } else { b.is_ascii_hexdigit() }
        });
    is_uuid.then(|| uid.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1b2a9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a";
    const POD: &str = "9d4e2c1b-7a6f-4e3d-8c2b-1a0f9e8d7c6b";

    #[test]
    fn docker_with_the_cgroupfs_driver() {
        let info = parse_proc_cgroup(&format!("0::/docker/{ID}\n"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.runtime, Some("docker"));
        assert_eq!(info.pod_uid, None);
    }

    #[test]
    fn docker_with_the_systemd_driver() {
        let info = parse_proc_cgroup(&format!("0::/system.slice/docker-{ID}.scope\n"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.runtime, Some("docker"));
    }

    #[test]
    fn containerd_in_kubernetes_with_the_systemd_driver() {
        let pod_us = POD.replace('-', "_");
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod_us}.slice/cri-containerd-{ID}.scope"
        );
        let info = parse_proc_cgroup(&format!("0::{path}\n"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.pod_uid.as_deref(), Some(POD));
        assert_eq!(info.runtime, Some("containerd"));
        assert_eq!(info.cgroup, path);
    }

    #[test]
    fn guaranteed_pod_with_the_cgroupfs_driver_on_cgroup_v1() {
        let text = format!(
            "12:pids:/kubepods/pod{POD}/{ID}\n11:memory:/kubepods/pod{POD}/{ID}\n1:name=systemd:/kubepods/pod{POD}/{ID}\n"
        );
        let info = parse_proc_cgroup(&text);
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.pod_uid.as_deref(), Some(POD));
    }

    #[test]
    fn cri_o_and_its_conmon() {
        let pod_us = POD.replace('-', "_");
        let path = format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{pod_us}.slice/crio-{ID}.scope");
        let info = parse_cgroup_path(&path);
        assert_eq!((info.container_id.as_deref(), info.runtime), (Some(ID), Some("cri-o")));
        assert_eq!(info.pod_uid.as_deref(), Some(POD));
        // conmon is the runtime's monitor, not the container.
        let conmon = parse_cgroup_path(&format!("/kubepods.slice/kubepods-pod{pod_us}.slice/crio-conmon-{ID}.scope"));
        assert_eq!(conmon.container_id, None);
        assert_eq!(conmon.pod_uid.as_deref(), Some(POD));
    }

    #[test]
    fn podman() {
        let info = parse_cgroup_path(&format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"));
        assert_eq!((info.container_id.as_deref(), info.runtime), (Some(ID), Some("podman")));
    }

    #[test]
    fn host_processes_have_no_container() {
        for text in ["0::/user.slice/user-1000.slice/session-2.scope\n", "0::/system.slice/sshd.service\n", "0::/\n", ""] {
            let info = parse_proc_cgroup(text);
            assert_eq!((info.container_id, info.pod_uid), (None, None), "{text}");
        }
        // A 64-character non-hex unit name is not an id.
        let info = parse_cgroup_path(&format!("/system.slice/app-{}.scope", "z".repeat(64)));
        assert_eq!(info.container_id, None);
    }
}
