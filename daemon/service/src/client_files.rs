//! Files a client names or hands over: paths are resolved with the *caller's* permissions (so the
//! daemon cannot be used to read, or learn about, what the caller could not), and every read is
//! of a regular file, bounded in size and done against a deadline.
//!
//! A path from a caller other than root is walked one component at a time from `/`: each
//! component is opened relative to the directory opened before it (`O_PATH | O_NOFOLLOW`), so a
//! component swapped for a symbolic link between the check and the open cannot redirect the walk;
//! the caller's search permission on every directory and read permission on the file are checked
//! from the mode bits of what was opened, against the caller's uid and groups as the bus reports
//! them; symbolic links are followed by hand under the same rules. The file is then opened from
//! its checked parent and must be the inode that was checked. Any failure gives one answer,
//! whether the file is missing, unreadable or anything else, so the answer tells nothing about
//! files outside the caller's reach. POSIX ACLs are not consulted: the mode bits decide.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::time::Duration;

use nix::fcntl::{OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};

/// How long reading one client file (a passed descriptor or a named path) may take.
pub const READ_DEADLINE: Duration = Duration::from_secs(10);

/// Symbolic links followed in one walk before it is given up (the kernel's own limit).
const MAX_LINK_HOPS: usize = 40;

/// Permission bits asked for on an inode.
const READ: u32 = 4;
const SEARCH: u32 = 1;

/// Whose permissions a path is resolved with: `None` for root, who may read anything.
#[derive(Debug, Clone)]
pub struct Identity {
    pub uid: u32,
    pub gids: Vec<u32>,
}

impl Identity {
    fn permits(&self, st: &FileStat, want: u32) -> bool {
        let mode = st.st_mode;
        let bits = if st.st_uid == self.uid {
            mode >> 6
        } else if self.gids.contains(&st.st_gid) {
            mode >> 3
        } else {
            mode
        };
        bits & want == want
    }
}

/// The one answer for a path the caller cannot reach (missing, unreadable, or anything else).
#[derive(Debug, thiserror::Error)]
#[error("it does not exist, or user {uid} (the caller) may not read it")]
pub struct Unreachable {
    pub uid: u32,
}

/// Where a walk ended.
enum End {
    Dir(OwnedFd),
    File {
        parent: OwnedFd,
        name: OsString,
        st: FileStat,
    },
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn open_path(dir: impl AsFd, name: &OsStr) -> Option<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()
}

fn walk(id: &Identity, path: &Path) -> Result<End, Unreachable> {
    let deny = Unreachable { uid: id.uid };
    if !path.is_absolute() {
        return Err(deny);
    }
    let root =
        open_path(nix::fcntl::AT_FDCWD, OsStr::new("/")).ok_or(Unreachable { uid: id.uid })?;
    let mut dirs = vec![root];
    let mut pending: VecDeque<OsString> = VecDeque::new();
    push_components(&mut pending, path);
    let mut hops = 0;
    while let Some(comp) = pending.pop_front() {
        let Some(cur) = dirs.last() else {
            return Err(deny);
        };
        let cur_st = fstat(cur).map_err(|_| Unreachable { uid: id.uid })?;
        if !id.permits(&cur_st, SEARCH) {
            return Err(deny);
        }
        if comp == ".." {
            if dirs.len() > 1 {
                dirs.pop();
            }
            continue;
        }
        let fd = open_path(cur, &comp).ok_or(Unreachable { uid: id.uid })?;
        let st = fstat(&fd).map_err(|_| Unreachable { uid: id.uid })?;
        match kind(&st) {
            SFlag::S_IFLNK => {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(deny);
                }
                let target =
                    readlinkat(cur, comp.as_os_str()).map_err(|_| Unreachable { uid: id.uid })?;
                let target = Path::new(&target);
                if target.is_absolute() {
                    dirs.truncate(1);
                }
                let mut rest = VecDeque::new();
                push_components(&mut rest, target);
                rest.extend(pending.drain(..));
                pending = rest;
            }
            SFlag::S_IFDIR => dirs.push(fd),
            _ if pending.is_empty() => {
                let parent = dirs.pop().ok_or(Unreachable { uid: id.uid })?;
                return Ok(End::File {
                    parent,
                    name: comp,
                    st,
                });
            }
            _ => return Err(deny),
        }
    }
    dirs.pop().map(End::Dir).ok_or(deny)
}

