//! Disk-backed `/tmp`: a per-instance ext4 filesystem on a loop device, with a hard size limit.
//!
//! Why not tmpfs: tmpfs pages are charged to the memory cgroup of the process that writes them and
//! cannot be reclaimed without swap, so a function's files in `/tmp` would eat its memory limit and
//! filling `/tmp` would end in an OOM kill instead of `ENOSPC`. Why not a directory with a quota:
//! ext4 and xfs quotas need `CONFIG_QUOTA`, which many kernels (and container hosts) lack. A loop
//! device over a sparse file works everywhere loop devices do: the filesystem's size *is* the limit,
//! so writing past it fails with `ENOSPC`, and the written data lives in page cache that the kernel
//! writes back to disk and reclaims under memory pressure instead of killing the writer.
//!
//! The life of one image:
//!
//! 1. **Server side** ([`prepare`]): a sparse file is created in the scratch directory the server
//!    gives (`SandboxSpec::scratch_dir`, never visible inside a sandbox) and formatted with
//!    `mkfs.ext4` (no journal, no reserved blocks, lazy inode tables, an inode per 8 KiB; the file
//!    is a little larger than `tmp_mb` so that the free space is `tmp_mb`). The file never has a
//!    name (`O_TMPFILE`; `mkfs.ext4` reaches it through `/proc/<pid>/fd/<n>`), so nothing can be
//!    left on disk whatever happens: it is only an open descriptor. Where the filesystem has no
//!    `O_TMPFILE`, it is a named file unlinked as soon as `mkfs.ext4` is done; names carry the
//!    server's pid, and files of servers that died in that window are swept on first use of the
//!    directory.
//! 2. Still on the server side, the image is attached to a free loop device (`LOOP_CTL_GET_FREE`,
//!    then `LOOP_CONFIGURE` with `LO_FLAGS_AUTOCLEAR` and direct I/O, so that the backing file is
//!    not cached a second time) and mounted as a **detached** mount with the new mount API
//!    (`fsopen`/`fsmount`, `nosuid,nodev`): a mount that belongs to no namespace, not even the
//!    server's, and that only exists through its descriptor. Its root gets mode 1777 like `/tmp`
//!    and loses `lost+found`. The loop device is closed right away: from then on the mount alone
//!    holds the device, and when the mount goes, the device frees itself and drops the last
//!    reference to the image, whose blocks the host filesystem then reclaims.
//! 3. Steps 1 and 2 (~5 ms, a process spawn and a mount) are kept off the spawn path by a small
//!    pool of ready mounts per (directory, size), refilled by a background thread; only the first
//!    spawn of a size (or a burst larger than the pool) prepares one inline. The refill starts
//!    [`REFILL_DELAY`] after an image is taken and `mkfs.ext4` runs at `SCHED_IDLE`, so that it
//!    does not take the CPU from the cold start that took the image. Each pooled mount holds
//!    a loop device while it waits (at most [`SPARES`] × [`MAX_SIZES`]).
//! 4. The mount's descriptor goes to the launcher with the launch request (`SCM_RIGHTS`), and the
//!    launcher's child moves it to `/tmp` of the new root ([`TmpMount::move_into`]). It then lives
//!    in the sandbox's mount namespace, which dies with the sandbox's last process even if the
//!    server or the launcher is killed; a mount still in flight dies with the last descriptor.
//! 5. At exit the reaper shuts the filesystem down ([`TmpMount::discard`]) so that the final
//!    unmount does not write back data that is about to be thrown away.
//!
//! Any failure to prepare the mount falls back to the old tmpfs `/tmp`, and the sandbox reports it
//! as degraded ([`crate::SpawnedSandbox::degraded`]): a tmpfs `/tmp` counts against the memory
//! limit.
//!
//! This module must never leave an image file or a loop device behind (names exist only while
//! formatting, devices auto-clear), never put an image on tmpfs (that would be memory again), and
//! never report a disk-backed `/tmp` that is not one.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};

/// Formatted images kept ready per (scratch directory, size).
const SPARES: usize = 2;
/// Sizes the pool keeps spares for; the least recently used size is dropped beyond this.
const MAX_SIZES: usize = 8;
/// Time between taking an image and starting to format its replacement.
const REFILL_DELAY: std::time::Duration = std::time::Duration::from_millis(100);
/// Prefix of image files while they are being formatted.
const IMAGE_PREFIX: &str = "wisp-tmp-";

