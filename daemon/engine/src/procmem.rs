//! This process's resident memory as the kernel counts it (`/proc/self/…`): anonymous against
//! file-backed pages, the peak, and how much of a directory's files is mapped in, so the bench can
//! say where a loaded model's memory goes.

use std::path::Path;

use serde::Serialize;

/// One reading of the process's memory, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemSnapshot {
    /// Resident set (`VmRSS`).
    pub rss: u64,
    /// Peak resident set since start or the last [`reset_peak`] (`VmHWM`).
    pub peak_rss: u64,
    /// Resident anonymous pages: heap, arenas, prepacked weights (`Anonymous` of smaps_rollup).
    pub anonymous: u64,
    /// Resident pages mapped from files (`Rss - Anonymous`): the binary, libraries, and weights
    /// mapped from a package.
    pub file_backed: u64,
}

impl MemSnapshot {
    /// Reads `/proc/self/status` and `/proc/self/smaps_rollup`; zeros where they cannot be read
    /// (not Linux, or a restricted /proc): the figures are a report, never a decision.
    pub fn now() -> MemSnapshot {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
        MemSnapshot::parse(&status, &rollup)
    }

    /// The snapshot from the text of `/proc/<pid>/status` and `/proc/<pid>/smaps_rollup`.
    pub fn parse(status: &str, rollup: &str) -> MemSnapshot {
        let rss = kb_field(status, "VmRSS:").unwrap_or(0);
        let peak_rss = kb_field(status, "VmHWM:").unwrap_or(rss);
        let rollup_rss = kb_field(rollup, "Rss:").unwrap_or(rss);
        let anonymous = kb_field(rollup, "Anonymous:").unwrap_or(0);
        MemSnapshot {
            rss,
            peak_rss,
            anonymous,
            file_backed: rollup_rss.saturating_sub(anonymous),
        }
    }
}

/// The value of a `Name:   123 kB` line, in bytes.
fn kb_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(name)?.trim();
        let kb = v
            .strip_suffix("kB")
            .unwrap_or(v)
            .trim()
            .parse::<u64>()
            .ok()?;
        Some(kb * 1024)
    })
}

/// Bytes this process has made the kernel read from storage (`read_bytes` of `/proc/self/io`,
/// every thread's: page-cache hits and pages already resident do not count); `None` where it
/// cannot be read. Expert weights are mapped from the package and paged in by whichever thread
/// first runs them, so reads are counted for the process, around each forward pass.
///
/// Read twice per forward pass, so the file is opened once and read again from offset 0 (the
/// kernel writes it afresh on each read at 0): one `pread` a reading instead of open, read, close.
pub fn storage_reads() -> Option<u64> {
    use std::os::unix::fs::FileExt;
    static IO: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    let file = IO
        .get_or_init(|| std::fs::File::open("/proc/self/io").ok())
        .as_ref()?;
    // The file is seven short lines, about 150 bytes.
    let mut buf = [0u8; 512];
    let n = file.read_at(&mut buf, 0).ok()?;
    io_read_bytes(std::str::from_utf8(buf.get(..n)?).ok()?)
}