fn push_components(into: &mut VecDeque<OsString>, path: &Path) {
    for c in path.components() {
        match c {
            Component::Normal(n) => into.push_back(n.to_owned()),
            Component::ParentDir => into.push_back(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

/// Opens the regular file at `path` for reading, as `id` could. Neither a FIFO nor a device
/// blocks the open.
pub fn open_file_as(id: &Identity, path: &Path) -> Result<File, Unreachable> {
    let deny = || Unreachable { uid: id.uid };
    let End::File { parent, name, st } = walk(id, path)? else {
        return Err(deny());
    };
    if kind(&st) != SFlag::S_IFREG || !id.permits(&st, READ) {
        return Err(deny());
    }
    let fd = openat(
        &parent,
        name.as_os_str(),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|_| deny())?;
    let opened = fstat(&fd).map_err(|_| deny())?;
    // The entry could have been replaced since it was checked: only the checked inode is read.
    if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino) {
        return Err(deny());
    }
    Ok(File::from(fd))
}

/// Checks that `id` could read the regular file at `path`.
pub fn check_file_as(id: &Identity, path: &Path) -> Result<(), Unreachable> {
    open_file_as(id, path).map(drop)
}

/// The names in the directory at `path`, which `id` may search and list.
pub fn list_dir_as(id: &Identity, path: &Path) -> Result<Vec<OsString>, Unreachable> {
    let deny = || Unreachable { uid: id.uid };
    let End::Dir(fd) = walk(id, path)? else {
        return Err(deny());
    };
    let st = fstat(&fd).map_err(|_| deny())?;
    if !id.permits(&st, READ | SEARCH) {
        return Err(deny());
    }
    let listing = openat(
        &fd,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|_| deny())?;
    let mut dir = nix::dir::Dir::from_fd(listing).map_err(|_| deny())?;
    Ok(dir
        .iter()
        .filter_map(Result::ok)
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_owned())
        .filter(|n| n != "." && n != "..")
        .collect())
}

/// Opens `path` with the daemon's own permissions, without blocking on a FIFO or device.
pub fn open_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
        .open(path)
}

/// Why a client file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot inspect it: {0}")]
    Stat(std::io::Error),
    #[error("it is not a regular file (a pipe, socket or device is refused)")]
    NotRegular,
    #[error("it is {size} bytes; at most {max} bytes are accepted")]
    TooLarge { size: u64, max: u64 },
    #[error("cannot read it: {0}")]
    Read(std::io::Error),
    #[error("it grew past {max} bytes while being read")]
    Grew { max: u64 },
    #[error("reading it took longer than {} seconds", READ_DEADLINE.as_secs())]
    Deadline,
}

/// The whole content of `file`: a regular file (checked with `fstat` before anything is read)
/// of at most `max` bytes, read within [`READ_DEADLINE`]. A read that outlives the deadline (a
/// file on a hung network or FUSE mount) is left to its own thread, which ends with the read.
pub fn read_bounded(file: File, max: u64) -> Result<Vec<u8>, ReadError> {
    let meta = file.metadata().map_err(ReadError::Stat)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular);
    }
    if meta.len() > max {
        return Err(ReadError::TooLarge {
            size: meta.len(),
            max,
        });
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let capacity = meta.len() as usize;
    std::thread::Builder::new()
        .name("moed-client-file".into())
        .spawn(move || {
            let mut bytes = Vec::with_capacity(capacity);
            let result = file
                .take(max + 1)
                .read_to_end(&mut bytes)
                .map(|_| bytes)
                .map_err(ReadError::Read);
            let _ = tx.send(result);
        })
        .map_err(ReadError::Read)?;
    let bytes = rx
        .recv_timeout(READ_DEADLINE)
        .map_err(|_| ReadError::Deadline)??;
    if bytes.len() as u64 > max {
        return Err(ReadError::Grew { max });
    }
    Ok(bytes)
}

#[cfg(test)]
#[path = "client_files_tests.rs"]
mod tests;
