//! Finding and running the Python exporter: its folder (the moed-import package's
//! /usr/lib/moed/export, or MOED_EXPORTER_DIR), the interpreter (the system's python3, or
//! MOED_PYTHON), and one run of it with its progress lines and error lines read back.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use super::paths::Plan;
use crate::error::CtlError;

/// Where the moed-import package installs the exporter.
pub const SYSTEM_DIR: &str = "/usr/lib/moed/export";
/// The exporter's exit statuses (models/export/moe_export/cli.py and deps.py).
const BAD_INPUT: i32 = 2;
const MISSING_MODULES: i32 = 3;
/// How much of the exporter's stderr is kept for the error message.
const STDERR_TAIL: usize = 64 * 1024;
const MAX_LINE: u64 = 4096;
/// Isolated (-I: no PYTHONPATH, user site-packages or current folder on sys.path), so only the
/// exporter folder and the system's modules are used; -B writes no bytecode into /usr/lib. The
/// module check comes before anything imports numpy or onnx.
const BOOT: &str = "import sys\n\
sys.path.insert(0, sys.argv.pop(1))\n\
from moe_export.deps import require\n\
require()\n\
from moe_export.cli import main\n\
sys.exit(main(sys.argv[1:]))\n";

pub struct Exporter {
    pub python: PathBuf,
    pub dir: PathBuf,
}

/// The development tree's exporter, relative to this crate: searched by debug builds only, so an
/// installed (release) moectl never looks inside the tree it was built in (as ONNX Runtime's
/// discovery in moed-engine).
const DEV_TREE_DIR: Option<&str> = if cfg!(debug_assertions) {
    Some("../models/export")
} else {
    None
};

/// The exporter folders tried, in order: MOED_EXPORTER_DIR alone when set; else the package
/// location, `<exe dir>/../lib/moed/export`, and (debug builds only) this source tree's.
pub fn dir_candidates(env: Option<OsString>, exe: Option<&Path>) -> Vec<PathBuf> {
    if let Some(dir) = env.filter(|v| !v.is_empty()) {
        return vec![PathBuf::from(dir)];
    }
    let mut out = vec![PathBuf::from(SYSTEM_DIR)];
    if let Some(dir) = exe.and_then(Path::parent) {
        out.push(dir.join("../lib/moed/export"));
    }
    if let Some(rel) = DEV_TREE_DIR {
        out.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel));
    }
    out
}

pub fn locate() -> Result<Exporter, CtlError> {
    let env = std::env::var_os("MOED_EXPORTER_DIR");
    let named = env.as_ref().is_some_and(|v| !v.is_empty());
    let exe = std::env::current_exe().ok();
    let candidates = dir_candidates(env, exe.as_deref());
    let dir = candidates
        .iter()
        .find(|d| d.join("moe_export/__init__.py").is_file())
        .cloned()
        .ok_or_else(|| {
            CtlError::Failed(if named {
                format!(
                    "MOED_EXPORTER_DIR={} holds no moe_export package",
                    candidates[0].display()
                )
            } else {
                format!(
                    "the model exporter is not installed (no {SYSTEM_DIR}): install the moed-import package (apt install moed-import, or dnf install moed-import)"
                )
            })
        })?;
    Ok(Exporter {
        python: python()?,
        dir,
    })
}

/// MOED_PYTHON, else the system's /usr/bin/python3 (not a python3 that a virtualenv or pyenv puts
/// first on PATH), else python3 on PATH.
fn python() -> Result<PathBuf, CtlError> {
    if let Some(p) = std::env::var_os("MOED_PYTHON").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let system = Path::new("/usr/bin/python3");
    if system.is_file() {
        return Ok(system.to_path_buf());
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("python3"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| CtlError::Failed("python3 is not installed: apt install python3".into()))
}

impl Exporter {
    /// Runs the export; `progress(done, total, graph)` for each graph the exporter starts.
    pub fn run(
        &self,
        plan: &Plan,
        quant: &str,
        force: bool,
        mut progress: impl FnMut(u64, u64, &str),
    ) -> Result<(), CtlError> {
        let mut cmd = Command::new(&self.python);
        cmd.args(["-I", "-B", "-c", BOOT])
            .arg(&self.dir)
            .arg(&plan.src)
            .arg(&plan.out)
            .args(["--quant", quant, "--name", &plan.name, "--progress-lines"]);
        if force {
            cmd.arg("--force");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                CtlError::Failed(format!(
                    "cannot run {}: {e}; install python3 or name an interpreter with MOED_PYTHON",
                    self.python.display()
                ))
            })?;
        let stderr = child.stderr.take().map(|mut s| {
            std::thread::spawn(move || {
                let mut tail = Vec::new();
                let mut chunk = [0u8; 8192];
                while let Ok(n) = s.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&chunk[..n]);
                    if tail.len() > STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
                tail
            })
        });
        if let Some(stdout) = child.stdout.take() {
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if let Some((done, total, graph)) = parse_progress(&line) {
                            progress(done, total, graph);
                        }
                    }
                }
            }
        }
        let status = child
            .wait()
            .map_err(|e| CtlError::io("waiting for the exporter", e))?;
        let tail = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
        outcome(status, &String::from_utf8_lossy(&tail))
    }
}