const LOOP_CONTROL: &str = "/dev/loop-control";
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `_IOR('X', 125, __u32)`: shut an ext4 filesystem down.
const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587D;
/// Shut down without flushing anything (the data is being thrown away).
const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 0x2;

const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

// --- server side: formatted images -------------------------------------------------------------

/// A detached mount of a fresh ext4 filesystem with `size_mb` MiB free, its image in `dir`; `Err`
/// says why a disk-backed `/tmp` is not possible (the caller falls back to tmpfs).
pub(crate) async fn prepare(dir: &Path, size_mb: u32) -> Result<MountedImage, String> {
    let key = (dir.to_path_buf(), size_mb.max(1));
    if let Some(mounted) = pool().take(&key) {
        return Ok(mounted);
    }
    let prepared = tokio::task::spawn_blocking(move || {
        let result = prepare_now(&key.0, key.1);
        if result.is_ok() {
            pool().want(key);
        }
        result
    })
    .await;
    match prepared {
        Ok(result) => result,
        Err(error) => Err(format!("preparing a /tmp filesystem failed: {error}")),
    }
}

/// Formats, attaches and mounts one image. Blocking.
fn prepare_now(dir: &Path, size_mb: u32) -> Result<MountedImage, String> {
    let image = format(dir, size_mb)?;
    mount_image(image.as_fd())
}

/// Creates, formats, opens and unlinks one image. Blocking (runs `mkfs.ext4`).
fn format(dir: &Path, size_mb: u32) -> Result<File, String> {
    if !Path::new(LOOP_CONTROL).exists() {
        return Err(format!(
            "{LOOP_CONTROL} does not exist (no loop device support)"
        ));
    }
    let mkfs = mkfs_program()?;
    prepare_dir(dir)?;
    // Preferably a file that never has a name (O_TMPFILE), formatted through /proc/<pid>/fd/<n>;
    // else a named file, unlinked as soon as mkfs is done with it.
    let unnamed = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir);
    let (file, path, _unlink) = match unnamed {
        Ok(file) => {
            let path = PathBuf::from(format!(
                "/proc/{}/fd/{}",
                std::process::id(),
                file.as_raw_fd()
            ));
            (file, path, None)
        }
        Err(_) => {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let path = dir.join(format!(
                "{IMAGE_PREFIX}{}-{}.ext4",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
                .map_err(|error| format!("creating /tmp image {}: {error}", path.display()))?;
            // Unlinked whatever happens below: the open descriptor is all that is needed.
            let unlink = Unlink(path.clone());
            (file, path, Some(unlink))
        }
    };
    file.set_len(image_bytes(size_mb))
        .map_err(|error| format!("sizing /tmp image {}: {error}", path.display()))?;
    let mut command = Command::new(mkfs);
    command
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-i",
            "8192",
            "-m",
            "0",
            "-O",
            "^has_journal,^resize_inode",
            "-E",
            "lazy_itable_init=1,nodiscard",
        ])
        .arg(&path)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and only calls sched_setscheduler,
    // which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            // Formatting is background work: it only gets CPU time nothing else wants. Where
            // SCHED_IDLE is refused it runs at the ordinary priority.
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
            Ok(())
        });
    }
    let output = command
        .output()
        .map_err(|error| format!("running {}: {error}", mkfs.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} {} failed ({}): {}",
            mkfs.display(),
            path.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(file)
}

/// Size of the image whose free space for an unprivileged user is at least `size_mb` MiB (and at
/// most about 1 MiB more): ext4 takes 1/32 for inode tables (one 256-byte inode per 8 KiB) and keeps
/// min(2%, 16 MiB) in reserve for its own allocations. The file is sparse: the slack costs nothing.
fn image_bytes(size_mb: u32) -> u64 {
    let wanted = f64::from(size_mb) + 1.0;
    let capped_reserve = (wanted + 16.0) * 32.0 / 31.0;
    let proportional_reserve = wanted / (1.0 - 1.0 / 32.0 - 1.0 / 50.0);
    let mib = capped_reserve.min(proportional_reserve);
    ((mib * 1048576.0) as u64).div_ceil(4096) * 4096
}

