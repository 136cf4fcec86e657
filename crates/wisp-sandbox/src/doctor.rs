//! `wisp doctor` for sandboxes: which isolation mechanisms this machine offers, probed for real
//! (each namespace is created in a short-lived child process, tmpfs size limits and pivot_root are
//! tried in a private mount namespace, a disk-backed `/tmp` is formatted, attached to a loop device,
//! mounted detached and filled until `ENOSPC`), so that the server can say once at start what it
//! cannot enforce.
//!
//! This module must never change anything outside the probe's own throw-away child processes,
//! namespaces, image file (unlinked at once) and loop device (cleared when its mount goes), and must
//! never report a mechanism as available without having exercised it or read the kernel's own
//! statement of it.

use std::ffi::CString;
use std::fmt;
use std::path::Path;

use crate::cgroup::{Layout, Version};

/// Whether a mechanism can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Available,
    Unavailable,
    /// The kernel may offer it but Wisp does not use it (yet).
    NotUsed,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Available => "available",
            Status::Unavailable => "unavailable",
            Status::NotUsed => "not used",
        })
    }
}

/// One isolation mechanism and what the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mechanism {
    pub name: &'static str,
    pub status: Status,
    /// Why, or where (for example the cgroup directory in use).
    pub detail: String,
    /// Whether sandboxes depend on it: a required mechanism that is unavailable means degraded
    /// isolation (or no sandboxes at all).
    pub required: bool,
}

/// Everything [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationReport {
    pub mechanisms: Vec<Mechanism>,
}

impl IsolationReport {
    /// Required mechanisms that are unavailable.
    pub fn degraded(&self) -> impl Iterator<Item = &Mechanism> {
        self.mechanisms
            .iter()
            .filter(|m| m.required && m.status == Status::Unavailable)
    }

    pub fn is_fully_isolated(&self) -> bool {
        self.degraded().next().is_none()
    }

    pub fn get(&self, name: &str) -> Option<&Mechanism> {
        self.mechanisms.iter().find(|m| m.name == name)
    }
}

impl fmt::Display for IsolationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .mechanisms
            .iter()
            .map(|m| m.name.len())
            .max()
            .unwrap_or(9)
            .max(9);
        writeln!(f, "{:<width$}  {:<11}  detail", "mechanism", "status")?;
        for mechanism in &self.mechanisms {
            let status = if mechanism.required && mechanism.status == Status::Unavailable {
                "UNAVAILABLE".to_string()
            } else {
                mechanism.status.to_string()
            };
            writeln!(
                f,
                "{:<width$}  {:<11}  {}",
                mechanism.name, status, mechanism.detail
            )?;
        }
        let degraded: Vec<&str> = self.degraded().map(|m| m.name).collect();
        if degraded.is_empty() {
            write!(f, "sandboxes: fully isolated")
        } else {
            write!(f, "sandboxes: DEGRADED, missing {}", degraded.join(", "))
        }
    }
}

