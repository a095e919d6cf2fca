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
//!
//! # a cluster of three on one machine (one shared CA in ./certs)
//! shoal run --id 1 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --data ./n1 --ca-dir ./certs
//! shoal run --id 2 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --data ./n2 --ca-dir ./certs
//! shoal run --id 3 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --data ./n3 --ca-dir ./certs
//! shoal run --id 4 --listen 127.0.0.1:7004 --join 127.0.0.1:7001 --data ./n4 --ca-dir ./certs
//! shoal status --node 127.0.0.1:7002 --tls ./certs
//! ```
//!
//! Every byte goes over QUIC with mutual TLS. Without prepared
//! certificates, `run` uses development mode: it creates a cluster CA and
//! the node's certificate in `DATA/tls` (and says so loudly); the CLI then
//! takes `--tls DATA/tls` and issues itself a short-lived client
//! certificate from that CA. In production, create the CA with `ca init`,
//! keep its key away from the nodes, and issue node and client
//! certificates with `cert issue`.
//!
//! A cluster needs one CA for all its nodes. `run --ca-dir DIR` issues the
//! node's certificate (into `DATA/tls`) from the CA in `DIR` at its first
//! start, creating that CA if `DIR` has none (development: the CA key is on
//! the machine); the CLI takes `--tls DIR`.
//!
//! SIGTERM or Ctrl-C on a clustered node makes it *leave* the cluster
//! (its shards move, its id is retired for good) and exit 0; with
//! `--on-term stop` it stops without leaving, to come back under the same
//! id (rolling restarts). `kill -9` is a crash: the others mark it down
//! after `down_after` (1.5 s) and move its shards; `shoal run` with the
//! same id and data directory brings it back.

#![allow(clippy::print_stdout)] // A command-line tool talks to its user.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use shoal::Node;
use shoal::builtin::{Counter, CounterAdd, CounterGet, Kv, KvDel, KvGet, KvSet};
use shoal::cluster::ClusterConfig;
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
    /// Runs a node, alone or as a cluster member (stop it with Ctrl-C or
    /// SIGTERM: alone it shuts down gracefully; a cluster member leaves the
    /// cluster unless `--on-term stop`).
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
    /// A TOML file with any of `id`, `listen`, `data`, `cluster`, `peers`
    /// (a table `id = "addr"`), `join` (a list), `advertise`, `ca_dir`,
    /// `on_term`; flags given on the command line take precedence.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's id (never reuse one for another node).
    #[arg(long)]
    id: Option<u64>,
    /// The UDP address to serve QUIC on [default: this node's address in
    /// `--peers`, else 127.0.0.1:7001].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The data directory (created if missing).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The cluster's name; development mode creates its CA under it
    /// [default: dev, or the name of the CA in `--ca-dir`].
    #[arg(long)]
    cluster: Option<String>,
    /// The initial members of a new cluster, this node included, as
    /// `ID=ADDR,ID=ADDR,…`; every initial member gets the same list.
    #[arg(long, value_delimiter = ',', value_parser = parse_peer, conflicts_with = "join")]
    peers: Vec<(u64, SocketAddr)>,
    /// Joins a running cluster through the member at ADDR instead of
    /// bootstrapping one (repeat to give several to try).
    #[arg(long, value_name = "ADDR")]
    join: Vec<SocketAddr>,
    /// The address the other nodes reach this one at [default: this
    /// node's address in `--peers`, else the listen address].
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// A CA directory (`ca.pem`, `ca.key`) to issue this node's certificate
    /// from at its first start, created if it holds no CA yet (development:
    /// give every node of a cluster the same directory).
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// What SIGTERM / Ctrl-C does to a cluster member: `leave` the cluster
    /// for good (its id is retired), or `stop` without leaving, to restart
    /// under the same id [default: leave].
    #[arg(long, value_enum)]
    on_term: Option<OnTerm>,
}

/// What a termination signal does to a cluster member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum OnTerm {
    /// Leave the cluster: shards move away, the id is retired.
    Leave,
    /// Stop without leaving (the others see a crash until it is back).
    Stop,
}

