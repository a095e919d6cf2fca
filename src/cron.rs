//! Cron: durable scheduled tasks.
//!
//! A [`CronJob`] sends a handler call to an entity at every fire time of a
//! crontab expression: standard 5 fields (`min hour dom mon dow`), or 6/7
//! fields with seconds first (and a year last). Each fire time becomes a
//! persisted message due at that time, keyed `cron:<job>:<fire time ms>`,
//! so a fire time runs exactly once — across restarts and crashes — and
//! failed runs are retried like any persisted message.
//!
//! The scheduler of a job is a singleton (`cron:<job>`). It keeps a cursor,
//! the last fire time it has scheduled, in storage; after a restart it looks
//! at the fire times it missed and applies the job's [`MissedRuns`] policy
//! ([`runs_to_schedule`] is that decision, a pure function).
//!
//! ```
//! # use serde::{Deserialize, Serialize};
//! # use shoal::entity::{Activity, ActivityContext, Entity, Handlers, Visibility};
//! # struct Reports;
//! # #[derive(Default, Serialize, Deserialize)] struct State { runs: u32 }
//! # impl Entity for Reports {
//! #     const NAME: &'static str = "Reports";
//! #     type State = State;
//! #     fn handlers(h: &mut Handlers<Self>) { h.activity(Generate); }
//! # }
//! # struct Generate;
//! # impl Activity<Reports> for Generate {
//! #     const NAME: &'static str = "generate";
//! #     const VISIBILITY: Visibility = Visibility::Public;
//! #     type Params = u64; type Output = (); type Error = String;
//! #     async fn run(&self, ctx: &mut ActivityContext<'_, Reports>, _at: u64) -> Result<(), String> {
//! #         ctx.state_mut().runs += 1; Ok(())
//! #     }
//! # }
//! use shoal::cron::{CronJob, MissedRuns};
//!
//! let nightly = CronJob::builder("nightly-report", "0 3 * * *")?
//!     .missed_runs(MissedRuns::RunOnce)
//!     .send::<Reports, _, _>("daily", Generate, |fire_time_ms| fire_time_ms);
//! let builder = shoal::Node::builder().register(Reports).cron(nightly);
//! # let _ = builder;
//! # Ok::<(), shoal::cron::CronError>(())
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::future::BoxFuture;
use shoal_storage::{EntityKey, Timestamp};

use crate::Node;
use crate::cluster::tasks::singleton_shard;
use crate::entity::codec;
use crate::entity::{Callable, Entity, EntityError};
use crate::singleton::{Singleton, SingletonContext, singleton};

/// The default bound of [`MissedRuns::Skip`]: one day.
pub const DEFAULT_MISSED_RUNS_OLDER_THAN: Duration = Duration::from_secs(24 * 60 * 60);

/// The most missed fire times one catch-up schedules.
const CATCH_UP_RUNS_MAX: usize = 1_000;

/// The entity type under which cron cursors are stored.
const CURSOR_ENTITY_TYPE: &str = "shoal.Cron";

/// What to do with fire times that passed while no scheduler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MissedRuns {
    /// Run each missed fire time no older than `older_than`; skip older
    /// ones (the default, with a bound of one day).
    Skip {
        /// How old a missed fire time may be and still run.
        older_than: Duration,
    },
    /// Run once for all missed fire times (at the latest of them).
    RunOnce,
}

impl Default for MissedRuns {
    fn default() -> Self {
        MissedRuns::Skip {
            older_than: DEFAULT_MISSED_RUNS_OLDER_THAN,
        }
    }
}

/// An invalid cron job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CronError {
    /// The expression does not parse.
    #[error("invalid cron expression {expression:?}: {reason}")]
    Expression {
        /// The expression as given.
        expression: String,
        /// The parser's complaint.
        reason: String,
    },
}

/// Parses a crontab expression: 5 fields (minute precision), or 6/7 fields
/// with seconds first (and an optional year last).
pub fn parse(expression: &str) -> Result<cron::Schedule, CronError> {
    let fields = expression.split_whitespace().count();
    let full = if fields == 5 {
        format!("0 {expression}")
    } else {
        expression.to_owned()
    };
    cron::Schedule::from_str(&full).map_err(|e| CronError::Expression {
        expression: expression.to_owned(),
        reason: e
            .to_string()
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned(),
    })
}

/// The fire times to schedule now: those after `cursor` up to `now`
/// filtered by `policy`, then the next fire time after `now` (returned
/// separately). Pure, so it is tested without a clock.
pub fn runs_to_schedule(
    schedule: &cron::Schedule,
    cursor: DateTime<Utc>,
    now: DateTime<Utc>,
    policy: MissedRuns,
) -> (Vec<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let missed: Vec<DateTime<Utc>> = schedule
        .after(&cursor)
        .take_while(|t| *t <= now)
        .take(CATCH_UP_RUNS_MAX * 100)
        .collect();
    let mut runs: Vec<DateTime<Utc>> = match policy {
        MissedRuns::Skip { older_than } => {
            let bound =
                now - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
            missed.into_iter().filter(|t| *t >= bound).collect()
        }
        MissedRuns::RunOnce => missed.last().copied().into_iter().collect(),
    };
    if runs.len() > CATCH_UP_RUNS_MAX {
        runs.drain(..runs.len() - CATCH_UP_RUNS_MAX);
    }
    let next = schedule.after(&now.max(cursor)).next();
    (runs, next)
}