/// The `read_bytes:` value of an `io` file's text.
pub fn io_read_bytes(io: &str) -> Option<u64> {
    io.lines()
        .find_map(|l| l.strip_prefix("read_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Resident bytes of every mapping of a file under `dir` (one `/proc/self/smaps` walk).
pub fn mapped_under(dir: &Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    mapped_under_in(&smaps, &dir)
}

/// [`mapped_under`] on the text of a smaps file.
pub fn mapped_under_in(smaps: &str, dir: &Path) -> u64 {
    let mut total = 0;
    let mut inside = false;
    for line in smaps.lines() {
        if let Some(path) = mapping_path(line) {
            inside = path.is_some_and(|p| Path::new(p).starts_with(dir));
        } else if inside && let Some(b) = kb_field(line, "Rss:") {
            total += b;
        }
    }
    total
}

/// For a mapping header line (`start-end perms offset dev inode [path]`), `Some(path)`; `None`
/// for the field lines under it.
fn mapping_path(line: &str) -> Option<Option<&str>> {
    let mut parts = line.splitn(6, ' ');
    let range = parts.next()?;
    let (lo, hi) = range.split_once('-')?;
    if lo.is_empty()
        || !lo.bytes().all(|b| b.is_ascii_hexdigit())
        || !hi.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    let path = parts.nth(4).map(str::trim).filter(|p| p.starts_with('/'));
    Some(path)
}

/// The address range of a mapping header line of `/proc/self/smaps` whose file is under `dir`.
fn range_under(line: &str, dir: &Path) -> Option<(usize, usize)> {
    let path = mapping_path(line)??;
    if !Path::new(path).starts_with(dir) {
        return None;
    }
    let (lo, hi) = line.split_whitespace().next()?.split_once('-')?;
    let lo = usize::from_str_radix(lo, 16).ok()?;
    let hi = usize::from_str_radix(hi, 16).ok()?;
    (hi > lo).then_some((lo, hi))
}

/// The mappings of files under `dir` that hold no page of their own: every resident page is the
/// file's (no `Anonymous` copy-on-write page, which would hold data the file does not).
fn clean_ranges_under(smaps: &str, dir: &Path) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    let mut clean = false;
    let mut flush = |current: Option<(usize, usize)>, clean: bool| {
        if let Some(r) = current.filter(|_| clean) {
            out.push(r);
        }
    };
    for line in smaps.lines() {
        if mapping_path(line).is_some() {
            flush(current, clean);
            current = range_under(line, dir);
            clean = false;
        } else if current.is_some()
            && let Some(anon) = kb_field(line, "Anonymous:")
        {
            clean = anon == 0;
        }
    }
    flush(current, clean);
    out
}

/// Drops this process's resident pages of the clean file mappings under `dir`; returns how many
/// bytes of mappings were advised.
///
/// ONNX Runtime maps external-data initializers from the package and, once a kernel has prepacked
/// a weight into its own buffer, often still holds the mapping of inputs it no longer reads (the
/// scales and zero points of `MatMulNBits`: a fifth of an int4 expert's file). Their pages would
/// stay in the RSS for the life of the session. A clean page dropped is read back from the file
/// (the page cache) on its next use, so what a kernel does read comes back and only dead pages
/// stay out.
pub fn release_mapped(dir: &Path) -> u64 {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut advised = 0;
    for (lo, hi) in clean_ranges_under(&smaps, &dir) {
        // SAFETY: [lo, hi) is a whole file mapping of this process as the kernel listed it, with
        // no copy-on-write page: every resident page equals the file's bytes, so MADV_DONTNEED
        // only makes the next read fault the same bytes back in. ONNX Runtime maps initializers
        // private (writable) but never writes a constant initializer. Should the range be
        // unmapped meanwhile, madvise fails with ENOMEM and changes nothing.
        let rc = unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_DONTNEED) };
        if rc == 0 {
            advised += (hi - lo) as u64;
        }
    }
    advised
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_reads_are_read_again_from_the_one_open_file() {
        let io = "rchar: 10\nwchar: 0\nsyscr: 1\nsyscw: 0\nread_bytes: 4096\nwrite_bytes: 0\n";
        assert_eq!(io_read_bytes(io), Some(4096));
        assert_eq!(io_read_bytes("rchar: 1\n"), None);
        let first = storage_reads().expect("/proc/self/io");
        let again = storage_reads().expect("read again at offset 0");
        assert!(again >= first);
    }

    const STATUS: &str = "Name:\tmoed\nVmPeak:\t 9000000 kB\nVmHWM:\t    4096 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n";
    const ROLLUP: &str = "55d0a0000000-7ffd00000000 ---p 00000000 00:00 0                          [rollup]\n\
Rss:                2000 kB\nPss:                1900 kB\nAnonymous:           1500 kB\nSwap:                  0 kB\n";

    #[test]
    fn snapshot_splits_anonymous_and_file_backed() {
        let s = MemSnapshot::parse(STATUS, ROLLUP);
        assert_eq!(s.rss, 2048 * 1024);
        assert_eq!(s.peak_rss, 4096 * 1024);
        assert_eq!(s.anonymous, 1500 * 1024);
        assert_eq!(s.file_backed, 500 * 1024);
    }

    #[test]
    fn unreadable_proc_gives_zeros_not_errors() {
        assert_eq!(MemSnapshot::parse("", ""), MemSnapshot::default());
    }

    #[test]
    fn mapped_bytes_count_only_files_under_the_directory() {
        let smaps = "\
7f0000000000-7f0000100000 r--p 00000000 fd:01 42                         /pkgs/a/graphs/x.onnx.data
Size:               1024 kB
Rss:                 300 kB
Anonymous:             0 kB
7f0000100000-7f0000200000 r--p 00000000 fd:01 43                         /pkgs/ab/graphs/y.onnx.data
Rss:                  70 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0 
Rss:                 900 kB
7f0000300000-7f0000400000 r--p 00001000 fd:01 44                         /pkgs/a/graphs/with space.data
Rss:                   8 kB
";
        assert_eq!(mapped_under_in(smaps, Path::new("/pkgs/a")), 308 * 1024);
        assert_eq!(mapped_under_in(smaps, Path::new("/pkgs/ab")), 70 * 1024);
        assert_eq!(mapped_under_in(smaps, Path::new("/elsewhere")), 0);
    }

    #[test]
    fn only_clean_maps_under_the_directory_are_released() {
        let smaps = "\
7f0000001000-7f0000003000 rw-p 00000000 fd:01 42                         /pkgs/a/graphs/x.onnx.data
Rss:                   8 kB
Anonymous:             0 kB
7f0000003000-7f0000005000 rw-p 00000000 fd:01 43                         /pkgs/a/graphs/written.onnx.data
Rss:                   8 kB
Anonymous:             4 kB
7f0000005000-7f0000007000 r--p 00000000 fd:01 44                         /pkgs/ab/graphs/y.onnx.data
Anonymous:             0 kB
7f0000007000-7f0000009000 rw-p 00000000 00:00 0 
Anonymous:             0 kB
7f0000009000-7f000000b000 r--p 00000000 fd:01 45                         /pkgs/a/graphs/z.onnx.data
Rss:                   0 kB
Anonymous:             0 kB
";
        assert_eq!(
            clean_ranges_under(smaps, Path::new("/pkgs/a")),
            vec![
                (0x7f0000001000, 0x7f0000003000),
                (0x7f0000009000, 0x7f000000b000)
            ]
        );
        assert_eq!(
            clean_ranges_under(smaps, Path::new("/pkgs/ab")),
            vec![(0x7f0000005000, 0x7f0000007000)]
        );
    }

    #[test]
    fn released_pages_of_a_mapped_file_read_back_the_same_bytes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("w.data");
        let bytes: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).expect("write");
        let file = std::fs::File::open(&path).expect("open");
        let len = bytes.len();
        // SAFETY: a fresh private mapping (writable, as ONNX Runtime maps initializers, never
        // written) of a file this test owns, unmapped below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        // SAFETY: the mapping is `len` readable bytes until munmap.
        let view = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
        let sum_before: u64 = view.iter().map(|&b| u64::from(b)).sum();
        assert!(mapped_under(tmp.path()) > 0, "touched pages are resident");
        assert!(release_mapped(tmp.path()) >= len as u64);
        assert_eq!(mapped_under(tmp.path()), 0, "released pages leave the RSS");
        assert_eq!(view, &bytes[..], "and read back as the file's bytes");
        assert_eq!(view.iter().map(|&b| u64::from(b)).sum::<u64>(), sum_before);
        // SAFETY: ptr/len are the mapping made above; `view` is not used after this.
        unsafe { libc::munmap(ptr, len) };
    }

    #[test]
    fn this_process_reads_back_nonzero_on_linux() {
        if !Path::new("/proc/self/smaps_rollup").exists() {
            return;
        }
        let s = MemSnapshot::now();
        assert!(s.rss > 0 && s.anonymous > 0 && s.peak_rss >= s.rss, "{s:?}");
    }
}
