//! The command line of `moectl` (clap); the same definition feeds the help texts, the shell
//! completions and the man pages.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use moed_dbus::options;

use clap_complete::engine::ArgValueCompleter;

use crate::bus::BusChoice;
use crate::error::exit_codes_help;

const LONG_ABOUT: &str = "\
moectl talks to moed, the Mixture-of-Experts inference service, over D-Bus (name org.moed.Moed1):
it generates and chats with the loaded model, scores text, manages models and plugins, shows
which experts the model routes tokens to, and follows plugin alerts.

Reading and inference are open to local users (or the group in access.allowed_group); loading,
unloading and switching models and resetting statistics need the polkit action
org.moed.manage-models, managing plugins and reading the alert log org.moed.manage-plugins (root
and members of access.admin_group always have both).";

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
        value_name = "BUS",
        value_parser = crate::bus::BusParser,
        hide_possible_values = true
    )]
    pub bus: BusChoice,

    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,

    /// Do not start a text polkit agent (pkttyagent) to ask for a password on this terminal
    /// when a managing command needs authorization
    #[arg(long, global = true)]
    pub no_ask_password: bool,

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
    /// List, inspect, load, unload and switch models; import Hugging Face checkpoints
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Show per-layer expert activation as a heatmap, and the expert cache hit rate
    Experts(ExpertsArgs),
    /// List, install, enable, disable, reload, configure and remove WASM plugins
    #[command(subcommand, long_about = PLUGINS_LONG_ABOUT)]
    Plugins(PluginsCommand),
    /// Show or check the moed configuration on this machine
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Add documents to moed's knowledge store and search it and the company's databases
    #[command(subcommand, long_about = KNOWLEDGE_LONG_ABOUT)]
    Knowledge(KnowledgeCommand),
    /// Follow the alerts plugins raise (needs root: a bus monitor), or print the audit log (--log)
    #[command(long_about = ALERTS_LONG_ABOUT)]
    Alerts(AlertsArgs),
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

  /temperature T   /top-p P   /top-k K   /min-p P   /max-tokens N   /seed S
                   set a sampling option (`default` goes back to the model's)
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
only to root. Alerts of your own requests are also shown by `generate` and `chat`.

With --log, prints the newest entries of moed's alert audit log instead (every alert with its
time, plugin, request and client uid; moed keeps the newest 10000) and exits; this needs the
polkit action org.moed.manage-plugins.";

#[derive(Args, Debug)]
pub struct AlertsArgs {
    /// Print the alert audit log instead of following new alerts
    #[arg(long)]
    pub log: bool,
    /// With --log: how many of the newest entries (0: all moed keeps)
    #[arg(long, value_name = "N", default_value_t = 50, requires = "log")]
    pub limit: u32,
}

