//! The `shoal` binary: run a node, talk to it, manage its certificates.
//!
//! ```text
//! shoal run --id 1 --listen 127.0.0.1:7001 --data ./node1
//! shoal kv set greeting hello --node 127.0.0.1:7001 --tls ./node1/tls
//! shoal kv get greeting       --node 127.0.0.1:7001 --tls ./node1/tls
//! shoal counter add visits 1  --node 127.0.0.1:7001 --tls ./node1/tls
//! shoal status                --node 127.0.0.1:7001 --tls ./node1/tls
//! shoal ca init --dir ./ca --cluster prod
//! shoal cert issue --ca ./ca --node 1 --out ./node1/tls
//! shoal cert issue --ca ./ca --client ops --out ./ops-tls
//! ```
//!
//! Every byte goes over QUIC with mutual TLS. Without prepared
//! certificates, `run` uses development mode: it creates a cluster CA and
//! the node's certificate in `DATA/tls` (and says so loudly); the CLI then
//! takes `--tls DATA/tls` and issues itself a short-lived client
//! certificate from that CA. In production, create the CA with `ca init`,
//! keep its key away from the nodes, and issue node and client
//! certificates with `cert issue`.

#![allow(clippy::print_stdout)] // A command-line tool talks to its user.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use shoal::Node;
use shoal::builtin::{Counter, CounterAdd, CounterGet, Kv, KvDel, KvGet, KvSet};
use shoal::server::{Client, Server};
use shoal_transport::{Ca, Identity, NodeId, Validity, dev_bootstrap};

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "Stateful sharded entities and durable workflows, with no external infrastructure"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a node (stop it with Ctrl-C or SIGTERM: it shuts down gracefully).
    Run(RunArgs),
    /// Shows a node's status.
    Status(Remote),
    /// The built-in durable key-value entity.
    Kv {
        #[command(subcommand)]
        op: KvOp,
        #[command(flatten)]
        remote: Remote,
    },
    /// The built-in durable counter.
    Counter {
        #[command(subcommand)]
        op: CounterOp,
        #[command(flatten)]
        remote: Remote,
    },
    /// The cluster's certificate authority.
    Ca {
        #[command(subcommand)]
        op: CaOp,
    },
    /// Node and client certificates.
    Cert {
        #[command(subcommand)]
        op: CertOp,
    },
}

#[derive(Args)]
struct RunArgs {
    /// A TOML file with any of `id`, `listen`, `data`, `cluster`; flags
    /// given on the command line take precedence.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's id (never reuse one for another node).
    #[arg(long)]
    id: Option<u64>,
    /// The UDP address to serve QUIC on [default: 127.0.0.1:7001].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The data directory (created if missing).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The cluster's name; development mode creates its CA under it
    /// [default: dev].
    #[arg(long)]
    cluster: Option<String>,
}

/// The settings of `shoal run`, from flags over a config file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RunConfig {
    id: Option<u64>,
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    cluster: Option<String>,
}

/// Validated `shoal run` settings.
struct RunSettings {
    id: u64,
    listen: SocketAddr,
    data: PathBuf,
    cluster: String,
}

impl RunArgs {
    fn settings(self) -> anyhow::Result<RunSettings> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str::<RunConfig>(&text)
                    .with_context(|| format!("parsing {}", path.display()))?
            }
            None => RunConfig::default(),
        };
        Ok(RunSettings {
            id: self
                .id
                .or(file.id)
                .context("a node id is required: --id N or `id = N` in the config")?,
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7001))),
            data: self.data.or(file.data).context(
                "a data directory is required: --data DIR or `data = \"DIR\"` in the config",
            )?,
            cluster: self
                .cluster
                .or(file.cluster)
                .unwrap_or_else(|| "dev".to_owned()),
        })
    }
}

#[derive(Args)]
struct Remote {
    /// The node to talk to.
    #[arg(
        long,
        global = true,
        env = "SHOAL_NODE",
        default_value = "127.0.0.1:7001"
    )]
    node: SocketAddr,
    /// A directory with `ca.pem` and either `client.pem` + `client.key` or
    /// (development mode) the CA's `ca.key`.
    #[arg(
        long,
        global = true,
        env = "SHOAL_TLS",
        default_value = "shoal-data/tls"
    )]
    tls: PathBuf,
}

#[derive(Subcommand)]
enum KvOp {
    /// Stores VALUE under KEY; prints the previous value.
    Set { key: String, value: String },
    /// Prints the value under KEY.
    Get { key: String },
    /// Removes KEY; prints whether it was set.
    Del { key: String },
}

#[derive(Subcommand)]
enum CounterOp {
    /// Adds BY (default 1) to the counter NAME; prints the new value.
    Add {
        name: String,
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        by: i64,
    },
    /// Prints the counter NAME.
    Get { name: String },
}

#[derive(Subcommand)]
enum CaOp {
    /// Creates a cluster CA: `DIR/ca.pem` and `DIR/ca.key`.
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        cluster: String,
    },
}

