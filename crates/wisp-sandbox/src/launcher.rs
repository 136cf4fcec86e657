//! The launcher: the small privileged path that turns a [`SandboxSpec`] into an isolated process.
//!
//! It runs as its own process (the hidden `wisp launch` subcommand or the `wisp-launcher` binary),
//! started by the server with one end of a unix `SOCK_SEQPACKET` socket pair as fd 3, and works in
//! two steps so that everything that does not depend on the function can happen before a function
//! needs it (the server keeps a few launchers waiting after step 1, see `pool.rs`):
//!
//! 1. **Prepare** ([`PrepareRequest`]): it enters fresh mount, pid, ipc, uts and network
//!    namespaces, brings up loopback, binds the Runtime API socket at [`crate::RUNTIME_API_ADDRESS`]
//!    inside that network namespace and forks. The child is pid 1 of the new pid namespace: it joins
//!    the cgroups the server created for it (the slow step on cgroup v1: an attach waits for an RCU
//!    grace period) and then waits. The launcher answers [`LaunchReply::Prepared`].
//! 2. **Launch** ([`LaunchRequest`]): the launcher passes the spec (and the `/tmp` mount that comes
//!    with it) to the waiting child, which builds a private root (only the listed paths of the host
//!    are visible; `/tmp` is the detached ext4 mount, see `scratch.rs`, or a tmpfs), drops to an
//!    unprivileged user with no capabilities, and `exec`s the bootstrap; an exec failure comes back
//!    through a close-on-exec pipe. The launcher sends the listening socket (and a pidfd of the
//!    child) to the server as [`LaunchReply::Ready`].
//!    In network mode egress the request also carries the write end of slirp4netns's exit pipe,
//!    which the launcher keeps (and never passes on) until it exits (see `network.rs`).
//!
//! The launcher then stays as a reaper: it waits for the child and exits mirroring its status (same
//! exit code, or death by the same signal); if the server's end of the socket closes (at any step),
//! it kills the child first.
//!
//! This module must never start a thread (the namespace and fork steps assume a single-threaded
//! process), never leave the host's root reachable from the child, and never exec the bootstrap
//! with privileges, inherited file descriptors or any of the launcher's own environment.

use std::ffi::CString;
use std::fs;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid};

use crate::SandboxSpec;

/// The file descriptor on which the launcher finds its socket unless `--socket-fd` says otherwise.
pub const DEFAULT_SOCKET_FD: RawFd = 3;
/// User id the function runs as (Lambda's `sbx_user1051`).
pub const SANDBOX_UID: u32 = 993;
/// Group id the function runs as.
pub const SANDBOX_GID: u32 = 990;
/// Host name inside every sandbox.
pub const SANDBOX_HOSTNAME: &str = "wisp-sandbox";
/// Exit code of the launcher when it could not start the sandbox (the reason went over the socket).
pub const LAUNCH_FAILED_EXIT: i32 = 125;
/// Largest message on the launcher socket.
pub(crate) const MAX_MESSAGE: usize = 1 << 20;

/// What the server sends the launcher first, right after starting it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PrepareRequest {
    /// `cgroup.procs` files the function's process joins before anything else.
    pub cgroup_procs: Vec<PathBuf>,
    pub network: crate::NetworkMode,
}

/// What the server sends the launcher second, when a function needs the sandbox.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LaunchRequest {
    pub spec: SandboxSpec,
    /// A detached mount of the `/tmp` filesystem comes with the request (`SCM_RIGHTS`); this is
    /// its loop device. Without one, `/tmp` is a tmpfs.
    #[serde(default)]
    pub tmp_device: Option<String>,
    /// The write end of the network helper's exit pipe comes with the request too, after the
    /// `/tmp` mount (egress mode, see `network.rs`): the launcher holds it, and nothing else, until
    /// it exits, so that the helper exits with it.
    #[serde(default)]
    pub network_exit_fd: bool,
}

/// What the launcher answers, once per request. `Prepared` says the function's process (`pid`,
/// in the server's pid namespace) is in its cgroups and waits for the spec. `Ready` carries the
/// Runtime API listener and, when the kernel has pidfds, a pidfd of the function's process as
/// `SCM_RIGHTS`, in that order.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum LaunchReply {
    Prepared {
        pid: i32,
    },
    /// With `has_extension_output`, the read end of the extensions' output pipe comes last.
    Ready {
        pid: i32,
        has_pidfd: bool,
        #[serde(default)]
        has_extension_output: bool,
    },
    Failed(LaunchFailure),
}

/// Why the launcher could not start the bootstrap.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LaunchFailure {
    Setup(String),
    Exec { path: String, reason: String },
}

impl From<LaunchFailure> for crate::SandboxError {
    fn from(failure: LaunchFailure) -> Self {
        match failure {
            LaunchFailure::Setup(reason) => crate::SandboxError::Setup(reason),
            LaunchFailure::Exec { path, reason } => crate::SandboxError::Exec { path, reason },
        }
    }
}

fn setup_error(what: impl std::fmt::Display, error: impl std::fmt::Display) -> LaunchFailure {
    LaunchFailure::Setup(format!("{what}: {error}"))
}

