//! The command language of the control API (what `aplctl` sends, what a
//! person types at its prompt): `show ...`, `clear ...`, `route add/del`,
//! `neighbor add/del`, `sid add/del`, `steering add/del`, `trace ...`,
//! `capture ...`, `reload`. Parsed with clap from the words of one line, so
//! every command has `help` and errors name what is wrong.

use std::net::{IpAddr, Ipv6Addr};

use clap::{Parser, Subcommand};

/// One command line.
#[derive(Parser, Debug)]
#[command(name = "", no_binary_name = true, disable_version_flag = true, help_template = "{subcommands}")]
pub struct Line {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Show state and counters.
    #[command(subcommand)]
    Show(Show),
    /// Clear counters (the CLI's view: Prometheus counters never go back), NAT sessions, neighbours.
    #[command(subcommand)]
    Clear(Clear),
    /// Static routes.
    #[command(subcommand)]
    Route(RouteOp),
    /// Static neighbours.
    #[command(subcommand)]
    Neighbor(NeighborOp),
    /// SRv6 local SIDs.
    #[command(subcommand)]
    Sid(SidOp),
    /// SRv6 steering policies (H.Encaps).
    #[command(subcommand)]
    Steering(SteeringOp),
    /// Per-packet trace through the pipeline's stages.
    #[command(subcommand)]
    Trace(TraceOp),
    /// Packet capture to a pcap file.
    #[command(subcommand)]
    Capture(CaptureOp),
    /// Re-read the config file: apply what can change live, name what needs a restart.
    Reload,
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Show {
    /// Ports: addresses, MTU, link, packets, errors.
    Interfaces,
    /// The route table: connected, static, local, SIDs, steering, NAT pool, object prefix.
    Routes,
    /// The neighbour table.
    Neighbors,
    /// NAT44.
    #[command(subcommand)]
    Nat(ShowNat),
    /// SRv6.
    #[command(subcommand)]
    Srv6(ShowSrv6),
    /// The object storage service.
    Storage,
    /// Worker lcores: busy share, packets, drops.
    Workers,
    /// Drops, punts and hand-offs by reason (non-zero only).
    Errors,
    /// The packets traced since `trace add`.
    Trace,
    /// Build and runtime versions.
    Version,
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum ShowNat {
    /// Sessions, filtered by `inside=ADDR public=ADDR remote=ADDR proto=tcp|udp|icmp limit=N`.
    Sessions { filters: Vec<String> },
    /// Tables, pool use, counters.
    Summary,
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum ShowSrv6 {
    /// Local SIDs and their counters.
    Sids,
    /// Steering policies.
    Policies,
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Clear {
    /// Counters as shown by this CLI (`show interfaces|workers|errors`) restart from zero.
    Counters,
    /// Retire NAT sessions (filters as for `show nat sessions`; none: all).
    Nat {
        #[arg(value_parser = ["sessions"])]
        what: String,
        filters: Vec<String>,
    },
    /// Forget learned neighbours (static ones stay).
    Neighbors,
    /// Forget traced packets.
    Trace,
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum RouteOp {
    /// `route add PREFIX --port PORT [--via ADDR]` (no `--via`: the prefix is on-link).
    Add {
        prefix: String,
        #[arg(long)]
        via: Option<IpAddr>,
        #[arg(long)]
        port: String,
    },
    /// `route del PREFIX`.
    Del { prefix: String },
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum NeighborOp {
    /// `neighbor add IP MAC --port PORT` (a static entry, never aged).
    Add {
        ip: IpAddr,
        mac: String,
        #[arg(long)]
        port: String,
    },
    /// `neighbor del IP --port PORT`.
    Del {
        ip: IpAddr,
        #[arg(long)]
        port: String,
    },
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum SidOp {
    /// `sid add SID --behavior end|end.x|end.dt6|end.dx6|storage [--psp] [--usd]
    /// [--port PORT --next-hop ADDR] [--policy always|never-but-last|sr-c|holds-object --threshold N]`.
    Add {
        sid: Ipv6Addr,
        #[arg(long)]
        behavior: String,
        #[arg(long)]
        psp: bool,
        #[arg(long)]
        usd: bool,
        #[arg(long)]
        port: Option<String>,
        #[arg(long = "next-hop")]
        next_hop: Option<Ipv6Addr>,
        #[arg(long)]
        policy: Option<String>,
        #[arg(long)]
        threshold: Option<u32>,
    },
    /// `sid del SID`.
    Del { sid: Ipv6Addr },
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum SteeringOp {
    /// `steering add PREFIX --segments A,B,... [--reduced] [--source ADDR]`.
    Add {
        prefix: String,
        #[arg(long, value_delimiter = ',', required = true)]
        segments: Vec<Ipv6Addr>,
        #[arg(long)]
        reduced: bool,
        #[arg(long)]
        source: Option<Ipv6Addr>,
    },
    /// `steering del PREFIX`.
    Del { prefix: String },
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum TraceOp {
    /// Trace the next N packets each worker receives.
    Add { count: u32 },
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum CaptureOp {
    /// Write received packets (all ports or `--port PORT`) to a pcap FILE, at most `--count N`.
    Start {
        file: String,
        #[arg(long)]
        port: Option<String>,
        #[arg(long, default_value_t = 100_000)]
        count: u64,
    },
    /// Stop and close the file.
    Stop,
}

/// Parses one command line (words split like a shell: quotes group).
pub fn parse(line: &str) -> Result<Command, String> {
    let words = shlex::split(line).ok_or_else(|| "unbalanced quotes".to_string())?;
    Line::try_parse_from(words).map(|l| l.command).map_err(|e| e.render().to_string().trim_end().to_string())
}

/// The first words of every command, for completion at the prompt.
pub const WORDS: &[&str] = &[
    "show interfaces",
    "show routes",
    "show neighbors",
    "show nat sessions",
    "show nat summary",
    "show srv6 sids",
    "show srv6 policies",
    "show storage",
    "show workers",
    "show errors",
    "show trace",
    "show version",
    "clear counters",
    "clear nat sessions",
    "clear neighbors",
    "clear trace",
    "route add",
    "route del",
    "neighbor add",
    "neighbor del",
    "sid add",
    "sid del",
    "steering add",
    "steering del",
    "trace add",
    "capture start",
    "capture stop",
    "reload",
    "help",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_errors_say_why() {
        assert_eq!(parse("show interfaces"), Ok(Command::Show(Show::Interfaces)));
        assert_eq!(
            parse("show nat sessions inside=100.64.0.10 proto=udp"),
            Ok(Command::Show(Show::Nat(ShowNat::Sessions {
                filters: vec!["inside=100.64.0.10".into(), "proto=udp".into()]
            })))
        );
        assert_eq!(
            parse("route add 203.0.113.0/24 --via 198.51.100.3 --port outside"),
            Ok(Command::Route(RouteOp::Add {
                prefix: "203.0.113.0/24".into(),
                via: Some("198.51.100.3".parse().unwrap()),
                port: "outside".into()
            }))
        );
        assert_eq!(
            parse("steering add 2001:db8:f::/48 --segments 2001:db8:a::1,2001:db8:b::1"),
            Ok(Command::Steering(SteeringOp::Add {
                prefix: "2001:db8:f::/48".into(),
                segments: vec!["2001:db8:a::1".parse().unwrap(), "2001:db8:b::1".parse().unwrap()],
                reduced: false,
                source: None
            }))
        );
        assert!(parse("show nonsense").unwrap_err().contains("unrecognized subcommand"));
        assert!(parse("neighbor add 192.0.2.9").unwrap_err().contains("required"));
        assert!(parse("sid add not-an-address --behavior end").unwrap_err().contains("invalid"));
        assert!(parse("show 'unbalanced").unwrap_err().contains("quotes"));
        for w in WORDS.iter().filter(|w| **w != "help") {
            let e = parse(w);
            assert!(e.is_ok() || !e.as_ref().unwrap_err().contains("unrecognized subcommand"), "{w}: {e:?}");
        }
    }
}
