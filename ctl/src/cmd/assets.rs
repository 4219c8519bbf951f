//! Shell completions (scripts that ask `moectl` itself, see `complete`) and man pages from the clap
//! definition: `moectl completions SHELL`, and the hidden `moectl generate-assets DIR` that writes
//! everything a package installs.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::error::{CtlError, EXIT_CODES};

pub fn completions(shell: Shell) -> Result<(), CtlError> {
    crate::style::out(&String::from_utf8_lossy(&registration(shell)?))
}

/// The shell's script that hands completion to `moectl` itself (`COMPLETE=<shell> moectl -- ...`),
/// so the names of models, plugins and data sources come from the running daemon; `moectl` is
/// found on `PATH` when the shell completes.
fn registration(shell: Shell) -> Result<Vec<u8>, CtlError> {
    use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh};
    let completer: &dyn EnvCompleter = match shell {
        Shell::Bash => &Bash,
        Shell::Zsh => &Zsh,
        Shell::Fish => &Fish,
        Shell::Elvish => &Elvish,
        Shell::PowerShell => &Powershell,
        other => {
            return Err(CtlError::Usage(format!(
                "no completion for the shell {other}"
            )));
        }
    };
    let mut script = Vec::new();
    completer
        .write_registration("COMPLETE", "moectl", "moectl", "moectl", &mut script)
        .map_err(|e| CtlError::io("writing the completion script", e))?;
    Ok(script)
}

/// Writes `moectl.1` and `moectl-<verb>[-<sub>].1` man pages, and `moectl.bash`, `_moectl`
/// (zsh) and `moectl.fish` completions into `dir`.
pub fn generate(dir: &Path) -> Result<(), CtlError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CtlError::io(format!("creating {}", dir.display()), e))?;
    let mut command = Cli::command();
    command.build();
    for (shell, file) in [
        (Shell::Bash, "moectl.bash"),
        (Shell::Zsh, "_moectl"),
        (Shell::Fish, "moectl.fish"),
    ] {
        write(&dir.join(file), &registration(shell)?)?;
    }
    man_pages(&command, "moectl", dir)
}

fn man_pages(command: &clap::Command, name: &str, dir: &Path) -> Result<(), CtlError> {
    let mut page = Vec::new();
    let man = clap_mangen::Man::new(command.clone().name(name.to_string()));
    let rendered = if name == "moectl" {
        // The top page gets a real EXIT STATUS section instead of the help's plain text.
        man.render_title(&mut page)
            .and_then(|()| man.render_name_section(&mut page))
            .and_then(|()| man.render_synopsis_section(&mut page))
            .and_then(|()| man.render_description_section(&mut page))
            .and_then(|()| man.render_options_section(&mut page))
            .and_then(|()| man.render_subcommands_section(&mut page))
            .and_then(|()| page.write_all(exit_status_roff().as_bytes()))
            .and_then(|()| page.write_all(ENVIRONMENT_ROFF.as_bytes()))
            .and_then(|()| man.render_version_section(&mut page))
            .and_then(|()| page.write_all(see_also_roff(command, name).as_bytes()))
    } else {
        man.render(&mut page)
            .and_then(|()| page.write_all(see_also_roff(command, name).as_bytes()))
    };
    rendered.map_err(|e| CtlError::io(format!("rendering the man page {name}.1"), e))?;
    write(&dir.join(format!("{name}.1")), &page)?;
    for sub in command.get_subcommands() {
        // `help` mirrors the real pages; hidden commands are not documented.
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        man_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}

/// The top page's ENVIRONMENT section: what moectl reads from its environment.
const ENVIRONMENT_ROFF: &str = r#".SH ENVIRONMENT
.TP
\fBMOECTL_BUS\fR
The bus to use when \fB\-\-bus\fR is not given: \fBsystem\fR, \fBsession\fR or a D\-Bus address.
.TP
\fBNO_COLOR\fR
When set (to anything), no colour is used; colour is otherwise used only on a terminal and not with \fBTERM=dumb\fR.
.TP
\fBXDG_STATE_HOME\fR
Where \fBchat\fR keeps its line history (\fI$XDG_STATE_HOME/moectl/chat_history\fR, by default under \fI~/.local/state\fR).
.TP
\fBPATH\fR
Searched for \fBpkttyagent\fR(1), started for managing commands typed at a terminal (see \fB\-\-no\-ask\-password\fR).
"#;

/// SEE ALSO: the top page names the daemon and every command's page; a command's page names its
/// parent and its own subcommands' pages.
fn see_also_roff(command: &clap::Command, name: &str) -> String {
    let mut refs: Vec<String> = Vec::new();
    match name.rsplit_once('-') {
        None => refs.extend(["moed(8)".to_string(), "pkttyagent(1)".to_string()]),
        Some((parent, _)) => refs.push(format!("{parent}(1)")),
    }
    for sub in command.get_subcommands() {
        if !sub.is_hide_set() && sub.get_name() != "help" {
            refs.push(format!("{name}-{}(1)", sub.get_name()));
        }
    }
    let list: Vec<String> = refs
        .iter()
        .map(|r| match r.split_once('(') {
            Some((page, section)) => format!("\\fB{}\\fR({section}", page.replace('-', "\\-")),
            None => r.clone(),
        })
        .collect();
    format!(".SH \"SEE ALSO\"\n{}\n", list.join(", "))
}

fn exit_status_roff() -> String {
    let mut roff = String::from(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in EXIT_CODES {
        roff.push_str(&format!(".TP\n{code}\n{}\n", meaning.replace('-', "\\-")));
    }
    roff
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), CtlError> {
    std::fs::write(path, bytes).map_err(|e| CtlError::io(format!("writing {}", path.display()), e))
}