/// Entry point of the launcher process. Call it first thing in `main`, before any thread exists.
pub fn main() -> ! {
    let socket_fd = socket_fd_from_args(std::env::args().skip(1));
    // The server opened this descriptor for us and nothing else in this process owns it.
    // SAFETY: taking ownership of an inherited descriptor that no other object refers to.
    let socket = unsafe { OwnedFd::from_raw_fd(socket_fd) };
    if let Err(error) = set_cloexec(socket.as_raw_fd()) {
        eprintln!("wisp-launcher: fd {socket_fd} is not usable: {error}");
        std::process::exit(LAUNCH_FAILED_EXIT);
    }
    let prepare: PrepareRequest = match receive_message(&socket) {
        Ok((Some(body), _)) => match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(error) => {
                eprintln!("wisp-launcher: unreadable prepare request on fd {socket_fd}: {error}");
                std::process::exit(LAUNCH_FAILED_EXIT);
            }
        },
        Ok((None, _)) => std::process::exit(LAUNCH_FAILED_EXIT),
        Err(error) => {
            eprintln!("wisp-launcher: no prepare request on fd {socket_fd}: {error}");
            std::process::exit(LAUNCH_FAILED_EXIT);
        }
    };
    let failure = match launch(&socket, &prepare) {
        Ok(never) => match never {},
        Err(failure) => failure,
    };
    let _ = send_reply(&socket, &LaunchReply::Failed(failure), &[]);
    std::process::exit(LAUNCH_FAILED_EXIT);
}

fn socket_fd_from_args(mut args: impl Iterator<Item = String>) -> RawFd {
    while let Some(arg) = args.next() {
        let value = if arg == "--socket-fd" {
            args.next()
        } else {
            arg.strip_prefix("--socket-fd=").map(str::to_owned)
        };
        if let Some(fd) = value.and_then(|v| v.parse().ok()) {
            return fd;
        }
    }
    DEFAULT_SOCKET_FD
}

