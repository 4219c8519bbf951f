//! The command line of `moectl` (clap); the same definition feeds the help texts, the shell
//! completions and the man pages.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::bus::BusChoice;
use crate::error::exit_codes_help;

const LONG_ABOUT: &str = "\
moectl talks to moed, the Mixture-of-Experts inference service, over D-Bus (name org.moed.Moed1):
it generates and chats with the loaded model, scores text, manages models, shows which experts
the model routes tokens to, and follows plugin alerts.

Reading and inference are open to local users (or the group in access.allowed_group); loading,
unloading and switching models and resetting statistics need the polkit action
org.moed.manage-models (root and members of access.admin_group always have it).";

#[derive(Parser, Debug)]
#[command(
    name = "moectl",
    version,
    about = "Command line for moed, the Mixture-of-Experts inference service",
    long_about = LONG_ABOUT,
    after_long_help = exit_codes_help(),
    propagate_version = true
)]
pub struct Cli {
    /// The bus moed serves on: `system`, `session`, or a D-Bus address (unix:path=...)
    #[arg(
        long,
        global = true,
        default_value = "system",
        env = "MOECTL_BUS",
        value_name = "BUS"
    )]
    pub bus: BusChoice,

    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the daemon's state, active model, execution provider and load
    Status,
    /// Generate text for a prompt, streamed as it is produced
    Generate(GenerateArgs),
    /// Chat with the model: one message with --system, or interactively
    #[command(long_about = CHAT_LONG_ABOUT)]
    Chat(ChatArgs),
    /// Print the log-probability of each token of a text
    Score(ScoreArgs),
    /// List, inspect, load, unload and switch models
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Show per-layer expert activation as a heatmap, and the expert cache hit rate
    Experts(ExpertsArgs),
    /// Show or check the moed configuration on this machine
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Follow the alerts plugins raise about requests (needs root: a bus monitor)
    #[command(long_about = ALERTS_LONG_ABOUT)]
    Alerts,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell to complete for
        shell: clap_complete::Shell,
    },
    /// Write the man pages and completion scripts into DIR, for packaging
    #[command(hide = true)]
    GenerateAssets {
        /// Output directory (created if missing)
        dir: PathBuf,
    },
}

const CHAT_LONG_ABOUT: &str = "\
Chat with the model through its chat template.

With a MESSAGE (or `-` to read it from stdin), sends one user turn (after --system, if given),
streams the answer and exits. Without one, starts an interactive conversation: each input is a
user turn; end a line with `\\` to continue it on the next line, or enclose several lines in
lines of `\"\"\"`. Lines starting with `/` are commands:

  /temperature T   /top-p P   /top-k K   /max-tokens N   /seed S   change sampling options
  /system TEXT     set the system message (empty: none)
  /reset           forget the conversation
  /history         print the conversation so far
  /help            list the commands
  /quit            leave (Ctrl-D too)";

const ALERTS_LONG_ABOUT: &str = "\
Follow the Alert signals that plugins raise about requests (severity, code, message, source),
for every client, until interrupted.

moed sends a request's signals only to the client that made it, so this command becomes a
D-Bus monitor (org.freedesktop.DBus.Monitoring.BecomeMonitor), which the system bus allows
only to root. Alerts of your own requests are also shown by `generate` and `chat`.";

/// Sampling and model options shared by `generate` and `chat`.
#[derive(Args, Debug, Clone, Default)]
pub struct SamplingArgs {
    /// Most tokens to generate (default: the model package's setting)
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature; 0 is greedy
    #[arg(long, value_name = "T")]
    pub temperature: Option<f64>,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass, in (0, 1]
    #[arg(long, value_name = "P")]
    pub top_p: Option<f64>,
    /// Keep only the K most likely tokens
    #[arg(long, value_name = "K")]
    pub top_k: Option<u32>,
    /// Drop tokens less likely than MIN_P times the most likely one
    #[arg(long, value_name = "MIN_P")]
    pub min_p: Option<f64>,
    /// Repetition penalty; 1 is off
    #[arg(long, value_name = "R")]
    pub repetition_penalty: Option<f64>,
    /// Seed for repeatable sampling
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Stop before this string (repeatable, up to 16)
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Use this loaded model instead of the active one
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Keep generating past end-of-sequence tokens, up to --max-tokens (benchmarks, tests)
    #[arg(long, requires = "max_tokens")]
    pub ignore_eos: bool,
    /// Do not show the model's thinking section (it is shown dimmed on stderr otherwise)
    #[arg(long)]
    pub no_thinking: bool,
    /// Print token counts, timing and the finish reason on stderr afterwards
    #[arg(long)]
    pub stats: bool,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// The prompt; `-` reads it from stdin
    pub prompt: String,
    /// A system message before the prompt
    #[arg(long, value_name = "TEXT", conflicts_with = "raw")]
    pub system: Option<String>,
    /// Send the prompt to the model as it is, without the chat template
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// One user message (`-` reads it from stdin); without it, chat interactively
    pub message: Option<String>,
    /// The system message of the conversation
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// The text to score (as it is, no chat template); `-` reads it from stdin
    pub text: String,
    /// Use this loaded model instead of the active one
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// List the packages in the model directories and the loaded models
    List,
    /// Show what a package's manifest says and its state in the daemon
    Info {
        /// A package name (from `models list`) or an absolute path
        name: String,
    },
    /// Load a model and keep it in memory (needs org.moed.manage-models)
    Load {
        /// A package name (from `models list`) or an absolute path
        name: String,
    },
    /// Drop a loaded model from memory (needs org.moed.manage-models)
    Unload {
        /// The loaded model's name
        name: String,
    },
    /// Make a model the active one, loading it if needed (needs org.moed.manage-models)
    Switch {
        /// A package name (from `models list`) or an absolute path
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct ExpertsArgs {
    /// The model whose statistics to show (default: the active model)
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Also write the heatmap as an SVG picture to FILE
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Forget the model's statistics instead of showing them (needs org.moed.manage-models)
    #[arg(long, conflicts_with = "svg")]
    pub reset: bool,
}

/// How `config` finds the configuration and the `moed` program that reads it.
#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// The main configuration file (default: /etc/moed/moed.toml; its FILE.d/*.toml follow)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The moed program (default: next to moectl, else on PATH)
    #[arg(long, value_name = "PATH", env = "MOECTL_MOED")]
    pub moed: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the effective configuration (files, MOED_* variables and defaults merged)
    #[command(long_about = CONFIG_LONG_ABOUT)]
    Show(ConfigArgs),
    /// Check the configuration; exit status 5 when it is invalid
    #[command(long_about = CONFIG_LONG_ABOUT)]
    Check(ConfigArgs),
}

const CONFIG_LONG_ABOUT: &str = "\
Reads the configuration the way the service does, on this machine: moed does not publish its
configuration over D-Bus, so this runs `moed check-config`, which loads /etc/moed/moed.toml (or
--config), its .d directory and the MOED_* environment variables, checks every value and prints
the effective result. Run it with the service's environment to see what the service sees.";
