//! Process tests of the sandbox: real launcher binary, real namespaces and cgroups, small shell
//! scripts as function code. They need root (the launcher does); without it they say so and skip.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use wisp_sandbox::{ExitReport, LauncherCommand, NetworkMode, SandboxSpec, SpawnedSandbox};

fn launcher() -> LauncherCommand {
    LauncherCommand {
        program: PathBuf::from(env!("CARGO_BIN_EXE_wisp-launcher")),
        args: Vec::new(),
    }
}

fn have_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("SKIPPED: sandbox process tests need root");
        false
    }
}

/// A code directory with an executable `bootstrap` holding `script`.
fn code_dir(script: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bootstrap = dir.path().join("bootstrap");
    std::fs::write(&bootstrap, script).unwrap();
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn spec(code: &Path) -> SandboxSpec {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    SandboxSpec {
        instance_id: format!(
            "test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ),
        code_dir: code.to_path_buf(),
        runtime_dir: None,
        extra_read_only: Vec::new(),
        argv: vec!["/var/task/bootstrap".into()],
        env: vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            (
                "AWS_LAMBDA_RUNTIME_API".into(),
                wisp_sandbox::RUNTIME_API_ADDRESS.into(),
            ),
            ("MARKER".into(), "hello sandbox".into()),
        ],
        memory_mb: 128,
        tmp_mb: 16,
        pids_max: 64,
        network: NetworkMode::Isolated,
    }
}

struct Finished {
    report: ExitReport,
    stdout: String,
    stderr: String,
}

async fn finish(mut sandbox: SpawnedSandbox) -> Finished {
    let mut stdout = sandbox.take_stdout().unwrap();
    let mut stderr = sandbox.take_stderr().unwrap();
    let out = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text).await;
        text
    });
    let err = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let report = tokio::time::timeout(Duration::from_secs(60), sandbox.wait())
        .await
        .expect("sandbox did not exit within 60s");
    Finished {
        report,
        stdout: out.await.unwrap(),
        stderr: err.await.unwrap(),
    }
}

async fn run(spec: &SandboxSpec) -> Finished {
    let sandbox = wisp_sandbox::spawn(spec, &launcher()).await.unwrap();
    finish(sandbox).await
}

#[tokio::test]
async fn private_root_clean_env_and_read_only_code() {
    if !have_root() {
        return;
    }
    let code = code_dir(
        r#"#!/bin/sh
echo "env:"; env | sort
echo "root:"; ls -1 /
echo "id: $(id -u):$(id -g)"
echo "pid: $$"
echo "hostname: $(hostname)"
echo "cwd: $(pwd)"
if echo x > /var/task/new 2>/dev/null; then echo "task: writable"; else echo "task: read-only"; fi
if echo x > /etc/new 2>/dev/null; then echo "etc: writable"; else echo "etc: read-only"; fi
if echo x > /tmp/new; then echo "tmp: writable"; fi
echo "shadow: $(test -e /etc/shadow && echo visible || echo absent)"
exit 7
"#,
    );
    let finished = run(&spec(code.path())).await;
    let out = &finished.stdout;
    eprintln!("{out}\n{}", finished.stderr);
    assert_eq!(
        finished.report.exit_code,
        Some(7),
        "{out}\n{}",
        finished.stderr
    );
    let env_block: Vec<&str> = out
        .split("env:\n")
        .nth(1)
        .unwrap()
        .split("root:\n")
        .next()
        .unwrap()
        .lines()
        .collect();
    // Only what the spec set, plus what sh itself exports.
    for line in &env_block {
        let name = line.split('=').next().unwrap();
        assert!(
            [
                "PATH",
                "AWS_LAMBDA_RUNTIME_API",
                "MARKER",
                "PWD",
                "SHLVL",
                "_",
                "OLDPWD"
            ]
            .contains(&name),
            "unexpected variable {line}"
        );
    }
    assert!(env_block.contains(&"MARKER=hello sandbox"), "{out}");
    let root: Vec<&str> = out
        .split("root:\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|line| !line.starts_with("id:"))
        .collect();
    let mut expected = vec![
        "bin", "dev", "etc", "lib", "opt", "proc", "tmp", "usr", "var",
    ];
    for optional in ["lib32", "lib64", "libx32", "sbin"] {
        if Path::new("/").join(optional).exists() {
            expected.push(optional);
        }
    }
    expected.sort();
    assert_eq!(root, expected, "{out}");
    assert!(out.contains("id: 993:990"), "{out}");
    assert!(out.contains("pid: 1\n"), "{out}");
    assert!(out.contains("hostname: wisp-sandbox"), "{out}");
    assert!(out.contains("cwd: /var/task"), "{out}");
    assert!(out.contains("task: read-only"), "{out}");
    assert!(out.contains("etc: read-only"), "{out}");
    assert!(out.contains("tmp: writable"), "{out}");
    assert!(out.contains("shadow: absent"), "{out}");
    assert!(!code.path().join("new").exists());
}