struct Unlink(PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// `mkfs.ext4` (or `mke2fs`, which `-t ext4` turns into the same), looked up once.
fn mkfs_program() -> Result<&'static Path, String> {
    static PROGRAM: OnceLock<Option<PathBuf>> = OnceLock::new();
    PROGRAM
        .get_or_init(|| {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let dirs: Vec<PathBuf> = std::env::split_paths(&path)
                .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
                .collect();
            ["mkfs.ext4", "mke2fs"].iter().find_map(|name| {
                dirs.iter()
                    .map(|dir| dir.join(name))
                    .find(|candidate| candidate.is_file())
            })
        })
        .as_deref()
        .ok_or_else(|| "mkfs.ext4 was not found (install e2fsprogs)".to_string())
}

/// Creates the scratch directory (mode 0700), refuses one on tmpfs, and, once per process, removes
/// images left by servers that died while formatting.
fn prepare_dir(dir: &Path) -> Result<(), String> {
    static PREPARED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let mut prepared = PREPARED.lock().unwrap_or_else(|poison| poison.into_inner());
    let prepared = prepared.get_or_insert_with(HashSet::new);
    if prepared.contains(dir) {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| format!("creating scratch directory {}: {error}", dir.display()))?;
    let stat = nix::sys::statfs::statfs(dir)
        .map_err(|errno| format!("statfs {}: {errno}", dir.display()))?;
    let kind = stat.filesystem_type().0 as i64;
    if kind == TMPFS_MAGIC || kind == RAMFS_MAGIC {
        return Err(format!(
            "scratch directory {} is on tmpfs, so its images would be held in memory",
            dir.display()
        ));
    }
    sweep_stale(dir);
    prepared.insert(dir.to_path_buf());
    Ok(())
}

/// Removes `wisp-tmp-<pid>-<n>.ext4` files whose server process no longer exists.
fn sweep_stale(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(IMAGE_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = pid as u32 == std::process::id()
            || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                != Err(nix::errno::Errno::ESRCH);
        if !alive {
            let _ = fs::remove_file(entry.path());
        }
    }
}

type Key = (PathBuf, u32);

/// Pre-formatted images, refilled in the background by one thread.
struct Pool {
    state: Mutex<PoolState>,
    refill: Mutex<Option<mpsc::Sender<Key>>>,
}

#[derive(Default)]
struct PoolState {
    sizes: HashMap<Key, Spares>,
    tick: u64,
}

#[derive(Default)]
struct Spares {
    ready: Vec<MountedImage>,
    last_used: u64,
    refilling: bool,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        state: Mutex::new(PoolState::default()),
        refill: Mutex::new(None),
    })
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// A ready mount, if one is; asks for a refill either way.
    fn take(&self, key: &Key) -> Option<MountedImage> {
        let file = {
            let mut state = self.lock();
            state.tick += 1;
            let tick = state.tick;
            let spares = state.sizes.get_mut(key)?;
            spares.last_used = tick;
            spares.ready.pop()
        };
        self.want(key.clone());
        file
    }

    /// Starts refilling `key`'s spares unless that is already under way.
    fn want(&self, key: Key) {
        {
            let mut state = self.lock();
            state.tick += 1;
            let tick = state.tick;
            let spares = state.sizes.entry(key.clone()).or_default();
            spares.last_used = spares.last_used.max(tick);
            if spares.refilling || spares.ready.len() >= SPARES {
                return;
            }
            spares.refilling = true;
            if state.sizes.len() > MAX_SIZES {
                let oldest = state
                    .sizes
                    .iter()
                    .filter(|(k, s)| **k != key && !s.refilling)
                    .min_by_key(|(_, s)| s.last_used)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    state.sizes.remove(&oldest);
                }
            }
        }
        let mut refill = self
            .refill
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if refill.is_none() {
            let (sender, receiver) = mpsc::channel::<Key>();
            let spawned = std::thread::Builder::new()
                .name("wisp-scratch".into())
                .spawn(move || {
                    for key in receiver {
                        pool().refill(&key);
                    }
                });
            if spawned.is_err() {
                self.done_refilling(&key);
                return;
            }
            *refill = Some(sender);
        }
        if let Some(sender) = refill.as_ref()
            && sender.send(key.clone()).is_err()
        {
            self.done_refilling(&key);
        }
    }

    fn done_refilling(&self, key: &Key) {
        if let Some(spares) = self.lock().sizes.get_mut(key) {
            spares.refilling = false;
        }
    }

    /// Formats images for `key` until it has its spares (runs on the refill thread), starting
    /// [`REFILL_DELAY`] after being asked so as not to compete with the cold start that took one.
    fn refill(&self, key: &Key) {
        std::thread::sleep(REFILL_DELAY);
        loop {
            let missing = match self.lock().sizes.get(key) {
                Some(spares) => spares.ready.len() < SPARES,
                None => false,
            };
            if !missing {
                break;
            }
            match prepare_now(&key.0, key.1) {
                Ok(mounted) => match self.lock().sizes.get_mut(key) {
                    Some(spares) => spares.ready.push(mounted),
                    None => break,
                },
                Err(error) => {
                    tracing::warn!(%error, "could not prepare a /tmp image in the background");
                    break;
                }
            }
        }
        self.done_refilling(key);
    }
}

