//! [`Node`]: the embedded entry point — a data directory, the registered
//! entity types, typed clients, and a graceful shutdown.
//!
//! The single-node `Node` writes straight to its local redb file (group
//! commit, no consensus round trip). The same entity code will run unchanged
//! when clustering arrives: only the node's builder changes.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use shoal_storage::{DeadLetter, MemoryStorage, RedbConfig, RedbStorage, ShardId, Storage};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::actor::ActorSystem;
use crate::cluster::serve::Op;
use crate::cluster::{ClusterConfig, ClusterStatus, Core};
use crate::entity::delivery::Deliverer;
use crate::entity::runtime::{AnyEntityType, EntityType, Runtime, WritePath, now};
use crate::entity::{Entity, EntityClient, EntityError, Handlers};
use crate::shard::{self, ShardGroup};
use crate::singleton::{Singleton, SingletonContext};
use crate::sync::lock;
use crate::{Config, ConfigError};

/// How many rounds through its join addresses a joining node tries.
const JOIN_ATTEMPTS: usize = 40;

/// The name of the data file inside a node's data directory.
pub const DATA_FILE_NAME: &str = "shoal.redb";

/// A running node. Cheap to clone; clones share everything.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use shoal::entity::{Activity, ActivityContext, Entity, Handlers, Visibility};
/// # struct Counter;
/// # #[derive(Default, Serialize, Deserialize)]
/// # struct Count { value: i64 }
/// # impl Entity for Counter {
/// #     const NAME: &'static str = "Counter";
/// #     type State = Count;
/// #     fn handlers(h: &mut Handlers<Self>) { h.activity(Add); }
/// # }
/// # struct Add;
/// # impl Activity<Counter> for Add {
/// #     const NAME: &'static str = "add";
/// #     const VISIBILITY: Visibility = Visibility::Public;
/// #     type Params = i64;
/// #     type Output = i64;
/// #     type Error = String;
/// #     async fn run(&self, ctx: &mut ActivityContext<'_, Counter>, by: i64) -> Result<i64, String> {
/// #         ctx.state_mut().value += by;
/// #         Ok(ctx.state().value)
/// #     }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let node = shoal::Node::builder()
///     .data_dir(dir.path())
///     .register(Counter)
///     .start()
///     .await?;
/// let c1 = node.client::<Counter>("c-1");
/// assert_eq!(c1.call(Add, 2).await??, 2);
/// node.shutdown().await?;
///
/// // The state survives the restart.
/// let node = shoal::Node::builder().data_dir(dir.path()).register(Counter).start().await?;
/// assert_eq!(node.client::<Counter>("c-1").call(Add, 3).await??, 5);
/// node.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Arc<Runtime>,
    data_file: Option<PathBuf>,
    delivery: Mutex<Option<JoinHandle<()>>>,
    singletons: Mutex<HashMap<Arc<str>, JoinHandle<()>>>,
    stop_singletons: watch::Sender<bool>,
    /// The cluster side, for a clustered node.
    cluster: Option<Clustered>,
}

