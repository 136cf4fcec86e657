//! Network egress for sandboxes in [`crate::NetworkMode::Egress`]: user-space NAT through
//! `slirp4netns`.
//!
//! An egress sandbox is prepared exactly as an isolated one (its own network namespace, loopback,
//! the Runtime API bound at [`crate::RUNTIME_API_ADDRESS`] inside it), so spare launchers serve both
//! modes. At launch, before the spec goes to the launcher, the server starts `slirp4netns` for the
//! waiting function process's network namespace: it creates a tap device there, addresses it,
//! routes everything through it and answers on its ready pipe; only then does the bootstrap run.
//! Inside, [`HOST_ADDRESS`] is the host's loopback (slirp4netns maps its gateway to the host's
//! `127.0.0.1`) and [`DNS_ADDRESS`] the resolver. The Runtime API stays on the namespace's own
//! loopback, out of reach of the host and of other sandboxes.
//!
//! Lifetime: the write end of slirp4netns's exit pipe (`--exit-fd`) goes to the launcher with the
//! launch request and nowhere else, so slirp4netns exits as soon as the launcher does, whether the
//! sandbox ended, the launcher was killed or the server died (a launcher outlives its server only
//! while it kills its function). The server also kills it when it drops the sandbox, and reaps it.
//! Isolated sandboxes start no extra process.
//!
//! This module must never let the function's process hold the exit pipe, never pass
//! `--disable-host-loopback` implicitly, and never start the bootstrap before slirp4netns has said it
//! is ready.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::process::{Child, Command};

use crate::SandboxError;

/// Address of the host's loopback inside an egress sandbox (slirp4netns's gateway), exposed to
/// functions as `WISP_HOST_ADDRESS`.
pub const HOST_ADDRESS: &str = "10.0.2.2";
/// Address of the resolver inside an egress sandbox (slirp4netns forwards to the host's).
pub const DNS_ADDRESS: &str = "10.0.2.3";
/// Program, and the Debian package that provides it.
pub const SLIRP4NETNS: &str = "slirp4netns";
/// Name of the tap device in the sandbox's network namespace.
const TAP_DEVICE: &str = "tap0";
/// How long slirp4netns may take to configure the namespace.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where `slirp4netns` is installed, looked up in `PATH` and the usual system directories.
pub fn find_slirp4netns() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join(SLIRP4NETNS))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn missing() -> SandboxError {
    SandboxError::Setup(format!(
        "network egress needs {SLIRP4NETNS}, which is not installed (install the Debian package {SLIRP4NETNS})"
    ))
}

/// A running slirp4netns serving one sandbox's network namespace.
#[derive(Debug)]
pub(crate) struct Egress {
    process: Child,
    /// The write end of the exit pipe until it goes to the launcher.
    exit: Option<OwnedFd>,
}

impl Egress {
    /// Host pid of the slirp4netns process.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    /// The write end of the exit pipe, for the launcher: slirp4netns exits when it closes.
    pub(crate) fn take_exit_fd(&mut self) -> Option<OwnedFd> {
        self.exit.take()
    }

    /// Waits a little for slirp4netns to leave on its own (its exit pipe closed), then kills it;
    /// either way it is reaped.
    pub(crate) async fn finish(&mut self) {
        self.exit = None;
        if tokio::time::timeout(Duration::from_millis(500), self.process.wait())
            .await
            .is_err()
        {
            let _ = self.process.kill().await;
        }
    }
}