/// Probes this machine. Takes a few milliseconds (it forks a handful of short-lived children).
pub fn probe() -> IsolationReport {
    let mut mechanisms = Vec::new();
    let root = nix::unistd::geteuid().is_root();
    mechanisms.push(Mechanism {
        name: "root",
        status: if root {
            Status::Available
        } else {
            Status::Unavailable
        },
        detail: if root {
            "the launcher runs as root and drops to uid 993 before exec".into()
        } else {
            "the launcher needs root; unprivileged launch through user namespaces is not supported yet".into()
        },
        required: true,
    });

    for (name, flag, required) in [
        ("mount namespace", libc::CLONE_NEWNS, true),
        ("pid namespace", libc::CLONE_NEWPID, true),
        ("network namespace", libc::CLONE_NEWNET, true),
        ("ipc namespace", libc::CLONE_NEWIPC, true),
        ("uts namespace", libc::CLONE_NEWUTS, true),
        ("user namespace", libc::CLONE_NEWUSER, false),
    ] {
        let result = in_child(|| {
            // SAFETY: unshare with a flag; runs in a forked child that exits right after.
            if unsafe { libc::unshare(flag) } == 0 {
                0
            } else {
                errno()
            }
        });
        let mut mechanism = outcome(
            name,
            required,
            result,
            &format!("unshare({})", clone_flag_name(flag)),
        );
        if flag == libc::CLONE_NEWUSER {
            mechanism.status = match mechanism.status {
                Status::Available => Status::NotUsed,
                other => other,
            };
            mechanism.detail = format!(
                "{}; not used while the launcher runs as root",
                mechanism.detail
            );
        }
        mechanisms.push(mechanism);
    }

    mechanisms.extend(cgroup_mechanisms(&Layout::discover()));

    let tmpfs = probe_private_mounts();
    mechanisms.push(outcome(
        "tmpfs size limit",
        true,
        tmpfs.0,
        "mount tmpfs size=1m",
    ));
    mechanisms.push(outcome(
        "pivot_root",
        true,
        tmpfs.1,
        "pivot_root(\".\", \".\") on a tmpfs",
    ));
    mechanisms.push(disk_backed_tmp());

    // mount_setattr(2): recursive read-only binds. Without it only the top mount of each bind is
    // made read-only.
    // SAFETY: invalid arguments on purpose: the call fails with EBADF/EINVAL when the syscall
    // exists and ENOSYS when it does not; nothing is changed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            c"".as_ptr(),
            0,
            std::ptr::null::<u8>(),
            0,
        )
    };
    let missing = rc != 0 && errno() == libc::ENOSYS;
    mechanisms.push(Mechanism {
        name: "recursive read-only binds",
        status: if missing {
            Status::Unavailable
        } else {
            Status::Available
        },
        detail: if missing {
            "mount_setattr(2) is missing (kernel < 5.12): mounts below /usr and other binds stay writable by root".into()
        } else {
            "mount_setattr(2)".into()
        },
        required: false,
    });

    // SAFETY: pidfd_open on our own pid; the descriptor is closed right away.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    if pidfd >= 0 {
        // SAFETY: closing the descriptor we just opened.
        unsafe { libc::close(pidfd as libc::c_int) };
    }
    mechanisms.push(Mechanism {
        name: "pidfd",
        status: if pidfd >= 0 {
            Status::Available
        } else {
            Status::Unavailable
        },
        detail: if pidfd >= 0 {
            "signals reach the right process even after pid reuse".into()
        } else {
            format!(
                "pidfd_open: {}; signals are sent by pid",
                std::io::Error::from_raw_os_error(errno())
            )
        },
        required: false,
    });

    let seccomp = std::fs::read_to_string("/proc/self/status")
        .map(|status| status.lines().any(|line| line.starts_with("Seccomp:")))
        .unwrap_or(false);
    mechanisms.push(Mechanism {
        name: "seccomp",
        status: Status::NotUsed,
        detail: if seccomp {
            "the kernel supports it; no filter is installed yet".into()
        } else {
            "the kernel does not support it".into()
        },
        required: false,
    });
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) only returns the ABI
    // version (or an error); it creates nothing.
    let landlock = unsafe { libc::syscall(444, std::ptr::null::<u8>(), 0, 1u32) };
    mechanisms.push(Mechanism {
        name: "landlock",
        status: Status::NotUsed,
        detail: if landlock > 0 {
            format!("the kernel supports it (abi {landlock}); not used: the private root already hides the host")
        } else {
            format!(
                "the kernel does not offer it ({})",
                std::io::Error::from_raw_os_error(errno())
            )
        },
        required: false,
    });
    let (status, detail) = match crate::network::describe_slirp4netns() {
        Ok(detail) => (Status::Available, detail),
        Err(detail) => (Status::Unavailable, detail),
    };
    mechanisms.push(Mechanism {
        name: "network egress",
        status,
        detail,
        required: false,
    });
    IsolationReport { mechanisms }
}