/// A clustered node's consensus side and its background tasks.
struct Clustered {
    core: Arc<Core>,
    slot: Arc<crate::cluster::serve::Slot>,
    /// Every singleton registered; each runs where its shard's owner is.
    singletons: Vec<Singleton>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A [`Node`] that does not keep it alive (held by its own request
/// handlers and background tasks).
#[derive(Clone)]
pub(crate) struct WeakNode(std::sync::Weak<Inner>);

impl WeakNode {
    /// The node, unless it is gone.
    pub(crate) fn upgrade(&self) -> Option<Node> {
        self.0.upgrade().map(|inner| Node { inner })
    }
}

/// How long shutdown waits for singletons to return after cancelling them.
const SINGLETON_STOP_GRACE: Duration = Duration::from_secs(10);

/// Every shard of every shard group a registered type uses.
fn all_shards(runtime: &Runtime) -> Vec<ShardId> {
    let groups: BTreeSet<ShardGroup> = runtime.all_types().map(|(_, ty)| ty.group()).collect();
    let shards_per_group = runtime.config.shards_per_group();
    groups
        .into_iter()
        .flat_map(|group| (0..shards_per_group).map(move |index| shard::shard_id(group, index)))
        .collect()
}

type Registration = Box<
    dyn FnOnce(&Arc<Runtime>) -> Result<(&'static str, Arc<dyn AnyEntityType>), NodeError> + Send,
>;

/// Builds a [`Node`].
pub struct NodeBuilder {
    storage: StorageChoice,
    config: Config,
    registrations: Vec<Registration>,
    singletons: Vec<Singleton>,
    cluster: Option<ClusterConfig>,
}

enum StorageChoice {
    DataDir(PathBuf),
    Memory,
    Custom(Arc<dyn Storage>),
}

impl NodeBuilder {
    /// Keeps the node's data in `dir` (created if missing), in the redb file
    /// [`DATA_FILE_NAME`]. The default is an in-memory node.
    pub fn data_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.storage = StorageChoice::DataDir(dir.as_ref().to_path_buf());
        self
    }

    /// Keeps everything in memory (lost at shutdown): for tests.
    pub fn in_memory(mut self) -> Self {
        self.storage = StorageChoice::Memory;
        self
    }

    /// Uses an already opened storage backend.
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = StorageChoice::Custom(storage);
        self
    }

    /// The entity runtime settings (default [`Config::default`]).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Registers an entity type; `entity` is shared by all its activations.
    pub fn register<E: Entity>(mut self, entity: E) -> Self {
        self.registrations
            .push(Box::new(move |runtime: &Arc<Runtime>| {
                let handlers = Handlers::<E>::collect();
                if let Some(handler) = handlers.duplicates().first() {
                    return Err(NodeError::DuplicateHandler {
                        entity_type: E::NAME,
                        handler,
                    });
                }
                let ty = Arc::new(EntityType::new(entity, handlers, runtime.clone()));
                Ok((E::NAME, ty as Arc<dyn AnyEntityType>))
            }));
        self
    }

    /// Runs `body` as a singleton called `name` once the node has started,
    /// with the default supervision (see [the `singleton` module](mod@crate::singleton)).
    pub fn singleton<F, Fut>(self, name: impl Into<String>, body: F) -> Self
    where
        F: Fn(SingletonContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.singleton_with(crate::singleton::singleton(name).build(body))
    }

    /// Runs the node as a member of a cluster (see [`crate::cluster`]):
    /// its writes are replicated through Raft and its shards placed on the
    /// members. Needs a [`data_dir`](Self::data_dir), which holds the Raft
    /// log and snapshot beside the data file.
    pub fn cluster(mut self, config: ClusterConfig) -> Self {
        self.cluster = Some(config);
        self
    }

    /// Registers the built-in entity types ([`crate::builtin::Kv`],
    /// [`crate::builtin::Counter`]).
    pub fn with_builtins(self) -> Self {
        self.register(crate::builtin::Kv)
            .register(crate::builtin::Counter)
    }

    /// Runs a cron job (as the singleton `cron:<name>`) once the node has
    /// started.
    pub fn cron(self, job: crate::cron::CronJob) -> Self {
        self.singleton_with(job.into_singleton())
    }

    /// Runs a singleton made with [`crate::singleton::singleton()`] once the
    /// node has started.
    pub fn singleton_with(mut self, singleton: Singleton) -> Self {
        self.singletons.push(singleton);
        self
    }

    /// Opens the storage and starts the node. Must run inside a tokio
    /// runtime.
    pub async fn start(self) -> Result<Node, NodeError> {
        let cluster = match (self.cluster, &self.storage) {
            (None, _) => None,
            (Some(config), StorageChoice::DataDir(dir)) => Some((config, dir.clone())),
            (Some(_), _) => {
                return Err(NodeError::Cluster(
                    "a clustered node needs a data directory".into(),
                ));
            }
        };
        let (storage, data_file): (Arc<dyn Storage>, _) = match self.storage {
            StorageChoice::Memory => (Arc::new(MemoryStorage::new()), None),
            StorageChoice::Custom(storage) => (storage, None),
            StorageChoice::DataDir(dir) => {
                let path = dir.join(DATA_FILE_NAME);
                let opened = tokio::task::spawn_blocking({
                    let path = path.clone();
                    move || -> Result<RedbStorage, NodeError> {
                        std::fs::create_dir_all(&dir).map_err(|source| NodeError::DataDir {
                            path: dir.clone(),
                            source: Arc::new(source),
                        })?;
                        let config = RedbConfig::builder(&path).build()?;
                        Ok(RedbStorage::open(config)?)
                    }
                })
                .await
                .map_err(|e| match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    // Only a runtime that is shutting down cancels it.
                    Err(_) => NodeError::NoRuntime,
                })??;
                (Arc::new(opened), Some(path))
            }
        };
        let system = ActorSystem::builder()
            .build()
            .map_err(|_| NodeError::NoRuntime)?;
        let started = match cluster {
            Some((config, dir)) => {
                Some(crate::cluster::start::open(config, &dir, storage.clone()).await?)
            }
            None => None,
        };
        let writes = match &started {
            Some(started) => WritePath::replicated(storage.clone(), started.core.clone()),
            None => WritePath::local(storage.clone()),
        };
        let types = Arc::new(OnceLock::new());
        let deliverer =
            Deliverer::new(storage.clone(), writes.clone(), types.clone(), &self.config);
        let runtime = Arc::new(Runtime {
            deliverer,
            writes,
            storage,
            system,
            config: self.config,
            shutting_down: AtomicBool::new(false),
            types,
        });
        let mut types = HashMap::new();
        for registration in self.registrations {
            let (name, registered) = registration(&runtime)?;
            match types.entry(name) {
                Entry::Occupied(_) => return Err(NodeError::DuplicateEntityType(name)),
                Entry::Vacant(slot) => {
                    slot.insert(registered);
                }
            }
        }
        let type_count = types.len();
        // Set once, right here, before any call can run.
        let _ = runtime.types.set(types);
        // Find the pending messages (and workflow executions) a crash or a
        // shutdown left behind; the deliverer takes it from there. (In a
        // cluster: those of the shards this node owns; it scans the shards
        // it gains as it gains them.)
        let shards: Vec<ShardId> = all_shards(&runtime)
            .into_iter()
            .filter(|shard| runtime.writes.owns(*shard))
            .collect();
        let resumed = runtime
            .deliverer
            .scan(shards)
            .await
            .map_err(NodeError::Resume)?;
        let delivery = tokio::spawn(runtime.deliverer.clone().run());
        if let Some(path) = &data_file {
            tracing::info!(path = %path.display(), entity_types = type_count, resumed, "node started");
        }
        let cluster = started.map(|started| Clustered {
            core: started.core,
            slot: started.slot,
            singletons: self.singletons.clone(),
            tasks: Mutex::new(Vec::new()),
        });
        let node = Node {
            inner: Arc::new(Inner {
                runtime,
                data_file,
                delivery: Mutex::new(Some(delivery)),
                singletons: Mutex::new(HashMap::new()),
                stop_singletons: watch::Sender::new(false),
                cluster,
            }),
        };
        match &node.inner.cluster {
            Some(cluster) => {
                cluster.slot.set(cluster.core.clone(), node.downgrade());
                let config = &cluster.core.config;
                if config.peers.is_empty() {
                    crate::cluster::start::join(&cluster.core, JOIN_ATTEMPTS).await?;
                } else {
                    let members = crate::cluster::start::initial_members(config);
                    shoal_raft::bootstrap(&cluster.core.raft, config.node_id, &members)
                        .await
                        .map_err(|e| NodeError::Cluster(format!("bootstrap: {e}")))?;
                }
                let tasks = crate::cluster::tasks::spawn(&node, cluster.core.clone());
                lock(&cluster.tasks).extend(tasks);
            }
            None => {
                for singleton in self.singletons {
                    node.start_singleton(singleton)?;
                }
            }
        }
        Ok(node)
    }
}