/// Sends one fire time's call.
trait Target: Send + Sync {
    fn send(
        &self,
        node: &Node,
        fire_ms: u64,
        key: String,
    ) -> BoxFuture<'static, Result<(), EntityError>>;
    fn describe(&self) -> String;
}

/// Names the entity type, handler and kind without owning any of them.
type Marker<E, H, K> = PhantomData<fn() -> (E, H, K)>;

struct SendTo<E, H, K, P> {
    entity_id: String,
    params: P,
    _handler: Marker<E, H, K>,
}

impl<E, H, K, P> Target for SendTo<E, H, K, P>
where
    E: Entity,
    H: Callable<E, K>,
    K: 'static,
    P: Fn(u64) -> H::Params + Send + Sync + 'static,
{
    fn send(
        &self,
        node: &Node,
        fire_ms: u64,
        key: String,
    ) -> BoxFuture<'static, Result<(), EntityError>> {
        let client = node.client::<E>(&self.entity_id);
        let params = (self.params)(fire_ms);
        Box::pin(async move {
            client
                .send_persisted_typed::<H, K>(
                    params,
                    Some(&key),
                    Some(Timestamp::from_unix_ms(fire_ms)),
                )
                .await
                .map(|_| ())
        })
    }

    fn describe(&self) -> String {
        format!("{}/{}.{}", E::NAME, self.entity_id, H::NAME)
    }
}

/// A durable scheduled task; build it with [`CronJob::builder`].
#[derive(Clone)]
pub struct CronJob {
    name: String,
    expression: String,
    schedule: cron::Schedule,
    missed: MissedRuns,
    target: Arc<dyn Target>,
}

impl fmt::Debug for CronJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronJob")
            .field("name", &self.name)
            .field("expression", &self.expression)
            .field("missed", &self.missed)
            .field("target", &self.target.describe())
            .finish()
    }
}

/// Builds a [`CronJob`].
#[derive(Debug, Clone)]
pub struct CronJobBuilder {
    name: String,
    expression: String,
    schedule: cron::Schedule,
    missed: MissedRuns,
}