/// `/tmp` as a size-limited ext4 image on a loop device. The server's scratch directory is under its
/// data directory, which the probe does not know: it formats in the system's temporary directory,
/// or `/var/tmp` when that is a tmpfs.
fn disk_backed_tmp() -> Mechanism {
    let on_tmpfs = |dir: &Path| {
        nix::sys::statfs::statfs(dir)
            .map(|stat| stat.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
            .unwrap_or(false)
    };
    let temp = std::env::temp_dir();
    let dir = if on_tmpfs(&temp) && Path::new("/var/tmp").is_dir() {
        Path::new("/var/tmp").to_path_buf()
    } else {
        temp
    };
    let (status, detail) = if !nix::unistd::geteuid().is_root() {
        (
            Status::Unavailable,
            "needs root (loop devices and mounts)".to_string(),
        )
    } else {
        match crate::scratch::probe(&dir) {
            Ok(detail) => (Status::Available, detail),
            Err(reason) => (
                Status::Unavailable,
                format!("{reason}; /tmp is a tmpfs whose files count against the memory limit"),
            ),
        }
    };
    Mechanism {
        name: "disk-backed /tmp",
        status,
        detail,
        required: true,
    }
}

fn cgroup_mechanisms(layout: &Layout) -> Vec<Mechanism> {
    let mut mechanisms = Vec::new();
    for (name, location) in [
        ("memory cgroup", &layout.memory),
        ("pids cgroup", &layout.pids),
    ] {
        mechanisms.push(match location {
            Ok(location) => {
                let writable =
                    nix::unistd::access(&location.own_dir, nix::unistd::AccessFlags::W_OK).is_ok();
                Mechanism {
                    name,
                    status: if writable {
                        Status::Available
                    } else {
                        Status::Unavailable
                    },
                    detail: format!(
                        "{} at {}{}",
                        match location.version {
                            Version::V1 => "v1",
                            Version::V2 => "v2",
                        },
                        location.own_dir.display(),
                        if writable {
                            ""
                        } else {
                            " (not writable: cannot create sandbox cgroups)"
                        }
                    ),
                    required: true,
                }
            }
            Err(reason) => Mechanism {
                name,
                status: Status::Unavailable,
                detail: reason.clone(),
                required: true,
            },
        });
    }
    if let Ok(location) = &layout.memory {
        let dir = &location.own_dir;
        let (swap_file, oom_file, oom_key) = match location.version {
            Version::V1 => (
                "memory.memsw.limit_in_bytes",
                "memory.oom_control",
                "oom_kill ",
            ),
            Version::V2 => ("memory.swap.max", "memory.events", "oom_kill "),
        };
        let swap = dir.join(swap_file).exists();
        let swap_in_use = std::fs::read_to_string("/proc/swaps")
            .map(|text| text.lines().count() > 1)
            .unwrap_or(false);
        mechanisms.push(Mechanism {
            name: "swap limit",
            status: if swap || !swap_in_use {
                Status::Available
            } else {
                Status::Unavailable
            },
            detail: match (swap, swap_in_use) {
                (true, _) => swap_file.to_string(),
                (false, false) => format!("{swap_file} missing, but the machine has no swap"),
                (false, true) => {
                    format!("{swap_file} missing (swap accounting off): sandboxes may swap")
                }
            },
            required: false,
        });
        let oom = std::fs::read_to_string(dir.join(oom_file))
            .map(|text| text.lines().any(|line| line.starts_with(oom_key)))
            .unwrap_or(false);
        mechanisms.push(Mechanism {
            name: "oom kill counter",
            status: if oom {
                Status::Available
            } else {
                Status::Unavailable
            },
            detail: if oom {
                oom_file.to_string()
            } else {
                format!("{oom_file} has no oom_kill line: out-of-memory deaths look like SIGKILL")
            },
            required: false,
        });
        let kill = location.version == Version::V2 && dir.join("cgroup.kill").exists();
        mechanisms.push(Mechanism {
            name: "cgroup.kill",
            status: if kill {
                Status::Available
            } else {
                Status::NotUsed
            },
            detail: if kill {
                "SIGKILL empties the whole cgroup at once".into()
            } else {
                "not on cgroup v1; killing pid 1 of the pid namespace kills the rest".into()
            },
            required: false,
        });
    }
    mechanisms
}

/// Tries, in children with a private mount namespace, a size-limited tmpfs and pivot_root into it.
fn probe_private_mounts() -> (Result<(), i32>, Result<(), i32>) {
    let Some(base) = ["/tmp", "/mnt", "/run"]
        .into_iter()
        .find(|dir| Path::new(dir).is_dir())
    else {
        return (Err(libc::ENOENT), Err(libc::ENOENT));
    };
    let base = CString::new(base).expect("no NUL");
    let tmpfs = c"tmpfs";
    let options = c"size=1m";
    let root = c"/";
    let dot = c".";
    let mount_private_tmpfs = || {
        // SAFETY: runs in a forked child that exits right after; system calls on C strings
        // prepared before the fork only.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                || libc::mount(
                    tmpfs.as_ptr(),
                    base.as_ptr(),
                    tmpfs.as_ptr(),
                    0,
                    options.as_ptr().cast(),
                ) != 0
            {
                return errno();
            }
        }
        0
    };
    let size = in_child(|| {
        let code = mount_private_tmpfs();
        if code != 0 {
            return code;
        }
        // SAFETY: statvfs fills the zeroed structure we own.
        unsafe {
            let mut stat: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(base.as_ptr(), &mut stat) != 0 {
                return errno();
            }
            if stat.f_blocks as u64 * stat.f_frsize as u64 != 1 << 20 {
                return libc::EINVAL;
            }
        }
        0
    });
    let pivot = in_child(|| {
        let code = mount_private_tmpfs();
        if code != 0 {
            return code;
        }
        // SAFETY: chdir and pivot_root inside the child's own mount namespace.
        unsafe {
            if libc::chdir(base.as_ptr()) != 0
                || libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) != 0
            {
                return errno();
            }
        }
        0
    });
    (size, pivot)
}