/// Sampling and model options shared by `generate` and `chat`.
#[derive(Args, Debug, Clone, Default)]
pub struct SamplingArgs {
    /// Most tokens to generate (default: the model package's setting)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: Option<u32>,
    /// Sampling temperature; 0 is greedy
    #[arg(long, value_name = "T", allow_negative_numbers = true,
          value_parser = |s: &str| float_flag(s, &options::TEMPERATURE))]
    pub temperature: Option<f64>,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass, in (0, 1]
    #[arg(long, value_name = "P", allow_negative_numbers = true,
          value_parser = |s: &str| float_flag(s, &options::TOP_P))]
    pub top_p: Option<f64>,
    /// Keep only the K most likely tokens
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    pub top_k: Option<u32>,
    /// Drop tokens less likely than MIN_P times the most likely one
    #[arg(long, value_name = "MIN_P", allow_negative_numbers = true,
          value_parser = |s: &str| float_flag(s, &options::MIN_P))]
    pub min_p: Option<f64>,
    /// Repetition penalty; 1 is off
    #[arg(long, value_name = "R", allow_negative_numbers = true,
          value_parser = |s: &str| float_flag(s, &options::REPETITION_PENALTY))]
    pub repetition_penalty: Option<f64>,
    /// Seed for repeatable sampling
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Stop before this string (repeatable, up to 16)
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Use this loaded model instead of the active one
    #[arg(long, value_name = "NAME", add = ArgValueCompleter::new(crate::complete::models))]
    pub model: Option<String>,
    /// Keep generating past end-of-sequence tokens, up to --max-tokens (benchmarks, tests)
    #[arg(long, requires = "max_tokens")]
    pub ignore_eos: bool,
    /// The answer must be JSON valid under the JSON schema in FILE (`-`: standard input)
    #[arg(long, value_name = "FILE", value_parser = schema_flag,
          conflicts_with_all = ["regex", "json_object"])]
    pub json_schema: Option<String>,
    /// The answer must match this regular expression (Rust regex syntax) as a whole
    #[arg(long, value_name = "RE", conflicts_with = "json_object")]
    pub regex: Option<String>,
    /// The answer must be a JSON object
    #[arg(long)]
    pub json_object: bool,
    /// Do not show the model's thinking section (it is shown dimmed on stderr otherwise)
    #[arg(long)]
    pub no_thinking: bool,
    /// Print token counts, timing and the finish reason on stderr afterwards
    #[arg(long)]
    pub stats: bool,
    /// Apply this installed, enabled plugin to the request (repeatable): a gate routes it,
    /// filters run after the always-on ones, retrieval plugins replace the always-on ones
    #[arg(long = "plugin", value_name = "NAME")]
    pub plugins: Vec<String>,
    /// A parameter for the request's plugins (repeatable); VALUE is JSON, or else taken as a
    /// string (example: --plugin-param expert_budget.k=1)
    #[arg(long = "plugin-param", value_name = "KEY=VALUE", value_parser = parse_plugin_param)]
    pub plugin_params: Vec<(String, String)>,
    /// Do not retrieve documents for this request
    #[arg(long)]
    pub no_retrieval: bool,
    /// Retrieve only from this data source label (repeatable)
    #[arg(long = "source", value_name = "LABEL", conflicts_with = "no_retrieval")]
    pub sources: Vec<String>,
}

/// A sampling flag's number, checked by the same rule the daemon applies to the option, so a bad
/// value is reported with the flag's name (clap adds it) before anything is sent.
/// The schema text of `--json-schema FILE` (`-`: standard input), read no further than the
/// daemon's limit allows.
fn schema_flag(path: &str) -> Result<String, String> {
    use std::io::Read;
    let max = options::MAX_JSON_SCHEMA_BYTES;
    let reader: Box<dyn Read> = if path == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?)
    };
    let mut text = String::new();
    reader
        .take(max as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{path}: {e}"))?;
    if text.len() > max {
        return Err(format!("{path}: a schema may have at most {max} bytes"));
    }
    Ok(text)
}

fn float_flag(text: &str, rule: &options::FloatRule) -> Result<f64, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| "not a number".to_string())?;
    rule.check(v)
}

/// `KEY=VALUE` with VALUE as JSON text: valid JSON is kept, anything else becomes a JSON string.
fn parse_plugin_param(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not KEY=VALUE"))?;
    if key.trim().is_empty() {
        return Err(format!("'{text}' has an empty key"));
    }
    let json = match serde_json::from_str::<serde_json::Value>(value) {
        Ok(v) => v.to_string(),
        Err(_) => serde_json::Value::String(value.to_string()).to_string(),
    };
    Ok((key.trim().to_string(), json))
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
    #[arg(long, value_name = "NAME", add = ArgValueCompleter::new(crate::complete::models))]
    pub model: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// List the packages in the model directories and the loaded models
    List,
    /// Show what a package's manifest says and its state in the daemon
    Info {
        /// A package name (from `models list`) or an absolute path
        #[arg(add = ArgValueCompleter::new(crate::complete::models))]
        name: String,
    },
    /// Load a model and keep it in memory (needs org.moed.manage-models)
    Load {
        /// A package name (from `models list`) or an absolute path
        #[arg(add = ArgValueCompleter::new(crate::complete::models))]
        name: String,
    },
    /// Drop a loaded model from memory (needs org.moed.manage-models)
    Unload {
        /// The loaded model's name
        #[arg(add = ArgValueCompleter::new(crate::complete::models))]
        name: String,
    },
    /// Make a model the active one, loading it if needed (needs org.moed.manage-models)
    Switch {
        /// A package name (from `models list`) or an absolute path
        #[arg(add = ArgValueCompleter::new(crate::complete::models))]
        name: String,
    },
    /// Convert a Hugging Face checkpoint folder into a model package, on this machine (no daemon)
    #[command(long_about = IMPORT_LONG_ABOUT)]
    Import(ImportArgs),
}

