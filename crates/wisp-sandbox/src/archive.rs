//! Safe handling of function code archives (zip files uploaded with CreateFunction or
//! UpdateFunctionCode): [`inspect`] checks one and summarises it, [`extract`] unpacks it.
//!
//! Every entry is checked before anything is written: no absolute paths, no `..` components
//! (zip-slip), no backslashes, no special files, no duplicate or conflicting paths, symbolic links
//! only with relative targets that stay inside the archive, and limits on the number of entries,
//! each entry's size and the total size. Sizes are counted while decompressing: the sizes written
//! in the zip headers are never trusted (zip bombs). Extraction goes to a temporary directory next
//! to the destination, which is renamed into place only when complete.
//!
//! This module must never write outside the destination's temporary directory, never follow a
//! symbolic link while writing, and never keep a partially extracted tree under the destination
//! name. Its error messages reach users (InvalidParameterValueException), so they are lowercase,
//! name the entry and say which rule it broke.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Lambda's limit on the unzipped size of a function and its layers.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 262_144_000;

/// Limits checked by [`inspect`] and [`extract`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Largest total size of all entries, once decompressed.
    pub max_total_bytes: u64,
    /// Largest size of one entry, once decompressed.
    pub max_entry_bytes: u64,
    /// Most entries (files, directories and links) in one archive.
    pub max_entries: usize,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            max_entry_bytes: DEFAULT_MAX_TOTAL_BYTES,
            max_entries: 65_536,
        }
    }
}

/// What kind of entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File { executable: bool },
    Directory,
    Symlink { target: String },
}

/// One entry of a checked archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// Normalised relative path (`a/b`, no leading `./`, no trailing `/`).
    pub path: String,
    pub kind: EntryKind,
    /// Decompressed size, as counted (0 for directories and links).
    pub size: u64,
}

/// Summary of a checked archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    pub entries: Vec<ArchiveEntry>,
    /// Total decompressed size, as counted.
    pub total_bytes: u64,
}

impl ArchiveSummary {
    /// The entry at `path` (normalised form, e.g. `bootstrap` or `src/app.py`).
    pub fn entry(&self, path: &str) -> Option<&ArchiveEntry> {
        self.entries.iter().find(|entry| entry.path == path)
    }

    pub fn file_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|entry| matches!(entry.kind, EntryKind::File { .. }))
            .count()
    }
}

/// Why an archive was refused. Each message is its `Display` form.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// the bytes are not a readable zip archive.
    #[error("could not unzip the uploaded file: {0}")]
    NotAZip(String),
    /// an entry could not be decompressed (corrupt data, checksum mismatch, unsupported method).
    #[error("entry {entry:?} could not be decompressed: {reason}")]
    Corrupt { entry: String, reason: String },
    #[error("entry {entry:?} has an absolute path; paths in the zip must be relative")]
    AbsolutePath { entry: String },
    #[error(
        "entry {entry:?} contains a '..' component, which could write outside the function's directory"
    )]
    ParentComponent { entry: String },
    #[error("entry {entry:?} has an invalid name: {reason}")]
    InvalidName { entry: String, reason: String },
    #[error(
        "entry {entry:?} is a symbolic link to {target:?}, which points outside the archive; only relative links to paths inside the archive are allowed"
    )]
    SymlinkEscapes { entry: String, target: String },
    #[error("entry {entry:?} is a {kind}; only files, directories and symbolic links are allowed")]
    SpecialFile { entry: String, kind: &'static str },
    #[error("entry {entry:?} is encrypted; encrypted zip entries are not supported")]
    Encrypted { entry: String },
    #[error("entry {entry:?} appears more than once or conflicts with another entry")]
    Duplicate { entry: String },
    #[error("entry {entry:?} is larger than the limit of {limit} bytes per file")]
    EntryTooLarge { entry: String, limit: u64 },
    #[error(
        "unzipped size must be smaller than {limit} bytes (exceeded while unzipping {entry:?})"
    )]
    TotalTooLarge { entry: String, limit: u64 },
    #[error("the zip has more than {limit} entries")]
    TooManyEntries { limit: usize },
    #[error("destination {0} already exists")]
    DestinationExists(PathBuf),
    #[error("i/o error while extracting {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ArchiveError {
    /// Whether the upload itself is at fault (answer 400), rather than the server (answer 500).
    pub fn is_user_error(&self) -> bool {
        !matches!(self, ArchiveError::Io { .. })
    }
}

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;
const MAX_LINK_TARGET: u64 = 4096;