/// Reads one message and the descriptors that came with it; `None` when the peer closed the socket.
fn receive_message(socket: &OwnedFd) -> io::Result<(Option<Vec<u8>>, Vec<OwnedFd>)> {
    let mut buffer = vec![0u8; MAX_MESSAGE];
    let mut cmsg_space = nix::cmsg_space!([RawFd; 4]);
    loop {
        let mut iov = [IoSliceMut::new(&mut buffer)];
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(message) => {
                let mut fds = Vec::new();
                for cmsg in message.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(received) = cmsg {
                        for fd in received {
                            // SAFETY: SCM_RIGHTS just installed this descriptor in our table; we
                            // are its only owner.
                            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                }
                let length = message.bytes;
                if length == 0 {
                    return Ok((None, fds));
                }
                buffer.truncate(length);
                return Ok((Some(buffer), fds));
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}

fn send_reply(socket: &OwnedFd, reply: &LaunchReply, fds: &[RawFd]) -> io::Result<()> {
    let body = serde_json::to_vec(reply).map_err(io::Error::other)?;
    let iov = [IoSlice::new(&body)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(socket.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)?;
    Ok(())
}

/// Reads one reply from the launcher socket; `Ok(None)` when the launcher closed it first.
pub(crate) fn receive_reply(socket: RawFd) -> io::Result<Option<(LaunchReply, Vec<OwnedFd>)>> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut cmsg_space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(&mut buffer)];
    let message = recvmsg::<()>(
        socket,
        &mut iov,
        Some(&mut cmsg_space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            for fd in received {
                // SAFETY: SCM_RIGHTS just installed this descriptor in our table; we are its only owner.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    let length = message.bytes;
    if length == 0 {
        return Ok(None);
    }
    let reply = serde_json::from_slice(&buffer[..length]).map_err(io::Error::other)?;
    Ok(Some((reply, fds)))
}

enum Never {}

fn launch(socket: &OwnedFd, prepare: &PrepareRequest) -> Result<Never, LaunchFailure> {
    if !nix::unistd::geteuid().is_root() {
        return Err(LaunchFailure::Setup(
            "the launcher must run as root (unprivileged launch through user namespaces is not supported yet); see wisp doctor".into(),
        ));
    }
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    // Egress sandboxes are prepared the same way: slirp4netns is attached at launch.
    match prepare.network {
        crate::NetworkMode::Isolated | crate::NetworkMode::Egress => {
            flags |= CloneFlags::CLONE_NEWNET
        }
    }
    unshare(flags)
        .map_err(|errno| setup_error("unshare(mount, pid, ipc, uts, net namespaces)", errno))?;
    nix::unistd::sethostname(SANDBOX_HOSTNAME)
        .map_err(|errno| setup_error("sethostname", errno))?;
    bring_loopback_up()
        .map_err(|error| setup_error("bringing up lo in the new network namespace", error))?;
    let listener = std::net::TcpListener::bind(crate::RUNTIME_API_ADDRESS).map_err(|error| {
        setup_error(
            format_args!("binding the runtime api at {}", crate::RUNTIME_API_ADDRESS),
            error,
        )
    })?;

    let (status_read, status_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|errno| setup_error("pipe2", errno))?;
    // The launcher hands the spec (and the /tmp mount) to the waiting child over this pair; the
    // child answers one byte once it is in its cgroups.
    let (parent_end, child_end) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|errno| setup_error("socketpair", errno))?;
    // SAFETY: this process is single-threaded (the launcher starts no threads), so the child may
    // keep running ordinary Rust code after fork.
    match unsafe { nix::unistd::fork() }.map_err(|errno| setup_error("fork", errno))? {
        ForkResult::Child => {
            drop(status_read);
            drop(listener);
            drop(parent_end);
            // SAFETY: the server's socket belongs to the launcher; this process's copy of the
            // descriptor is closed here and `socket` is never used again in this process.
            unsafe { libc::close(socket.as_raw_fd()) };
            let failure = match wait_and_become_function(&prepare.cgroup_procs, child_end) {
                Ok(never) => match never {},
                Err(failure) => failure,
            };
            if let Ok(body) = serde_json::to_vec(&failure) {
                let _ = nix::unistd::write(&status_write, &body);
            }
            // SAFETY: _exit skips the parent's atexit handlers and buffered streams, as a forked child must.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(status_write);
            drop(child_end);
            let pidfd = pidfd_open(child);
            let child_failed = |report: &[u8]| {
                serde_json::from_slice(report).unwrap_or_else(|_| {
                    LaunchFailure::Setup(String::from_utf8_lossy(report).into_owned())
                })
            };
            // Step 1 ends when the child is in its cgroups (one byte), or failed (the pipe says why).
            let mut joined = [0u8; 1];
            let in_cgroups = matches!(nix::unistd::read(parent_end.as_fd(), &mut joined), Ok(1));
            if !in_cgroups {
                let mut report = Vec::new();
                let _ = read_to_end(status_read.as_fd(), &mut report);
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(child_failed(&report));
            }
            let abandon = |failure: LaunchFailure| {
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                failure
            };
            if send_reply(
                socket,
                &LaunchReply::Prepared {
                    pid: child.as_raw(),
                },
                &[],
            )
            .is_err()
            {
                let _ = abandon(LaunchFailure::Setup("server went away".into()));
                std::process::exit(LAUNCH_FAILED_EXIT);
            }

            // Step 2: the spec. A closed socket means the server no longer wants this sandbox.
            let (body, fds) = match receive_message(socket) {
                Ok((Some(body), fds)) => (body, fds),
                Ok((None, _)) => {
                    let _ = abandon(LaunchFailure::Setup("server went away".into()));
                    std::process::exit(LAUNCH_FAILED_EXIT);
                }
                Err(error) => {
                    return Err(abandon(setup_error("reading the launch request", error)));
                }
            };
            let request: LaunchRequest = serde_json::from_slice(&body)
                .map_err(|error| abandon(setup_error("unreadable launch request", error)))?;
            if let Err(failure) = validate_spec(&request.spec) {
                return Err(abandon(failure));
            }
            let mut fds = fds.into_iter();
            let mount = if request.tmp_device.is_some() {
                fds.next()
            } else {
                None
            };
            // Close-on-exec, never passed on, and closed only by the launcher's exit.
            let network_exit = if request.network_exit_fd {
                fds.next()
            } else {
                None
            };
            let tmp = match (mount, &request.tmp_device) {
                (Some(mount), Some(device)) => {
                    Some(crate::scratch::TmpMount::received(mount, device.clone()))
                }
                (None, Some(device)) => {
                    return Err(abandon(LaunchFailure::Setup(format!(
                        "the /tmp filesystem on {device} did not come with the launch request"
                    ))));
                }
                _ => None,
            };
            // Extensions write to a pipe of their own, so the server can tell their output from
            // the function's; only sandboxes with layers can have extensions.
            let extension_output = match &request.spec.opt_dir {
                Some(_) => Some(
                    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                        .map_err(|errno| abandon(setup_error("pipe2", errno)))?,
                ),
                None => None,
            };
            let mut rights: Vec<RawFd> = tmp.iter().filter_map(|tmp| tmp.mount_fd()).collect();
            if let Some((_, write_end)) = &extension_output {
                rights.push(write_end.as_raw_fd());
            }
            if let Err(error) = send_raw(&parent_end, &body, &rights) {
                return Err(abandon(setup_error(
                    "passing the spec to the sandbox",
                    error,
                )));
            }
            drop(parent_end);
            let extension_output = extension_output.map(|(read_end, _write_end)| read_end);
            let mut report = Vec::new();
            let _ = read_to_end(status_read.as_fd(), &mut report);
            if !report.is_empty() {
                let failure = child_failed(&report);
                let _ = waitpid(child, None);
                return Err(failure);
            }
            let mut fds = vec![listener.as_raw_fd()];
            if let Some(pidfd) = &pidfd {
                fds.push(pidfd.as_raw_fd());
            }
            if let Some(read_end) = &extension_output {
                fds.push(read_end.as_raw_fd());
            }
            let reply = LaunchReply::Ready {
                pid: child.as_raw(),
                has_pidfd: pidfd.is_some(),
                has_extension_output: extension_output.is_some(),
            };
            if send_reply(socket, &reply, &fds).is_err() {
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            }
            drop(listener);
            drop(extension_output);
            reap(socket, child, pidfd, tmp, network_exit)
        }
    }
}

/// The child's side: joins the cgroups, says so, waits for the spec, then becomes the function.
fn wait_and_become_function(
    cgroup_procs: &[PathBuf],
    channel: OwnedFd,
) -> Result<Never, LaunchFailure> {
    // Only the function's side joins the cgroups: the reaper's few pages and its one process do
    // not count against the function's limits, and an out-of-memory kill cannot take the reaper,
    // which must survive to report how the function ended. "0" is the writing process itself
    // (our own pid in this namespace is 1, which the kernel would read in our namespace too).
    for procs in cgroup_procs {
        fs::write(procs, "0").map_err(|error| {
            setup_error(format_args!("joining cgroup {}", procs.display()), error)
        })?;
    }
    // If the launcher dies before this is armed, the spec never comes: the read below ends.
    set_parent_death_signal();
    nix::unistd::write(&channel, b"j")
        .map_err(|errno| setup_error("reporting the cgroup join", errno))?;
    let (body, fds) = match receive_message(&channel) {
        Ok((Some(body), fds)) => (body, fds),
        // The launcher gave up on this sandbox (or died): nothing to report.
        // SAFETY: _exit in a forked child.
        Ok((None, _)) | Err(_) => unsafe { libc::_exit(127) },
    };
    drop(channel);
    let request: LaunchRequest = serde_json::from_slice(&body)
        .map_err(|error| setup_error("unreadable launch request", error))?;
    // The /tmp mount first (when there is one), then the extensions' output pipe.
    let mut fds = fds.into_iter();
    let mut tmp = match &request.tmp_device {
        Some(device) => fds
            .next()
            .map(|mount| crate::scratch::TmpMount::received(mount, device.clone())),
        None => None,
    };
    let extension_output = request.spec.opt_dir.as_ref().and_then(|_| fds.next());
    become_function(&request.spec, tmp.as_mut(), extension_output)
}

fn send_raw(socket: &OwnedFd, body: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(body)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

fn validate_spec(spec: &SandboxSpec) -> Result<(), LaunchFailure> {
    if spec.argv.is_empty() {
        return Err(LaunchFailure::Exec {
            path: String::new(),
            reason: "no command given (argv is empty)".into(),
        });
    }
    let paths = std::iter::once(&spec.code_dir)
        .chain(spec.runtime_dir.iter())
        .chain(spec.opt_dir.iter())
        .chain(spec.extra_read_only.iter());
    for path in paths {
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return Err(LaunchFailure::Setup(format!(
                "sandbox path {} must be absolute and must not contain ..",
                path.display()
            )));
        }
    }
    for path in &spec.extra_read_only {
        if path.parent().is_none() {
            return Err(LaunchFailure::Setup(
                "the host root / cannot be mounted into a sandbox".into(),
            ));
        }
        let reserved = ["/proc", "/dev", "/tmp", "/var/task", "/var/runtime", "/etc"];
        if reserved.iter().any(|r| path == Path::new(r)) {
            return Err(LaunchFailure::Setup(format!(
                "{} is managed by the sandbox and cannot be mounted from the host",
                path.display()
            )));
        }
        if spec.opt_dir.is_some() && path.starts_with("/opt") {
            return Err(LaunchFailure::Setup(format!(
                "{} cannot be mounted from the host: /opt holds the function's layers",
                path.display()
            )));
        }
    }
    for (name, _) in &spec.env {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(LaunchFailure::Setup(format!(
                "invalid environment variable name {name:?}"
            )));
        }
    }
    Ok(())
}

/// The reaper: waits for the function's process and exits the way it did. When the server side of
/// the socket closes (the server died or dropped the sandbox), kills the function first.
fn reap(
    socket: &OwnedFd,
    child: Pid,
    pidfd: Option<OwnedFd>,
    tmp: Option<crate::scratch::TmpMount>,
    network_exit: Option<OwnedFd>,
) -> ! {
    if let Some(pidfd) = &pidfd {
        let mut server_gone = false;
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: if server_gone { -1 } else { socket.as_raw_fd() },
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: fds is a valid array of two pollfd structures for the duration of the call.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if ready < 0 {
                if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break;
            }
            if fds[0].revents != 0 {
                break;
            }
            if fds[1].revents != 0 {
                server_gone = true;
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            }
        }
    }
    let status = loop {
        match waitpid(child, None) {
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => break Some(status),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break None,
        }
    };
    // Pid 1 is reaped only once every process of its namespace is gone: nothing writes to /tmp
    // any more, and its contents need not reach the disk on the way out.
    if let Some(tmp) = &tmp {
        tmp.discard();
    }
    drop(tmp);
    // The network helper goes as the function has.
    drop(network_exit);
    match status {
        Some(WaitStatus::Exited(_, code)) => std::process::exit(code),
        Some(WaitStatus::Signaled(_, signal, _)) => mirror_signal(signal),
        _ => std::process::exit(LAUNCH_FAILED_EXIT),
    }
}

/// Dies of `signal` so that the server sees the function's own status.
fn mirror_signal(signal_number: Signal) -> ! {
    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
    // SAFETY: resetting a disposition to the default installs no Rust handler.
    let _ = unsafe { signal(signal_number, SigHandler::SigDfl) };
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(signal_number);
    let _ = set.thread_unblock();
    let _ = nix::sys::signal::raise(signal_number);
    std::process::exit(128 + signal_number as i32)
}

fn read_to_end(fd: std::os::fd::BorrowedFd<'_>, out: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 4096];
    loop {
        match nix::unistd::read(fd, &mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}

fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        None
    } else {
        // SAFETY: the kernel just returned this descriptor to us.
        Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number; failure is reported through the return value.
    let result = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn bring_loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is a plain C struct for which all-zero bytes are a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we own; the name is NUL-terminated.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// --- the child: pid 1 of the new pid namespace ---------------------------------------------------

/// Directories of the host bound read-only at the same place (or recreated as the same symlink).
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];
/// Entries of the host's /etc the sandbox sees; everything else in /etc stays hidden.
const ETC_ENTRIES: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "localtime",
    "timezone",
    "os-release",
    "mime.types",
    "protocols",
    "services",
];
/// Device nodes bound from the host's /dev.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn become_function(
    spec: &SandboxSpec,
    tmp: Option<&mut crate::scratch::TmpMount>,
    extension_output: Option<OwnedFd>,
) -> Result<Never, LaunchFailure> {
    set_parent_death_signal();
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    build_root(spec, tmp)?;
    set_limits()?;
    close_inherited_descriptors();
    drop_privileges()?;
    // Changing credentials clears the parent-death signal: set it again.
    set_parent_death_signal();
    std::env::set_current_dir("/var/task")
        .map_err(|error| setup_error("chdir /var/task", error))?;
    reset_signals();
    if spec.opt_dir.is_some() {
        start_extensions(spec, extension_output.as_ref());
    }
    drop(extension_output);
    exec_bootstrap(spec)
}

/// Where layers put external extensions (agents), as on Lambda.
pub const EXTENSIONS_DIR: &str = "/opt/extensions";

/// Starts every executable file of [`EXTENSIONS_DIR`], in name order, as a child of the process
/// about to become the runtime: the same user, environment, standard output and error (the
/// function's log), and the same sandbox, so they die with it. An extension that cannot be executed
/// says so on standard error; whether extensions register is the Runtime API's business. With
/// `output`, their standard output and error go to that pipe instead (the server reads it apart from
/// the function's, as Lambda tells extension logs from function logs).
fn start_extensions(spec: &SandboxSpec, output: Option<&OwnedFd>) {
    let Ok(entries) = fs::read_dir(EXTENSIONS_DIR) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| {
            path.metadata()
                .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .collect();
    paths.sort();
    let env: Vec<CString> = spec
        .env
        .iter()
        .filter_map(|(name, value)| CString::new(format!("{name}={value}")).ok())
        .collect();
    for path in paths {
        let Ok(path_c) = CString::new(path.as_os_str().as_bytes()) else {
            continue;
        };
        // SAFETY: this process is single-threaded (it is about to exec the bootstrap), so the
        // child may run ordinary code until it execs or exits.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                if let Some(output) = output {
                    // SAFETY: dup2 onto the standard descriptors of this single-threaded child;
                    // the copies are not close-on-exec, the original is.
                    unsafe {
                        libc::dup2(output.as_raw_fd(), 1);
                        libc::dup2(output.as_raw_fd(), 2);
                    }
                }
                let argv = [path_c.clone()];
                let errno = match nix::unistd::execve(&path_c, &argv, &env) {
                    Ok(never) => match never {},
                    Err(errno) => errno,
                };
                let message = format!(
                    "extension {} could not be started: {}\n",
                    path.display(),
                    explain_exec_failure(&path, errno)
                );
                let _ = nix::unistd::write(std::io::stderr(), message.as_bytes());
                // SAFETY: _exit in a forked child.
                unsafe { libc::_exit(127) }
            }
            Ok(ForkResult::Parent { .. }) => {}
            Err(errno) => {
                let message = format!(
                    "extension {} could not be started: fork: {errno}\n",
                    path.display()
                );
                let _ = nix::unistd::write(std::io::stderr(), message.as_bytes());
            }
        }
    }
}

