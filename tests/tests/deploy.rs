//! The Kubernetes manifest (it cannot be applied on a machine without a
//! cluster): its structure and the least-privilege promises the README makes.

use perf_audit_tests::workspace_root;

fn manifest() -> String {
    std::fs::read_to_string(workspace_root().join("deploy/kubernetes/daemonset.yaml")).expect("daemonset.yaml")
}

/// `key: value` lines (comments stripped), with their indentation.
fn lines(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .map(|l| l.split(" #").next().unwrap_or_default().trim_end())
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| (l.len() - l.trim_start().len(), l.trim().to_string()))
        .collect()
}

#[test]
fn the_daemonset_is_host_pid_with_only_the_needed_capabilities() {
    let text = manifest();
    let ls = lines(&text);
    assert!(!text.contains('\t'), "YAML forbids tabs");
    for (indent, _) in &ls {
        assert_eq!(indent % 2, 0, "two-space indentation");
    }
    let docs: Vec<&str> = text.split("\n---\n").collect();
    let kinds: Vec<String> = docs.iter().filter_map(|d| lines(d).into_iter().find(|(i, l)| *i == 0 && l.starts_with("kind:")).map(|(_, l)| l)).collect();
    assert_eq!(kinds, vec!["kind: Namespace", "kind: ConfigMap", "kind: DaemonSet"]);
    let ds = lines(docs[2]);
    let has = |s: &str| ds.iter().any(|(_, l)| l == s);
    assert!(has("hostPID: true"));
    assert!(has("privileged: false") && !text.contains("privileged: true"));
    assert!(has("drop: [\"ALL\"]"));
    assert!(has("add: [\"BPF\", \"PERFMON\", \"SYS_PTRACE\", \"SYS_RESOURCE\"]"), "{ds:?}");
    assert!(!text.contains("SYS_ADMIN"), "CAP_SYS_ADMIN is not needed");
    // Resource limits, below the daemon's own goals with headroom.
    assert!(has("limits:") && has("memory: 128Mi") && has("cpu: 200m"));
    // BTF and tracefs come from the host.
    for path in ["path: /sys/kernel/btf", "path: /sys/kernel/tracing"] {
        assert!(has(path), "{path}");
    }
    assert!(has("mountPath: /sys/kernel/btf") && has("mountPath: /sys/kernel/tracing"));
    // The daemon is started with its config, which parses with the agent's plan.
    assert!(has("args: [\"daemon\", \"--config\", \"/etc/perf-audit/daemon.toml\"]"));
    let config: String = docs[1]
        .split("daemon.toml: |\n")
        .nth(1)
        .expect("daemon.toml in the ConfigMap")
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let plan = perf_audit_agent::daemon::plan::DaemonPlan::from_args(Default::default(), Some(&config))
        .unwrap_or_else(|e| panic!("the ConfigMap's daemon.toml is invalid: {e}\n{config}"));
    assert_eq!(plan.frequency_hz, 19);
    assert_eq!(plan.listen.port(), 6060);
    assert!(has("containerPort: 6060"));
}
