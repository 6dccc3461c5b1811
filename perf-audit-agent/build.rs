//! Builds the eBPF object that the agent embeds, installing what that needs.
//!
//! A fresh machine has a Rust toolchain and nothing eBPF-specific. Building
//! `perf-audit-ebpf` for `bpfel-unknown-none` needs three things this script
//! provides on its own, so that `cargo build` is the only step:
//!
//! 1. an unstable-capable toolchain for `-Z build-std=core`: `nightly` when
//!    rustup has one, else the current toolchain with `RUSTC_BOOTSTRAP=1`;
//! 2. that toolchain's `rust-src` component (`rustup component add`);
//! 3. a `bpf-linker` built against that toolchain's own LLVM (the bitcode
//!    rustc emits must be read by the same LLVM major). It is installed once
//!    from crates.io into `$CARGO_HOME/perf-audit/<toolchain>/`, with an
//!    `LLVM_PREFIX` folder whose `lib/libLLVM.so` points at the toolchain's
//!    `libLLVM.so.NN.*-rust-*`.
//!
//! `PERF_AUDIT_EBPF_OBJECT=/path/to/object` skips all of this and embeds a
//! prebuilt object (for packagers).
use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

const BPF_TARGET: &str = "bpfel-unknown-none";
const BPF_LINKER_VERSION: &str = "0.13.0";