impl Node {
    /// A builder for an in-memory node with default settings.
    pub fn builder() -> NodeBuilder {
        NodeBuilder {
            storage: StorageChoice::Memory,
            config: Config::default(),
            registrations: Vec::new(),
            singletons: Vec::new(),
            cluster: None,
        }
    }

    /// A typed client for entity `id` of type `E`. If `E` is not registered
    /// or `id` is not a valid entity id, every call returns the error.
    pub fn client<E: Entity>(&self, id: impl AsRef<str>) -> EntityClient<E> {
        EntityClient::new(self.inner.runtime.entity_type::<E>(), id.as_ref())
    }

    /// Calls a handler by name with MessagePack-encoded parameters; the
    /// answer is MessagePack too. This is how calls arrive from outside the
    /// process (the CLI, other nodes); typed code uses [`Node::client`].
    pub async fn call_raw(
        &self,
        entity_type: &str,
        entity_id: &str,
        handler: &str,
        params: Bytes,
    ) -> Result<Bytes, EntityError> {
        let (ty, key) = self.entity(entity_type, entity_id)?;
        ty.invoke_raw(key, handler, params, None).await
    }

    /// The registered type called `entity_type` and the key of its entity
    /// `entity_id`.
    fn entity(
        &self,
        entity_type: &str,
        entity_id: &str,
    ) -> Result<(Arc<dyn AnyEntityType>, shoal_storage::EntityKey), EntityError> {
        let ty = self
            .inner
            .runtime
            .any_type(entity_type)
            .ok_or_else(|| EntityError::UnknownEntityType(entity_type.to_owned()))?;
        let key = ty.key(entity_id)?;
        Ok((ty.clone(), key))
    }