/// `graph I/N NAME` as the exporter's --progress-lines prints it.
fn parse_progress(line: &[u8]) -> Option<(u64, u64, &str)> {
    let text = std::str::from_utf8(line).ok()?.trim_end();
    let (counts, graph) = text.strip_prefix("graph ")?.split_once(' ')?;
    let (done, total) = counts.split_once('/')?;
    Some((done.parse().ok()?, total.parse().ok()?, graph))
}

/// The error for a failed run, from its exit status and the end of its stderr.
fn outcome(status: ExitStatus, stderr: &str) -> Result<(), CtlError> {
    if status.success() {
        return Ok(());
    }
    let errors: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("moe_export: error: "))
        .collect();
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
    let message: String = match (status.code(), errors.is_empty()) {
        (Some(BAD_INPUT), false) => return Err(CtlError::Invalid(bounded(&errors.join("; ")))),
        (Some(MISSING_MODULES), false) => errors.join("; "),
        _ => format!(
            "the exporter failed ({status}): {}",
            last.unwrap_or("it printed nothing")
        ),
    };
    Err(CtlError::Failed(bounded(&message)))
}

fn bounded(text: &str) -> String {
    const MAX: usize = 2000;
    if text.len() <= MAX {
        return text.to_string();
    }
    let cut = (0..=MAX)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}…", &text[..cut])
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;
    use crate::error::exit;

    fn status(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn progress_lines_parse() {
        assert_eq!(
            parse_progress(b"graph 3/47 layer.1.attn\n"),
            Some((3, 47, "layer.1.attn"))
        );
        assert_eq!(parse_progress(b"wrote /x (47 files, 0.9 MB)\n"), None);
        assert_eq!(parse_progress(b"graph x/47 a\n"), None);
        assert_eq!(parse_progress(b"graph 3/47\n"), None);
        assert_eq!(parse_progress(b"\xff\xfe"), None);
    }

    #[test]
    fn exit_statuses_map_to_moectl_errors() {
        assert!(outcome(status(0), "").is_ok());
        let bad = outcome(status(2), "moe_export: error: tensor 'x' is missing\n").unwrap_err();
        assert_eq!(
            (bad.exit_code(), bad.to_string()),
            (exit::INVALID, "tensor 'x' is missing".into())
        );
        let missing = outcome(
            status(3),
            "moe_export: error: python3-onnx is not installed (Python module 'onnx' missing): apt install python3-onnx\n",
        )
        .unwrap_err();
        assert_eq!(missing.exit_code(), exit::FAILURE);
        assert!(
            missing
                .to_string()
                .starts_with("python3-onnx is not installed")
        );
        let crash = outcome(status(1), "Traceback...\nMemoryError\n\n").unwrap_err();
        assert!(
            crash.to_string().ends_with("exit status: 1): MemoryError"),
            "{crash}"
        );
        let killed = outcome(ExitStatus::from_raw(9), "").unwrap_err();
        assert!(
            killed.to_string().contains("it printed nothing"),
            "{killed}"
        );
        let long = outcome(
            status(2),
            &format!("moe_export: error: {}", "é".repeat(3000)),
        )
        .unwrap_err();
        assert!(long.to_string().len() <= 2003);
    }

    #[test]
    fn exporter_dir_env_replaces_every_other_place() {
        let only = dir_candidates(Some("/opt/x".into()), Some(Path::new("/usr/bin/moectl")));
        assert_eq!(only, vec![PathBuf::from("/opt/x")]);
        let all = dir_candidates(Some("".into()), Some(Path::new("/opt/moed/bin/moectl")));
        assert_eq!(all[0], Path::new(SYSTEM_DIR));
        assert_eq!(all[1], Path::new("/opt/moed/bin/../lib/moed/export"));
        // Debug builds (these tests) also try the source tree; release builds do not.
        assert_eq!(all.len(), 3);
        assert!(all[2].ends_with("ctl/../models/export"));
    }
}
