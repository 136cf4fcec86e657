//! Process tests of sandbox networking: real launcher, real namespaces, real slirp4netns. Egress
//! sandboxes reach the host's loopback through slirp4netns's gateway, isolated ones reach nothing,
//! the Runtime API stays private in both, and no slirp4netns outlives its sandbox. They need root
//! (the launcher does); without it they say so and skip. Without slirp4netns they fail: it is part
//! of the machine the tests run on.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wisp_sandbox::{NetworkMode, SandboxPool, SandboxSpec, SpawnedSandbox};

use common::{code_dir, have_root, launcher};

fn spec(code: &Path, network: NetworkMode, env: &[(&str, String)]) -> SandboxSpec {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut variables = vec![("PATH".to_string(), "/usr/bin:/bin".to_string())];
    variables.extend(
        env.iter()
            .map(|(name, value)| (name.to_string(), value.clone())),
    );
    SandboxSpec {
        instance_id: format!(
            "net-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ),
        code_dir: code.to_path_buf(),
        runtime_dir: None,
        extra_read_only: Vec::new(),
        opt_dir: None,
        argv: vec!["/var/task/bootstrap".into()],
        env: variables,
        memory_mb: 128,
        tmp_mb: 16,
        scratch_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox-scratch")),
        pids_max: 64,
        network,
    }
}

/// Waits for the sandbox and returns its exit code and standard output.
async fn finish(mut sandbox: SpawnedSandbox) -> (Option<i32>, String) {
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
    let (stdout, stderr) = (out.await.unwrap(), err.await.unwrap());
    eprintln!("{report:?}\n--- stdout\n{stdout}--- stderr\n{stderr}");
    (report.exit_code, stdout)
}

/// A listener on the host's loopback that greets every connection and reports what it received.
fn host_service() -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = stream.write_all(b"hello from the host\n");
            let mut received = String::new();
            let _ = stream.read_to_string(&mut received);
            let _ = sender.send(received);
        }
    });
    (port, receiver)
}

const CONNECT_TO_HOST: &str = "#!/bin/bash
cat /etc/resolv.conf
if exec 3<>/dev/tcp/$TARGET/$PORT; then
    echo 'hello from the sandbox' >&3
    read -r line <&3
    echo \"read: $line\"
    exec 3>&-
else
    echo 'connect failed'
    exit 3
fi
";

#[tokio::test]
async fn egress_reaches_the_hosts_loopback_and_isolated_does_not() {
    if !have_root() {
        return;
    }
    let (port, received) = host_service();
    let code = code_dir(CONNECT_TO_HOST);
    let env = [
        ("TARGET", wisp_sandbox::HOST_ADDRESS.to_string()),
        ("PORT", port.to_string()),
    ];

    let sandbox = wisp_sandbox::spawn(&spec(code.path(), NetworkMode::Egress, &env), &launcher())
        .await
        .unwrap();
    assert!(sandbox.network_helper_pid().is_some());
    let (code_egress, stdout) = finish(sandbox).await;
    assert_eq!(code_egress, Some(0), "{stdout}");
    assert!(stdout.contains("read: hello from the host"), "{stdout}");
    assert!(
        stdout.contains(&format!("nameserver {}", wisp_sandbox::DNS_ADDRESS)),
        "{stdout}"
    );
    let got = received.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(got, "hello from the sandbox\n");

    let started = Instant::now();
    let sandbox = wisp_sandbox::spawn(&spec(code.path(), NetworkMode::Isolated, &env), &launcher())
        .await
        .unwrap();
    assert!(sandbox.network_helper_pid().is_none());
    let (code_isolated, stdout) = finish(sandbox).await;
    assert_eq!(code_isolated, Some(3), "{stdout}");
    assert!(stdout.contains("connect failed"), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an isolated sandbox's connection must fail at once"
    );
    assert!(received.recv_timeout(Duration::from_millis(200)).is_err());
}