fn parse_peer(text: &str) -> Result<(u64, SocketAddr), String> {
    let (id, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected ID=ADDR, like 1=127.0.0.1:7001"))?;
    let id = id
        .trim()
        .parse()
        .map_err(|e| format!("{text:?}: bad node id: {e}"))?;
    let addr = addr
        .trim()
        .parse()
        .map_err(|e| format!("{text:?}: bad address: {e}"))?;
    Ok((id, addr))
}

/// The settings of `shoal run`, from flags over a config file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RunConfig {
    id: Option<u64>,
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    cluster: Option<String>,
    /// `[peers]` with `1 = "127.0.0.1:7001"` lines.
    peers: Option<BTreeMap<String, SocketAddr>>,
    join: Option<Vec<SocketAddr>>,
    advertise: Option<SocketAddr>,
    ca_dir: Option<PathBuf>,
    on_term: Option<OnTerm>,
}

/// Validated `shoal run` settings.
struct RunSettings {
    id: u64,
    listen: SocketAddr,
    data: PathBuf,
    /// Given explicitly (else the CA's name, or "dev").
    cluster: Option<String>,
    peers: BTreeMap<u64, SocketAddr>,
    join: Vec<SocketAddr>,
    advertise: Option<SocketAddr>,
    ca_dir: Option<PathBuf>,
    on_term: OnTerm,
}

