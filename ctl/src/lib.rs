//! `moectl`: the command line for moed. It talks only D-Bus, through the `moed-dbus` contract
//! crate; the binary is a thin edge over [`main`].

mod agent;
pub mod bus;
pub mod cli;
mod cmd;
mod complete;
pub mod error;
pub mod heatmap;
mod json;
pub mod style;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::bus::App;
use crate::cli::{Cli, Command};
use crate::error::CtlError;
use crate::style::Style;

/// Parses the command line, runs the command and reports errors; returns the exit status.
pub fn main() -> ExitCode {
    // With COMPLETE=<shell> set, this prints the shell's registration script or its completions
    // (names asked of moed, see `complete`) and exits.
    clap_complete::CompleteEnv::with_factory(Cli::command).complete();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap prints help/version to stdout (status 0) and usage errors to stderr (2).
            let _ = err.print();
            return ExitCode::from(err.exit_code().clamp(0, 255) as u8);
        }
    };
    let json = cli.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report(&err, json);
            ExitCode::from(err.exit_code())
        }
    }
}

fn report(err: &CtlError, json: bool) {
    if matches!(err, CtlError::BrokenPipe) {
        return;
    }
    if json {
        style::err(&format!("{}\n", err.to_json()));
        return;
    }
    let style = Style::stderr();
    // A daemon's error message can quote a plugin's failure or a document's name.
    let message = err.to_string();
    style::err(&format!(
        "{} {}\n",
        style.red(&style.bold("moectl:")),
        moed_dbus::wire::terminal(&message)
    ));
    if let Some(hint) = err.hint() {
        style::err(&format!("{} {hint}\n", style.yellow("hint:")));
    }
}

fn run(cli: Cli) -> Result<(), CtlError> {
    // Commands that need no daemon.
    match &cli.command {
        Command::Completions { shell } => return cmd::assets::completions(*shell),
        Command::GenerateAssets { dir } => return cmd::assets::generate(dir),
        Command::Config(command) => return cmd::config::run(command, cli.json),
        Command::Models(cli::ModelsCommand::Import(args)) => {
            return cmd::import::run(args, cli.json);
        }
        _ => {}
    }
    // Started before connecting, so it is registered before moed asks polkit; stopped on return.
    let _agent = agent::start_for(&cli.command, cli.json, cli.no_ask_password);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| CtlError::io("starting the async runtime", e))?;
    let app = runtime.block_on(async {
        Ok::<_, CtlError>(App {
            conn: cli.bus.connect().await?,
            bus: cli.bus.clone(),
            json: cli.json,
            out: Style::stdout(),
            err: Style::stderr(),
        })
    })?;
    match cli.command {
        Command::Status => runtime.block_on(cmd::status::run(&app)),
        Command::Generate(args) => runtime.block_on(cmd::generate::run(&app, args)),
        Command::Chat(args) => cmd::chat::run(&app, &runtime, args),
        Command::Score(args) => runtime.block_on(cmd::score::run(&app, args)),
        Command::Models(command) => runtime.block_on(cmd::models::run(&app, command)),
        Command::Experts(args) => runtime.block_on(cmd::experts::run(&app, args)),
        Command::Alerts(args) => runtime.block_on(cmd::alerts::run(&app, args)),
        Command::Plugins(command) => runtime.block_on(cmd::plugins::run(&app, command)),
        Command::Knowledge(command) => runtime.block_on(cmd::knowledge::run(&app, command)),
        Command::Completions { .. } | Command::GenerateAssets { .. } | Command::Config(_) => Ok(()),
    }
}

/// Reads the argument `-` as all of stdin, anything else as itself.
pub(crate) fn text_or_stdin(arg: &str, what: &str) -> Result<String, CtlError> {
    if arg != "-" {
        return Ok(arg.to_string());
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .map_err(|e| CtlError::io(format!("reading the {what} from stdin"), e))?;
    Ok(text)
}
