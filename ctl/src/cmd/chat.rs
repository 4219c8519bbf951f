//! `moectl chat`: one turn with `--system` and a message, or an interactive conversation with
//! multi-line input, line history and slash commands that change the options between turns.

use std::path::PathBuf;

use moed_dbus::{ChatMessage, GenerateOptions};
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};
use tokio::runtime::Runtime;
use tokio::signal::unix::{SignalKind, signal};

use crate::bus::App;
use crate::cli::{ChatArgs, SamplingArgs};
use crate::error::CtlError;
use crate::style::{self, out_json, out_json_pretty, outln};

use super::generate::{Outcome, follow, options};

/// The conversation and the options of the next turn.
struct Session {
    system: Option<String>,
    history: Vec<ChatMessage>,
    sampling: SamplingArgs,
    /// One message and exit: `--json` prints one document; a conversation prints one line a turn.
    one_shot: bool,
}

impl Session {
    fn messages(&self, user: &str) -> Vec<ChatMessage> {
        let mut messages = Vec::with_capacity(self.history.len() + 2);
        if let Some(system) = &self.system {
            messages.push(ChatMessage::new("system", system));
        }
        messages.extend(self.history.iter().cloned());
        messages.push(ChatMessage::new("user", user));
        messages
    }

    /// Sends one user turn; the conversation keeps it (and the answer) only when it succeeds.
    async fn turn(&mut self, app: &App, user: &str) -> Result<Outcome, CtlError> {
        let stream = moed_dbus::client::generate_chat(
            &app.conn,
            &self.messages(user),
            &options(&self.sampling),
        )
        .await
        .map_err(|e| app.fail(e, None))?;
        let outcome = follow(app, stream, &self.sampling, "/max-tokens N").await?;
        if app.json && self.one_shot {
            out_json_pretty(&outcome.to_json())?;
        } else if app.json {
            out_json(&outcome.to_json())?;
        }
        self.history.push(ChatMessage::new("user", user));
        self.history
            .push(ChatMessage::new("assistant", outcome.info.text.clone()));
        Ok(outcome)
    }
}

pub fn run(app: &App, runtime: &Runtime, args: ChatArgs) -> Result<(), CtlError> {
    let mut session = Session {
        system: args.system,
        history: Vec::new(),
        sampling: args.sampling,
        one_shot: args.message.is_some(),
    };
    if let Some(message) = args.message {
        let message = crate::text_or_stdin(&message, "message")?;
        return runtime.block_on(session.turn(app, &message)).map(drop);
    }
    let mut input = Input::open(runtime)?;
    if input.is_terminal() {
        style::err(&app.err.dim(
            "moectl chat: end a line with \\ to continue it, \"\"\" for a block; /help lists commands, Ctrl-D leaves\n",
        ));
    }
    while let Some(text) = input.message(runtime)? {
        if text.trim().is_empty() {
            continue;
        }
        if let Some(command) = text.trim_start().strip_prefix('/') {
            match session.command(app, command)? {
                Flow::Continue => continue,
                Flow::Quit => break,
            }
        }
        match runtime.block_on(session.turn(app, &text)) {
            Ok(_) => {}
            // The daemon went away or refused us: nothing later can work.
            Err(err @ (CtlError::NotRunning { .. } | CtlError::Connect { .. })) => {
                input.close();
                return Err(err);
            }
            Err(CtlError::BrokenPipe) => break,
            Err(CtlError::Interrupted) if !app.json => style::err("(cancelled)\n"),
            Err(err) => report(app, &err.to_string(), Some(&err)),
        }
    }
    input.close();
    Ok(())
}

/// An error that ends a turn or a slash command but not the conversation: a line on stderr, as
/// text or (with `--json`) as the error object moectl prints when it exits on one.
fn report(app: &App, message: &str, err: Option<&CtlError>) {
    if app.json {
        let value = match err {
            Some(err) => err.to_json(),
            None => CtlError::Usage(message.to_string()).to_json(),
        };
        style::err(&format!("{value}\n"));
    } else {
        style::err(&format!(
            "{} {}\n",
            app.err.red("error:"),
            moed_dbus::wire::terminal(message)
        ));
    }
}

enum Flow {
    Continue,
    Quit,
}

