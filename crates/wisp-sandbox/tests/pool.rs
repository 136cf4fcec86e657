//! Process tests of the sandbox pool: a sandbox made from a spare launcher is the same as one made
//! from nothing, and spares never outlive their pool or their server. They need root (the launcher
//! does); without it they say so and skip.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use wisp_sandbox::{NetworkMode, SandboxPool, SandboxSpec, SpawnedSandbox};

use common::{code_dir, have_root, launcher};

fn spec(code: &Path, name: &str) -> SandboxSpec {
    SandboxSpec {
        instance_id: format!("pool-test-{}-{name}", std::process::id()),
        code_dir: code.to_path_buf(),
        runtime_dir: None,
        extra_read_only: Vec::new(),
        opt_dir: None,
        argv: vec!["/var/task/bootstrap".into()],
        env: vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("MARKER".into(), "hello pool".into()),
        ],
        memory_mb: 128,
        tmp_mb: 8,
        scratch_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox-scratch")),
        pids_max: 64,
        network: NetworkMode::Isolated,
    }
}

async fn output(mut sandbox: SpawnedSandbox) -> (wisp_sandbox::ExitReport, String) {
    let mut stdout = sandbox.take_stdout().unwrap();
    let reader = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text).await;
        text
    });
    let report = tokio::time::timeout(Duration::from_secs(60), sandbox.wait())
        .await
        .expect("sandbox did not exit within 60s");
    let text = reader.await.unwrap();
    eprintln!("{report:?}\n--- stdout\n{text}");
    (report, text)
}

/// The v1 cgroup file `file` of `controller` for process `pid`, when that controller is v1.
fn cgroup_file(pid: u32, controller: &str, file: &str) -> Option<String> {
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = membership.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _ = parts.next()?;
        let controllers = parts.next()?;
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| parts.next().map(str::to_owned))
            .flatten()
    })?;
    let full = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(path.trim_start_matches('/'))
        .join(file);
    std::fs::read_to_string(full)
        .ok()
        .map(|text| text.trim().to_owned())
}

/// Gone, or a zombie waiting for its parent.
fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn wait_gone(pids: &[u32], limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|pid| !is_gone(*pid)).collect();
        if alive.is_empty() || Instant::now() > deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_spawn_from_the_pool_behaves_like_a_fresh_one() {
    if !have_root() {
        return;
    }
    let pool = SandboxPool::new(launcher(), 2);
    assert_eq!(pool.fill(Duration::from_secs(20)).await, 2);
    let spares = pool.spare_pids();
    assert_eq!(spares.len(), 4, "{spares:?}");

    let code = code_dir(
        r#"#!/bin/bash
echo "marker=$MARKER"
echo "env=$(env | grep -vE '^(PWD|SHLVL|_)=' | sort | tr '\n' ' ')"
echo "uid=$(id -u) host=$(hostname) pid=$$"
echo "root=$(ls / | tr '\n' ' ')"
echo "tmp=$(stat -f -c %T /tmp)"
echo hi > /tmp/x && echo "tmp-write=ok"
echo "nice=$(cut -d' ' -f19 /proc/self/stat)"
head -c 200M /dev/zero | tail -n 1 > /dev/null
echo "big=$?"
sleep 1
"#,
    );
    let mut fresh_spec = spec(code.path(), "fresh");
    fresh_spec.memory_mb = 48;
    fresh_spec.pids_max = 12;
    let mut pooled_spec = fresh_spec.clone();
    pooled_spec.instance_id = format!("pool-test-{}-pooled", std::process::id());

    let pooled = pool.spawn(&pooled_spec).await.unwrap();
    // It came from the pool: the function is one of the spares' processes.
    assert!(
        spares.contains(&pooled.pid()),
        "{} not in {spares:?}",
        pooled.pid()
    );
    assert!(pooled.degraded().is_empty(), "{:?}", pooled.degraded());
    // The function's limits replaced the placeholders.
    if let Some(limit) = cgroup_file(pooled.pid(), "memory", "memory.limit_in_bytes") {
        assert_eq!(limit, (48u64 << 20).to_string());
    }
    if let Some(max) = cgroup_file(pooled.pid(), "pids", "pids.max") {
        assert_eq!(max, "12");
    }
    let fresh = wisp_sandbox::spawn(&fresh_spec, &launcher()).await.unwrap();
    assert!(fresh.degraded().is_empty(), "{:?}", fresh.degraded());

    let (pooled_report, pooled_out) = output(pooled).await;
    let (fresh_report, fresh_out) = output(fresh).await;
    assert_eq!(pooled_out, fresh_out);
    for expected in [
        "marker=hello pool",
        "uid=993 host=wisp-sandbox pid=1",
        "tmp=ext2/ext3",
        "tmp-write=ok",
        "nice=0",
        // tail kept 200 MiB of one line: the 48 MiB limit killed it.
        "big=137",
    ] {
        assert!(pooled_out.contains(expected), "{expected}: {pooled_out}");
    }
    assert!(!pooled_out.contains("oldroot"), "{pooled_out}");
    assert!(pooled_report.oom_killed && fresh_report.oom_killed);
    assert_eq!(pooled_report.exit_code, Some(0));
    assert!(pooled_report.max_memory_bytes.unwrap() <= 48 << 20);

    // A function given more memory than the placeholder gets it.
    let code =
        code_dir("#!/bin/bash\nhead -c 100M /dev/zero | tail -n 1 > /dev/null\necho \"big=$?\"\n");
    let mut spec = spec(code.path(), "roomy");
    spec.memory_mb = 256;
    let (report, out) = output(pool.spawn(&spec).await.unwrap()).await;
    assert!(out.contains("big=0"), "{out}");
    assert!(!report.oom_killed);
    assert!(report.max_memory_bytes.unwrap() > 100 << 20);
}