/// Exercises the whole path for `wisp doctor`: formats a 4 MiB image in `dir`, attaches it to a
/// loop device, mounts it (detached, in no namespace) and writes until the filesystem refuses.
/// Returns what it saw, or why it failed. Everything it creates is gone when it returns.
pub(crate) fn probe(dir: &Path) -> Result<String, String> {
    let mounted = prepare_now(dir, 4)?;
    // SAFETY: openat relative to the root directory descriptor we own, NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            mounted.root.as_raw_fd(),
            c"probe".as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o600,
        )
    };
    let file = File::from(
        owned(fd as libc::c_long)
            .map_err(|error| format!("creating a file on {}: {error}", mounted.device))?,
    );
    let chunk = vec![0xa5u8; 1 << 20];
    let mut written = 0u64;
    let refused = loop {
        if written > 64 << 20 {
            break None;
        }
        match io::Write::write(&mut &file, &chunk) {
            Ok(n) => written += n as u64,
            Err(error) => break Some(error),
        }
    };
    drop(file);
    discard(mounted.root.as_fd());
    match refused {
        Some(error) if error.raw_os_error() == Some(libc::ENOSPC) => Ok(format!(
            "a 4 MiB ext4 image in {} on {}: writing past its size fails with ENOSPC",
            dir.display(),
            mounted.device
        )),
        Some(error) => Err(format!(
            "writing to the ext4 image on {}: {error}",
            mounted.device
        )),
        None => Err(format!(
            "a 4 MiB ext4 image on {} accepted 64 MiB",
            mounted.device
        )),
    }
}

// --- server side: loop device and detached mount ------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A formatted image mounted as a detached mount (attached to no namespace).
#[derive(Debug)]
pub(crate) struct MountedImage {
    mount: OwnedFd,
    root: OwnedFd,
    /// The loop device it is on, for messages.
    pub device: String,
}

impl MountedImage {
    /// The detached mount's descriptor, to hand to the launcher.
    pub(crate) fn into_mount(self) -> OwnedFd {
        self.mount
    }
}