/// Starts slirp4netns for the network namespace of host process `pid` and waits until the tap
/// device is configured.
pub(crate) async fn attach(pid: u32) -> Result<Egress, SandboxError> {
    let program = find_slirp4netns().ok_or_else(missing)?;
    let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|errno| SandboxError::Io(errno.into()))?;
    let (exit_read, exit_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|errno| SandboxError::Io(errno.into()))?;
    let mut command = Command::new(&program);
    command
        .arg("--configure")
        .arg("--mtu=65520")
        .arg("--ready-fd=3")
        .arg("--exit-fd=4")
        .arg(pid.to_string())
        .arg(TAP_DEVICE)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let (ready_fd, exit_fd) = (ready_write.as_raw_fd(), exit_read.as_raw_fd());
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (fcntl, dup2, close, setsid) on descriptors that exist in the child.
    unsafe {
        command.pre_exec(move || {
            // Copies above 3 and 4 first, so that neither dup2 overwrites the other's source.
            let ready = libc::fcntl(ready_fd, libc::F_DUPFD, 10);
            let exit = libc::fcntl(exit_fd, libc::F_DUPFD, 10);
            if ready < 0 || exit < 0 || libc::dup2(ready, 3) < 0 || libc::dup2(exit, 4) < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::close(ready);
            libc::close(exit);
            // Its own session: a terminal's ^C for the server does not reach it.
            libc::setsid();
            Ok(())
        });
    }
    let process = command.spawn().map_err(|error| {
        SandboxError::Setup(format!("cannot start {}: {error}", program.display()))
    })?;
    drop(ready_write);
    drop(exit_read);
    let egress = Egress {
        process,
        exit: Some(exit_write),
    };
    match tokio::time::timeout(READY_TIMEOUT, read_ready(ready_read)).await {
        Ok(Ok(true)) => Ok(egress),
        Ok(Ok(false)) => {
            let mut process = egress.process;
            let (status, output) =
                crate::spawn::exit_and_stderr(&mut process, Duration::from_secs(2)).await;
            Err(SandboxError::Setup(format!(
                "slirp4netns could not configure the sandbox's network ({status}): {}",
                last_lines(&output)
            )))
        }
        Ok(Err(error)) => Err(SandboxError::Setup(format!(
            "reading slirp4netns's ready pipe: {error}"
        ))),
        Err(_) => Err(SandboxError::Setup(format!(
            "slirp4netns did not configure the sandbox's network within {}s",
            READY_TIMEOUT.as_secs()
        ))),
    }
}

/// Whether slirp4netns wrote to its ready pipe before closing it.
async fn read_ready(pipe: OwnedFd) -> io::Result<bool> {
    set_nonblocking(pipe.as_raw_fd())?;
    // SAFETY: `pipe` is an OwnedFd: its descriptor stays open and unchanged while registered.
    let pipe = unsafe { AsyncFd::register(pipe) }?;
    loop {
        let mut guard = pipe.readable().await?;
        let mut byte = [0u8; 1];
        match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), &mut byte).map_err(io::Error::from))
        {
            Ok(Ok(read)) => return Ok(read > 0),
            Ok(Err(error)) if error.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(error)) => return Err(error),
            Err(_would_block) => continue,
        }
    }
}

/// The end of slirp4netns's output, where it says what failed.
fn last_lines(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    lines[lines.len().saturating_sub(3)..].join("; ")
}

fn set_nonblocking(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; errors are reported through the return value.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `wisp doctor`'s view: the installed slirp4netns and its version, exercised by running it.
pub(crate) fn describe_slirp4netns() -> Result<String, String> {
    let program = find_slirp4netns().ok_or_else(|| {
        format!(
            "{SLIRP4NETNS} is not installed (Debian package {SLIRP4NETNS}): sandboxes of mode egress cannot start; mode isolated (the default) has loopback only"
        )
    })?;
    let output = std::process::Command::new(&program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run {}: {error}", program.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} --version failed ({})",
            program.display(),
            output.status
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text
        .lines()
        .next()
        .unwrap_or("slirp4netns")
        .trim()
        .to_string();
    Ok(format!(
        "{version} at {}: mode egress (wisp serve --function-network egress) gives user-space NAT, the host's loopback at {HOST_ADDRESS}; the default mode isolated has loopback only",
        program.display()
    ))
}
