//! Control groups for sandboxes, cgroup v1 and v2, through their files (no D-Bus, no systemd).
//!
//! [`Layout::discover`] finds where the memory and pids controllers live for the server's own
//! process (a v1 hierarchy per controller, or the v2 unified hierarchy, or nowhere), and
//! [`InstanceCgroup::create`] makes one instance's cgroups *below the server's own cgroup*, sets
//! their limits, and later reads their counters and removes them.
//!
//! This module must never touch a cgroup it did not create (it only reads the server's own cgroup
//! and, on v2, enables controllers for its children), and must never report a limit as applied
//! when the controller is missing: callers get the list of what could not be done.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Name of the directory under the server's own cgroup that holds the instances' cgroups.
pub const PARENT_NAME: &str = "wisp";
/// On cgroup v2, where the server moves itself when its own cgroup must become an inner node.
pub const SERVER_LEAF_NAME: &str = "wisp-server";

/// Which cgroup version a controller is mounted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The controllers Wisp uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Memory,
    Pids,
}

impl Controller {
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
        }
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where one controller is available for the server's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerLocation {
    pub version: Version,
    /// The server's own cgroup directory in that hierarchy.
    pub own_dir: PathBuf,
}

/// Where the memory and pids controllers are, or why they are not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub memory: Result<ControllerLocation, String>,
    pub pids: Result<ControllerLocation, String>,
}

/// A cgroup file operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("cgroup {op} {path}: {source}")]
pub struct CgroupError {
    /// What was being done: `create`, `write`, `read`, `remove`.
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl CgroupError {
    fn new(op: &'static str, path: &Path, source: io::Error) -> Self {
        CgroupError {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether trying again later can help: a cgroup whose last processes are still exiting
    /// cannot be removed yet (`EBUSY`), an interrupted or temporarily refused write (`EAGAIN`).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.source.raw_os_error(),
            Some(libc::EBUSY) | Some(libc::EAGAIN) | Some(libc::EINTR)
        )
    }
}

/// Limits for one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub pids_max: u32,
}

impl Layout {
    /// Reads `/proc/self/mountinfo` and `/proc/self/cgroup`.
    pub fn discover() -> Layout {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let proc_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Layout::from_proc(&mountinfo, &proc_cgroup, |path| {
            fs::read_to_string(path.join("cgroup.controllers")).ok()
        })
    }

    /// Pure part of [`Layout::discover`]: `read_controllers` returns the content of
    /// `cgroup.controllers` of a v2 directory.
    pub fn from_proc(
        mountinfo: &str,
        proc_cgroup: &str,
        read_controllers: impl Fn(&Path) -> Option<String>,
    ) -> Layout {
        let mounts = parse_mountinfo(mountinfo);
        let membership = parse_proc_cgroup(proc_cgroup);
        let locate = |controller: Controller| -> Result<ControllerLocation, String> {
            let name = controller.name();
            // A controller is in at most one hierarchy: a v1 mount naming it wins.
            if let Some(mount) = mounts
                .iter()
                .find(|m| m.version == Version::V1 && m.controllers.iter().any(|c| c == name))
            {
                let own = membership
                    .iter()
                    .find(|(_, controllers, _)| controllers.iter().any(|c| c == name))
                    .map(|(_, _, path)| path.as_str())
                    .ok_or_else(|| {
                        format!("{name} is mounted (v1) but /proc/self/cgroup has no {name} line")
                    })?;
                let own_dir =
                    join_cgroup_path(&mount.mount_point, &mount.root, own).ok_or_else(|| {
                        format!(
                            "own {name} cgroup {own} is outside the mount at {}",
                            mount.mount_point.display()
                        )
                    })?;
                return Ok(ControllerLocation {
                    version: Version::V1,
                    own_dir,
                });
            }
            let Some(mount) = mounts.iter().find(|m| m.version == Version::V2) else {
                return Err(format!(
                    "no cgroup v1 {name} hierarchy and no cgroup v2 mount"
                ));
            };
            let own = membership
                .iter()
                .find(|(id, _, _)| *id == 0)
                .map(|(_, _, path)| path.as_str())
                .ok_or("cgroup v2 is mounted but /proc/self/cgroup has no 0:: line")?;
            let own_dir =
                join_cgroup_path(&mount.mount_point, &mount.root, own).ok_or_else(|| {
                    format!(
                        "own cgroup {own} is outside the v2 mount at {}",
                        mount.mount_point.display()
                    )
                })?;
            let available = read_controllers(&own_dir).unwrap_or_default();
            if available.split_whitespace().any(|c| c == name) {
                Ok(ControllerLocation {
                    version: Version::V2,
                    own_dir,
                })
            } else {
                Err(format!(
                    "{name} controller is not enabled for {} (cgroup v2 at {}; controllers: {})",
                    own_dir.display(),
                    mount.mount_point.display(),
                    if available.trim().is_empty() {
                        "none"
                    } else {
                        available.trim()
                    }
                ))
            }
        };
        Layout {
            memory: locate(Controller::Memory),
            pids: locate(Controller::Pids),
        }
    }

