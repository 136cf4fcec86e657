//! Cold spawn time: from `spawn` to the bootstrap's first connection to the Runtime API, next to a
//! plain fork + exec of the same program connecting to a host listener (the baseline).
//!
//! Run as root: `cargo bench -p wisp-sandbox --bench cold_spawn` (add `-- egress` for sandboxes in
//! network mode egress, which start slirp4netns). The bootstrap is a tiny static C
//! program when `cc` can build one, else a bash script (the output says which).

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wisp_sandbox::{LauncherCommand, NetworkMode, SandboxSpec};

const ROUNDS: usize = 60;

const CONNECT_C: &str = r#"
#include <arpa/inet.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct sockaddr_in address = {0};
    address.sin_family = AF_INET;
    address.sin_port = htons(argc > 1 ? atoi(argv[1]) : 9001);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof address) != 0) return 1;
    return write(fd, "x", 1) == 1 ? 0 : 2;
}
"#;

const CONNECT_BASH: &str = "#!/bin/bash\nexec 3<>/dev/tcp/127.0.0.1/${1:-9001} && echo -n x >&3\n";

fn build_bootstrap(dir: &Path) -> (PathBuf, &'static str) {
    let bootstrap = dir.join("bootstrap");
    let source = dir.join("connect.c");
    std::fs::write(&source, CONNECT_C).unwrap();
    let built = Command::new("cc")
        .args(["-O2", "-static", "-o"])
        .arg(&bootstrap)
        .arg(&source)
        .status()
        .map(|status| status.success())
        .unwrap_or(false);
    std::fs::remove_file(&source).unwrap();
    let kind = if built {
        "static C binary"
    } else {
        std::fs::write(&bootstrap, CONNECT_BASH).unwrap();
        "bash script (no cc -static here)"
    };
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755)).unwrap();
    (bootstrap, kind)
}

fn summary(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9), samples[0])
}

fn micros(duration: Duration) -> String {
    format!("{:>8.0} µs", duration.as_secs_f64() * 1e6)
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED cold_spawn: the launcher needs root");
        return;
    }
    let code = tempfile::tempdir().unwrap();
    // /tmp's images go to the target directory, which is on disk (the system's /tmp may be tmpfs).
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(code.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (bootstrap, kind) = build_bootstrap(code.path());
    let network = if std::env::args().any(|arg| arg == "egress") {
        NetworkMode::Egress
    } else {
        NetworkMode::Isolated
    };
    let launcher = LauncherCommand {
        program: PathBuf::from(env!("CARGO_BIN_EXE_wisp-launcher")),
        args: Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Baseline: fork + exec of the same program, connecting to a listener on the host.
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port().to_string();
    let mut baseline = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let mut child = Command::new(&bootstrap)
            .arg(&port)
            .env_clear()
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let (mut stream, _) = host.accept().unwrap();
        baseline.push(started.elapsed());
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).unwrap();
        child.wait().unwrap();
    }

    let mut spawned = Vec::new();
    let mut connected = Vec::new();
    let mut degraded = Vec::new();
    runtime.block_on(async {
        for round in 0..ROUNDS {
            let spec = SandboxSpec {
                instance_id: format!("bench-{}-{round}", std::process::id()),
                code_dir: code.path().to_path_buf(),
                runtime_dir: None,
                extra_read_only: Vec::new(),
                opt_dir: None,
                argv: vec!["/var/task/bootstrap".into()],
                env: vec![("AWS_LAMBDA_RUNTIME_API".into(), "127.0.0.1:9001".into())],
                memory_mb: 128,
                tmp_mb: 512,
                scratch_dir: Some(scratch.path().to_path_buf()),
                pids_max: 16,
                network,
            };
            let started = Instant::now();
            let mut sandbox = wisp_sandbox::spawn(&spec, &launcher).await.unwrap();
            spawned.push(started.elapsed());
            degraded.extend(sandbox.degraded().iter().cloned());
            let listener =
                tokio::net::TcpListener::from_std(sandbox.take_listener().unwrap()).unwrap();
            let (_stream, _) = listener.accept().await.unwrap();
            connected.push(started.elapsed());
            let report = sandbox.wait().await;
            assert_eq!(report.exit_code, Some(0), "{report:?}");
        }
    });

    let (base_p50, base_p90, base_min) = summary(baseline);
    let (spawn_p50, spawn_p90, spawn_min) = summary(spawned);
    let (conn_p50, conn_p90, conn_min) = summary(connected);
    println!("cold spawn, {ROUNDS} rounds, bootstrap: {kind}, network: {network:?}");
    degraded.sort();
    degraded.dedup();
    for reason in &degraded {
        println!("degraded: {reason}");
    }
    if degraded.is_empty() {
        println!("/tmp: 512 MiB ext4 on a loop device");
    }
    println!("{:<44} {:>11} {:>11} {:>11}", "", "p50", "p90", "min");
    println!(
        "{:<44} {} {} {}",
        "baseline: fork+exec → connect (host)",
        micros(base_p50),
        micros(base_p90),
        micros(base_min)
    );
    println!(
        "{:<44} {} {} {}",
        "sandbox: spawn() returned (exec done)",
        micros(spawn_p50),
        micros(spawn_p90),
        micros(spawn_min)
    );
    println!(
        "{:<44} {} {} {}",
        "sandbox: spawn → connect to runtime api",
        micros(conn_p50),
        micros(conn_p90),
        micros(conn_min)
    );
    println!(
        "ratio sandbox/baseline (p50): {:.1}×",
        conn_p50.as_secs_f64() / base_p50.as_secs_f64()
    );
}