const IMPORT_LONG_ABOUT: &str = "\
Convert a Hugging Face Mixture-of-Experts checkpoint (config.json, *.safetensors, tokenizer.json)
into a moed model package, on this machine: moed is not involved. This runs the exporter of the
package moed-import (/usr/lib/moed/export) with the system's python3 and its numpy, onnx and tqdm
(Debian: python3-numpy python3-onnx python3-tqdm); no virtualenv is needed. MOED_EXPORTER_DIR
names another exporter folder and MOED_PYTHON another interpreter. Afterwards it prints the
command that loads the package.";

/// Storage of the package's weights, as the exporter names it (`none` is fp32).
const QUANTS: [&str; 4] = ["fp32", "fp16", "int8", "int4"];

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The checkpoint folder (config.json, *.safetensors, tokenizer files)
    #[arg(value_name = "HF_DIR")]
    pub src: PathBuf,
    /// Storage of the weights (`none` is fp32); with int4 the attention, shared experts, dense
    /// MLPs, head and embedding are int8, and the router always stays fp32
    #[arg(long, value_name = "Q", default_value = "fp32",
          value_parser = clap::builder::PossibleValuesParser::new(
              QUANTS.map(|q| { let v = clap::builder::PossibleValue::new(q); if q == "fp32" { v.alias("none") } else { v } })))]
    pub quant: String,
    /// The package folder to write (default: /var/lib/moed/models/NAME, where moed finds it)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The package's name (default: HF_DIR's folder name)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Replace the package already in the output folder (otherwise a folder that is not empty
    /// is refused)
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ExpertsArgs {
    /// The model whose statistics to show (default: the active model)
    #[arg(long, value_name = "NAME", add = ArgValueCompleter::new(crate::complete::models))]
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

const KNOWLEDGE_LONG_ABOUT: &str = "\
Add documents to moed's knowledge store and search it and the company's databases.

Retrieval plugins search data sources by label: the embedded document store (filled with
`knowledge add`) and the PostgreSQL and SQLite databases an administrator configured in
[knowledge.sources] of /etc/moed/moed.toml. `add` opens the files itself and hands them to moed,
so moed needs no access to your files. Adding and removing documents need the polkit action
org.moed.manage-knowledge; searching and listing are open to every user of moed.";

#[derive(Subcommand, Debug)]
pub enum KnowledgeCommand {
    /// Add .txt, .md and .html files (directories recursively) to the embedded store; a changed
    /// file replaces its earlier version (needs org.moed.manage-knowledge)
    Add {
        /// Files and directories
        #[arg(required = true, value_name = "FILE|DIR")]
        paths: Vec<PathBuf>,
        /// The embedded store's label, when there are several
        #[arg(long, value_name = "LABEL", add = ArgValueCompleter::new(crate::complete::sources))]
        source: Option<String>,
    },
    /// Search every data source, or one with --source
    Search {
        /// What to look for
        query: String,
        /// Only this data source (see `knowledge sources`)
        #[arg(long, value_name = "LABEL", add = ArgValueCompleter::new(crate::complete::sources))]
        source: Option<String>,
        /// Most results, 1 to 64 (default 5)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
        limit: Option<u32>,
    },
    /// List the data sources: label, kind, whether they answer, what they hold
    Sources,
    /// List the documents in the embedded store
    List {
        /// The embedded store's label, when there are several
        #[arg(long, value_name = "LABEL", add = ArgValueCompleter::new(crate::complete::sources))]
        source: Option<String>,
    },
    /// Remove documents from the embedded store by the path they were added from (needs
    /// org.moed.manage-knowledge)
    Remove {
        /// Paths as added (relative paths are made absolute)
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// The embedded store's label, when there are several
        #[arg(long, value_name = "LABEL", add = ArgValueCompleter::new(crate::complete::sources))]
        source: Option<String>,
    },
}

const PLUGINS_LONG_ABOUT: &str = "\
List, install, enable, disable, reload, configure and remove moed's WASM plugins: gates choose
the experts of each MoE layer, filters see prompts and answers, retrieval plugins bring documents.

`install` reads the plugin's files itself and hands them to moed (the component as a file
descriptor), so moed needs no access to your files; moed checks everything (manifest, the
capabilities the component imports against its grant, the interface of its kind) before it
installs anything. Listing and showing plugins are open to every user of moed; everything else
needs the polkit action org.moed.manage-plugins (root and members of access.admin_group always
have it). Settings that /etc/moed/moed.toml fixes ([plugins.NAME]) cannot be changed here.";