    /// Runs `op` on entity `entity_id` of type `entity_type` on this node,
    /// without routing (a forwarded operation).
    pub(crate) async fn run_local(
        &self,
        entity_type: &str,
        entity_id: &str,
        op: Op,
    ) -> Result<Option<Bytes>, EntityError> {
        let (ty, key) = self.entity(entity_type, entity_id)?;
        ty.run_local_raw(key, op).await
    }

    /// A handle that does not keep the node alive.
    pub(crate) fn downgrade(&self) -> WeakNode {
        WeakNode(Arc::downgrade(&self.inner))
    }

    /// The runtime (for the cluster's background tasks).
    pub(crate) fn runtime(&self) -> &Arc<Runtime> {
        &self.inner.runtime
    }

    /// Every shard of the registered types' groups.
    pub(crate) fn shards(&self) -> Vec<ShardId> {
        all_shards(&self.inner.runtime)
    }

    /// The singletons registered with a clustered node.
    pub(crate) fn cluster_singletons(&self) -> &[Singleton] {
        self.inner
            .cluster
            .as_ref()
            .map_or(&[], |cluster| cluster.singletons.as_slice())
    }

    /// Stops the singleton called `name` on this node, if it runs here.
    pub(crate) fn stop_singleton(&self, name: &str) {
        if let Some(task) = lock(&self.inner.singletons).remove(name) {
            task.abort();
        }
    }

    /// The cluster as this node sees it: members and their state, leader,
    /// term, shards per node; `None` for a node that is not clustered.
    pub fn cluster_status(&self) -> Option<ClusterStatus> {
        let cluster = self.inner.cluster.as_ref()?;
        Some(cluster.core.status(&self.shards()))
    }

    /// The node that owns entity `entity_id` of type `entity_type` as far
    /// as this node knows; `None` on a node that is not clustered (it has
    /// no id), when the type is not registered, the id invalid or the
    /// shard has no owner now.
    pub fn entity_owner(&self, entity_type: &str, entity_id: &str) -> Option<u64> {
        let cluster = self.inner.cluster.as_ref()?;
        let (_, key) = self.entity(entity_type, entity_id).ok()?;
        cluster.core.owner(key.shard())
    }