fn outcome(name: &'static str, required: bool, result: Result<(), i32>, call: &str) -> Mechanism {
    match result {
        Ok(()) => Mechanism {
            name,
            status: Status::Available,
            detail: format!("{call}: ok"),
            required,
        },
        Err(code) => Mechanism {
            name,
            status: Status::Unavailable,
            detail: format!(
                "{call}: {}",
                std::io::Error::from_raw_os_error(code)
                    .to_string()
                    .to_lowercase()
            ),
            required,
        },
    }
}

fn clone_flag_name(flag: libc::c_int) -> &'static str {
    match flag {
        libc::CLONE_NEWNS => "CLONE_NEWNS",
        libc::CLONE_NEWPID => "CLONE_NEWPID",
        libc::CLONE_NEWNET => "CLONE_NEWNET",
        libc::CLONE_NEWIPC => "CLONE_NEWIPC",
        libc::CLONE_NEWUTS => "CLONE_NEWUTS",
        libc::CLONE_NEWUSER => "CLONE_NEWUSER",
        _ => "?",
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Runs `probe` in a forked child and returns `Ok` when it returned 0, else its code.
/// `probe` must only make async-signal-safe calls: the parent may have other threads.
fn in_child(probe: impl FnOnce() -> i32) -> Result<(), i32> {
    // SAFETY: the child only runs `probe` (system calls on data prepared before the fork) and
    // `_exit`s; it never returns into Rust code that could touch locks held by other threads.
    match unsafe { libc::fork() } {
        -1 => Err(errno()),
        0 => {
            let code = probe();
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(code.clamp(0, 255)) }
        }
        child => {
            let mut status = 0;
            // SAFETY: waiting for the child we just forked.
            while unsafe { libc::waitpid(child, &mut status, 0) } < 0 {
                if errno() != libc::EINTR {
                    return Err(errno());
                }
            }
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                Ok(())
            } else if libc::WIFEXITED(status) {
                Err(libc::WEXITSTATUS(status))
            } else {
                Err(libc::ECHILD)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reports_every_mechanism_and_prints_a_table() {
        let report = probe();
        for name in [
            "root",
            "mount namespace",
            "pid namespace",
            "network namespace",
            "ipc namespace",
            "uts namespace",
            "user namespace",
            "memory cgroup",
            "pids cgroup",
            "tmpfs size limit",
            "pivot_root",
            "disk-backed /tmp",
            "seccomp",
            "landlock",
        ] {
            assert!(report.get(name).is_some(), "missing {name}");
        }
        let table = report.to_string();
        assert!(table.starts_with("mechanism"), "{table}");
        assert!(table.contains("sandboxes: "), "{table}");
        eprintln!("{table}");
        if nix::unistd::geteuid().is_root() {
            for name in [
                "mount namespace",
                "pid namespace",
                "network namespace",
                "tmpfs size limit",
                "pivot_root",
                "disk-backed /tmp",
            ] {
                assert_eq!(
                    report.get(name).unwrap().status,
                    Status::Available,
                    "{name}\n{table}"
                );
            }
        }
    }

    #[test]
    fn degraded_lists_only_required_unavailable_mechanisms() {
        let report = IsolationReport {
            mechanisms: vec![
                Mechanism {
                    name: "memory cgroup",
                    status: Status::Unavailable,
                    detail: "no controller".into(),
                    required: true,
                },
                Mechanism {
                    name: "seccomp",
                    status: Status::NotUsed,
                    detail: String::new(),
                    required: false,
                },
                Mechanism {
                    name: "pidfd",
                    status: Status::Unavailable,
                    detail: String::new(),
                    required: false,
                },
            ],
        };
        let degraded: Vec<&str> = report.degraded().map(|m| m.name).collect();
        assert_eq!(degraded, ["memory cgroup"]);
        assert!(!report.is_fully_isolated());
        let table = report.to_string();
        assert!(table.contains("UNAVAILABLE"), "{table}");
        assert!(
            table.ends_with("sandboxes: DEGRADED, missing memory cgroup"),
            "{table}"
        );
    }
}