#[derive(Subcommand)]
enum CertOp {
    /// Issues a node or client certificate signed by the CA in `--ca`, into
    /// `--out` (with a copy of `ca.pem`, so the folder is ready to use as a
    /// node's `DATA/tls` or as the CLI's `--tls`).
    Issue {
        /// The CA directory (`ca.pem`, `ca.key`).
        #[arg(long)]
        ca: PathBuf,
        /// Issue a node certificate for this node id.
        #[arg(long, conflicts_with = "client", required_unless_present = "client")]
        node: Option<u64>,
        /// Issue a client certificate with this name.
        #[arg(long)]
        client: Option<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// The output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A node logs its life; a CLI command only its problems.
    let default_filter = match cli.command {
        Command::Run(_) => "warn,shoal=info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(dispatch(cli.command))
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run(args).await,
        Command::Status(remote) => {
            let client = client(&remote)?;
            let status = client.status().await?;
            println!("node      {}", status.node_id);
            println!("cluster   {}", status.cluster);
            println!(
                "entities  {} active; types: {}",
                status.active_entities,
                status.entity_types.join(", ")
            );
            println!(
                "shards    {} per group, all on this node",
                status.shards_per_group
            );
            println!("data      {}", status.data_file);
            if !status.singletons.is_empty() {
                println!("singletons {}", status.singletons.join(", "));
            }
            client.shutdown().await;
            Ok(())
        }
        Command::Kv { op, remote } => {
            let client = client(&remote)?;
            match op {
                KvOp::Set { key, value } => {
                    let previous = client.call::<Kv, _, _>(&key, KvSet, value).await?;
                    print_value(previous.map_err(anyhow::Error::msg)?);
                }
                KvOp::Get { key } => print_value(client.call::<Kv, _, _>(&key, KvGet, ()).await?),
                KvOp::Del { key } => {
                    let existed = client.call::<Kv, _, _>(&key, KvDel, ()).await?;
                    println!("{}", existed.map_err(anyhow::Error::msg)?);
                }
            }
            client.shutdown().await;
            Ok(())
        }
        Command::Counter { op, remote } => {
            let client = client(&remote)?;
            let value = match op {
                CounterOp::Add { name, by } => client
                    .call::<Counter, _, _>(&name, CounterAdd, by)
                    .await?
                    .map_err(anyhow::Error::msg)?,
                CounterOp::Get { name } => {
                    client.call::<Counter, _, _>(&name, CounterGet, ()).await?
                }
            };
            println!("{value}");
            client.shutdown().await;
            Ok(())
        }
        Command::Ca {
            op: CaOp::Init { dir, cluster },
        } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let ca = Ca::generate(&cluster)?;
            ca.save(&dir.join("ca.pem"), &dir.join("ca.key"))?;
            println!("created the CA of cluster {cluster:?} in {}", dir.display());
            println!(
                "keep {} secret and off the nodes",
                dir.join("ca.key").display()
            );
            Ok(())
        }
        Command::Cert {
            op:
                CertOp::Issue {
                    ca,
                    node,
                    client,
                    days,
                    out,
                },
        } => issue(&ca, node, client, days, &out),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let args = args.settings()?;
    let identity =
        dev_bootstrap(&args.data, &args.cluster, NodeId::new(args.id)).with_context(|| {
            format!(
                "preparing the certificates in {}",
                args.data.join("tls").display()
            )
        })?;
    let node = Node::builder()
        .data_dir(&args.data)
        .with_builtins()
        .start()
        .await?;
    let server = Server::start(node.clone(), identity, args.listen)?;
    say(&format!(
        "shoal node {} listening on {} (data in {})",
        args.id,
        server.local_addr(),
        args.data.display()
    ));
    wait_for_stop().await?;
    say("shutting down");
    server.shutdown().await;
    node.shutdown().await?;
    say("stopped");
    Ok(())
}

/// A line for the operator; a closed stdout must not stop a node.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(unix)]
async fn wait_for_stop() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_stop() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
}

fn client(remote: &Remote) -> anyhow::Result<Client> {
    Ok(Client::new(client_identity(&remote.tls)?, remote.node)?)
}

/// `client.pem`/`client.key` from `dir`, or (development mode) a short-lived
/// client certificate issued from the CA key in `dir`.
fn client_identity(dir: &Path) -> anyhow::Result<Identity> {
    let ca_pem = dir.join("ca.pem");
    let (cert, key) = (dir.join("client.pem"), dir.join("client.key"));
    if cert.exists() {
        return Ok(Identity::load(&ca_pem, &cert, &key)?);
    }
    let ca_key = dir.join("ca.key");
    if ca_key.exists() {
        let ca = Ca::load(&ca_pem, &ca_key)?;
        return Ok(ca.issue_client("cli", Validity::days(1))?);
    }
    bail!(
        "{} holds neither client.pem + client.key nor the CA key: issue a client certificate \
         with `shoal cert issue --ca CA_DIR --client NAME --out DIR` and pass `--tls DIR`",
        dir.display()
    )
}

fn issue(
    ca_dir: &Path,
    node: Option<u64>,
    client: Option<String>,
    days: u32,
    out: &Path,
) -> anyhow::Result<()> {
    let ca = Ca::load(&ca_dir.join("ca.pem"), &ca_dir.join("ca.key"))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let validity = Validity::days(days);
    let (identity, stem) = match (node, client) {
        (Some(id), None) => (ca.issue_node(NodeId::new(id), validity)?, "node"),
        (None, Some(name)) => (ca.issue_client(&name, validity)?, "client"),
        _ => bail!("give exactly one of --node ID or --client NAME"),
    };
    identity.save(
        &out.join(format!("{stem}.pem")),
        &out.join(format!("{stem}.key")),
    )?;
    std::fs::write(out.join("ca.pem"), ca.cert_pem())
        .with_context(|| format!("writing {}", out.join("ca.pem").display()))?;
    println!(
        "issued {} of cluster {:?} into {}",
        identity.peer(),
        ca.cluster(),
        out.display()
    );
    Ok(())
}

fn print_value(value: Option<String>) {
    match value {
        Some(value) => println!("{value}"),
        None => println!("(nil)"),
    }
}