/// If the reaper dies (killed, or the machine's OOM killer), the function dies with it.
fn set_parent_death_signal() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
}

fn mount_error(what: &str, target: &Path, errno: nix::errno::Errno) -> LaunchFailure {
    LaunchFailure::Setup(format!("{what} {}: {errno}", target.display()))
}

fn build_root(
    spec: &SandboxSpec,
    tmp_mount: Option<&mut crate::scratch::TmpMount>,
) -> Result<(), LaunchFailure> {
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|errno| mount_error("making mounts private at", Path::new("/"), errno))?;

    // Work as bubblewrap does: a scratch tmpfs becomes the root for a moment, with the host's root
    // reachable at /oldroot (so every host path, /tmp included, can still be bound) and the new
    // root being assembled at /newroot.
    let base = Path::new("/tmp");
    mount(
        Some("tmpfs"),
        base,
        Some("tmpfs"),
        nosuid_nodev,
        Some("mode=0700,size=64k"),
    )
    .map_err(|errno| mount_error("mounting scratch tmpfs at", base, errno))?;
    for dir in ["newroot", "oldroot"] {
        fs::create_dir(base.join(dir))
            .map_err(|error| setup_error(format_args!("mkdir {dir}"), error))?;
    }
    mount(
        Some("tmpfs"),
        &base.join("newroot"),
        Some("tmpfs"),
        nosuid_nodev,
        Some("mode=0755,size=1m,nr_inodes=4096"),
    )
    .map_err(|errno| mount_error("mounting root tmpfs at", &base.join("newroot"), errno))?;
    nix::unistd::chdir(base).map_err(|errno| mount_error("chdir", base, errno))?;
    nix::unistd::pivot_root(".", "oldroot")
        .map_err(|errno| mount_error("pivot_root", base, errno))?;
    nix::unistd::chdir("/").map_err(|errno| mount_error("chdir", Path::new("/"), errno))?;

    let new_root = Path::new("/newroot");
    let old_root = Path::new("/oldroot");
    let inside = |path: &Path| new_root.join(path.strip_prefix("/").unwrap_or(path));
    let host = |path: &Path| old_root.join(path.strip_prefix("/").unwrap_or(path));

    for dir in SYSTEM_DIRS {
        replicate_or_bind(&host(Path::new(dir)), &inside(Path::new(dir)))?;
    }

    // A minimal /etc: our own identity files, and the few host entries programs need to run.
    let etc = inside(Path::new("/etc"));
    fs::create_dir_all(&etc).map_err(|error| setup_error("mkdir /etc", error))?;
    let files = [
        (
            "passwd",
            format!(
                "root:x:0:0:root:/root:/sbin/nologin\nsbx_user1051:x:{SANDBOX_UID}:{SANDBOX_GID}::/tmp:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
            ),
        ),
        (
            "group",
            format!("root:x:0:\nsbx_user1051:x:{SANDBOX_GID}:\nnogroup:x:65534:\n"),
        ),
        (
            "hosts",
            // `sandbox.localdomain` is where extensions listen for the Telemetry API, as on Lambda.
            format!(
                "127.0.0.1\tlocalhost {SANDBOX_HOSTNAME} sandbox.localdomain\n::1\tlocalhost\n"
            ),
        ),
        ("hostname", format!("{SANDBOX_HOSTNAME}\n")),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files dns\n".to_string(),
        ),
        (
            "resolv.conf",
            match spec.network {
                crate::NetworkMode::Egress => format!("nameserver {}\n", crate::DNS_ADDRESS),
                crate::NetworkMode::Isolated => {
                    fs::read_to_string(host(Path::new("/etc/resolv.conf"))).unwrap_or_default()
                }
            },
        ),
    ];
    for (name, content) in files {
        fs::write(etc.join(name), content)
            .map_err(|error| setup_error(format_args!("writing /etc/{name}"), error))?;
    }
    for entry in ETC_ENTRIES {
        let relative = Path::new("/etc").join(entry);
        let source = host(&relative);
        if source.symlink_metadata().is_ok() {
            replicate_or_bind(&source, &inside(&relative))?;
        }
    }

    // Function code, runtime and extra read-only paths.
    let code_source = host(&spec.code_dir);
    if !code_source.is_dir() {
        return Err(LaunchFailure::Setup(format!(
            "code directory {} does not exist or is not a directory",
            spec.code_dir.display()
        )));
    }
    bind_read_only(&code_source, &inside(Path::new("/var/task")))?;
    match &spec.runtime_dir {
        Some(runtime_dir) => {
            bind_read_only(&host(runtime_dir), &inside(Path::new("/var/runtime")))?
        }
        None => fs::create_dir_all(inside(Path::new("/var/runtime")))
            .map_err(|error| setup_error("mkdir /var/runtime", error))?,
    }
    // The function's layers, merged by the server into one directory (see wisp-engine's code.rs).
    match &spec.opt_dir {
        Some(opt_dir) => {
            let source = host(opt_dir);
            if !source.is_dir() {
                return Err(LaunchFailure::Setup(format!(
                    "layer directory {} does not exist or is not a directory",
                    opt_dir.display()
                )));
            }
            bind_read_only(&source, &inside(Path::new("/opt")))?
        }
        None => fs::create_dir_all(inside(Path::new("/opt")))
            .map_err(|error| setup_error("mkdir /opt", error))?,
    }
    for path in &spec.extra_read_only {
        let source = host(path);
        if source.symlink_metadata().is_err() {
            return Err(LaunchFailure::Setup(format!(
                "read-only path {} does not exist on the host",
                path.display()
            )));
        }
        bind_read_only(&source, &inside(path))?;
    }

    // /tmp: the function's scratch space, limited to tmp_mb: the ext4 mount the server prepared, or
    // a tmpfs (whose pages count against the memory limit) when there is none.
    let tmp = inside(Path::new("/tmp"));
    fs::create_dir_all(&tmp).map_err(|error| setup_error("mkdir /tmp", error))?;
    match tmp_mount {
        Some(mount) => mount.move_into(&tmp).map_err(|error| {
            setup_error(
                format_args!("moving the /tmp filesystem on {} into place", mount.device),
                error,
            )
        })?,
        None => {
            let tmp_options = format!("mode=1777,size={}m", spec.tmp_mb.max(1));
            mount(
                Some("tmpfs"),
                &tmp,
                Some("tmpfs"),
                nosuid_nodev,
                Some(tmp_options.as_str()),
            )
            .map_err(|errno| mount_error("mounting tmpfs at", &tmp, errno))?;
        }
    }

    // /dev: a few harmless device nodes, no tty, no block devices.
    let dev = inside(Path::new("/dev"));
    fs::create_dir_all(&dev).map_err(|error| setup_error("mkdir /dev", error))?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )
    .map_err(|errno| mount_error("mounting tmpfs at", &dev, errno))?;
    for device in DEVICES {
        let target = dev.join(device);
        fs::write(&target, b"")
            .map_err(|error| setup_error(format_args!("creating /dev/{device}"), error))?;
        mount(
            Some(&host(&Path::new("/dev").join(device))),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|errno| mount_error("binding", &target, errno))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(name))
            .map_err(|error| setup_error(format_args!("creating /dev/{name}"), error))?;
    }
    remount_read_only(&dev, false, MOUNT_ATTR_NOSUID)?;

    // A fresh /proc for the new pid namespace, with the kernel's tunables read-only.
    let proc_dir = inside(Path::new("/proc"));
    fs::create_dir_all(&proc_dir).map_err(|error| setup_error("mkdir /proc", error))?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|errno| mount_error("mounting proc at", &proc_dir, errno))?;
    for sensitive in ["sys", "sysrq-trigger", "irq", "bus", "fs"] {
        let path = proc_dir.join(sensitive);
        if path.exists() {
            mount(
                Some(&path),
                &path,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|errno| mount_error("binding", &path, errno))?;
            remount_read_only(&path, true, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)?;
        }
    }

    // Enter the new root and let go of the host's: after this nothing of it is reachable.
    nix::unistd::chdir(new_root).map_err(|errno| mount_error("chdir", new_root, errno))?;
    nix::unistd::pivot_root(".", ".")
        .map_err(|errno| mount_error("pivot_root", new_root, errno))?;
    umount2(".", MntFlags::MNT_DETACH)
        .map_err(|errno| mount_error("detaching old root", Path::new("/"), errno))?;
    nix::unistd::chdir("/").map_err(|errno| mount_error("chdir", Path::new("/"), errno))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | nosuid_nodev,
        None::<&str>,
    )
    .map_err(|errno| mount_error("remounting read-only", Path::new("/"), errno))?;
    Ok(())
}