impl CronJob {
    /// A job called `name` (unique per node; its stored cursor is keyed by
    /// it) firing on `expression`.
    pub fn builder(name: impl Into<String>, expression: &str) -> Result<CronJobBuilder, CronError> {
        Ok(CronJobBuilder {
            name: name.into(),
            expression: expression.to_owned(),
            schedule: parse(expression)?,
            missed: MissedRuns::default(),
        })
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The scheduler singleton that runs this job.
    pub(crate) fn into_singleton(self) -> Singleton {
        let name = format!("cron:{}", self.name);
        // In a cluster it runs where its cursor's shard is owned, so it
        // writes the cursor locally.
        let placement = self.name.as_str().into();
        let job = Arc::new(self);
        let mut singleton = singleton(name).build(move |ctx| {
            let job = job.clone();
            async move { job.run(ctx).await }
        });
        singleton.placement = placement;
        singleton
    }

    async fn run(&self, ctx: SingletonContext) {
        let node = ctx.node().clone();
        let cursor_key = match self.cursor_key(&node) {
            Ok(key) => key,
            Err(error) => {
                tracing::error!(job = %self.name, %error, "cannot address the cron cursor");
                return;
            }
        };
        let storage = node.storage();
        let writes = node.writes();
        let mut cursor = match storage.load_state(&cursor_key).await {
            Ok(Some(bytes)) => match codec::decode::<u64>(&bytes, "cron cursor") {
                Ok(ms) => from_ms(ms),
                Err(error) => {
                    tracing::error!(job = %self.name, %error, "unreadable cron cursor; starting from now");
                    Utc::now()
                }
            },
            Ok(None) => Utc::now(),
            Err(error) => {
                // A panic makes the singleton restart (with its policy).
                panic!("cannot read the cursor of cron job {}: {error}", self.name);
            }
        };
        loop {
            let now = Utc::now();
            let (runs, next) = runs_to_schedule(&self.schedule, cursor, now, self.missed);
            let scheduled = runs.iter().chain(next.iter());
            for fire in scheduled {
                let fire_ms = to_ms(*fire);
                let key = format!("cron:{}:{fire_ms}", self.name);
                if let Err(error) = self.target.send(&node, fire_ms, key).await {
                    panic!(
                        "cron job {} cannot schedule its run at {fire}: {error}",
                        self.name
                    );
                }
            }
            let Some(next) = next else {
                tracing::info!(job = %self.name, "the schedule has no more fire times");
                return;
            };
            cursor = next;
            let bytes = match codec::encode(&to_ms(next), "cron cursor") {
                Ok(bytes) => bytes,
                Err(error) => panic!("{error}"),
            };
            let saved = match writes.batch(cursor_key.shard()) {
                Ok(mut batch) => {
                    batch.put_state(&cursor_key, bytes);
                    writes.commit(batch).await.map(drop)
                }
                Err(error) => Err(error),
            };
            if let Err(error) = saved {
                // The run is scheduled; a lost cursor only means the next
                // start reschedules it, which the key deduplicates.
                tracing::warn!(job = %self.name, %error, "cannot save the cron cursor");
            }
            let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                () = ctx.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn cursor_key(&self, node: &Node) -> Result<EntityKey, EntityError> {
        // The shard the scheduler singleton is placed by (its placement is
        // the job's name), so the owner of the cursor runs the job.
        let shard = singleton_shard(&self.name, node.config().shards_per_group());
        EntityKey::new(shard, CURSOR_ENTITY_TYPE, &self.name)
            .map_err(|e| EntityError::InvalidEntityId(e.to_string()))
    }
}

impl CronJobBuilder {
    /// What to do with fire times missed while no node ran the job (default
    /// [`MissedRuns::Skip`] older than a day).
    pub fn missed_runs(mut self, policy: MissedRuns) -> Self {
        self.missed = policy;
        self
    }

    /// At each fire time, sends `handler` to entity `entity_id` of type `E`
    /// with `params(fire time in Unix ms)`, as a persisted message.
    pub fn send<E, H, K>(
        self,
        entity_id: impl Into<String>,
        handler: H,
        params: impl Fn(u64) -> H::Params + Send + Sync + 'static,
    ) -> CronJob
    where
        E: Entity,
        H: Callable<E, K>,
        K: 'static,
    {
        let _ = handler;
        CronJob {
            name: self.name,
            expression: self.expression,
            schedule: self.schedule,
            missed: self.missed,
            target: Arc::new(SendTo::<E, H, K, _> {
                entity_id: entity_id.into(),
                params,
                _handler: PhantomData,
            }),
        }
    }
}

fn to_ms(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

fn from_ms(ms: u64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(i64::try_from(ms).unwrap_or(i64::MAX))
        .single()
        .unwrap_or_else(Utc::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_six_and_seven_fields_parse_and_garbage_does_not() {
        let five = parse("30 3 * * *").unwrap();
        assert_eq!(
            five.after(&at("2026-01-01T00:00:00Z")).next(),
            Some(at("2026-01-01T03:30:00Z"))
        );
        let six = parse("*/10 * * * * *").unwrap();
        assert_eq!(
            six.after(&at("2026-01-01T00:00:00Z")).next(),
            Some(at("2026-01-01T00:00:10Z"))
        );
        let seven = parse("0 0 12 1 1 * 2030").unwrap();
        assert_eq!(
            seven.after(&at("2026-01-01T00:00:00Z")).next(),
            Some(at("2030-01-01T12:00:00Z"))
        );
        for bad in ["", "* * *", "61 * * * *", "nonsense here * * *"] {
            assert!(
                matches!(parse(bad), Err(CronError::Expression { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn missed_runs_are_skipped_beyond_the_bound_or_run_once() {
        let hourly = parse("0 * * * *").unwrap();
        let cursor = at("2026-01-01T00:00:00Z");
        let now = at("2026-01-01T05:30:00Z");
        // Missed: 01:00 … 05:00. Skip older than 2 h keeps 04:00 and 05:00.
        let skip = MissedRuns::Skip {
            older_than: Duration::from_secs(2 * 3600),
        };
        let (runs, next) = runs_to_schedule(&hourly, cursor, now, skip);
        assert_eq!(
            runs,
            vec![at("2026-01-01T04:00:00Z"), at("2026-01-01T05:00:00Z")]
        );
        assert_eq!(next, Some(at("2026-01-01T06:00:00Z")));
        // Run once: the latest missed time only.
        let (runs, _) = runs_to_schedule(&hourly, cursor, now, MissedRuns::RunOnce);
        assert_eq!(runs, vec![at("2026-01-01T05:00:00Z")]);
        // The default keeps everything from the last day.
        let (runs, _) = runs_to_schedule(&hourly, cursor, now, MissedRuns::default());
        assert_eq!(runs.len(), 5);
        // Nothing missed: only the next fire time.
        let (runs, next) = runs_to_schedule(&hourly, now, now, MissedRuns::RunOnce);
        assert!(runs.is_empty());
        assert_eq!(next, Some(at("2026-01-01T06:00:00Z")));
        // A cursor in the future (clock skew) schedules from the cursor.
        let (runs, next) = runs_to_schedule(
            &hourly,
            at("2026-01-01T08:00:00Z"),
            now,
            MissedRuns::RunOnce,
        );
        assert!(runs.is_empty());
        assert_eq!(next, Some(at("2026-01-01T09:00:00Z")));
    }

    #[test]
    fn catch_up_is_bounded() {
        let every_second = parse("* * * * * *").unwrap();
        let (runs, _) = runs_to_schedule(
            &every_second,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-02T00:00:00Z"),
            MissedRuns::default(),
        );
        assert_eq!(runs.len(), CATCH_UP_RUNS_MAX);
        assert_eq!(runs.last(), Some(&at("2026-01-02T00:00:00Z")));
    }
}