impl RunSettings {
    fn clustered(&self) -> bool {
        !self.peers.is_empty() || !self.join.is_empty()
    }
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
        let id = self
            .id
            .or(file.id)
            .context("a node id is required: --id N or `id = N` in the config")?;
        let peers: BTreeMap<u64, SocketAddr> = if self.peers.is_empty() {
            let mut peers = BTreeMap::new();
            for (key, addr) in file.peers.unwrap_or_default() {
                let peer: u64 = key.parse().with_context(|| {
                    format!("the config's [peers] key {key:?} is not a node id")
                })?;
                peers.insert(peer, addr);
            }
            peers
        } else {
            let mut peers = BTreeMap::new();
            for (peer, addr) in self.peers {
                if peers.insert(peer, addr).is_some() {
                    bail!("--peers names node {peer} twice");
                }
            }
            peers
        };
        let join = if self.join.is_empty() {
            file.join.unwrap_or_default()
        } else {
            self.join
        };
        if !peers.is_empty() && !join.is_empty() {
            bail!("give either --peers (a new cluster) or --join (a running one), not both");
        }
        if !peers.is_empty() && !peers.contains_key(&id) {
            bail!(
                "--peers must include this node ({id}): it lists {:?}",
                peers.keys().collect::<Vec<_>>()
            );
        }
        let listen = self
            .listen
            .or(file.listen)
            .or_else(|| peers.get(&id).copied())
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7001)));
        let advertise = self
            .advertise
            .or(file.advertise)
            .or_else(|| peers.get(&id).copied());
        Ok(RunSettings {
            id,
            listen,
            data: self.data.or(file.data).context(
                "a data directory is required: --data DIR or `data = \"DIR\"` in the config",
            )?,
            cluster: self.cluster.or(file.cluster),
            peers,
            join,
            advertise,
            ca_dir: self.ca_dir.or(file.ca_dir),
            on_term: self.on_term.or(file.on_term).unwrap_or(OnTerm::Leave),
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
    /// Prints the value under each KEY, one line each.
    Get {
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
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
            print_status(&status);
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
                KvOp::Get { keys } => {
                    for key in keys {
                        print_value(client.call::<Kv, _, _>(&key, KvGet, ()).await?);
                    }
                }
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
    let left_marker = args.data.join(LEFT_MARKER);
    if left_marker.exists() {
        bail!(
            "node {} left its cluster (see {}): its id is retired and cannot rejoin; \
             start a new node with a new --id and an empty data directory",
            args.id,
            left_marker.display()
        );
    }
    let identity = node_identity(&args)?;
    if !args.clustered() {
        return run_single(&args, identity).await;
    }
    let mut config = ClusterConfig::builder(identity)
        .listen(args.listen)
        .transport(cluster_transport()?);
    if let Some(advertise) = args.advertise {
        config = config.advertise(advertise);
    }
    for (peer, addr) in &args.peers {
        config = config.peer(*peer, *addr);
    }
    for addr in &args.join {
        config = config.join(*addr);
    }
    let config = config.build()?;
    if args.join.is_empty() {
        say(&format!(
            "shoal node {} starting with peers {}",
            args.id,
            args.peers
                .iter()
                .map(|(id, addr)| format!("{id}={addr}"))
                .collect::<Vec<_>>()
                .join(",")
        ));
    } else {
        say(&format!(
            "shoal node {} joining the cluster through {}",
            args.id,
            args.join
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let node = Node::builder()
        .data_dir(&args.data)
        .with_builtins()
        .cluster(config)
        .start()
        .await?;
    let addr = node.cluster_addr().unwrap_or(args.listen);
    say(&format!(
        "shoal node {} listening on {} (data in {}; cluster member)",
        args.id,
        addr,
        args.data.display()
    ));
    wait_for_stop().await?;
    match args.on_term {
        OnTerm::Stop => {
            say(
                "stopping without leaving the cluster (the others mark this node down until it is back)",
            );
            node.shutdown().await?;
            say(&format!(
                "stopped; `shoal run` with --id {} and this data directory brings it back",
                args.id
            ));
            Ok(())
        }
        OnTerm::Leave => {
            say(&format!(
                "leaving the cluster: moving node {}'s shards to the other members \
                 (signal again to stop without leaving)",
                args.id
            ));
            let left = tokio::select! {
                left = node.leave() => Some(left),
                stop = wait_for_stop() => { stop?; None }
            };
            match left {
                Some(Ok(())) => {
                    let _ = std::fs::write(
                        &left_marker,
                        format!("node {} left the cluster; its id is retired\n", args.id),
                    );
                    say(&format!(
                        "left the cluster: node {} is removed and its id retired (it cannot rejoin \
                         under this id); stopped",
                        args.id
                    ));
                    Ok(())
                }
                Some(Err(error)) => {
                    say(&format!(
                        "could not leave the cluster: {error}; stopping without leaving"
                    ));
                    node.shutdown().await?;
                    say("stopped (still a member: the others mark it down)");
                    Err(anyhow::anyhow!("could not leave the cluster: {error}"))
                }
                None => {
                    say("stopping without leaving the cluster");
                    node.shutdown().await?;
                    say("stopped (still a member: the others mark it down)");
                    Ok(())
                }
            }
        }
    }
}

/// The transport settings of a cluster member: a crashed peer's connection
/// is given up after a few seconds of silence (Raft heartbeats keep live
/// ones busy), so a call forwarded to it fails instead of waiting for the
/// 30 s default.
fn cluster_transport() -> anyhow::Result<shoal_transport::Config> {
    Ok(shoal_transport::Config::builder()
        .keep_alive_interval(Duration::from_secs(1))
        .idle_timeout(Duration::from_secs(4))
        .connect_timeout(Duration::from_secs(2))
        .build()?)
}

/// Written into the data directory of a node that left its cluster.
const LEFT_MARKER: &str = "LEFT";

/// One node, no cluster: today's behaviour.
async fn run_single(args: &RunSettings, identity: Identity) -> anyhow::Result<()> {
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

/// The node's certificate: from `DATA/tls` if it was issued before; else
/// from the CA in `--ca-dir` (created there if missing); else development
/// mode from the CA in `DATA/tls` (created there for a single node only).
fn node_identity(args: &RunSettings) -> anyhow::Result<Identity> {
    let tls = args.data.join("tls");
    let (ca_pem, node_pem, node_key) = (
        tls.join("ca.pem"),
        tls.join("node.pem"),
        tls.join("node.key"),
    );
    let node_id = NodeId::new(args.id);
    let dev_mode = || {
        let cluster = args.cluster.as_deref().unwrap_or("dev");
        dev_bootstrap(&args.data, cluster, node_id)
            .with_context(|| format!("preparing the certificates in {}", tls.display()))
    };
    if !args.clustered() && args.ca_dir.is_none() {
        // One node on its own: development mode as ever.
        return dev_mode();
    }
    let identity = if node_pem.exists() {
        let identity = Identity::load(&ca_pem, &node_pem, &node_key)?;
        if let Some(ca_dir) = &args.ca_dir {
            let theirs = std::fs::read_to_string(ca_dir.join("ca.pem")).ok();
            if theirs.is_some_and(|pem| pem.trim() != identity.ca_cert_pem().trim()) {
                bail!(
                    "{} was issued by another CA than the one in {}: every node of a \
                     cluster needs certificates of one CA",
                    node_pem.display(),
                    ca_dir.display()
                );
            }
        }
        identity
    } else if let Some(ca_dir) = &args.ca_dir {
        let ca = shared_ca(ca_dir, args.cluster.as_deref().unwrap_or("dev"))?;
        let identity = ca.issue_node(node_id, Validity::days(365))?;
        std::fs::create_dir_all(&tls).with_context(|| format!("creating {}", tls.display()))?;
        write_atomically(&ca_pem, &ca.cert_pem(), false)?;
        write_atomically(&node_key, &identity.key_pem(), true)?;
        write_atomically(&node_pem, &identity.cert_pem(), false)?;
        say(&format!(
            "issued the certificate of node {} from the CA in {} into {}",
            args.id,
            ca_dir.display(),
            tls.display()
        ));
        identity
    } else if tls.join("ca.key").exists() {
        // A cluster member whose `DATA/tls` holds a CA key (put there by hand).
        return dev_mode();
    } else {
        bail!(
            "a cluster needs one CA for all its nodes and {} holds no certificate: start every \
             node with the same `--ca-dir DIR` (its CA is created at the first start), or issue \
             one with `shoal ca init --dir CA --cluster NAME` and \
             `shoal cert issue --ca CA --node {} --out {}`",
            tls.display(),
            args.id,
            tls.display()
        );
    };
    if identity.peer() != &shoal_transport::Peer::Node(node_id) {
        bail!(
            "{} is the certificate of {}, not of node {}",
            node_pem.display(),
            identity.peer(),
            args.id
        );
    }
    if let Some(cluster) = &args.cluster
        && identity.cluster() != cluster
    {
        bail!(
            "{} belongs to cluster {:?}, not {cluster:?}",
            node_pem.display(),
            identity.cluster()
        );
    }
    Ok(identity)
}

/// The CA in `dir`, created (once, even if several nodes start at the same
/// moment) if `dir` holds none.
fn shared_ca(dir: &Path, cluster: &str) -> anyhow::Result<Ca> {
    let (pem, key) = (dir.join("ca.pem"), dir.join("ca.key"));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !pem.exists() {
        let lock = dir.join("ca.lock");
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(_) => {
                let created = (|| -> anyhow::Result<()> {
                    if !pem.exists() {
                        let ca = Ca::generate(cluster)?;
                        // The key first: a CA certificate present means complete.
                        write_atomically(&key, &ca.key_pem(), true)?;
                        write_atomically(&pem, &ca.cert_pem(), false)?;
                        tracing::warn!(
                            dir = %dir.display(),
                            cluster,
                            "DEVELOPMENT TLS MODE: created a new cluster CA; its key is on this \
                             machine. For production use `shoal ca init` and `shoal cert issue`"
                        );
                    }
                    Ok(())
                })();
                let _ = std::fs::remove_file(&lock);
                created?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Another node is creating it right now.
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while !pem.exists() {
                    if std::time::Instant::now() > deadline {
                        bail!(
                            "{} has no CA and {} is locked: remove the lock if no other node is \
                             starting",
                            dir.display(),
                            lock.display()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", lock.display())),
        }
    }
    Ca::load(&pem, &key).with_context(|| format!("loading the CA in {}", dir.display()))
}

/// Writes `contents` to `path` through a temporary file and a rename, so
/// the file is either complete or absent; `secret` files get mode 0600.
fn write_atomically(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let context = || format!("writing {}", path.display());
    let mut file = options.open(&tmp).with_context(context)?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(context)?;
    std::fs::rename(&tmp, path).with_context(context)?;
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

fn print_status(status: &shoal::server::StatusReply) {
    println!("node      {}", status.node_id);
    println!("cluster   {}", status.cluster);
    if status.clustered {
        let leader = status
            .leader
            .map_or_else(|| "none known".to_owned(), |l| l.to_string());
        println!("leader    {leader} (term {})", status.term);
        let applied = status
            .last_applied
            .map_or_else(|| "nothing".to_owned(), |i| i.to_string());
        println!(
            "applied   {applied} (placement generation {})",
            status.generation
        );
    }
    println!(
        "entities  {} active; types: {}",
        status.active_entities,
        status.entity_types.join(", ")
    );
    if status.clustered {
        println!("shards    {} per group", status.shards_per_group);
    } else {
        println!(
            "shards    {} per group, all on this node",
            status.shards_per_group
        );
    }
    println!("data      {}", status.data_file);
    if !status.singletons.is_empty() {
        println!("singletons {}", status.singletons.join(", "));
    }
    if status.clustered {
        println!("members   {}", status.members.len());
        println!(
            "  {:<4} {:<22} {:<8} {:<8} {:>6}",
            "ID", "ADDRESS", "ROLE", "STATE", "SHARDS"
        );
        for m in &status.members {
            let role = if m.voter { "voter" } else { "learner" };
            let lead = if status.leader == Some(m.id) {
                "  leader"
            } else {
                ""
            };
            println!(
                "  {:<4} {:<22} {:<8} {:<8} {:>6}{lead}",
                m.id, m.addr, role, m.state, m.shards
            );
        }
    }
}

fn print_value(value: Option<String>) {
    match value {
        Some(value) => println!("{value}"),
        None => println!("(nil)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> anyhow::Result<RunSettings> {
        let cli = Cli::try_parse_from(std::iter::once("shoal").chain(args.iter().copied()))?;
        match cli.command {
            Command::Run(args) => args.settings(),
            _ => unreachable!("a run command"),
        }
    }

    #[test]
    fn cluster_settings_come_from_the_file_and_flags_override_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "id = 2\ndata = \"n2\"\nca_dir = \"certs\"\non_term = \"stop\"\n\
             [peers]\n1 = \"127.0.0.1:7001\"\n2 = \"127.0.0.1:7002\"\n3 = \"127.0.0.1:7003\"\n",
        )
        .unwrap();
        let config = file.to_str().unwrap();
        let from_file = settings(&["run", "--config", config]).unwrap();
        assert_eq!(from_file.id, 2);
        assert_eq!(from_file.peers.len(), 3);
        // Listen and advertise default to this node's own peer address.
        assert_eq!(from_file.listen, "127.0.0.1:7002".parse().unwrap());
        assert_eq!(from_file.advertise, Some("127.0.0.1:7002".parse().unwrap()));
        assert_eq!(from_file.on_term, OnTerm::Stop);
        assert_eq!(from_file.ca_dir, Some(PathBuf::from("certs")));

        let flags = settings(&[
            "run",
            "--config",
            config,
            "--peers",
            "2=127.0.0.1:8002,5=127.0.0.1:8005",
            "--listen",
            "0.0.0.0:8002",
            "--on-term",
            "leave",
        ])
        .unwrap();
        assert_eq!(flags.peers.keys().copied().collect::<Vec<_>>(), [2, 5]);
        assert_eq!(flags.listen, "0.0.0.0:8002".parse().unwrap());
        assert_eq!(flags.advertise, Some("127.0.0.1:8002".parse().unwrap()));
        assert_eq!(flags.on_term, OnTerm::Leave);

        let join = settings(&[
            "run",
            "--id",
            "4",
            "--data",
            "n4",
            "--join",
            "127.0.0.1:7001",
            "--join",
            "127.0.0.1:7002",
        ])
        .unwrap();
        assert!(join.clustered() && join.peers.is_empty());
        assert_eq!(join.join.len(), 2);
        assert!(
            !settings(&["run", "--id", "1", "--data", "d"])
                .unwrap()
                .clustered()
        );

        std::fs::write(
            &file,
            "id = 4\ndata = \"n4\"\njoin = [\"127.0.0.1:7001\"]\nadvertise = \"10.0.0.5:7004\"\n",
        )
        .unwrap();
        let joined = settings(&["run", "--config", config]).unwrap();
        assert_eq!(joined.join, ["127.0.0.1:7001".parse().unwrap()]);
        assert_eq!(joined.advertise, Some("10.0.0.5:7004".parse().unwrap()));
        assert_eq!(joined.on_term, OnTerm::Leave);
    }

    #[test]
    fn bad_cluster_settings_are_refused_clearly() {
        let err = |args: &[&str]| settings(args).err().expect("refused").to_string();
        assert!(
            err(&[
                "run",
                "--id",
                "4",
                "--data",
                "d",
                "--peers",
                "1=127.0.0.1:1"
            ])
            .contains("must include this node")
        );
        assert!(
            err(&[
                "run",
                "--id",
                "1",
                "--data",
                "d",
                "--peers",
                "1:127.0.0.1:1"
            ])
            .contains("ID=ADDR")
        );
        assert!(
            err(&[
                "run",
                "--id",
                "1",
                "--data",
                "d",
                "--peers",
                "1=127.0.0.1:1",
                "--join",
                "127.0.0.1:2"
            ])
            .contains("cannot be used with")
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(
            &file,
            "id = 1\ndata = \"d\"\n[peers]\none = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let message = format!(
            "{:#}",
            settings(&["run", "--config", file.to_str().unwrap()])
                .err()
                .unwrap()
        );
        assert!(message.contains("not a node id"), "{message}");
    }
}