/// Recreates a host symlink as the same symlink, or binds a host file or directory read-only.
fn replicate_or_bind(source: &Path, target: &Path) -> Result<(), LaunchFailure> {
    let Ok(metadata) = source.symlink_metadata() else {
        return Ok(());
    };
    if metadata.file_type().is_symlink() {
        let link = fs::read_link(source)
            .map_err(|error| setup_error(format_args!("readlink {}", source.display()), error))?;
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .map_err(|error| setup_error(format_args!("mkdir {}", parent.display()), error))?;
        }
        std::os::unix::fs::symlink(&link, target)
            .map_err(|error| setup_error(format_args!("symlink {}", target.display()), error))
    } else {
        bind_read_only(source, target)
    }
}

/// Binds `source` (a file or a directory, with everything mounted below it) at `target`, read-only,
/// without setuid and without device files.
fn bind_read_only(source: &Path, target: &Path) -> Result<(), LaunchFailure> {
    let metadata = fs::metadata(source)
        .map_err(|error| setup_error(format_args!("{}", display_host(source)), error))?;
    if metadata.is_dir() {
        if fs::symlink_metadata(target).is_err() {
            fs::create_dir_all(target).map_err(|error| {
                setup_error(
                    format_args!("creating mount point {}", display_inside(target)),
                    error,
                )
            })?;
        }
    } else {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|error| {
                setup_error(
                    format_args!("creating mount point {}", display_inside(parent)),
                    error,
                )
            })?;
        }
        if fs::symlink_metadata(target).is_err() {
            fs::write(target, b"").map_err(|error| {
                setup_error(
                    format_args!("creating mount point {}", display_inside(target)),
                    error,
                )
            })?;
        }
    }
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|errno| mount_error("binding", target, errno))?;
    remount_read_only(target, true, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
}