/// Attaches `image` to a free loop device and mounts it (detached, `nosuid,nodev`), with its root
/// mode 1777 and no `lost+found`. The loop device clears itself when the mount goes.
fn mount_image(image: BorrowedFd<'_>) -> Result<MountedImage, String> {
    let (device, path) = attach_loop(image)?;
    // The device stays attached only while something holds it: after the mount below, the mount.
    let mount = mount_device(&path);
    drop(device);
    let mount = mount?;
    let display = path.to_string_lossy().into_owned();
    // SAFETY: openat on the detached mount's descriptor with a NUL-terminated relative path.
    let root = unsafe {
        libc::openat(
            mount.as_raw_fd(),
            c".".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if root < 0 {
        return Err(format!(
            "opening the root of {display}: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let root = unsafe { OwnedFd::from_raw_fd(root) };
    // SAFETY: fchmod on a directory descriptor we own.
    if unsafe { libc::fchmod(root.as_raw_fd(), 0o1777) } != 0 {
        return Err(format!(
            "chmod 1777 on the root of {display}: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: unlinkat relative to a directory descriptor we own, with a NUL-terminated name.
    unsafe { libc::unlinkat(root.as_raw_fd(), c"lost+found".as_ptr(), libc::AT_REMOVEDIR) };
    Ok(MountedImage {
        mount,
        root,
        device: display,
    })
}

/// The launcher's side of a prepared `/tmp`: the detached mount it received, then moved.
#[derive(Debug)]
pub(crate) struct TmpMount {
    /// The detached mount, until [`TmpMount::move_into`] attaches it.
    mount: Option<OwnedFd>,
    /// The filesystem's root directory, for [`TmpMount::discard`].
    root: Option<OwnedFd>,
    /// The loop device it is on, for messages.
    pub device: String,
}

impl TmpMount {
    pub(crate) fn received(mount: OwnedFd, device: String) -> TmpMount {
        // SAFETY: openat on the detached mount's descriptor with a NUL-terminated relative path.
        let root = unsafe {
            libc::openat(
                mount.as_raw_fd(),
                c".".as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        TmpMount {
            mount: Some(mount),
            root: owned(root as libc::c_long).ok(),
            device,
        }
    }

    /// The detached mount's descriptor, while it has not been moved (to pass it on).
    pub(crate) fn mount_fd(&self) -> Option<RawFd> {
        self.mount.as_ref().map(|mount| mount.as_raw_fd())
    }

    /// Moves the detached mount to `target` (the child, while building its root).
    pub(crate) fn move_into(&mut self, target: &Path) -> io::Result<()> {
        let mount = self
            .mount
            .take()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        let target = CString::new(target.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: move_mount from the detached mount's descriptor (empty path) to a NUL-terminated
        // absolute path; both outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                mount.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// See [`discard`].
    pub(crate) fn discard(&self) {
        if let Some(root) = &self.root {
            discard(root.as_fd());
        }
    }
}

/// Shuts the filesystem down without writing anything back: once the sandbox is gone its data is
/// garbage, and the unmount that follows then has nothing to flush.
fn discard(root: BorrowedFd<'_>) {
    let mut flags = EXT4_GOING_FLAGS_NOLOGFLUSH;
    // SAFETY: EXT4_IOC_SHUTDOWN reads one u32 from the pointer we pass; a filesystem that does not
    // know the ioctl rejects it without side effects.
    unsafe { libc::ioctl(root.as_raw_fd(), EXT4_IOC_SHUTDOWN, &mut flags as *mut u32) };
}

/// Attaches `image` to a free loop device with auto-clear (and direct I/O where the kernel allows);
/// returns the open device and its path.
fn attach_loop(image: BorrowedFd<'_>) -> Result<(OwnedFd, CString), String> {
    let control = open(c"/dev/loop-control", libc::O_RDWR)
        .map_err(|error| format!("opening {LOOP_CONTROL}: {error}"))?;
    let mut last_error = String::new();
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1.
        let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if number < 0 {
            return Err(format!(
                "LOOP_CTL_GET_FREE on {LOOP_CONTROL}: {}",
                io::Error::last_os_error()
            ));
        }
        let path = CString::new(format!("/dev/loop{number}")).expect("no NUL");
        let device = match open(&path, libc::O_RDWR) {
            Ok(device) => device,
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => {
                make_node(number, &path)?;
                open(&path, libc::O_RDWR)
                    .map_err(|error| format!("opening {}: {error}", path.to_string_lossy()))?
            }
            Err(error) => return Err(format!("opening {}: {error}", path.to_string_lossy())),
        };
        match configure(&device, image) {
            Ok(()) => return Ok((device, path)),
            // Another process took the device between GET_FREE and CONFIGURE: try the next.
            Err(error) if error.raw_os_error() == Some(libc::EBUSY) => {
                last_error = format!("{}: {error}", path.to_string_lossy());
            }
            Err(error) => {
                return Err(format!(
                    "attaching the /tmp image to {}: {error}",
                    path.to_string_lossy()
                ));
            }
        }
    }
    Err(format!("no free loop device ({last_error})"))
}

fn configure(device: &OwnedFd, image: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: LoopInfo64 is a plain C struct for which all-zero bytes are a valid value.
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    info.lo_flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO;
    let mut config = LoopConfig {
        fd: image.as_raw_fd() as u32,
        block_size: 4096,
        info,
        reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads a loop_config that lives until the call returns.
    let mut rc = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config) };
    if rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // Direct I/O is not possible on this backing file: cached I/O is still disk-backed.
        config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: as above.
        rc = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config) };
    }
    if rc == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() != Some(libc::ENOTTY) {
        return Err(error);
    }
    // Kernels before 5.8: LOOP_SET_FD, then the auto-clear flag.
    // SAFETY: LOOP_SET_FD takes the backing file's descriptor as its argument.
    if unsafe { libc::ioctl(device.as_raw_fd(), LOOP_SET_FD, image.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    info.lo_flags = LO_FLAGS_AUTOCLEAR;
    // SAFETY: LOOP_SET_STATUS64 reads a loop_info64 that lives until the call returns.
    if unsafe { libc::ioctl(device.as_raw_fd(), LOOP_SET_STATUS64, &info) } != 0 {
        let error = io::Error::last_os_error();
        // SAFETY: LOOP_CLR_FD takes no argument.
        unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CLR_FD, 0) };
        return Err(error);
    }
    Ok(())
}

/// Creates `/dev/loopN` from sysfs where the host's /dev has no node for a new loop device (a
/// static /dev in a container).
fn make_node(number: libc::c_int, path: &CStr) -> Result<(), String> {
    let sys = format!("/sys/devices/virtual/block/loop{number}/dev");
    let numbers = fs::read_to_string(&sys).map_err(|error| {
        format!(
            "{} does not exist and {sys} is unreadable: {error}",
            path.to_string_lossy()
        )
    })?;
    let (major, minor) = numbers
        .trim()
        .split_once(':')
        .and_then(|(major, minor)| Some((major.parse().ok()?, minor.parse().ok()?)))
        .ok_or_else(|| format!("unexpected content of {sys}: {numbers:?}"))?;
    // SAFETY: mknod with a NUL-terminated path and a device number.
    let rc = unsafe {
        libc::mknod(
            path.as_ptr(),
            libc::S_IFBLK | 0o600,
            libc::makedev(major, minor),
        )
    };
    if rc != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
        return Err(format!(
            "creating device node {}: {}",
            path.to_string_lossy(),
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// `fsopen("ext4")` + `fsconfig(source, noinit_itable)` + `fsmount(nosuid, nodev)`.
fn mount_device(device: &CStr) -> Result<OwnedFd, String> {
    let what = |call: &str| format!("{call} for ext4 on {}", device.to_string_lossy());
    // SAFETY: fsopen with a NUL-terminated filesystem name and flags; returns a descriptor or -1.
    let context = unsafe { libc::syscall(libc::SYS_fsopen, c"ext4".as_ptr(), FSOPEN_CLOEXEC) };
    let context = owned(context).map_err(|error| format!("{}: {error}", what("fsopen")))?;
    let config = |command: libc::c_uint, key: Option<&CStr>, value: Option<&CStr>| {
        // SAFETY: fsconfig on the context we own, with NUL-terminated key and value (or null).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                context.as_raw_fd(),
                command,
                key.map_or(std::ptr::null(), CStr::as_ptr),
                value.map_or(std::ptr::null(), CStr::as_ptr),
                0,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    config(FSCONFIG_SET_STRING, Some(c"source"), Some(device))
        .map_err(|error| format!("{}: {error}", what("fsconfig source")))?;
    // The image is fresh and sparse: its inode tables already read as zeros.
    config(FSCONFIG_SET_FLAG, Some(c"noinit_itable"), None)
        .map_err(|error| format!("{}: {error}", what("fsconfig noinit_itable")))?;
    config(FSCONFIG_CMD_CREATE, None, None)
        .map_err(|error| format!("{}: {error}", what("fsconfig create")))?;
    // SAFETY: fsmount on the context we own with flags and mount attributes; returns a descriptor.
    let mount = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            context.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        )
    };
    owned(mount).map_err(|error| format!("{}: {error}", what("fsmount")))
}

fn open(path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: open with a NUL-terminated path; returns a descriptor or -1.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    owned(fd as libc::c_long)
}

fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_leave_the_requested_space_free() {
        // Checked against df on real images: free space is tmp_mb plus at most ~1 MiB (a little
        // more for tiny sizes).
        for (mb, image_mib) in [(1, 2), (4, 5), (64, 68), (512, 540), (10240, 10587)] {
            assert_eq!(image_bytes(mb) >> 20, image_mib, "{mb} MiB");
            assert_eq!(image_bytes(mb) % 4096, 0);
        }
    }
}