    /// This node's id in its cluster.
    pub fn node_id(&self) -> Option<u64> {
        self.inner.cluster.as_ref().map(|c| c.core.me)
    }

    /// The address a clustered node listens on.
    pub fn cluster_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner
            .cluster
            .as_ref()
            .and_then(|c| c.core.endpoint())
            .map(|endpoint| endpoint.local_addr())
    }

    /// The Raft handle of a clustered node (for tests and tools).
    pub fn raft(&self) -> Option<&shoal_raft::Raft> {
        self.inner.cluster.as_ref().map(|c| &c.core.raft)
    }

    /// Leaves the cluster gracefully: this node's shards (and singletons)
    /// move to the others, it is removed from the membership and its id is
    /// retired; then it shuts down. On a node that is not clustered this is
    /// [`shutdown`](Self::shutdown).
    pub async fn leave(&self) -> Result<(), NodeError> {
        if let Some(cluster) = &self.inner.cluster {
            let reply = cluster.core.leave_here(cluster.core.me).await;
            if !reply.error.is_empty() {
                return Err(NodeError::Cluster(format!("cannot leave: {}", reply.error)));
            }
        }
        self.shutdown().await
    }

    /// The node's settings.
    pub fn config(&self) -> &Config {
        &self.inner.runtime.config
    }

    /// The redb data file, for a node with a data directory.
    pub fn data_file(&self) -> Option<&Path> {
        self.inner.data_file.as_deref()
    }

    /// How many entities are active (in memory) across all types.
    pub fn active_entities(&self) -> usize {
        self.inner
            .runtime
            .all_types()
            .map(|(_, ty)| ty.active_count())
            .sum()
    }

    /// Starts `singleton` on this node.
    pub(crate) fn start_singleton(&self, singleton: Singleton) -> Result<(), NodeError> {
        if self.inner.runtime.shutting_down.load(Ordering::Acquire) {
            return Err(NodeError::ShuttingDown);
        }
        let mut singletons = lock(&self.inner.singletons);
        if singletons
            .get(&singleton.name)
            .is_some_and(|task| !task.is_finished())
        {
            return Err(NodeError::DuplicateSingleton(singleton.name.to_string()));
        }
        let name = singleton.name.clone();
        let cancel = self.inner.stop_singletons.subscribe();
        let task = tokio::spawn(crate::singleton::supervise(singleton, self.clone(), cancel));
        singletons.insert(name, task);
        Ok(())
    }

    /// The storage backend, for reads.
    pub(crate) fn storage(&self) -> Arc<dyn Storage> {
        self.inner.runtime.storage.clone()
    }

    /// The write path.
    pub(crate) fn writes(&self) -> Arc<WritePath> {
        self.inner.runtime.writes.clone()
    }

    /// The names of the registered entity types, sorted.
    pub fn entity_types(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self
            .inner
            .runtime
            .all_types()
            .map(|(name, _)| name)
            .collect();
        names.sort_unstable();
        names
    }

    /// The names of the singletons running on this node, sorted.
    pub fn singletons(&self) -> Vec<String> {
        let singletons = lock(&self.inner.singletons);
        let mut names: Vec<String> = singletons
            .iter()
            .filter(|(_, task)| !task.is_finished())
            .map(|(name, _)| name.to_string())
            .collect();
        names.sort_unstable();
        names
    }

    /// Whether the singleton called `name` is running on this node.
    pub fn singleton_running(&self, name: &str) -> bool {
        lock(&self.inner.singletons)
            .get(name)
            .is_some_and(|task| !task.is_finished())
    }

    /// Dead-lettered persisted messages, at most `limit`, shard by shard.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, EntityError> {
        let storage = &self.inner.runtime.storage;
        let mut letters = Vec::new();
        for shard in all_shards(&self.inner.runtime) {
            let mut after = None;
            while letters.len() < limit {
                let page = storage
                    .dead_letters(shard, after, limit - letters.len())
                    .await?;
                let Some(last) = page.last() else { break };
                after = Some(last.message.request_id);
                letters.extend(page);
            }
            if letters.len() >= limit {
                break;
            }
        }
        Ok(letters)
    }

    /// Puts a dead-lettered message back in its shard for delivery, with
    /// its attempts reset.
    pub async fn replay_dead_letter(&self, letter: &DeadLetter) -> Result<(), EntityError> {
        let shard = letter.message.shard();
        let writes = &self.inner.runtime.writes;
        let mut batch = writes.batch(shard)?;
        batch.replay_dead_letter(letter.message.request_id, now());
        writes.commit(batch).await?;
        self.inner.runtime.deliverer.enqueued(shard);
        Ok(())
    }

    /// Stops taking calls, lets every entity finish the call it is handling
    /// and stop, then flushes and closes the storage. Calls made afterwards
    /// fail with [`EntityError::ShuttingDown`].
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        let runtime = &self.inner.runtime;
        // Singletons first: they may still call entities while finishing.
        self.inner.stop_singletons.send_replace(true);
        let singletons: Vec<_> = lock(&self.inner.singletons)
            .drain()
            .map(|(_, task)| task)
            .collect();
        for task in singletons {
            let abort = task.abort_handle();
            if tokio::time::timeout(SINGLETON_STOP_GRACE, task)
                .await
                .is_err()
            {
                tracing::warn!("a singleton ignored cancellation; aborted");
                abort.abort();
            }
        }
        runtime.shutting_down.store(true, Ordering::Release);
        runtime.deliverer.stop();
        let delivery = lock(&self.inner.delivery).take();
        if let Some(delivery) = delivery {
            // Its in-flight deliveries end with the actors below.
            let _ = delivery.await;
        }
        runtime.system.shutdown().await;
        for (_, ty) in self.inner.runtime.all_types() {
            ty.abort_workflows();
        }
        if let Some(cluster) = &self.inner.cluster {
            for task in lock(&cluster.tasks).drain(..) {
                task.abort();
            }
            cluster.core.service.stop();
            if let Err(error) = cluster.core.raft.shutdown().await {
                tracing::warn!(%error, "raft did not shut down cleanly");
            }
            cluster.slot.clear();
            if let Some(endpoint) = cluster.core.take_endpoint() {
                endpoint.shutdown().await;
            }
        }
        runtime.storage.flush().await?;
        runtime.storage.close().await?;
        Ok(())
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("data_file", &self.inner.data_file)
            .field("entity_types", &self.entity_types())
            .finish()
    }
}