fn display_host(path: &Path) -> String {
    format!(
        "/{}",
        path.strip_prefix("/oldroot").unwrap_or(path).display()
    )
}

fn display_inside(path: &Path) -> String {
    format!(
        "/{}",
        path.strip_prefix("/newroot").unwrap_or(path).display()
    )
}

/// Makes the mount at `target` read-only (and the mounts below it when `recursive`), preferring
/// mount_setattr(2), which covers submounts, and falling back to a bind remount of the top mount.
fn remount_read_only(target: &Path, recursive: bool, extra: u64) -> Result<(), LaunchFailure> {
    let path = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| LaunchFailure::Setup(format!("path {} contains NUL", target.display())))?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | extra,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: mount_setattr reads a NUL-terminated path and a mount_attr of the size we pass.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if result == 0 {
        return Ok(());
    }
    let mut ms = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    if extra & MOUNT_ATTR_NOSUID != 0 {
        ms |= MsFlags::MS_NOSUID;
    }
    if extra & MOUNT_ATTR_NODEV != 0 {
        ms |= MsFlags::MS_NODEV;
    }
    mount(None::<&str>, target, None::<&str>, ms, None::<&str>)
        .map_err(|errno| mount_error("remounting read-only", target, errno))
}

/// The bootstrap starts with every signal at its default disposition and none blocked (the
/// launcher, as any Rust program, ignores SIGPIPE, and ignored signals survive exec).
fn reset_signals() {
    for signal_number in Signal::iterator() {
        if signal_number != Signal::SIGKILL && signal_number != Signal::SIGSTOP {
            // SAFETY: installing the default disposition runs no handler code.
            let _ = unsafe { signal(signal_number, SigHandler::SigDfl) };
        }
    }
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
}