/// Checks every rule, decompressing every entry to count its real size, and summarises the archive.
pub fn inspect(bytes: &[u8], limits: &ArchiveLimits) -> Result<ArchiveSummary, ArchiveError> {
    walk(bytes, limits, None)
}

/// Checks the archive as [`inspect`] does and unpacks it at `dest_dir`, which must not exist yet.
/// Files are created with mode 0644, or 0755 when any execute bit was set; directories 0755.
pub fn extract(bytes: &[u8], dest_dir: &Path, limits: &ArchiveLimits) -> Result<(), ArchiveError> {
    if dest_dir.symlink_metadata().is_ok() {
        return Err(ArchiveError::DestinationExists(dest_dir.to_path_buf()));
    }
    let parent = dest_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dest_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "code".into());
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ArchiveError::Io { path, source }
    };
    fs::create_dir_all(parent).map_err(io_error(parent))?;
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial-"))
        .tempdir_in(parent)
        .map_err(io_error(parent))?;
    fs::set_permissions(temp.path(), fs::Permissions::from_mode(0o755))
        .map_err(io_error(temp.path()))?;
    walk(bytes, limits, Some(temp.path()))?;
    let temp_path = temp.keep();
    match fs::rename(&temp_path, dest_dir) {
        Ok(()) => Ok(()),
        Err(error) => {
            let _ = fs::remove_dir_all(&temp_path);
            if dest_dir.symlink_metadata().is_ok() {
                Err(ArchiveError::DestinationExists(dest_dir.to_path_buf()))
            } else {
                Err(ArchiveError::Io {
                    path: dest_dir.to_path_buf(),
                    source: error,
                })
            }
        }
    }
}