#[derive(Subcommand, Debug)]
pub enum PluginsCommand {
    /// List the installed plugins and those of the configuration
    List,
    /// Show a plugin: state, grant, configuration and its schema, call statistics
    Info {
        /// The plugin's name
        #[arg(add = ArgValueCompleter::new(crate::complete::plugins))]
        name: String,
    },
    /// Install a built plugin (needs org.moed.manage-plugins)
    Install(PluginInstallArgs),
    /// Switch a plugin on, clearing a disable after repeated failures (needs
    /// org.moed.manage-plugins)
    Enable {
        /// The plugin's name
        #[arg(add = ArgValueCompleter::new(crate::complete::plugins))]
        name: String,
    },
    /// Switch a plugin off (needs org.moed.manage-plugins)
    Disable {
        /// The plugin's name
        #[arg(add = ArgValueCompleter::new(crate::complete::plugins))]
        name: String,
    },
    /// Load a plugin's files again and swap the new code in (needs org.moed.manage-plugins)
    Reload {
        /// The plugin's name
        #[arg(add = ArgValueCompleter::new(crate::complete::plugins))]
        name: String,
    },
    /// Show a plugin's configuration, or change it with KEY=VALUE (needs
    /// org.moed.manage-plugins to change)
    #[command(long_about = PLUGINS_CONFIG_LONG_ABOUT)]
    Config(PluginConfigArgs),
    /// Uninstall a plugin: its files, settings and key-value store (needs org.moed.manage-plugins)
    Remove {
        /// The plugin's name
        #[arg(add = ArgValueCompleter::new(crate::complete::plugins))]
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct PluginInstallArgs {
    /// NAME.wasm with its manifest NAME.toml beside it (as plugins/build.sh leaves them), or a
    /// directory with plugin.toml and one .wasm
    pub path: PathBuf,
    /// Install it switched off
    #[arg(long)]
    pub disabled: bool,
    /// Whether every request goes through it without naming it (default: filters and retrieval
    /// yes, gates no)
    #[arg(long, value_name = "BOOL")]
    pub always: Option<bool>,
    /// Grant less than the manifest asks for: alerts=false, kv_quota=BYTES, sources=A,B,
    /// fewer_experts=false, clocks=false (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    pub grant: Vec<String>,
    /// Its configuration: KEY=VALUE, VALUE as JSON or a plain string (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Replace an installed plugin of the same name (its key-value store stays)
    #[arg(long)]
    pub replace: bool,
}

#[derive(Args, Debug)]
pub struct PluginConfigArgs {
    /// The plugin's name
    #[arg(add = ArgValueCompleter::new(crate::complete::plugins))]
    pub name: String,
    /// Settings to change: KEY=VALUE, VALUE as JSON (true, 128, [\"a\"]) or a plain string
    #[arg(value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    /// Go back to the defaults of its manifest (with KEY=VALUE: start from them)
    #[arg(long)]
    pub reset: bool,
}

const PLUGINS_CONFIG_LONG_ABOUT: &str = "\
Without KEY=VALUE, prints the plugin's configuration and the keys its manifest describes. With
them, changes those keys (the others keep their values; --reset starts from the defaults), moed
checks the result against the manifest's schema and reloads the plugin with it.";

#[cfg(test)]
mod tests {
    use super::parse_plugin_param;

    #[test]
    fn plugin_params_are_json_or_strings() {
        assert_eq!(
            parse_plugin_param("expert_budget.k=1"),
            Ok(("expert_budget.k".into(), "1".into()))
        );
        assert_eq!(
            parse_plugin_param("mask=[3, 5]"),
            Ok(("mask".into(), "[3,5]".into()))
        );
        assert_eq!(
            parse_plugin_param("mode=strict"),
            Ok(("mode".into(), "\"strict\"".into()))
        );
        assert!(parse_plugin_param("novalue").is_err());
        assert!(parse_plugin_param("=1").is_err());
    }
}