const HELP: &str = "\
/temperature T   /top-p P   /top-k K   /min-p P   /max-tokens N   /seed S
                 set a sampling option (`default` goes back to the model's)
/system TEXT     set the system message (no TEXT: none)
/reset           forget the conversation
/history         print the conversation so far
/help            this list
/quit            leave (Ctrl-D too)";

impl Session {
    fn command(&mut self, app: &App, line: &str) -> Result<Flow, CtlError> {
        let (name, value) = match line.split_once(char::is_whitespace) {
            Some((name, value)) => (name, value.trim()),
            None => (line.trim(), ""),
        };
        match name {
            "quit" | "exit" | "q" => return Ok(Flow::Quit),
            "help" | "?" => style::err(&format!("{HELP}\n")),
            "reset" => {
                self.history.clear();
                style::err("conversation cleared\n");
            }
            "history" => {
                if let Some(system) = &self.system {
                    outln(&format!("{} {system}", app.out.dim("system:")))?;
                }
                for message in &self.history {
                    outln(&format!(
                        "{} {}",
                        app.out.bold(&format!("{}:", message.role)),
                        message.content
                    ))?;
                }
            }
            "system" => {
                self.system = (!value.is_empty()).then(|| value.to_string());
                style::err(match self.system {
                    Some(_) => "system message set\n",
                    None => "system message cleared\n",
                });
            }
            "temperature" | "top-p" | "top-k" | "min-p" | "max-tokens" | "seed" => {
                match self.set_option(name, value) {
                    Ok(shown) => style::err(&format!("{name} = {shown}\n")),
                    Err(message) => report(app, &message, None),
                }
            }
            other => report(
                app,
                &format!("unknown command /{other}; /help lists them"),
                None,
            ),
        }
        Ok(Flow::Continue)
    }

    /// Sets one option, checked by the contract's own option rules before it is kept.
    fn set_option(&mut self, name: &str, value: &str) -> Result<String, String> {
        let mut next = self.sampling.clone();
        let reset = value == "default" || value == "off";
        let bad = |e: &dyn std::fmt::Display| format!("/{name} {value}: {e}");
        if value.is_empty() {
            return Err(format!("/{name} needs a value (or `default`)"));
        }
        match name {
            "temperature" => next.temperature = parse(value, reset).map_err(|e| bad(&e))?,
            "top-p" => next.top_p = parse(value, reset).map_err(|e| bad(&e))?,
            "min-p" => next.min_p = parse(value, reset).map_err(|e| bad(&e))?,
            "top-k" => next.top_k = parse(value, reset).map_err(|e| bad(&e))?,
            "max-tokens" => next.max_tokens = parse(value, reset).map_err(|e| bad(&e))?,
            "seed" => next.seed = parse(value, reset).map_err(|e| bad(&e))?,
            _ => return Err(format!("/{name} is not an option")),
        }
        GenerateOptions::from_dict(&options(&next).to_dict()).map_err(|e| e.message())?;
        self.sampling = next;
        Ok(if reset {
            "default".into()
        } else {
            value.into()
        })
    }
}

fn parse<T: std::str::FromStr>(value: &str, reset: bool) -> Result<Option<T>, T::Err> {
    if reset {
        return Ok(None);
    }
    value.parse().map(Some)
}

/// Where input comes from: a line editor on a terminal, plain lines otherwise (no prompts, so
/// that piped conversations print only answers).
enum Input {
    Editor {
        editor: DefaultEditor,
        history_file: Option<PathBuf>,
    },
    Plain(Lines<BufReader<Stdin>>),
}

impl Input {
    fn open(runtime: &Runtime) -> Result<Input, CtlError> {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            let _guard = runtime.enter();
            return Ok(Input::Plain(BufReader::new(tokio::io::stdin()).lines()));
        }
        let mut editor = DefaultEditor::new()
            .map_err(|e| CtlError::Failed(format!("starting the line editor: {e}")))?;
        let history_file = history_file();
        if let Some(file) = &history_file {
            // A missing history file is the normal first run.
            let _ = editor.load_history(file);
        }
        Ok(Input::Editor {
            editor,
            history_file,
        })
    }

    fn is_terminal(&self) -> bool {
        matches!(self, Input::Editor { .. })
    }

    /// One line; `None` at end of input.
    fn line(&mut self, runtime: &Runtime, prompt: &str) -> Result<Option<String>, CtlError> {
        match self {
            Input::Editor { editor, .. } => match editor.readline(prompt) {
                Ok(line) => Ok(Some(line)),
                // Ctrl-C at the prompt drops what was typed, as in a shell.
                Err(ReadlineError::Interrupted) => Ok(Some(String::new())),
                Err(ReadlineError::Eof) => Ok(None),
                Err(err) => Err(CtlError::Failed(format!("reading input: {err}"))),
            },
            Input::Plain(lines) => runtime.block_on(async {
                let mut interrupt = signal(SignalKind::interrupt())
                    .map_err(|e| CtlError::io("listening for Ctrl-C", e))?;
                tokio::select! {
                    line = lines.next_line() => line.map_err(|e| CtlError::io("reading stdin", e)),
                    _ = interrupt.recv() => Err(CtlError::Interrupted),
                }
            }),
        }
    }

    /// One message: a line, lines joined by a trailing `\`, or a `"""` block.
    fn message(&mut self, runtime: &Runtime) -> Result<Option<String>, CtlError> {
        let Some(first) = self.line(runtime, ">>> ")? else {
            return Ok(None);
        };
        let mut text = String::new();
        if first.trim() == "\"\"\"" {
            loop {
                match self.line(runtime, "... ")? {
                    Some(line) if line.trim() == "\"\"\"" => break,
                    Some(line) => {
                        text.push_str(&line);
                        text.push('\n');
                    }
                    None => break,
                }
            }
            let text = text.trim_end_matches('\n').to_string();
            self.remember(&text);
            return Ok(Some(text));
        }
        let mut line = first;
        while let Some(stripped) = line.strip_suffix('\\') {
            text.push_str(stripped);
            text.push('\n');
            match self.line(runtime, "... ")? {
                Some(next) => line = next,
                None => {
                    line = String::new();
                    break;
                }
            }
        }
        text.push_str(&line);
        self.remember(&text);
        Ok(Some(text))
    }

    fn remember(&mut self, text: &str) {
        if let Input::Editor { editor, .. } = self
            && !text.trim().is_empty()
        {
            let _ = editor.add_history_entry(text);
        }
    }

    fn close(&mut self) {
        if let Input::Editor {
            editor,
            history_file: Some(file),
        } = self
        {
            if let Some(dir) = file.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Err(err) = editor.save_history(file) {
                style::err(&format!(
                    "moectl: could not save the chat history to {}: {err}\n",
                    file.display()
                ));
            }
        }
    }
}

/// `$XDG_STATE_HOME/moectl/chat_history`, else `~/.local/state/moectl/chat_history`.
fn history_file() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".local/state"))
        })?;
    Some(state.join("moectl/chat_history"))
}