#[tokio::test]
async fn dropping_the_pool_kills_its_spares_and_removes_their_cgroups() {
    if !have_root() {
        return;
    }
    let pool = SandboxPool::new(launcher(), 2);
    assert_eq!(pool.fill(Duration::from_secs(20)).await, 2);
    let pids = pool.spare_pids();
    let memory_dirs: Vec<PathBuf> = pids
        .iter()
        .filter_map(|pid| {
            let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
            let line = membership
                .lines()
                .find(|line| line.split(':').nth(1) == Some("memory"))?;
            let path = line.splitn(3, ':').nth(2)?;
            path.contains("spare-")
                .then(|| Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/')))
        })
        .collect();
    if cgroup_file(pids[0], "memory", "cgroup.procs").is_some() {
        assert_eq!(memory_dirs.len(), 2, "{pids:?}");
    }
    drop(pool);
    let alive = wait_gone(&pids, Duration::from_secs(5));
    assert!(alive.is_empty(), "spares still running: {alive:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while memory_dirs.iter().any(|dir| dir.exists()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for dir in &memory_dirs {
        assert!(!dir.exists(), "{} was not removed", dir.display());
    }
}

const SERVER_ROLE: &str = "WISP_POOL_TEST_SERVER";

#[tokio::test]
async fn spares_die_with_a_killed_server() {
    if std::env::var_os(SERVER_ROLE).is_some() {
        // The "server": fill a pool, say which processes it holds, and wait to be killed.
        let pool = SandboxPool::new(launcher(), 2);
        pool.fill(Duration::from_secs(20)).await;
        let pids: Vec<String> = pool.spare_pids().iter().map(u32::to_string).collect();
        println!("SPARES {}", pids.join(" "));
        tokio::time::sleep(Duration::from_secs(120)).await;
        return;
    }
    if !have_root() {
        return;
    }
    let mut server = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "spares_die_with_a_killed_server", "--nocapture"])
        .env(SERVER_ROLE, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let pids: Vec<u32> = loop {
        let line = lines
            .next()
            .expect("the server exited without naming its spares")
            .unwrap();
        if let Some(list) = line.strip_prefix("SPARES ") {
            break list
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect();
        }
    };
    assert_eq!(pids.len(), 4, "{pids:?}");
    assert!(pids.iter().all(|pid| !is_gone(*pid)));
    eprintln!("server {} holds spares {pids:?}", server.id());
    server.kill().unwrap();
    server.wait().unwrap();
    let alive = wait_gone(&pids, Duration::from_secs(5));
    assert!(alive.is_empty(), "spares outlived their server: {alive:?}");
}