/// A checked entry, before its content is read.
struct Planned {
    index: usize,
    entry: String,
    path: String,
    kind: PlannedKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PlannedKind {
    File { executable: bool },
    Directory,
    Symlink,
}

/// Checks names and types of every entry, then reads every entry's content (into `dest` when
/// given, else discarding it) while counting sizes.
fn walk(
    bytes: &[u8],
    limits: &ArchiveLimits,
    dest: Option<&Path>,
) -> Result<ArchiveSummary, ArchiveError> {
    let mut archive = zip::ZipArchive::new(io::Cursor::new(bytes))
        .map_err(|error| ArchiveError::NotAZip(error.to_string().to_lowercase()))?;
    if archive.len() > limits.max_entries {
        return Err(ArchiveError::TooManyEntries {
            limit: limits.max_entries,
        });
    }

    // Pass 1: names and types, from the central directory only.
    let mut planned = Vec::with_capacity(archive.len());
    let mut kinds: BTreeMap<String, PlannedKind> = BTreeMap::new();
    for index in 0..archive.len() {
        let file = archive
            .by_index_raw(index)
            .map_err(|error| ArchiveError::NotAZip(error.to_string().to_lowercase()))?;
        let entry = String::from_utf8_lossy(file.name_raw()).into_owned();
        if file.encrypted() {
            return Err(ArchiveError::Encrypted { entry });
        }
        let path = normalise(&entry, file.name_raw())?;
        let kind = match file.unix_mode().map(|mode| mode & S_IFMT) {
            Some(S_IFLNK) => PlannedKind::Symlink,
            Some(S_IFDIR) => PlannedKind::Directory,
            _ if file.is_dir() => PlannedKind::Directory,
            None | Some(0) | Some(S_IFREG) => PlannedKind::File {
                executable: file.unix_mode().unwrap_or(0) & 0o111 != 0,
            },
            Some(other) => {
                return Err(ArchiveError::SpecialFile {
                    entry,
                    kind: match other {
                        0o010000 => "named pipe",
                        0o020000 => "character device",
                        0o060000 => "block device",
                        0o140000 => "socket",
                        _ => "special file",
                    },
                });
            }
        };
        if path.is_empty() {
            if kind == PlannedKind::Directory {
                continue; // "./" or "/"-less root entry: nothing to create
            }
            return Err(ArchiveError::InvalidName {
                entry,
                reason: "the name is empty".into(),
            });
        }
        match kinds.get(&path) {
            Some(PlannedKind::Directory) if kind == PlannedKind::Directory => continue,
            Some(_) => return Err(ArchiveError::Duplicate { entry }),
            None => {}
        }
        kinds.insert(path.clone(), kind);
        planned.push(Planned {
            index,
            entry,
            path,
            kind,
        });
    }
    // A file or link cannot also be a parent of another entry; parents are implicitly directories.
    for planned_entry in &planned {
        let mut parent = planned_entry.path.as_str();
        while let Some((up, _)) = parent.rsplit_once('/') {
            if matches!(
                kinds.get(up),
                Some(PlannedKind::File { .. }) | Some(PlannedKind::Symlink)
            ) {
                return Err(ArchiveError::Duplicate {
                    entry: planned_entry.entry.clone(),
                });
            }
            parent = up;
        }
    }

    // Pass 2: contents. Directories first, then files, links last so that nothing is ever
    // written through a link.
    planned.sort_by_key(|p| match p.kind {
        PlannedKind::Directory => 0,
        PlannedKind::File { .. } => 1,
        PlannedKind::Symlink => 2,
    });
    let mut total: u64 = 0;
    let mut entries = Vec::with_capacity(planned.len());
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    let mut created_dirs: BTreeSet<String> = BTreeSet::new();
    for item in &planned {
        let mut file = archive
            .by_index(item.index)
            .map_err(|error| ArchiveError::Corrupt {
                entry: item.entry.clone(),
                reason: error.to_string().to_lowercase(),
            })?;
        let target_path = dest.map(|dest| dest.join(&item.path));
        if let (Some(dest), Some(parent)) = (dest, item.path.rsplit_once('/').map(|(p, _)| p)) {
            create_dirs(dest, parent, &mut created_dirs)?;
        }
        match item.kind {
            PlannedKind::Directory => {
                if let Some(dest) = dest {
                    create_dirs(dest, &item.path, &mut created_dirs)?;
                }
                entries.push(ArchiveEntry {
                    path: item.path.clone(),
                    kind: EntryKind::Directory,
                    size: 0,
                });
            }
            PlannedKind::File { executable } => {
                let mut output = match &target_path {
                    Some(path) => Some(
                        fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(if executable { 0o755 } else { 0o644 })
                            .custom_flags(libc::O_NOFOLLOW)
                            .open(path)
                            .map_err(|source| ArchiveError::Io {
                                path: path.clone(),
                                source,
                            })?,
                    ),
                    None => None,
                };
                let size = copy_counted(&mut file, output.as_mut(), item, limits, &mut total)?;
                if let (Some(output), Some(path)) = (output.as_mut(), &target_path) {
                    output.flush().map_err(|source| ArchiveError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    // The umask may have narrowed the mode given at creation.
                    fs::set_permissions(
                        path,
                        fs::Permissions::from_mode(if executable { 0o755 } else { 0o644 }),
                    )
                    .map_err(|source| ArchiveError::Io {
                        path: path.clone(),
                        source,
                    })?;
                }
                entries.push(ArchiveEntry {
                    path: item.path.clone(),
                    kind: EntryKind::File { executable },
                    size,
                });
            }
            PlannedKind::Symlink => {
                let mut target = Vec::new();
                (&mut file)
                    .take(MAX_LINK_TARGET + 1)
                    .read_to_end(&mut target)
                    .map_err(|error| ArchiveError::Corrupt {
                        entry: item.entry.clone(),
                        reason: error.to_string().to_lowercase(),
                    })?;
                let target = String::from_utf8(target).map_err(|_| ArchiveError::InvalidName {
                    entry: item.entry.clone(),
                    reason: "the link target is not valid utf-8".into(),
                })?;
                if target.is_empty()
                    || target.len() as u64 > MAX_LINK_TARGET
                    || target.contains('\0')
                {
                    return Err(ArchiveError::InvalidName {
                        entry: item.entry.clone(),
                        reason: "the link target is empty or too long".into(),
                    });
                }
                links.insert(item.path.clone(), target.clone());
                entries.push(ArchiveEntry {
                    path: item.path.clone(),
                    kind: EntryKind::Symlink { target },
                    size: 0,
                });
            }
        }
    }
    // Links are checked together, since one link's target may pass through another link.
    for (path, target) in &links {
        if resolve_inside(path, target, &links).is_none() {
            let entry = planned
                .iter()
                .find(|p| &p.path == path)
                .map(|p| p.entry.clone())
                .unwrap_or_else(|| path.clone());
            return Err(ArchiveError::SymlinkEscapes {
                entry,
                target: target.clone(),
            });
        }
    }
    if let Some(dest) = dest {
        for (path, target) in &links {
            let link = dest.join(path);
            std::os::unix::fs::symlink(target, &link)
                .map_err(|source| ArchiveError::Io { path: link, source })?;
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(ArchiveSummary {
        entries,
        total_bytes: total,
    })
}

/// Copies one entry's decompressed bytes, counting them against the limits as they arrive.
fn copy_counted(
    reader: &mut impl Read,
    mut output: Option<&mut fs::File>,
    item: &Planned,
    limits: &ArchiveLimits,
    total: &mut u64,
) -> Result<u64, ArchiveError> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut size: u64 = 0;
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => return Ok(size),
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(ArchiveError::Corrupt {
                    entry: item.entry.clone(),
                    reason: error.to_string().to_lowercase(),
                });
            }
        };
        size += read as u64;
        *total += read as u64;
        if size > limits.max_entry_bytes {
            return Err(ArchiveError::EntryTooLarge {
                entry: item.entry.clone(),
                limit: limits.max_entry_bytes,
            });
        }
        if *total > limits.max_total_bytes {
            return Err(ArchiveError::TotalTooLarge {
                entry: item.entry.clone(),
                limit: limits.max_total_bytes,
            });
        }
        if let Some(output) = output.as_mut() {
            output
                .write_all(&buffer[..read])
                .map_err(|source| ArchiveError::Io {
                    path: PathBuf::from(&item.path),
                    source,
                })?;
        }
    }
}

