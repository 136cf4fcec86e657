//! Process tests of the sandbox: real launcher binary, real namespaces and cgroups, small shell
//! scripts as function code. They need root (the launcher does); without it they say so and skip.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use wisp_sandbox::{
    ExitReport, LauncherCommand, NetworkMode, SandboxError, SandboxSpec, Signal, SpawnedSandbox,
};

/// Where `/tmp` images go: the target directory, which is on disk (the system's /tmp may be tmpfs).
/// Images have no name there, so every test process can share it.
fn scratch_root() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox-scratch")
}

use common::{code_dir, have_root, launcher};

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
        opt_dir: None,
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
        scratch_dir: Some(scratch_root()),
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
    let finished = Finished {
        report,
        stdout: out.await.unwrap(),
        stderr: err.await.unwrap(),
    };
    eprintln!(
        "{:?}\n--- stdout\n{}--- stderr\n{}",
        finished.report, finished.stdout, finished.stderr
    );
    finished
}

async fn run(spec: &SandboxSpec) -> Finished {
    let sandbox = wisp_sandbox::spawn(spec, &launcher()).await.unwrap();
    finish(sandbox).await
}

/// Spawns, checks that `/tmp` is the disk-backed filesystem (not the tmpfs fallback), and runs to
/// the end.
async fn run_disk_backed(spec: &SandboxSpec) -> Finished {
    let sandbox = wisp_sandbox::spawn(spec, &launcher()).await.unwrap();
    assert_disk_backed(&sandbox);
    finish(sandbox).await
}

fn assert_disk_backed(sandbox: &SpawnedSandbox) {
    assert!(
        !sandbox
            .degraded()
            .iter()
            .any(|reason| reason.contains("/tmp")),
        "{:?}",
        sandbox.degraded()
    );
}

/// The backing file of a loop device (`/dev/loopN`) as the kernel names it: for an image without a
/// name, `<dir>/#<inode> (deleted)`, which no other image shares while it exists.
fn backing_file(device: &str) -> Option<String> {
    let name = device.strip_prefix("/dev/")?;
    std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
        .ok()
        .map(|text| text.trim().to_string())
}

/// Waits until no loop device is backed by `backing` and `dir` holds no file.
async fn assert_scratch_released(backing: &str, dir: &Path) {
    let mut holders = Vec::new();
    let mut files = Vec::new();
    for _ in 0..500 {
        holders = std::fs::read_dir("/sys/block")
            .unwrap()
            .flatten()
            .filter(|entry| {
                std::fs::read_to_string(entry.path().join("loop/backing_file"))
                    .is_ok_and(|text| text.trim() == backing)
            })
            .map(|entry| entry.file_name())
            .collect();
        files = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name())
            .collect();
        if holders.is_empty() && files.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("still held after 5s: {backing} by {holders:?}, files {files:?}");
}

/// Reads the sandbox's first line (`device: /dev/loopN`) and returns the device's backing file.
async fn tmp_backing_file(sandbox: &mut SpawnedSandbox, scratch: &Path) -> String {
    let mut stdout = tokio::io::BufReader::new(sandbox.take_stdout().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line)
        .await
        .unwrap();
    let device = line
        .trim()
        .strip_prefix("device: ")
        .unwrap_or_else(|| panic!("{line}"));
    let backing = backing_file(device).unwrap_or_else(|| panic!("{device} has no backing file"));
    assert!(
        backing.starts_with(&*scratch.to_string_lossy()) && backing.ends_with("(deleted)"),
        "{backing}"
    );
    backing
}

const PRINT_TMP_DEVICE: &str = "echo \"device: $(grep ' /tmp ' /proc/self/mountinfo | sed 's/.* - ext4 \\([^ ]*\\) .*/\\1/')\"\n";

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

const PYTHON_PREFIX: &str = "/root/.pyenv/versions/3.11.7";

