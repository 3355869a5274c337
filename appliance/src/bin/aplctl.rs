//! `aplctl`: the operator CLI of a running appliance, like `vppctl`.
//!
//! * `aplctl show interfaces` runs one command and exits (status 1 if the
//!   appliance refused it, 2 if it cannot be reached); `--json` prints the
//!   command's data as JSON instead of text.
//! * `aplctl` alone is interactive: a prompt with history (kept in
//!   `~/.aplctl_history`) and completion of the command words (Tab).
//!
//! It talks to the control socket (`control.socket` in the config; default
//! `/run/appliance/<eal.file_prefix>.sock`, here `--socket` or `--prefix`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::{Context, Editor, Helper, Highlighter, Hinter, Validator};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "aplctl", version, about = "Operator CLI of a running appliance (`aplctl help` lists the commands)")]
struct Cli {
    /// The control socket.
    #[arg(long, short)]
    socket: Option<PathBuf>,
    /// The appliance's EAL file prefix (its socket is /run/appliance/PREFIX.sock).
    #[arg(long, default_value = "appliance")]
    prefix: String,
    /// Print the command's data as JSON.
    #[arg(long)]
    json: bool,
    /// The command (none: interactive); everything after the first word is the command's.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    fn open(path: &PathBuf) -> Result<Conn, String> {
        let s =
            UnixStream::connect(path).map_err(|e| format!("cannot reach the appliance at {}: {e}", path.display()))?;
        let writer = s.try_clone().map_err(|e| e.to_string())?;
        Ok(Conn { reader: BufReader::new(s), writer })
    }

    fn call(&mut self, command: &str) -> Result<Value, String> {
        writeln!(self.writer, "{}", json!({ "command": command })).map_err(|e| format!("sending: {e}"))?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("the appliance closed the connection".into()),
            Ok(_) => serde_json::from_str(&line).map_err(|e| format!("bad reply: {e}")),
            Err(e) => Err(format!("reading the reply: {e}")),
        }
    }
}

/// Prints a reply; false if the appliance refused the command.
fn print(reply: &Value, as_json: bool) -> bool {
    if reply.get("ok") != Some(&Value::Bool(true)) {
        eprintln!("error: {}", reply.get("error").and_then(Value::as_str).unwrap_or("unknown error"));
        return false;
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(reply.get("data").unwrap_or(&Value::Null)).unwrap_or_default());
    } else {
        print!("{}", reply.get("text").and_then(Value::as_str).unwrap_or(""));
    }
    true
}

#[derive(Helper, Highlighter, Hinter, Validator)]
struct Words;

impl Completer for Words {
    type Candidate = Pair;
    fn complete(&self, line: &str, pos: usize, _: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        let start = head.rfind(' ').map_or(0, |i| i + 1);
        let done_words = head[..start].trim_end();
        let mut out: Vec<Pair> = appliance::ctl::command::WORDS
            .iter()
            .filter(|w| w.starts_with(head.trim_start()))
            .filter_map(|w| {
                let rest = w[done_words.len()..].trim_start();
                let word = rest.split(' ').next()?;
                Some(Pair { display: word.to_string(), replacement: word.to_string() })
            })
            .collect();
        out.dedup_by(|a, b| a.replacement == b.replacement);
        Ok((start, out))
    }
}

fn interactive(conn: &mut Conn, as_json: bool) -> ExitCode {
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aplctl_history"));
    let Ok(mut ed) = Editor::<Words, rustyline::history::DefaultHistory>::new() else {
        eprintln!("error: no terminal for the interactive prompt (give a command)");
        return ExitCode::from(2);
    };
    ed.set_helper(Some(Words));
    if let Some(h) = &history {
        let _ = ed.load_history(h);
    }
    loop {
        match ed.readline("aplctl# ") {
            Ok(line) => {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                if line == "quit" || line == "exit" {
                    break;
                }
                let _ = ed.add_history_entry(line);
                match conn.call(line) {
                    Ok(reply) => {
                        print(&reply, as_json);
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("error: {e}");
                break;
            }
        }
    }
    if let Some(h) = &history {
        let _ = ed.save_history(h);
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli.socket.clone().unwrap_or_else(|| PathBuf::from(format!("/run/appliance/{}.sock", cli.prefix)));
    let mut conn = match Conn::open(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.command.is_empty() {
        return interactive(&mut conn, cli.json);
    }
    // Words are joined back with their quoting, so the appliance splits them the same way.
    let line = shlex::try_join(cli.command.iter().map(String::as_str)).unwrap_or_else(|_| cli.command.join(" "));
    match conn.call(&line) {
        Ok(reply) => {
            if print(&reply, cli.json) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