/// Why a node could not start or stop cleanly.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// An invalid setting.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The storage could not be opened, flushed or closed (a corrupt or
    /// foreign data file is reported here, with its path).
    #[error("storage: {0}")]
    Storage(Arc<shoal_storage::Error>),
    /// The data directory could not be created.
    #[error("cannot create the data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: Arc<std::io::Error>,
    },
    /// Two registered entity types share a name.
    #[error("entity type {0:?} is registered twice")]
    DuplicateEntityType(&'static str),
    /// An entity type registers two handlers with one name.
    #[error("entity type {entity_type:?} registers handler {handler:?} twice")]
    DuplicateHandler {
        /// The entity type.
        entity_type: &'static str,
        /// The handler name.
        handler: &'static str,
    },
    /// Pending workflow executions could not be read at start-up.
    #[error("cannot resume pending workflows: {0}")]
    Resume(EntityError),
    /// A singleton with this name is already running.
    #[error("a singleton called {0:?} is already running")]
    DuplicateSingleton(String),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The cluster side could not start (endpoint, Raft files, bootstrap,
    /// join) or leave.
    #[error("cluster: {0}")]
    Cluster(String),
    /// `start` ran outside a tokio runtime.
    #[error("a node must start inside a tokio runtime")]
    NoRuntime,
}

impl From<shoal_storage::Error> for NodeError {
    fn from(e: shoal_storage::Error) -> Self {
        NodeError::Storage(Arc::new(e))
    }
}