#[tokio::test]
async fn runtime_api_listener_is_reachable_from_inside() {
    if !have_root() {
        return;
    }
    let code = code_dir(
        r#"#!/bin/bash
exec 3<>/dev/tcp/127.0.0.1/9001 || exit 20
echo "hello from inside" >&3
read -r reply <&3
echo "got $reply"
"#,
    );
    let mut sandbox = wisp_sandbox::spawn(&spec(code.path()), &launcher())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::from_std(sandbox.take_listener().unwrap()).unwrap();
    assert_eq!(
        listener.local_addr().unwrap().to_string(),
        wisp_sandbox::RUNTIME_API_ADDRESS
    );
    let (stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("no connection from the sandbox")
        .unwrap();
    let (read_half, mut write_half) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(read_half);
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line)
        .await
        .unwrap();
    assert_eq!(line, "hello from inside\n");
    tokio::io::AsyncWriteExt::write_all(&mut write_half, b"pong\n")
        .await
        .unwrap();
    let finished = finish(sandbox).await;
    assert_eq!(finished.report.exit_code, Some(0), "{}", finished.stderr);
    assert_eq!(finished.stdout, "got pong\n");
}

#[tokio::test]
async fn a_sandbox_reaches_only_its_own_runtime_api() {
    if !have_root() {
        return;
    }
    let host_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    host_listener.set_nonblocking(true).unwrap();
    let host_port = host_listener.local_addr().unwrap().port();

    let idle = code_dir("#!/bin/sh\nexec sleep 60\n");
    let mut first = wisp_sandbox::spawn(&spec(idle.path()), &launcher())
        .await
        .unwrap();
    let first_listener = first.take_listener().unwrap();

    let probe = code_dir(
        r#"#!/bin/bash
if (exec 3<>/dev/tcp/127.0.0.1/$HOST_PORT) 2>/dev/null; then echo "host: reachable"; else echo "host: unreachable"; fi
exec 3<>/dev/tcp/127.0.0.1/9001 && echo second >&3
"#,
    );
    let mut probe_spec = spec(probe.path());
    probe_spec
        .env
        .push(("HOST_PORT".into(), host_port.to_string()));
    let mut second = wisp_sandbox::spawn(&probe_spec, &launcher()).await.unwrap();
    let second_listener =
        tokio::net::TcpListener::from_std(second.take_listener().unwrap()).unwrap();
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), second_listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut greeting = String::new();
    stream.read_to_string(&mut greeting).await.unwrap();
    assert_eq!(greeting, "second\n");
    let finished = finish(second).await;
    assert!(
        finished.stdout.contains("host: unreachable"),
        "{}",
        finished.stdout
    );

    // Nothing arrived at the first sandbox's listener, nor at the host's.
    assert_eq!(
        first_listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    assert_eq!(
        host_listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    first.kill(Signal::SIGKILL).unwrap();
    let report = first.wait().await;
    assert_eq!(report.signal, Some(libc::SIGKILL));
}

#[tokio::test]
async fn exec_failures_are_reported_as_exec_errors() {
    if !have_root() {
        return;
    }
    struct Case {
        name: &'static str,
        script: &'static str,
        mode: u32,
        argv0: &'static str,
        reason: &'static str,
    }
    let cases = [
        Case {
            name: "not executable",
            script: "#!/bin/sh\necho hi\n",
            mode: 0o644,
            argv0: "/var/task/bootstrap",
            reason: "not executable (mode 0644)",
        },
        Case {
            name: "missing",
            script: "",
            mode: 0o755,
            argv0: "/var/task/nope",
            reason: "no such file",
        },
        Case {
            name: "bad interpreter",
            script: "#!/usr/bin/python9 -u\n",
            mode: 0o755,
            argv0: "/var/task/bootstrap",
            reason: "interpreter /usr/bin/python9 does not exist",
        },
        Case {
            name: "no #! line",
            script: "echo hi\n",
            mode: 0o755,
            argv0: "/var/task/bootstrap",
            reason: "needs a #! line",
        },
    ];
    for case in cases {
        let code = code_dir(case.script);
        std::fs::set_permissions(
            code.path().join("bootstrap"),
            std::fs::Permissions::from_mode(case.mode),
        )
        .unwrap();
        let mut spec = spec(code.path());
        spec.argv = vec![case.argv0.into()];
        match wisp_sandbox::spawn(&spec, &launcher()).await {
            Err(SandboxError::Exec { path, reason }) => {
                assert_eq!(path, case.argv0, "{}", case.name);
                assert!(reason.contains(case.reason), "{}: {reason}", case.name);
            }
            Err(other) => panic!("{}: expected an exec error, got {other}", case.name),
            Ok(_) => panic!("{}: expected an exec error, got a sandbox", case.name),
        }
    }
}

#[tokio::test]
async fn memory_hog_is_oom_killed() {
    if !have_root() {
        return;
    }
    let code = code_dir(&format!(
        "#!{PYTHON_PREFIX}/bin/python3.11\nimport sys\nprint(sys.version_info[:2], flush=True)\nhog = b'x' * (512 << 20)\nprint('survived')\n"
    ));
    let mut spec = spec(code.path());
    spec.memory_mb = 64;
    spec.extra_read_only = vec![PathBuf::from(PYTHON_PREFIX)];
    let finished = run(&spec).await;
    assert!(
        finished.stdout.starts_with("(3, 11)"),
        "{}{}",
        finished.stdout,
        finished.stderr
    );
    assert!(!finished.stdout.contains("survived"));
    assert!(finished.report.oom_killed, "{:?}", finished.report);
    assert_eq!(finished.report.signal, Some(libc::SIGKILL));
    let peak = finished.report.max_memory_bytes.unwrap();
    assert!(peak > 32 << 20 && peak <= 64 << 20, "peak {peak}");
}

#[tokio::test]
async fn fork_bomb_is_contained_by_pids_limit() {
    if !have_root() {
        return;
    }
    let code = code_dir("#!/bin/bash\nbomb() { bomb | bomb & }\nbomb\nsleep 30\n");
    let mut spec = spec(code.path());
    spec.pids_max = 32;
    let sandbox = wisp_sandbox::spawn(&spec, &launcher()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let current = sandbox.pids_current().unwrap();
    assert!(current <= 32, "{current} processes");
    // The host can still start processes while the bomb runs.
    assert!(
        std::process::Command::new("true")
            .status()
            .unwrap()
            .success()
    );
    sandbox.kill(Signal::SIGKILL).unwrap();
    let finished = finish(sandbox).await;
    assert_eq!(finished.report.signal, Some(libc::SIGKILL));
}

#[tokio::test]
async fn writing_past_tmp_size_fails_with_enospc() {
    if !have_root() {
        return;
    }
    let code = code_dir(
        "#!/bin/sh\ndd if=/dev/zero of=/tmp/big bs=1M count=16 2>&1\necho \"rc=$?\"\ndf -k /tmp | tail -1\n",
    );
    let mut spec = spec(code.path());
    spec.tmp_mb = 4;
    let finished = run_disk_backed(&spec).await;
    assert!(
        finished.stdout.contains("No space left on device"),
        "{}",
        finished.stdout
    );
    assert!(finished.stdout.contains("rc=1"), "{}", finished.stdout);
}

#[tokio::test]
async fn server_data_dir_and_host_paths_are_invisible() {
    if !have_root() {
        return;
    }
    let data_dir = tempfile::tempdir().unwrap();
    std::fs::write(data_dir.path().join("secret"), "top secret").unwrap();
    let code = code_dir(
        r#"#!/bin/sh
for path in "$DATA_DIR" "$DATA_DIR/secret" "$CODE_DIR" "$SCRATCH_DIR" /oldroot /newroot /root /home /var/lib /sys /run; do
  if [ -e "$path" ]; then echo "visible: $path"; fi
done
grep -c . /proc/self/mountinfo >/dev/null && echo "mounts: $(cut -d' ' -f5 /proc/self/mountinfo | tr '\n' ' ')"
"#,
    );
    let mut spec = spec(code.path());
    spec.env
        .push(("DATA_DIR".into(), data_dir.path().display().to_string()));
    spec.env
        .push(("CODE_DIR".into(), code.path().display().to_string()));
    spec.env
        .push(("SCRATCH_DIR".into(), scratch_root().display().to_string()));
    let finished = run(&spec).await;
    assert_eq!(finished.report.exit_code, Some(0), "{}", finished.stderr);
    assert!(!finished.stdout.contains("visible:"), "{}", finished.stdout);
    let data = data_dir.path().display().to_string();
    assert!(!finished.stdout.contains(&data), "{}", finished.stdout);
}

#[tokio::test]
async fn sigterm_reaches_a_runtime_that_handles_it() {
    if !have_root() {
        return;
    }
    let code = code_dir(
        "#!/bin/bash\ntrap 'echo terminating; exit 3' TERM\necho ready\nwhile :; do sleep 0.05; done\n",
    );
    let mut sandbox = wisp_sandbox::spawn(&spec(code.path()), &launcher())
        .await
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(sandbox.take_stdout().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line)
        .await
        .unwrap();
    assert_eq!(line, "ready\n");
    let handle = sandbox.kill_handle();
    handle.kill(Signal::SIGTERM).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(10), sandbox.wait())
        .await
        .unwrap();
    assert_eq!(report.exit_code, Some(3));
    // Signalling an exited sandbox is harmless.
    handle.kill(Signal::SIGKILL).unwrap();
}

#[tokio::test]
async fn dropping_a_sandbox_kills_it() {
    if !have_root() {
        return;
    }
    let code = code_dir("#!/bin/sh\nexec sleep 600\n");
    let sandbox = wisp_sandbox::spawn(&spec(code.path()), &launcher())
        .await
        .unwrap();
    let pid = sandbox.pid();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(sandbox);
    for _ in 0..200 {
        let gone = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat.contains(") Z "),
        };
        if gone {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("sandbox process {pid} still alive after drop");
}

#[tokio::test]
async fn setup_failures_are_explained() {
    if !have_root() {
        return;
    }
    let mut missing_code = spec(Path::new("/nonexistent/code"));
    missing_code.instance_id.push_str("-missing");
    match wisp_sandbox::spawn(&missing_code, &launcher()).await {
        Err(SandboxError::Setup(message)) => {
            assert!(
                message.contains("code directory /nonexistent/code"),
                "{message}"
            )
        }
        other => panic!("expected a setup error, got {other:?}"),
    }
    let code = code_dir("#!/bin/sh\n");
    let no_launcher = LauncherCommand {
        program: PathBuf::from("/nonexistent/wisp-launcher"),
        args: Vec::new(),
    };
    match wisp_sandbox::spawn(&spec(code.path()), &no_launcher).await {
        Err(error @ SandboxError::Launcher(_)) => {
            assert!(
                error.to_string().contains("/nonexistent/wisp-launcher"),
                "{error}"
            );
            assert!(error.is_retryable());
        }
        other => panic!("expected a launcher error, got {other:?}"),
    }
}

#[tokio::test]
async fn killing_the_launcher_kills_the_function() {
    if !have_root() {
        return;
    }
    let code = code_dir("#!/bin/sh\nexec sleep 600\n");
    let mut sandbox = wisp_sandbox::spawn(&spec(code.path()), &launcher())
        .await
        .unwrap();
    let pid = sandbox.pid();
    let launcher_pid = sandbox.launcher_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(launcher_pid as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(10), sandbox.wait())
        .await
        .unwrap();
    assert_eq!(report.signal, Some(libc::SIGKILL));
    for _ in 0..200 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("function {pid} survived its launcher");
}

#[tokio::test]
async fn pids_limit_counts_only_the_function() {
    if !have_root() {
        return;
    }
    // pids_max 3: sh plus two sleeps fit exactly, as the launcher's reaper is not counted.
    let code = code_dir("#!/bin/sh\nsleep 30 & sleep 30 &\necho started\nwait\n");
    let mut spec = spec(code.path());
    spec.pids_max = 3;
    let mut sandbox = wisp_sandbox::spawn(&spec, &launcher()).await.unwrap();
    let mut stdout = tokio::io::BufReader::new(sandbox.take_stdout().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line)
        .await
        .unwrap();
    assert_eq!(line, "started\n");
    assert_eq!(sandbox.pids_current(), Some(3));
    sandbox.kill(Signal::SIGKILL).unwrap();
    assert_eq!(sandbox.wait().await.signal, Some(libc::SIGKILL));
}

#[tokio::test]
async fn tmp_is_an_empty_ext4_filesystem_the_sandbox_user_can_write() {
    if !have_root() {
        return;
    }
    let code = code_dir(
        r#"#!/bin/sh
echo "type: $(stat -f -c %T /tmp)"
echo "mode: $(stat -c %a /tmp)"
echo "entries: $(ls -A /tmp | wc -l)"
grep ' /tmp ' /proc/self/mountinfo
echo hello > /tmp/file && echo "owner: $(stat -c %u:%g /tmp/file)"
df -k /tmp | tail -1
"#,
    );
    let mut spec = spec(code.path());
    spec.tmp_mb = 64;
    let finished = run_disk_backed(&spec).await;
    let out = &finished.stdout;
    assert_eq!(finished.report.exit_code, Some(0), "{}", finished.stderr);
    // stat(1) names ext2, ext3 and ext4 alike.
    assert!(out.contains("type: ext2/ext3"), "{out}");
    assert!(out.contains("mode: 1777"), "{out}");
    assert!(out.contains("entries: 0"), "{out}");
    let mount = out.lines().find(|line| line.contains(" /tmp ")).unwrap();
    assert!(mount.contains(" - ext4 /dev/loop"), "{mount}");
    assert!(
        mount.contains("nosuid") && mount.contains("nodev"),
        "{mount}"
    );
    assert!(out.contains("owner: 993:990"), "{out}");
    // The free space is the requested size (ext4's own metadata comes on top).
    let free_kb: u64 = out
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap();
    assert!((64 * 1024..=66 * 1024).contains(&free_kb), "{out}");
}

#[tokio::test]
async fn big_files_in_tmp_do_not_count_against_the_memory_limit() {
    if !have_root() {
        return;
    }
    // 400 MiB of file data under a 128 MiB memory limit: page cache is written back and reclaimed;
    // with a tmpfs /tmp this would be an OOM kill. Past the 512 MiB size: ENOSPC.
    let code = code_dir(
        r#"#!/bin/sh
dd if=/dev/zero of=/tmp/big bs=1M count=400 2>/dev/null; echo "big: rc=$?"
ls -l /tmp/big | awk '{print "size: " $5}'
dd if=/dev/zero of=/tmp/more bs=1M count=200 2>&1 | grep -o 'No space left on device' | head -1
echo "more: done"
"#,
    );
    let mut spec = spec(code.path());
    spec.memory_mb = 128;
    spec.tmp_mb = 512;
    let finished = run_disk_backed(&spec).await;
    let out = &finished.stdout;
    assert!(!finished.report.oom_killed, "{:?}", finished.report);
    assert_eq!(finished.report.exit_code, Some(0), "{}", finished.stderr);
    assert!(out.contains("big: rc=0"), "{out}");
    assert!(out.contains(&format!("size: {}", 400u64 << 20)), "{out}");
    assert!(out.contains("No space left on device"), "{out}");
    assert!(out.contains("more: done"), "{out}");
}

#[tokio::test]
async fn tmp_image_and_loop_device_are_gone_after_exit() {
    if !have_root() {
        return;
    }
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let code = code_dir(&format!(
        "#!/bin/sh\n{PRINT_TMP_DEVICE}echo data > /tmp/file\nexec sleep 600\n"
    ));
    let mut spec = spec(code.path());
    spec.scratch_dir = Some(scratch.path().to_path_buf());
    let mut sandbox = wisp_sandbox::spawn(&spec, &launcher()).await.unwrap();
    assert_disk_backed(&sandbox);
    // While it runs, a loop device holds the image, which has no name in the scratch directory.
    let backing = tmp_backing_file(&mut sandbox, scratch.path()).await;
    sandbox.kill(Signal::SIGKILL).unwrap();
    assert_eq!(sandbox.wait().await.signal, Some(libc::SIGKILL));
    assert_scratch_released(&backing, scratch.path()).await;
}

#[tokio::test]
async fn tmp_loop_device_is_released_when_the_launcher_is_killed() {
    if !have_root() {
        return;
    }
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let code = code_dir(&format!(
        "#!/bin/sh\ndd if=/dev/zero of=/tmp/big bs=1M count=32 2>/dev/null\n{PRINT_TMP_DEVICE}exec sleep 600\n"
    ));
    let mut spec = spec(code.path());
    spec.tmp_mb = 64;
    spec.scratch_dir = Some(scratch.path().to_path_buf());
    let mut sandbox = wisp_sandbox::spawn(&spec, &launcher()).await.unwrap();
    assert_disk_backed(&sandbox);
    let backing = tmp_backing_file(&mut sandbox, scratch.path()).await;
    let launcher_pid = sandbox.launcher_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(launcher_pid as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(10), sandbox.wait())
        .await
        .unwrap();
    assert_eq!(report.signal, Some(libc::SIGKILL));
    assert_scratch_released(&backing, scratch.path()).await;
}

#[tokio::test]
async fn without_a_usable_scratch_dir_tmp_is_a_tmpfs_and_reported_as_degraded() {
    if !have_root() {
        return;
    }
    let code = code_dir("#!/bin/sh\nstat -f -c %T /tmp\n");
    let mut no_dir = spec(code.path());
    no_dir.scratch_dir = None;
    let mut on_tmpfs = spec(code.path());
    on_tmpfs.scratch_dir = Some(PathBuf::from("/dev/shm/wisp-scratch-test"));
    let shm_is_tmpfs = nix::sys::statfs::statfs("/dev/shm")
        .map(|stat| stat.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        .unwrap_or(false);
    let mut cases = vec![(no_dir, "no scratch directory")];
    if shm_is_tmpfs {
        cases.push((on_tmpfs, "is on tmpfs"));
    }
    for (spec, reason) in cases {
        let sandbox = wisp_sandbox::spawn(&spec, &launcher()).await.unwrap();
        let degraded = sandbox.degraded().join("\n");
        assert!(
            degraded.contains("disk-backed /tmp unavailable"),
            "{degraded}"
        );
        assert!(degraded.contains(reason), "{degraded}");
        assert!(degraded.contains("memory limit"), "{degraded}");
        let finished = finish(sandbox).await;
        assert_eq!(finished.stdout, "tmpfs\n");
    }
    let _ = std::fs::remove_dir("/dev/shm/wisp-scratch-test");
}

#[tokio::test]
async fn layers_directory_is_mounted_read_only_at_opt() {
    if !have_root() {
        return;
    }
    let code = code_dir(
        r#"#!/bin/sh
cat /opt/bin/tool
if echo x > /opt/new 2>/dev/null; then echo "opt: writable"; else echo "opt: read-only"; fi
"#,
    );
    let layers = tempfile::tempdir().unwrap();
    std::fs::set_permissions(layers.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(layers.path().join("bin")).unwrap();
    std::fs::write(layers.path().join("bin/tool"), "from a layer\n").unwrap();
    let mut with_layers = spec(code.path());
    with_layers.opt_dir = Some(layers.path().to_path_buf());
    let finished = run(&with_layers).await;
    assert!(
        finished.stdout.contains("from a layer"),
        "{}",
        finished.stdout
    );
    assert!(
        finished.stdout.contains("opt: read-only"),
        "{}",
        finished.stdout
    );
    assert!(!layers.path().join("new").exists());

    // A host path under /opt would be hidden by the layers: refused rather than silently lost.
    let mut shadowed = spec(code.path());
    shadowed.opt_dir = Some(layers.path().to_path_buf());
    shadowed.extra_read_only = vec![PathBuf::from("/opt/something")];
    match wisp_sandbox::spawn(&shadowed, &launcher()).await {
        Err(SandboxError::Setup(message)) => {
            assert!(
                message.contains("/opt holds the function's layers"),
                "{message}"
            )
        }
        other => panic!("expected a setup error, got {other:?}"),
    }
}

#[tokio::test]
async fn extensions_start_before_the_bootstrap_with_an_output_pipe_of_their_own() {
    if !have_root() {
        return;
    }
    let code = code_dir("#!/bin/sh\necho from the runtime\nsleep 2\n");
    let layers = tempfile::tempdir().unwrap();
    std::fs::set_permissions(layers.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let extensions = layers.path().join("extensions");
    std::fs::create_dir(&extensions).unwrap();
    for (name, script, mode) in [
        (
            "agent",
            "#!/bin/sh\necho \"agent sees $MARKER as uid $(id -u)\"\nsleep 5\n",
            0o755,
        ),
        ("notes.txt", "not executable\n", 0o644),
    ] {
        std::fs::write(extensions.join(name), script).unwrap();
        std::fs::set_permissions(extensions.join(name), std::fs::Permissions::from_mode(mode))
            .unwrap();
    }
    let mut with_agent = spec(code.path());
    with_agent.opt_dir = Some(layers.path().to_path_buf());
    let mut sandbox = wisp_sandbox::spawn(&with_agent, &launcher()).await.unwrap();
    let mut agent_output = sandbox.take_extension_output().expect("an extension pipe");
    let handle = sandbox.kill_handle();

    // The agent is a living child of pid 1, found by its command line.
    let mut found = false;
    for _ in 0..100 {
        found = handle.living_children().iter().any(|child| {
            child
                .arguments
                .iter()
                .any(|argument| argument == "/opt/extensions/agent")
        });
        if found {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(found, "{:?}", handle.living_children());
    // The server connects to ports on the sandbox's own loopback: the Runtime API listens there.
    let inside = handle.clone();
    let reached = tokio::task::spawn_blocking(move || {
        (
            inside
                .connect_inside(9001, Duration::from_secs(1))
                .map(|_| ()),
            inside
                .connect_inside(9002, Duration::from_secs(1))
                .map(|_| ()),
        )
    })
    .await
    .unwrap();
    assert!(reached.0.is_ok(), "{:?}", reached.0);
    assert_eq!(
        reached.1.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );

    let mut agent_text = String::new();
    let mut chunk = [0u8; 256];
    while !agent_text.contains('\n') {
        let count = tokio::time::timeout(Duration::from_secs(5), agent_output.read(&mut chunk))
            .await
            .expect("the agent writes within 5 s")
            .unwrap();
        assert!(count > 0, "the agent's pipe closed early");
        agent_text.push_str(&String::from_utf8_lossy(&chunk[..count]));
    }
    assert_eq!(agent_text, "agent sees hello sandbox as uid 993\n");
    let finished = finish(sandbox).await;
    assert_eq!(finished.stdout, "from the runtime\n");
    assert!(
        !finished.stderr.contains("notes.txt"),
        "{}",
        finished.stderr
    );
}
