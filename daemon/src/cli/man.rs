//! The hidden `moed generate-assets DIR`: `moed.8` from the clap definition (clap_mangen, as
//! `moectl generate-assets` makes moectl's pages), with the sections `--help` has no place for.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, CommandFactory};

use super::Cli;

#[derive(Args, Debug)]
pub struct GenerateAssetsArgs {
    /// Directory to write moed.8 into (created if missing).
    pub dir: PathBuf,
}

pub fn run(args: GenerateAssetsArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let path = args.dir.join("moed.8");
    std::fs::write(&path, page()?).with_context(|| format!("writing {}", path.display()))
}

/// The page, rendered section by section so that ours stand where man-pages(7) puts them.
fn page() -> anyhow::Result<Vec<u8>> {
    let mut command = Cli::command();
    command.build();
    let man = clap_mangen::Man::new(command.clone()).section("8");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    page.write_all(DESCRIPTION.as_bytes())?;
    man.render_options_section(&mut page)?;
    page.write_all(commands(&command).as_bytes())?;
    page.write_all(ENVIRONMENT.as_bytes())?;
    page.write_all(FILES.as_bytes())?;
    page.write_all(SEE_ALSO.as_bytes())?;
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// The commands with their summaries. clap_mangen's own section refers to a page per command
/// (`moed-generate(8)`); there is one page, and `moed COMMAND --help` has the details.
fn commands(command: &clap::Command) -> String {
    let mut roff = String::from(".SH COMMANDS\n");
    for sub in command.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        roff.push_str(&format!(
            ".TP\n.B moed {}\n{}\n",
            escape(sub.get_name()),
            escape(&about)
        ));
    }
    roff
}

/// Text as roff shows it literally: hyphens that are not line-break points, no leading control
/// character.
fn escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

const DESCRIPTION: &str = r#".SH DESCRIPTION
.B moed
runs Mixture\-of\-Experts language models split per layer on ONNX Runtime: per layer an attention
graph and the router (its own graph, or fused into the attention graph), then only the experts the
router picks.
.B moed serve
is the system service (moed.service) on the system bus (D\-Bus name org.moed.Moed1); the other
commands work on a model package directly. Clients use
.BR moectl (1)
or any D\-Bus client. Run
.B moed
.I COMMAND
.B \-\-help
for each command's options.
"#;

const ENVIRONMENT: &str = r#".SH ENVIRONMENT
.TP
.B MOED_<SECTION>__<KEY>
Overrides the configuration key
.I KEY
of section
.I SECTION
(for example
.BR MOED_SERVICE__MAX_CONCURRENT );
.B moed check\-config
prints the effective values.
.TP
.B ORT_DYLIB_PATH
An ONNX Runtime library, tried after the configuration's
.BR engine.ort_library .
.TP
.BR STATE_DIRECTORY ", " CACHE_DIRECTORY
Set by systemd for moed.service: where state and compiled plugins are kept.
.TP
.BR XDG_STATE_HOME ", " HOME
Where state is kept when moed runs outside the service and the configuration names no
.B service.state_directory
.RI ( $XDG_STATE_HOME/moed ,
else
.IR ~/.local/state/moed ).
"#;

const FILES: &str = r#".SH FILES
.TP
.I /etc/moed/moed.toml
The configuration, followed by
.I /etc/moed/moed.toml.d/*.toml
in name order and the
.B MOED_<SECTION>__<KEY>
environment variables.
.TP
.I /usr/share/moed/models/
Model packages shipped with the package (the default model moe\-mini);
.I /var/lib/moed/models/
is searched first.
.TP
.I /usr/share/moed/plugins/
The shipped WASM plugins (NAME.wasm with its manifest NAME.toml).
.TP
.I /usr/lib/moed/
The ONNX Runtime library moed loads.
.TP
.I /var/lib/moed/
State: models switched to, plugin stores, alert audit log, expert statistics.
.TP
.I /usr/share/doc/moed/README.systemd.md
Why the unit is hardened as it is, and drop\-ins for GPUs and TCP databases.
"#;

const SEE_ALSO: &str = r#".SH "SEE ALSO"
.BR moectl (1),
.BR systemctl (1),
.BR journalctl (1)
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_its_sections_and_every_visible_command() {
        let page = String::from_utf8(page().expect("render")).expect("utf-8");
        assert!(page.contains(".TH moed 8 "));
        for section in [
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH DESCRIPTION",
            ".SH OPTIONS",
            ".SH COMMANDS",
            ".SH ENVIRONMENT",
            ".SH FILES",
            ".SH \"SEE ALSO\"",
        ] {
            assert!(page.contains(section), "{section} is missing");
        }
        for command in Cli::command().get_subcommands() {
            let entry = format!(".B moed {}\n", command.get_name().replace('-', "\\-"));
            let listed = command.get_name() != "help" && !command.is_hide_set();
            assert_eq!(page.contains(&entry), listed, "{entry}");
        }
        assert!(!page.contains("moed\\-generate(8)"), "no pages per command");
    }
}
