//! `objmeta`: the metadata service binary (`objmeta serve`) and small client subcommands
//! over its HTTP API, for scripts. See `docs/objmeta.md`.
#![forbid(unsafe_code)]

use std::net::{Ipv6Addr, TcpListener};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use objmeta::client::MetaClient;
use objmeta::model::{CreateRequest, IntentOp, NodeRegistration, ObjectRef, Prefix64};
use objmeta::{MetadataService, ServiceConfig};

#[derive(Parser)]
#[command(name = "objmeta", about = "Metadata service of the IPv6-centric object store")]
struct Cli {
    /// The service to talk to (client subcommands).
    #[arg(long, global = true, default_value = "127.0.0.1:7070")]
    server: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Op {
    Store,
    Retrieve,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the service.
    Serve {
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: String,
        /// `embedded:/path/to/file` or `etcd:http://host:port`.
        #[arg(long, default_value = "embedded:objmeta.db")]
        store: String,
        /// Seconds without a heartbeat after which a node is Down.
        #[arg(long, default_value_t = 15)]
        down_after: u64,
    },
    /// Registers (or re-registers) a storage node.
    NodeAdd {
        id: String,
        #[arg(long)]
        prefix: Prefix64,
        #[arg(long)]
        sid: Ipv6Addr,
        #[arg(long)]
        capacity: u64,
        #[arg(long, default_value_t = 0)]
        used: u64,
        #[arg(long)]
        domain: String,
    },
    /// Sends a heartbeat for a node.
    Heartbeat {
        id: String,
        #[arg(long, default_value_t = 0)]
        used: u64,
    },
    /// Lists the nodes.
    Nodes,
    /// Creates an object (by --name, --id or both).
    Create {
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        id: Option<u64>,
        #[arg(long)]
        size: u64,
        #[arg(long)]
        replicas: Option<usize>,
    },
    /// Marks an object Complete.
    Commit {
        id: u64,
        #[arg(long, default_value_t = 1)]
        version: u64,
    },
    /// Shows an object (a number is an id, anything else a name).
    Lookup { object: String },
    /// Deletes an object.
    Rm { id: u64 },
    /// Lists objects.
    Ls {
        #[arg(long)]
        after: Option<u64>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Asks for the segment list to store or retrieve an object.
    Intent {
        op: Op,
        object: String,
        #[arg(long)]
        size: Option<u64>,
    },
}

fn object_ref(s: &str) -> ObjectRef {
    match s.parse() {
        Ok(id) => ObjectRef::Id(id),
        Err(_) => ObjectRef::Name(s.to_string()),
    }
}

fn print<T: serde::Serialize>(v: T) -> Result<(), String> {
    println!("{}", serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?);
    Ok(())
}

fn run(cli: Cli) -> Result<(), String> {
    let c = MetaClient::new(cli.server.clone());
    let e = |e: objmeta::client::ClientError| e.to_string();
    match cli.cmd {
        Cmd::Serve { listen, store, down_after } => {
            let st = objmeta::store::open(&store).map_err(|e| e.to_string())?;
            let svc = MetadataService::new(
                st,
                ServiceConfig { down_after_ms: down_after.saturating_mul(1000), ..ServiceConfig::default() },
            );
            let l = TcpListener::bind(&listen).map_err(|e| format!("listen {listen}: {e}"))?;
            eprintln!("objmeta: serving on {} with store {store}", l.local_addr().map_err(|e| e.to_string())?);
            objmeta::server::run(l, Arc::new(svc));
            Ok(())
        }
        Cmd::NodeAdd { id, prefix, sid, capacity, used, domain } => print(
            c.register(&NodeRegistration {
                id,
                object_prefix: prefix,
                storage_sid: sid,
                capacity_bytes: capacity,
                used_bytes: used,
                failure_domain: domain,
            })
            .map_err(e)?,
        ),
        Cmd::Heartbeat { id, used } => print(c.heartbeat(&id, used).map_err(e)?),
        Cmd::Nodes => print(c.nodes().map_err(e)?),
        Cmd::Create { name, id, size, replicas } => {
            print(c.create(&CreateRequest { id, name, size, replicas }).map_err(e)?)
        }
        Cmd::Commit { id, version } => print(c.commit(id, version).map_err(e)?),
        Cmd::Lookup { object } => print(c.lookup(&object_ref(&object)).map_err(e)?),
        Cmd::Rm { id } => print(c.delete(id).map_err(e)?),
        Cmd::Ls { after, limit } => print(c.list(after, limit).map_err(e)?),
        Cmd::Intent { op, object, size } => {
            let op = match op {
                Op::Store => IntentOp::Store,
                Op::Retrieve => IntentOp::Retrieve,
            };
            print(c.intent(op, object_ref(&object), size).map_err(e)?)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("objmeta: {msg}");
            ExitCode::FAILURE
        }
    }
}
