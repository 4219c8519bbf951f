//! A text polkit agent for managing commands typed at a terminal, as `systemctl` and `fwupdmgr`
//! start one: over SSH there is no graphical agent, and without any agent polkit can only refuse.

use std::io::{IsTerminal, Read};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};

use crate::cli::{Command, KnowledgeCommand, ModelsCommand, PluginsCommand};

/// The agent's program, looked up on `PATH` (polkit installs it as /usr/bin/pkttyagent).
const PROGRAM: &str = "pkttyagent";

/// How long to wait for the agent to say it is registered before calling anyway.
const READY_WAIT: Duration = Duration::from_secs(5);

/// Whether `command` makes a call that polkit may authorize interactively.
pub fn may_ask_password(command: &Command) -> bool {
    match command {
        Command::Models(m) => matches!(
            m,
            ModelsCommand::Load { .. }
                | ModelsCommand::Unload { .. }
                | ModelsCommand::Switch { .. }
        ),
        Command::Experts(args) => args.reset,
        Command::Plugins(p) => match p {
            PluginsCommand::List | PluginsCommand::Info { .. } => false,
            PluginsCommand::Config(args) => args.reset || !args.settings.is_empty(),
            _ => true,
        },
        Command::Knowledge(k) => {
            matches!(
                k,
                KnowledgeCommand::Add { .. } | KnowledgeCommand::Remove { .. }
            )
        }
        _ => false,
    }
}

/// Whether to start an agent: a managing command, asked for from a terminal by someone other than
/// root (root is always allowed), not switched off with `--no-ask-password`, not for `--json`
/// (scripts must not stop for a password).
pub fn wanted(managing: bool, interactive: bool, root: bool, no_ask: bool) -> bool {
    managing && interactive && !root && !no_ask
}

/// A running agent; it is stopped when dropped.
pub struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the agent for the command, when [`wanted`]; `None` when not wanted or not installed.
pub fn start_for(command: &Command, json: bool, no_ask: bool) -> Option<Agent> {
    let interactive = !json && std::io::stdin().is_terminal();
    let root = nix::unistd::geteuid().is_root();
    if !wanted(may_ask_password(command), interactive, root, no_ask) {
        return None;
    }
    start(&find(PROGRAM)?)
}

fn find(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Starts `program --notify-fd N --fallback` (`--fallback`: an agent already registered for the
/// session, a desktop's, is kept) and waits until it closes N, which it does once registered.
pub fn start(program: &Path) -> Option<Agent> {
    let (mut ready, notify) = std::io::pipe().ok()?;
    let fd = notify.as_raw_fd();
    let mut cmd = Process::new(program);
    cmd.arg("--notify-fd")
        .arg(fd.to_string())
        .arg("--fallback")
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    // SAFETY: only fcntl, async-signal-safe, runs between fork and exec: the notify end must
    // survive exec (std opens pipes close-on-exec). `fd` stays open in the parent until spawn
    // has returned, so it is valid in the child.
    unsafe {
        cmd.pre_exec(move || {
            let fd = BorrowedFd::borrow_raw(fd);
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
            Ok(())
        });
    }
    let child = cmd.spawn().ok()?;
    drop(notify);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = ready.read_to_end(&mut sink);
        let _ = tx.send(());
    });
    // Not ready in time: call anyway; polkit then refuses as it would have without an agent.
    let _ = rx.recv_timeout(READY_WAIT);
    Some(Agent(child))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_managing_command_at_a_terminal_by_a_user_starts_one() {
        assert!(wanted(true, true, false, false));
        assert!(!wanted(false, true, false, false), "a reading command");
        assert!(!wanted(true, false, false, false), "no terminal (a script)");
        assert!(!wanted(true, true, true, false), "root needs no password");
        assert!(!wanted(true, true, false, true), "--no-ask-password");
    }
}