fn create_dirs(
    dest: &Path,
    relative: &str,
    created: &mut BTreeSet<String>,
) -> Result<(), ArchiveError> {
    let mut current = String::new();
    for component in relative.split('/') {
        if !current.is_empty() {
            current.push('/');
        }
        current.push_str(component);
        if created.contains(&current) {
            continue;
        }
        let path = dest.join(&current);
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(source) => return Err(ArchiveError::Io { path, source }),
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(|source| {
            ArchiveError::Io {
                path: path.clone(),
                source,
            }
        })?;
        created.insert(current.clone());
    }
    Ok(())
}

/// Checks one entry name and returns its normalised relative path.
fn normalise(entry: &str, raw: &[u8]) -> Result<String, ArchiveError> {
    let invalid = |reason: &str| ArchiveError::InvalidName {
        entry: entry.to_string(),
        reason: reason.to_string(),
    };
    let name = std::str::from_utf8(raw).map_err(|_| invalid("the name is not valid utf-8"))?;
    if name.contains('\0') {
        return Err(invalid("the name contains a nul byte"));
    }
    if name.contains('\\') {
        return Err(invalid(
            "the name contains a backslash; zip paths must use '/' as the separator",
        ));
    }
    if name.starts_with('/') {
        return Err(ArchiveError::AbsolutePath {
            entry: entry.to_string(),
        });
    }
    let mut components = Vec::new();
    for component in name.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                return Err(ArchiveError::ParentComponent {
                    entry: entry.to_string(),
                });
            }
            other => {
                if other.len() > 255 {
                    return Err(invalid("a path component is longer than 255 bytes"));
                }
                components.push(other);
            }
        }
    }
    let path = components.join("/");
    if path.len() > 4096 {
        return Err(invalid("the path is longer than 4096 bytes"));
    }
    Ok(path)
}