fn set_limits() -> Result<(), LaunchFailure> {
    setrlimit(Resource::RLIMIT_CORE, 0, 0)
        .map_err(|errno| setup_error("setrlimit(RLIMIT_CORE)", errno))?;
    let (_, hard) = nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|errno| setup_error("getrlimit(RLIMIT_NOFILE)", errno))?;
    let nofile = hard.min(1024);
    setrlimit(Resource::RLIMIT_NOFILE, nofile, nofile)
        .map_err(|errno| setup_error("setrlimit(RLIMIT_NOFILE)", errno))
}

/// Everything but stdin, stdout and stderr is closed when the bootstrap starts.
fn close_inherited_descriptors() {
    // SAFETY: close_range only marks descriptors close-on-exec; none is in use by Rust objects
    // that expect to survive exec.
    unsafe {
        libc::close_range(
            3,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        )
    };
}

fn drop_privileges() -> Result<(), LaunchFailure> {
    let last_cap = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse::<libc::c_ulong>().ok())
        .unwrap_or(63);
    for cap in 0..=last_cap {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    nix::unistd::setgroups(&[]).map_err(|errno| setup_error("setgroups", errno))?;
    let gid = Gid::from_raw(SANDBOX_GID);
    let uid = Uid::from_raw(SANDBOX_UID);
    nix::unistd::setresgid(gid, gid, gid).map_err(|errno| setup_error("setresgid", errno))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|errno| setup_error("setresuid", errno))?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(setup_error(
            "prctl(PR_SET_NO_NEW_PRIVS)",
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn exec_bootstrap(spec: &SandboxSpec) -> Result<Never, LaunchFailure> {
    let program = &spec.argv[0];
    let exec_error = |reason: String| LaunchFailure::Exec {
        path: program.clone(),
        reason,
    };
    let to_cstring = |value: &str| {
        CString::new(value)
            .map_err(|_| exec_error(format!("argument {value:?} contains a NUL byte")))
    };
    let argv = spec
        .argv
        .iter()
        .map(|arg| to_cstring(arg))
        .collect::<Result<Vec<_>, _>>()?;
    let env = spec
        .env
        .iter()
        .map(|(name, value)| to_cstring(&format!("{name}={value}")))
        .collect::<Result<Vec<_>, _>>()?;
    let path = resolve_program(program, spec)
        .ok_or_else(|| exec_error("not found in PATH".to_string()))?;
    let path_c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| exec_error("path contains a NUL byte".into()))?;
    let errno = match nix::unistd::execve(&path_c, &argv, &env) {
        Ok(never) => match never {},
        Err(errno) => errno,
    };
    Err(exec_error(explain_exec_failure(&path, errno)))
}

fn resolve_program(program: &str, spec: &SandboxSpec) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let search = spec
        .env
        .iter()
        .find(|(name, _)| name == "PATH")
        .map(|(_, value)| value.as_str())
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    search
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Turns an execve errno into a sentence a function author can act on.
pub(crate) fn explain_exec_failure(path: &Path, errno: nix::errno::Errno) -> String {
    use nix::errno::Errno;
    let metadata = fs::metadata(path);
    match errno {
        Errno::ENOENT => match metadata {
            Err(_) => "no such file in the sandbox".to_string(),
            Ok(_) => match interpreter_line(path) {
                Some(interpreter) => format!(
                    "its interpreter {interpreter} does not exist in the sandbox (from the #! line)"
                ),
                None => "its program loader or a shared library does not exist in the sandbox".to_string(),
            },
        },
        Errno::EACCES => match metadata {
            Ok(m) if m.is_dir() => "it is a directory".to_string(),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => format!(
                "permission denied: the file is not executable (mode {:04o}); hint: chmod +x before zipping",
                m.permissions().mode() & 0o7777
            ),
            Ok(m) if m.uid() != SANDBOX_UID && m.permissions().mode() & 0o001 == 0 => format!(
                "permission denied: the file (mode {:04o}) is not executable by other users; the function runs as uid {SANDBOX_UID}",
                m.permissions().mode() & 0o7777
            ),
            _ => "permission denied (a directory on its path is not searchable)".to_string(),
        },
        Errno::ENOEXEC => {
            "not an executable format: a script needs a #! line, a binary must be built for this machine".to_string()
        }
        Errno::ETXTBSY => "the file is open for writing".to_string(),
        other => other.desc().to_lowercase(),
    }
}

fn interpreter_line(path: &Path) -> Option<String> {
    let bytes = fs::read(path).ok()?;
    let first = bytes.split(|b| *b == b'\n').next()?;
    let rest = first.strip_prefix(b"#!")?;
    let text = String::from_utf8_lossy(rest);
    let interpreter = text.split_whitespace().next()?;
    Some(interpreter.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_fd_argument_forms() {
        let args = |list: &[&str]| {
            list.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .into_iter()
        };
        assert_eq!(socket_fd_from_args(args(&[])), DEFAULT_SOCKET_FD);
        assert_eq!(socket_fd_from_args(args(&["--socket-fd", "7"])), 7);
        assert_eq!(socket_fd_from_args(args(&["launch", "--socket-fd=9"])), 9);
        assert_eq!(
            socket_fd_from_args(args(&["--socket-fd", "x"])),
            DEFAULT_SOCKET_FD
        );
    }

    #[test]
    fn exec_failures_are_explained() {
        use nix::errno::Errno;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        fs::write(&script, "#!/nonexistent/python -u\nprint()\n").unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
        let cases = [
            (dir.path().join("missing"), Errno::ENOENT, "no such file"),
            (
                script.clone(),
                Errno::ENOENT,
                "interpreter /nonexistent/python does not exist",
            ),
            (script.clone(), Errno::EACCES, "not executable (mode 0644)"),
            (dir.path().to_path_buf(), Errno::EACCES, "is a directory"),
            (script.clone(), Errno::ENOEXEC, "needs a #! line"),
        ];
        for (path, errno, expected) in cases {
            let message = explain_exec_failure(&path, errno);
            assert!(message.contains(expected), "{errno}: {message}");
        }
    }
}