fn main() {
    if let Err(message) = run() {
        // One clear line with the fix, then fail the build.
        eprintln!("error: {message}");
        println!("cargo:warning=perf-audit eBPF build failed: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let object = out_dir.join("perf-audit-ebpf.o");

    println!("cargo:rerun-if-env-changed=PERF_AUDIT_EBPF_OBJECT");
    if let Some(prebuilt) = env::var_os("PERF_AUDIT_EBPF_OBJECT") {
        println!("cargo:rerun-if-changed={}", Path::new(&prebuilt).display());
        fs::copy(&prebuilt, &object).map_err(|e| {
            format!("cannot copy PERF_AUDIT_EBPF_OBJECT {}: {e}", Path::new(&prebuilt).display())
        })?;
        return Ok(());
    }

    let ebpf_dir = manifest_dir.join("../perf-audit-ebpf");
    let common_dir = manifest_dir.join("../perf-audit-common");
    for watched in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        ebpf_dir.join("Cargo.lock"),
        common_dir.join("src"),
        common_dir.join("Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", watched.display());
    }

    let toolchain = Toolchain::pick()?;
    toolchain.ensure_rust_src()?;
    let linker_dir = toolchain.ensure_bpf_linker()?;

    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = toolchain.command("cargo");
    scrub_outer_cargo_env(&mut cmd);
    cmd.args(["build", "--release", "--target", BPF_TARGET, "-Z", "build-std=core"])
        .arg("--manifest-path")
        .arg(ebpf_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", "-Cdebuginfo=2\x1f-Clink-arg=--btf")
        .env("PATH", prepend_path(&linker_dir));
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run cargo for the eBPF crate: {e}"))?;
    if !output.status.success() {
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            println!("cargo:warning={line}");
        }
        return Err("compiling perf-audit-ebpf failed (compiler output above)".into());
    }
    let built = target_dir.join(BPF_TARGET).join("release").join("perf-audit-ebpf");
    fs::copy(&built, &object)
        .map_err(|e| format!("eBPF object missing at {}: {e}", built.display()))?;
    Ok(())
}

struct Toolchain {
    /// `Some(name)` when run through rustup (`rustup run <name> ...`).
    rustup_name: Option<String>,
    /// Set `RUSTC_BOOTSTRAP=1` (a stable toolchain used for `-Z` flags).
    bootstrap: bool,
    sysroot: PathBuf,
    /// e.g. "22" from "LLVM version: 22.1.4".
    llvm_major: String,
    /// Folder name for what is installed for this toolchain.
    id: String,
}

impl Toolchain {
    fn pick() -> Result<Self, String> {
        let rustup_ok = Command::new("rustup").arg("--version").stderr(Stdio::null()).output().is_ok();
        if rustup_ok {
            if let Ok(tc) = Self::probe(Some("nightly".into()), false) {
                return Ok(tc);
            }
            if let Ok(name) = env::var("RUSTUP_TOOLCHAIN") {
                return Self::probe(Some(name), true);
            }
        }
        Self::probe(None, true)
    }

    fn probe(rustup_name: Option<String>, bootstrap: bool) -> Result<Self, String> {
        let mut tc = Toolchain {
            rustup_name,
            bootstrap,
            sysroot: PathBuf::new(),
            llvm_major: String::new(),
            id: String::new(),
        };
        let vv = tc.capture("rustc", &["-vV"])?;
        let llvm = vv
            .lines()
            .find_map(|l| l.strip_prefix("LLVM version: "))
            .ok_or("rustc -vV does not report an LLVM version")?
            .trim()
            .to_string();
        let release = vv.lines().find_map(|l| l.strip_prefix("release: ")).unwrap_or("unknown");
        tc.llvm_major = llvm.split('.').next().unwrap_or_default().to_string();
        tc.id = format!("rust-{release}-llvm-{llvm}");
        tc.sysroot = PathBuf::from(tc.capture("rustc", &["--print", "sysroot"])?.trim());
        Ok(tc)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = match &self.rustup_name {
            Some(name) => {
                let mut c = Command::new("rustup");
                c.args(["run", name, program]);
                c
            }
            None => Command::new(program),
        };
        if self.bootstrap {
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
        cmd
    }

    fn capture(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let mut cmd = self.command(program);
        scrub_outer_cargo_env(&mut cmd);
        cmd.args(args);
        let out = cmd.output().map_err(|e| format!("cannot run {program}: {e}"))?;
        if !out.status.success() {
            return Err(format!("{program} {} failed", args.join(" ")));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn ensure_rust_src(&self) -> Result<(), String> {
        let core_src = self.sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml");
        if core_src.exists() {
            return Ok(());
        }
        let name = self.rustup_name.as_deref().ok_or(
            "rust-src is missing and rustup is not available: install the rust-src component of your toolchain",
        )?;
        println!("cargo:warning=perf-audit: installing rust-src for toolchain {name} (one-time)");
        let status = Command::new("rustup")
            .args(["component", "add", "rust-src", "--toolchain", name])
            .status()
            .map_err(|e| format!("cannot run rustup: {e}"))?;
        if !status.success() || !core_src.exists() {
            return Err(format!(
                "installing rust-src failed: run `rustup component add rust-src --toolchain {name}`"
            ));
        }
        Ok(())
    }

    /// Returns the folder holding a working `bpf-linker` for this toolchain.
    fn ensure_bpf_linker(&self) -> Result<PathBuf, String> {
        println!("cargo:rerun-if-env-changed=PERF_AUDIT_TOOLS_DIR");
        let tools = match env::var_os("PERF_AUDIT_TOOLS_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => cargo_home()?.join("perf-audit"),
        }
        .join(&self.id);
        let bin_dir = tools.join("bin");
        let linker = bin_dir.join("bpf-linker");
        if linker_runs(&linker) {
            return Ok(bin_dir);
        }

        // LLVM_PREFIX/lib/libLLVM.so -> the toolchain's own libLLVM, which is
        // also linked under its own file name (the soname bpf-linker records;
        // the installed binary finds it through its RUNPATH at this folder).
        let lib_src = self.sysroot.join("lib");
        let libllvm = fs::read_dir(&lib_src)
            .map_err(|e| format!("cannot read {}: {e}", lib_src.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with(&format!("libLLVM.so.{}.", self.llvm_major)) && n.contains("-rust-"))
            .ok_or_else(|| {
                format!(
                    "no libLLVM.so.{}.*-rust-* in {}: the toolchain lacks its LLVM library (reinstall it with rustup)",
                    self.llvm_major,
                    lib_src.display()
                )
            })?;
        let prefix = tools.join("llvm");
        let prefix_lib = prefix.join("lib");
        fs::create_dir_all(&prefix_lib).map_err(|e| format!("cannot create {}: {e}", prefix_lib.display()))?;
        for link_name in ["libLLVM.so", libllvm.as_str()] {
            let link = prefix_lib.join(link_name);
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(lib_src.join(&libllvm), &link)
                .map_err(|e| format!("cannot link {}: {e}", link.display()))?;
        }

        println!(
            "cargo:warning=perf-audit: installing bpf-linker {BPF_LINKER_VERSION} for LLVM {} into {} (one-time, a few minutes)",
            self.llvm_major,
            tools.display()
        );
        let mut cmd = Command::new("cargo");
        scrub_outer_cargo_env(&mut cmd);
        cmd.args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--no-default-features", "--force"])
            .arg("--features")
            .arg(format!("llvm-{}", self.llvm_major))
            .arg("--root")
            .arg(&tools)
            .arg("--target-dir")
            .arg(tools.join("build"))
            .env("LLVM_PREFIX", &prefix);
        let out = cmd.output().map_err(|e| format!("cannot run cargo install: {e}"))?;
        let _ = fs::remove_dir_all(tools.join("build"));
        if !out.status.success() || !linker_runs(&linker) {
            for line in String::from_utf8_lossy(&out.stderr).lines().rev().take(30).collect::<Vec<_>>().into_iter().rev() {
                println!("cargo:warning={line}");
            }
            return Err("installing bpf-linker failed (log above): check that crates.io is reachable, then rebuild; or set PERF_AUDIT_EBPF_OBJECT to a prebuilt object".to_string());
        }
        Ok(bin_dir)
    }
}

fn linker_runs(linker: &Path) -> bool {
    Command::new(linker)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn cargo_home() -> Result<PathBuf, String> {
    if let Some(home) = env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cargo"))
        .ok_or_else(|| "neither CARGO_HOME nor HOME is set".to_string())
}

fn prepend_path(dir: &Path) -> OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(old) = env::var_os("PATH") {
        paths.extend(env::split_paths(&old));
    }
    env::join_paths(paths).expect("PATH entries contain no separator")
}

/// The outer cargo exports variables meant for this build script's crate;
/// a nested cargo (another target, another toolchain) must not inherit them.
fn scrub_outer_cargo_env(cmd: &mut Command) {
    for (key, _) in env::vars_os() {
        let key_str = key.to_string_lossy();
        let outer = (key_str.starts_with("CARGO_") && key_str != "CARGO_HOME")
            || matches!(
                key_str.as_ref(),
                "RUSTC" | "RUSTC_WRAPPER" | "RUSTC_WORKSPACE_WRAPPER" | "RUSTDOC" | "RUSTFLAGS"
                    | "TARGET" | "HOST" | "OUT_DIR" | "OPT_LEVEL" | "PROFILE" | "DEBUG" | "NUM_JOBS"
                    | "RUSTUP_TOOLCHAIN" | "CARGO"
            );
        if outer {
            cmd.env_remove(&key);
        }
    }
}
