//! `appliance`: the command line.
//!
//! * `appliance run [--config FILE]`: run until SIGINT/SIGTERM (without
//!   `--config`: the embedded demo config, `configs/demo.yaml`).
//! * `appliance check-config FILE`: validate, then print the effective config
//!   and the EAL arguments.
//!
//! Exit status: 0 on success and clean shutdown, 2 for a refused config,
//! 1 for any other failure.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use appliance::config::{Config, Host, LogFormat};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "appliance", version, about = "DPDK network and storage node")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the appliance until SIGINT/SIGTERM.
    Run {
        /// YAML config; without it the embedded demo config is used.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config and print the effective config and EAL arguments.
    CheckConfig {
        /// YAML config file.
        file: PathBuf,
    },
}

/// Loads the config (the embedded demo without a path) and checks it
/// against this machine.
fn load(path: Option<&PathBuf>) -> Result<Config, String> {
    let (name, cfg) = match path {
        Some(p) => (p.display().to_string(), Config::load(p)),
        None => ("embedded demo config".to_string(), Config::from_yaml_str(appliance::config::EMBEDDED_DEMO)),
    };
    cfg.and_then(|c| c.check_host(&Host::current()).map(|()| c)).map_err(|e| format!("{name}: {e}"))
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log files and syslog get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::CheckConfig { file } => match load(Some(&file)) {
            Ok(cfg) => {
                println!("# effective config of {}", file.display());
                print!("{}", cfg.to_yaml());
                println!("# EAL arguments");
                println!("{}", cfg.eal_args("appliance").join(" "));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: config refused: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Run { config } => {
            let cfg = match load(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: config refused: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&cfg);
            let signals = appliance::app::Signals::default();
            let handlers = [
                (signal_hook::consts::SIGINT, &signals.stop),
                (signal_hook::consts::SIGTERM, &signals.stop),
                (signal_hook::consts::SIGHUP, &signals.reload),
            ];
            for (sig, flag) in handlers {
                if let Err(e) = signal_hook::flag::register(sig, Arc::clone(flag)) {
                    eprintln!("error: installing signal handler: {e}");
                    return ExitCode::FAILURE;
                }
            }
            match appliance::app::run(&cfg, config.as_deref(), signals) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