#[tokio::test]
async fn egress_runtime_api_is_the_sandboxs_own() {
    if !have_root() {
        return;
    }
    // The sandbox writes its marker to 127.0.0.1:9001; only its own listener may receive it.
    let code = code_dir(
        "#!/bin/bash
exec 3<>/dev/tcp/127.0.0.1/9001 || exit 3
echo \"$MARKER\" >&3
read -r reply <&3
echo \"reply: $reply\"
",
    );
    let pool = SandboxPool::new(launcher(), 1);
    pool.fill(Duration::from_secs(10)).await;
    let mut sandboxes = Vec::new();
    for marker in ["first", "second"] {
        let spec = spec(
            code.path(),
            NetworkMode::Egress,
            &[("MARKER", marker.to_string())],
        );
        let sandbox = pool.spawn(&spec).await.unwrap();
        sandboxes.push((marker, sandbox));
    }
    for (marker, mut sandbox) in sandboxes {
        let listener = tokio::net::TcpListener::from_std(sandbox.take_listener().unwrap()).unwrap();
        let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("the sandbox did not connect to its runtime api")
            .unwrap();
        let mut line = vec![0u8; 64];
        let read = stream.read(&mut line).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&line[..read]),
            format!("{marker}\n")
        );
        stream.write_all(b"ok\n").await.unwrap();
        let (exit_code, stdout) = finish(sandbox).await;
        assert_eq!(exit_code, Some(0));
        assert!(stdout.contains("reply: ok"), "{stdout}");
    }
}

/// Whether host process `pid` has exited (gone, or a zombie not yet reaped).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// slirp4netns processes serving the network namespace of host process `target`.
fn helpers_of(target: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        if args.first().is_some_and(|arg| arg.ends_with("slirp4netns"))
            && args.iter().any(|arg| *arg == target.to_string())
            && !exited(pid)
        {
            found.push(pid);
        }
    }
    found
}

#[tokio::test]
async fn no_slirp4netns_remains_after_the_sandbox_exits() {
    if !have_root() {
        return;
    }
    let code = code_dir("#!/bin/bash\nsleep 0.2\n");
    let sandbox = wisp_sandbox::spawn(&spec(code.path(), NetworkMode::Egress, &[]), &launcher())
        .await
        .unwrap();
    let helper = sandbox.network_helper_pid().unwrap();
    let target = sandbox.pid();
    assert_eq!(helpers_of(target), vec![helper]);
    let (exit_code, _) = finish(sandbox).await;
    assert_eq!(exit_code, Some(0));
    assert!(
        !Path::new(&format!("/proc/{helper}")).exists(),
        "slirp4netns {helper} is still there"
    );
    assert!(helpers_of(target).is_empty());
}

#[tokio::test]
async fn slirp4netns_exits_when_the_launcher_is_killed() {
    if !have_root() {
        return;
    }
    let code = code_dir("#!/bin/bash\nsleep 60\n");
    let sandbox = wisp_sandbox::spawn(&spec(code.path(), NetworkMode::Egress, &[]), &launcher())
        .await
        .unwrap();
    let helper = sandbox.network_helper_pid().unwrap();
    let target = sandbox.pid();
    let launcher_pid = sandbox.launcher_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(launcher_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // On its own, without the server's help: its exit pipe closed with the launcher.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !exited(helper) {
        assert!(
            Instant::now() < deadline,
            "slirp4netns {helper} outlived its launcher"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (exit_code, _) = finish(sandbox).await;
    assert_eq!(exit_code, None);
    assert!(!Path::new(&format!("/proc/{helper}")).exists());
    assert!(helpers_of(target).is_empty());
}

#[tokio::test]
async fn egress_cold_start_from_the_pool() {
    if !have_root() {
        return;
    }
    // Times spawn() from a ready spare in both modes; printed for the record, loosely bounded.
    let code = code_dir("#!/bin/bash\nexit 0\n");
    let pool = SandboxPool::new(launcher(), 1);
    for network in [NetworkMode::Isolated, NetworkMode::Egress] {
        let mut samples = Vec::new();
        for _ in 0..5 {
            assert_eq!(pool.fill(Duration::from_secs(10)).await, 1);
            let spec = spec(code.path(), network, &[]);
            let started = Instant::now();
            let sandbox = pool.spawn(&spec).await.unwrap();
            samples.push(started.elapsed());
            let (exit_code, _) = finish(sandbox).await;
            assert_eq!(exit_code, Some(0));
        }
        samples.sort();
        eprintln!("{network:?}: spawn from a spare, median {:?}", samples[2]);
        assert!(samples[2] < Duration::from_secs(2), "{samples:?}");
    }
}