    pub fn location(&self, controller: Controller) -> &Result<ControllerLocation, String> {
        match controller {
            Controller::Memory => &self.memory,
            Controller::Pids => &self.pids,
        }
    }
}

#[derive(Debug)]
struct CgroupMount {
    version: Version,
    mount_point: PathBuf,
    root: String,
    controllers: Vec<String>,
}

fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        // id parent major:minor root mount_point options [optional...] - fstype source super_options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 5 || right.len() < 3 {
            continue;
        }
        let version = match right[0] {
            "cgroup" => Version::V1,
            "cgroup2" => Version::V2,
            _ => continue,
        };
        mounts.push(CgroupMount {
            version,
            mount_point: PathBuf::from(unescape_mountinfo(left[4])),
            root: unescape_mountinfo(left[3]),
            controllers: right[2].split(',').map(str::to_owned).collect(),
        });
    }
    mounts
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lines `id:controllers:path`.
fn parse_proc_cgroup(text: &str) -> Vec<(u32, Vec<String>, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let id = parts.next()?.parse().ok()?;
            let controllers = parts
                .next()?
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            let path = parts.next()?.to_owned();
            Some((id, controllers, path))
        })
        .collect()
}

/// The directory of cgroup `own` (as in /proc/self/cgroup) under a mount of hierarchy root `root`.
fn join_cgroup_path(mount_point: &Path, root: &str, own: &str) -> Option<PathBuf> {
    let relative = if root == "/" {
        own
    } else {
        let rest = own.strip_prefix(root)?;
        if !rest.is_empty() && !rest.starts_with('/') {
            return None;
        }
        rest
    };
    let relative = relative.trim_start_matches('/');
    if relative.split('/').any(|c| c == "..") {
        return None;
    }
    Some(if relative.is_empty() {
        mount_point.to_path_buf()
    } else {
        mount_point.join(relative)
    })
}

/// One instance's cgroups: at most one directory per controller (the same directory for both
/// controllers on v2).
#[derive(Debug)]
pub struct InstanceCgroup {
    memory: Option<(Version, PathBuf)>,
    pids: Option<(Version, PathBuf)>,
    /// The memory peak file, opened on first read and kept: the engine reads it after every
    /// invocation, and one `pread` is much cheaper than open, read and close each time.
    peak_file: std::sync::OnceLock<Option<fs::File>>,
}