/// Resolves link `path` → `target` through the archive's other links; `None` when the result
/// leaves the archive's root, is absolute, or loops.
fn resolve_inside(
    path: &str,
    target: &str,
    links: &BTreeMap<String, String>,
) -> Option<Vec<String>> {
    if target.starts_with('/') {
        return None;
    }
    let mut start: Vec<String> = path.split('/').map(str::to_owned).collect();
    start.pop();
    let mut budget = 64;
    resolve(start, target, links, &mut budget)
}

fn resolve(
    mut current: Vec<String>,
    relative: &str,
    links: &BTreeMap<String, String>,
    budget: &mut u32,
) -> Option<Vec<String>> {
    for component in relative.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                current.pop()?;
            }
            name => {
                current.push(name.to_owned());
                let joined = current.join("/");
                if let Some(next) = links.get(&joined) {
                    *budget = budget.checked_sub(1)?;
                    if next.starts_with('/') {
                        return None;
                    }
                    current.pop();
                    current = resolve(current, next, links, budget)?;
                }
            }
        }
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    enum Item<'a> {
        File(&'a str, &'a [u8], u32),
        Dir(&'a str),
        Link(&'a str, &'a str),
        Raw(&'a str, u32, &'a [u8]),
    }

    fn build(items: &[Item<'_>]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let options =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for item in items {
            match item {
                Item::File(name, content, mode) => {
                    writer
                        .start_file(*name, options.unix_permissions(*mode))
                        .unwrap();
                    writer.write_all(content).unwrap();
                }
                Item::Dir(name) => writer.add_directory(*name, options).unwrap(),
                Item::Link(name, target) => writer.add_symlink(*name, *target, options).unwrap(),
                Item::Raw(name, mode, content) => {
                    // unix_permissions keeps only the permission bits; write the type bits by
                    // patching the external attributes afterwards.
                    writer
                        .start_file(*name, options.unix_permissions(0o644))
                        .unwrap();
                    writer.write_all(content).unwrap();
                    let _ = mode;
                }
            }
        }
        let mut bytes = writer.finish().unwrap().into_inner();
        for item in items {
            if let Item::Raw(name, mode, _) = item {
                patch_central_mode(&mut bytes, name, *mode);
            }
        }
        bytes
    }

    /// Sets the unix mode (external attributes, high 16 bits) of `name` in the central directory.
    fn patch_central_mode(bytes: &mut [u8], name: &str, mode: u32) {
        let signature = [0x50, 0x4b, 0x01, 0x02];
        let mut at = 0;
        while at + 46 <= bytes.len() {
            if bytes[at..at + 4] == signature {
                let name_len = u16::from_le_bytes([bytes[at + 28], bytes[at + 29]]) as usize;
                if &bytes[at + 46..at + 46 + name_len] == name.as_bytes() {
                    bytes[at + 5] = 3; // made by unix
                    bytes[at + 38..at + 42].copy_from_slice(&(mode << 16).to_le_bytes());
                    return;
                }
            }
            at += 1;
        }
        panic!("entry {name} not found");
    }

    /// Rewrites the uncompressed size of every entry in the local and central headers.
    fn lie_about_sizes(bytes: &mut [u8], claimed: u32) {
        let mut at = 0;
        while at + 30 <= bytes.len() {
            if bytes[at..at + 4] == [0x50, 0x4b, 0x03, 0x04] {
                bytes[at + 22..at + 26].copy_from_slice(&claimed.to_le_bytes());
            } else if bytes[at..at + 4] == [0x50, 0x4b, 0x01, 0x02] {
                bytes[at + 24..at + 28].copy_from_slice(&claimed.to_le_bytes());
            }
            at += 1;
        }
    }

    fn small_limits() -> ArchiveLimits {
        ArchiveLimits {
            max_total_bytes: 1 << 20,
            max_entry_bytes: 512 << 10,
            max_entries: 8,
        }
    }

    #[test]
    fn refusals() {
        let zeros = vec![0u8; 600 << 10];
        let many: Vec<String> = (0..9).map(|i| format!("f{i}")).collect();
        let many_items: Vec<Item<'_>> = many.iter().map(|n| Item::File(n, b"x", 0o644)).collect();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "absolute path",
                build(&[Item::File("/etc/passwd", b"x", 0o644)]),
                "entry \"/etc/passwd\" has an absolute path",
            ),
            (
                "zip-slip",
                build(&[Item::File("a/../../evil", b"x", 0o644)]),
                "entry \"a/../../evil\" contains a '..' component",
            ),
            (
                "backslash",
                build(&[Item::File("..\\evil", b"x", 0o644)]),
                "contains a backslash",
            ),
            (
                "absolute link",
                build(&[Item::Link("link", "/etc/shadow")]),
                "entry \"link\" is a symbolic link to \"/etc/shadow\", which points outside",
            ),
            (
                "escaping link",
                build(&[Item::Dir("d/"), Item::Link("d/up", "../../x")]),
                "entry \"d/up\" is a symbolic link to \"../../x\"",
            ),
            (
                "link through link",
                build(&[Item::Link("a", "."), Item::Link("b", "a/..")]),
                "entry \"b\" is a symbolic link",
            ),
            (
                "write through link",
                build(&[Item::Link("a", "."), Item::File("a/x", b"x", 0o644)]),
                "entry \"a/x\" appears more than once or conflicts",
            ),
            (
                "duplicate",
                build(&[Item::File("x", b"1", 0o644), Item::File("./x", b"2", 0o644)]),
                "entry \"./x\" appears more than once",
            ),
            (
                "fifo",
                build(&[Item::Raw("pipe", 0o010644, b"")]),
                "entry \"pipe\" is a named pipe",
            ),
            (
                "device",
                build(&[Item::Raw("sda", 0o060644, b"")]),
                "entry \"sda\" is a block device",
            ),
            (
                "entry too large",
                build(&[Item::File("big", &zeros, 0o644)]),
                "entry \"big\" is larger than the limit of 524288 bytes per file",
            ),
            (
                "total too large",
                build(&[
                    Item::File("a", &zeros[..400 << 10], 0o644),
                    Item::File("b", &zeros[..400 << 10], 0o644),
                    Item::File("c", &zeros[..400 << 10], 0o644),
                ]),
                "unzipped size must be smaller than 1048576 bytes",
            ),
            (
                "too many entries",
                build(&many_items),
                "the zip has more than 8 entries",
            ),
            (
                "not a zip",
                b"PK\x03\x04 definitely not".to_vec(),
                "could not unzip the uploaded file",
            ),
        ];
        for (name, bytes, expected) in cases {
            let inspected = inspect(&bytes, &small_limits());
            let error = inspected.expect_err(name).to_string();
            assert!(error.contains(expected), "{name}: {error}");
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("code");
            let extracted = extract(&bytes, &dest, &small_limits())
                .expect_err(name)
                .to_string();
            assert_eq!(extracted, error, "{name}");
            assert!(!dest.exists(), "{name}: destination left behind");
            assert_eq!(
                fs::read_dir(dir.path()).unwrap().count(),
                0,
                "{name}: temp dir left behind"
            );
        }
    }

    #[test]
    fn zip_bomb_with_lying_headers_is_stopped_by_counting() {
        let zeros = vec![0u8; 4 << 20];
        let mut bytes = build(&[Item::File("bomb", &zeros, 0o644)]);
        lie_about_sizes(&mut bytes, 100);
        let limits = ArchiveLimits {
            max_total_bytes: 1 << 20,
            max_entry_bytes: 1 << 20,
            max_entries: 8,
        };
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("code");
        let error = extract(&bytes, &dest, &limits).unwrap_err();
        eprintln!("{error}");
        assert!(
            matches!(
                error,
                ArchiveError::EntryTooLarge { .. } | ArchiveError::Corrupt { .. }
            ),
            "{error}"
        );
        assert!(!dest.exists());
    }

    #[test]
    fn extracts_files_dirs_modes_and_inside_links() {
        let bytes = build(&[
            Item::File("bootstrap", b"#!/bin/sh\necho hi\n", 0o755),
            Item::Dir("lib/"),
            Item::File("lib/data.txt", b"data", 0o600),
            Item::File("./nested/deep/file.py", b"print()", 0o644),
            Item::Link("lib/current", "data.txt"),
            Item::Link("bin", "nested/deep"),
        ]);
        let summary = inspect(&bytes, &ArchiveLimits::default()).unwrap();
        assert_eq!(summary.total_bytes, 18 + 4 + 7);
        assert_eq!(summary.file_count(), 3);
        assert_eq!(
            summary.entry("bootstrap").unwrap().kind,
            EntryKind::File { executable: true }
        );
        assert_eq!(
            summary.entry("lib/current").unwrap().kind,
            EntryKind::Symlink {
                target: "data.txt".into()
            }
        );

        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("fn").join("code");
        extract(&bytes, &dest, &ArchiveLimits::default()).unwrap();
        let mode = |p: &str| {
            fs::symlink_metadata(dest.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("bootstrap"), 0o755);
        assert_eq!(mode("lib/data.txt"), 0o644);
        assert_eq!(mode("lib"), 0o755);
        assert_eq!(mode("nested/deep"), 0o755);
        assert_eq!(mode(""), 0o755);
        assert_eq!(
            fs::read_to_string(dest.join("lib/current")).unwrap(),
            "data"
        );
        assert_eq!(
            fs::read_link(dest.join("bin")).unwrap(),
            Path::new("nested/deep")
        );
        assert_eq!(
            fs::read_to_string(dest.join("bin/file.py")).unwrap(),
            "print()"
        );
        // Only the destination was created in its parent.
        assert_eq!(fs::read_dir(dest.parent().unwrap()).unwrap().count(), 1);

        let again = extract(&bytes, &dest, &ArchiveLimits::default()).unwrap_err();
        assert!(
            matches!(again, ArchiveError::DestinationExists(_)),
            "{again}"
        );
    }

    #[test]
    fn names_are_normalised() {
        let cases = [
            ("a/b", Ok("a/b")),
            ("./a//b/", Ok("a/b")),
            ("a/./b", Ok("a/b")),
            ("/a", Err("absolute")),
            ("a/../b", Err("'..'")),
            ("a\\b", Err("backslash")),
        ];
        for (name, expected) in cases {
            match (normalise(name, name.as_bytes()), expected) {
                (Ok(path), Ok(want)) => assert_eq!(path, want),
                (Err(error), Err(fragment)) => {
                    assert!(error.to_string().contains(fragment), "{name}: {error}")
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn messages_are_lowercase_user_errors() {
        let error = ArchiveError::TotalTooLarge {
            entry: "x".into(),
            limit: DEFAULT_MAX_TOTAL_BYTES,
        };
        assert!(error.is_user_error());
        assert!(
            error
                .to_string()
                .starts_with("unzipped size must be smaller than 262144000 bytes")
        );
    }
}