impl InstanceCgroup {
    /// Creates `<own cgroup>/wisp/<server pid>_<instance_id>` for each available controller and
    /// sets the limits. The server's pid in the name lets [`sweep_stale`] tell leftovers of a dead
    /// server from the cgroups of servers still running next to this one.
    /// Returns the cgroup and a sentence for each mechanism that could not be applied.
    pub fn create(
        layout: &Layout,
        instance_id: &str,
        limits: Limits,
    ) -> Result<(InstanceCgroup, Vec<String>), CgroupError> {
        if instance_id.is_empty()
            || instance_id.contains('/')
            || instance_id == "."
            || instance_id == ".."
        {
            return Err(CgroupError::new(
                "create",
                Path::new(instance_id),
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "instance id must be a non-empty single path component",
                ),
            ));
        }
        let mut degraded = Vec::new();
        let mut cgroup = InstanceCgroup {
            memory: None,
            pids: None,
            peak_file: std::sync::OnceLock::new(),
        };
        let mut dirs_created: Vec<PathBuf> = Vec::new();
        let result = (|| {
            for controller in [Controller::Memory, Controller::Pids] {
                let location = match layout.location(controller) {
                    Ok(location) => location,
                    Err(reason) => {
                        degraded.push(format!("{controller} limit not enforced: {reason}"));
                        continue;
                    }
                };
                let parent = match prepare_parent(location) {
                    Ok(parent) => parent,
                    Err(error) => {
                        degraded.push(format!("{controller} limit not enforced: {error}"));
                        continue;
                    }
                };
                let dir = parent.join(instance_dir_name(instance_id));
                if !dirs_created.contains(&dir) {
                    match fs::create_dir(&dir) {
                        Ok(()) => dirs_created.push(dir.clone()),
                        Err(error) => return Err(CgroupError::new("create", &dir, error)),
                    }
                }
                match controller {
                    Controller::Memory => {
                        set_memory_limits(
                            location.version,
                            &dir,
                            limits.memory_bytes,
                            &mut degraded,
                        )?;
                        cgroup.memory = Some((location.version, dir));
                    }
                    Controller::Pids => {
                        write_file(&dir.join("pids.max"), &limits.pids_max.to_string())?;
                        cgroup.pids = Some((location.version, dir));
                    }
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok((cgroup, degraded)),
            Err(error) => {
                for dir in dirs_created {
                    let _ = fs::remove_dir(dir);
                }
                Err(error)
            }
        }
    }

    /// Replaces the limits of cgroups made by [`InstanceCgroup::create`]: plain writes, which do
    /// not move any process (unlike joining a v1 cgroup, which waits for an RCU grace period).
    /// `degraded` gets the sentences [`InstanceCgroup::create`] would have given that it lacks.
    pub fn set_limits(
        &self,
        limits: Limits,
        degraded: &mut Vec<String>,
    ) -> Result<(), CgroupError> {
        if let Some((version, dir)) = &self.memory {
            let mut reasons = Vec::new();
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if *version == Version::V1 && memsw.exists() {
                // v1 wants memory.limit_in_bytes <= memory.memsw.limit_in_bytes at every step:
                // raise memsw first, or lower the limit first.
                if write_file(&memsw, &limits.memory_bytes.to_string()).is_err() {
                    write_file(
                        &dir.join("memory.limit_in_bytes"),
                        &limits.memory_bytes.to_string(),
                    )?;
                }
            }
            set_memory_limits(*version, dir, limits.memory_bytes, &mut reasons)?;
            for reason in reasons {
                if !degraded.contains(&reason) {
                    degraded.push(reason);
                }
            }
        }
        if let Some((_, dir)) = &self.pids {
            write_file(&dir.join("pids.max"), &limits.pids_max.to_string())?;
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process writes its pid to in order to join this cgroup.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = Vec::new();
        for (_, dir) in self.memory.iter().chain(self.pids.iter()) {
            let file = dir.join("cgroup.procs");
            if !files.contains(&file) {
                files.push(file);
            }
        }
        files
    }

    /// Whether a memory limit is in force.
    pub fn has_memory(&self) -> bool {
        self.memory.is_some()
    }

    /// Whether a process limit is in force.
    pub fn has_pids(&self) -> bool {
        self.pids.is_some()
    }

    /// Peak memory use in bytes (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`).
    pub fn memory_peak_bytes(&self) -> Option<u64> {
        let (version, dir) = self.memory.as_ref()?;
        let name = match version {
            Version::V1 => "memory.max_usage_in_bytes",
            Version::V2 => "memory.peak",
        };
        let file = self
            .peak_file
            .get_or_init(|| fs::File::open(dir.join(name)).ok())
            .as_ref()?;
        let mut buffer = [0u8; 32];
        // cgroup files produce their whole value on every read from offset 0.
        let length = std::os::unix::fs::FileExt::read_at(file, &mut buffer, 0).ok()?;
        std::str::from_utf8(&buffer[..length])
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// How many times the OOM killer killed a process of this cgroup.
    pub fn oom_kill_count(&self) -> Option<u64> {
        let (version, dir) = self.memory.as_ref()?;
        let file = match version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        let text = fs::read_to_string(dir.join(file)).ok()?;
        keyed_value(&text, "oom_kill")
    }

    /// Number of processes and threads in the cgroup now.
    pub fn pids_current(&self) -> Option<u64> {
        let (_, dir) = self.pids.as_ref()?;
        read_u64(&dir.join("pids.current"))
    }

    /// Kills every process in the cgroup at once where the kernel can (v2 `cgroup.kill`).
    /// Returns `false` when no cgroup of this instance supports it.
    pub fn kill_all(&self) -> Result<bool, CgroupError> {
        for (version, dir) in self.memory.iter().chain(self.pids.iter()) {
            let file = dir.join("cgroup.kill");
            if *version == Version::V2 && file.exists() {
                write_file(&file, "1")?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Removes the cgroups (those already gone are fine). They must be empty: while exiting
    /// processes are still in them the error [`CgroupError::is_retryable`].
    pub fn remove(&self) -> Result<(), CgroupError> {
        for (_, dir) in self.memory.iter().chain(self.pids.iter()) {
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(CgroupError::new("remove", dir, error)),
            }
        }
        Ok(())
    }

    /// [`InstanceCgroup::remove`], retried while retrying can help, for up to about `patience`.
    pub fn remove_patiently(&self, patience: Duration) -> Result<(), CgroupError> {
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match self.remove() {
                Err(error) if error.is_retryable() && started.elapsed() < patience => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                result => return result,
            }
        }
    }
}

fn instance_dir_name(instance_id: &str) -> String {
    format!("{}_{instance_id}", std::process::id())
}

/// Removes the empty instance cgroups left behind by servers that are no longer running (a crash,
/// or an exit before a dropped sandbox's cleanup finished). Returns how many were removed.
pub fn sweep_stale(layout: &Layout) -> usize {
    let mut removed = 0;
    let mut parents: Vec<PathBuf> = Vec::new();
    for location in [&layout.memory, &layout.pids].into_iter().flatten() {
        let parent = location.own_dir.join(PARENT_NAME);
        if !parents.contains(&parent) {
            parents.push(parent);
        }
    }
    for parent in parents {
        let Ok(entries) = fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(owner) = name
                .to_str()
                .and_then(|name| name.split_once('_'))
                .and_then(|(pid, _)| pid.parse::<i32>().ok())
            else {
                continue;
            };
            let owner_alive = owner == std::process::id() as i32
                || nix::sys::signal::kill(nix::unistd::Pid::from_raw(owner), None)
                    != Err(nix::errno::Errno::ESRCH);
            if !owner_alive && entry.path().is_dir() && fs::remove_dir(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Makes sure `<own>/wisp` exists and, on v2, that it may have children with the controller.
fn prepare_parent(location: &ControllerLocation) -> Result<PathBuf, CgroupError> {
    let parent = location.own_dir.join(PARENT_NAME);
    match location.version {
        Version::V1 => {
            create_dir_if_missing(&parent)?;
        }
        Version::V2 => {
            enable_v2_controllers(&location.own_dir)?;
            create_dir_if_missing(&parent)?;
            enable_v2_controllers(&parent)?;
        }
    }
    Ok(parent)
}

fn create_dir_if_missing(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(CgroupError::new("create", dir, error)),
    }
}

/// Enables memory and pids for the children of `dir`. cgroup v2 forbids that while `dir` itself
/// holds processes (other than at the root); when the only such process is the server, it moves
/// itself into a leaf `wisp-server` next to the sandboxes, as a delegated service manager would.
fn enable_v2_controllers(dir: &Path) -> Result<(), CgroupError> {
    let control = dir.join("cgroup.subtree_control");
    let wanted: Vec<&str> = {
        let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        ["memory", "pids"]
            .into_iter()
            .filter(|c| available.split_whitespace().any(|a| a == *c))
            .collect()
    };
    let enabled = fs::read_to_string(&control).unwrap_or_default();
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let line = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    match write_file(&control, &line) {
        Ok(()) => Ok(()),
        Err(error) if error.source.raw_os_error() == Some(libc::EBUSY) => {
            let leaf = dir.join(SERVER_LEAF_NAME);
            create_dir_if_missing(&leaf)?;
            write_file(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
            write_file(&control, &line)
        }
        Err(error) => Err(error),
    }
}

fn set_memory_limits(
    version: Version,
    dir: &Path,
    bytes: u64,
    degraded: &mut Vec<String>,
) -> Result<(), CgroupError> {
    match version {
        Version::V1 => {
            write_file(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write_file(&memsw, &bytes.to_string())?;
            } else {
                let _ = write_file(&dir.join("memory.swappiness"), "0");
                if swap_enabled() {
                    degraded.push(
                        "swap not limited: memory.memsw.limit_in_bytes is missing (swap accounting off); swappiness set to 0".into(),
                    );
                }
            }
        }
        Version::V2 => {
            write_file(&dir.join("memory.max"), &bytes.to_string())?;
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write_file(&swap, "0")?;
            } else if swap_enabled() {
                degraded.push("swap not limited: memory.swap.max is missing".into());
            }
            let group = dir.join("memory.oom.group");
            if group.exists() {
                write_file(&group, "1")?;
            }
        }
    }
    Ok(())
}

fn swap_enabled() -> bool {
    fs::read_to_string("/proc/swaps")
        .map(|text| text.lines().count() > 1)
        .unwrap_or(false)
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|error| CgroupError::new("write", path, error))
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Value of `key` in a `key value` per line file (`memory.events`, `memory.oom_control`).
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        if name == key {
            value.trim().parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "\
8:pids:/
4:memory:/process_api/abc
1:cpu:/
0::/
";

    const V2_MOUNTINFO: &str = "\
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn layout_cases() {
        struct Case {
            name: &'static str,
            mountinfo: &'static str,
            proc_cgroup: &'static str,
            controllers: &'static str,
            memory: Result<(Version, &'static str), &'static str>,
            pids: Result<(Version, &'static str), &'static str>,
        }
        let cases = [
            Case {
                name: "hybrid v1 controllers, empty unified",
                mountinfo: HYBRID_MOUNTINFO,
                proc_cgroup: HYBRID_CGROUP,
                controllers: "",
                memory: Ok((Version::V1, "/sys/fs/cgroup/memory/process_api/abc")),
                pids: Ok((Version::V1, "/sys/fs/cgroup/pids")),
            },
            Case {
                name: "pure v2 with both controllers",
                mountinfo: V2_MOUNTINFO,
                proc_cgroup: "0::/system.slice/wisp.service\n",
                controllers: "cpuset cpu io memory pids",
                memory: Ok((Version::V2, "/sys/fs/cgroup/system.slice/wisp.service")),
                pids: Ok((Version::V2, "/sys/fs/cgroup/system.slice/wisp.service")),
            },
            Case {
                name: "pure v2 without memory delegated",
                mountinfo: V2_MOUNTINFO,
                proc_cgroup: "0::/user.slice\n",
                controllers: "pids",
                memory: Err("memory controller is not enabled"),
                pids: Ok((Version::V2, "/sys/fs/cgroup/user.slice")),
            },
            Case {
                name: "no cgroups mounted",
                mountinfo: "22 1 0:21 / /proc rw - proc proc rw\n",
                proc_cgroup: "0::/\n",
                controllers: "",
                memory: Err("no cgroup v1 memory hierarchy"),
                pids: Err("no cgroup v1 pids hierarchy"),
            },
            Case {
                name: "v1 mount of a subtree (container)",
                mountinfo: "35 31 0:32 /docker/xyz /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
                proc_cgroup: "4:memory:/docker/xyz/app\n",
                controllers: "",
                memory: Ok((Version::V1, "/sys/fs/cgroup/memory/app")),
                pids: Err("no cgroup v1 pids hierarchy and no cgroup v2 mount"),
            },
        ];
        for case in cases {
            let layout = Layout::from_proc(case.mountinfo, case.proc_cgroup, |_| {
                Some(case.controllers.to_owned())
            });
            for (got, want) in [(&layout.memory, &case.memory), (&layout.pids, &case.pids)] {
                match (got, want) {
                    (Ok(location), Ok((version, dir))) => {
                        assert_eq!(location.version, *version, "{}", case.name);
                        assert_eq!(location.own_dir, Path::new(dir), "{}", case.name);
                    }
                    (Err(reason), Err(fragment)) => {
                        assert!(reason.contains(fragment), "{}: {reason}", case.name)
                    }
                    _ => panic!("{}: got {got:?}, want {want:?}", case.name),
                }
            }
        }
    }

    #[test]
    fn join_refuses_paths_outside_the_mount() {
        assert_eq!(join_cgroup_path(Path::new("/m"), "/a", "/ab/c"), None);
        assert_eq!(join_cgroup_path(Path::new("/m"), "/", "/../x"), None);
        assert_eq!(
            join_cgroup_path(Path::new("/m"), "/a", "/a"),
            Some(PathBuf::from("/m"))
        );
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/a\\"), r"/a\\");
    }

    #[test]
    fn oom_kill_is_read_from_v1_and_v2_formats() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(keyed_value(v1, "oom_kill"), Some(3));
        assert_eq!(keyed_value(v2, "oom_kill"), Some(2));
        assert_eq!(keyed_value("", "oom_kill"), None);
    }

    #[test]
    fn retryable_errors_are_busy_or_again() {
        let busy = CgroupError::new(
            "remove",
            Path::new("/x"),
            io::Error::from_raw_os_error(libc::EBUSY),
        );
        let denied = CgroupError::new(
            "write",
            Path::new("/x"),
            io::Error::from_raw_os_error(libc::EACCES),
        );
        assert!(busy.is_retryable());
        assert!(!denied.is_retryable());
        assert_eq!(
            denied.to_string(),
            "cgroup write /x: Permission denied (os error 13)"
        );
    }

    #[test]
    fn instance_ids_must_be_one_path_component() {
        let layout = Layout {
            memory: Err("none".into()),
            pids: Err("none".into()),
        };
        let limits = Limits {
            memory_bytes: 1 << 20,
            pids_max: 8,
        };
        for id in ["", ".", "..", "a/b"] {
            assert!(
                InstanceCgroup::create(&layout, id, limits).is_err(),
                "{id:?}"
            );
        }
        let (cgroup, degraded) = InstanceCgroup::create(&layout, "ok", limits).unwrap();
        assert!(!cgroup.has_memory() && !cgroup.has_pids());
        assert_eq!(degraded.len(), 2);
    }

    /// Creates, reads and removes a real instance cgroup on this machine (root only).
    #[test]
    fn real_cgroup_round_trip() {
        let layout = Layout::discover();
        if !nix::unistd::geteuid().is_root() || layout.memory.is_err() {
            eprintln!(
                "SKIPPED real_cgroup_round_trip: needs root and a memory controller ({layout:?})"
            );
            return;
        }
        let id = format!("unit-{}", std::process::id());
        let limits = Limits {
            memory_bytes: 64 << 20,
            pids_max: 16,
        };
        let (cgroup, _degraded) = InstanceCgroup::create(&layout, &id, limits).unwrap();
        assert!(cgroup.has_memory());
        assert_eq!(cgroup.oom_kill_count(), Some(0));
        assert!(cgroup.memory_peak_bytes().is_some());
        assert!(!cgroup.procs_files().is_empty());
        cgroup.remove().unwrap();
        for file in cgroup.procs_files() {
            assert!(!file.parent().unwrap().exists());
        }

        // A leftover of a server that has exited is swept; our own cgroups are not.
        let mut exited = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = exited.id();
        exited.wait().unwrap();
        let parent = layout.memory.as_ref().unwrap().own_dir.join(PARENT_NAME);
        let stale = parent.join(format!("{dead_pid}_stale"));
        let (mine, _) = InstanceCgroup::create(&layout, &format!("{id}-kept"), limits).unwrap();
        fs::create_dir(&stale).unwrap();
        assert!(sweep_stale(&layout) >= 1);
        assert!(!stale.exists());
        assert!(mine.procs_files()[0].exists());
        mine.remove().unwrap();
    }
}
