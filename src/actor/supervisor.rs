//! Supervision: what happens when an actor fails, and how its end is
//! reported to those watching it.
//!
//! The decision itself ([`Supervision::on_failure`]) is a pure function of the
//! strategy, the failure time and the recent restarts, so it is tested
//! without a runtime.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::system::ActorId;
use super::traits::Message;

/// What to do when an actor fails (a handler or hook panics, or a child
/// escalates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SupervisorStrategy {
    /// Let the actor stop (the default).
    #[default]
    Stop,
    /// Replace the failed instance with a fresh one from the actor's factory,
    /// behind the same address, at most `max_restarts` times within any
    /// `within` window; one failure more and the actor stops.
    Restart {
        /// Restarts allowed within the window.
        max_restarts: u32,
        /// The sliding window the restarts are counted in.
        within: Duration,
    },
    /// Stop this actor and fail its parent, which then applies its own
    /// strategy (a top-level actor just stops).
    Escalate,
}

impl SupervisorStrategy {
    /// `Restart { max_restarts, within }`.
    pub fn restart(max_restarts: u32, within: Duration) -> Self {
        SupervisorStrategy::Restart {
            max_restarts,
            within,
        }
    }
}

/// Why an actor failed: a panic's message, or a child's escalated failure.
#[derive(Clone, PartialEq, Eq)]
pub struct Failure(Arc<str>);

impl Failure {
    /// A failure with the given description.
    pub fn new(message: impl Into<String>) -> Self {
        Failure(message.into().into())
    }

    /// The description, e.g. the panic message.
    pub fn message(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_panic(payload: Box<dyn Any + Send>) -> Self {
        let text = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic with a non-string payload".to_owned()
        };
        Failure::new(format!("panicked: {text}"))
    }

    pub(crate) fn escalated(child: ActorId, failure: &Failure) -> Self {
        Failure::new(format!("child {child} escalated: {failure}"))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Failure({:?})", &*self.0)
    }
}

/// How an actor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// It was stopped, or nothing could reach it any more.
    Normal,
    /// It failed and was not restarted.
    Failed(Failure),
    /// It had already stopped when the watch was set up; how it ended is no
    /// longer known.
    AlreadyStopped,
}

/// The notice delivered to every watcher of an actor when it has stopped
/// (see [`crate::actor::Context::watch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    /// The actor that stopped.
    pub id: ActorId,
    /// How it ended.
    pub reason: StopReason,
}

impl Message for Terminated {
    type Result = ();
}

/// What the runner does after a failure.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Restart,
    Stop,
    Escalate,
}

/// A strategy together with the restarts it has spent.
#[derive(Debug)]
pub(crate) struct Supervision {
    strategy: SupervisorStrategy,
    can_restart: bool,
    restarts: VecDeque<Instant>,
}

impl Supervision {
    /// `can_restart` is false when the actor has no factory to build a fresh
    /// instance from; a restart strategy then stops it instead.
    pub(crate) fn new(strategy: SupervisorStrategy, can_restart: bool) -> Self {
        Supervision {
            strategy,
            can_restart,
            restarts: VecDeque::new(),
        }
    }

    pub(crate) fn on_failure(&mut self, now: Instant) -> Decision {
        match self.strategy {
            SupervisorStrategy::Stop => Decision::Stop,
            SupervisorStrategy::Escalate => Decision::Escalate,
            SupervisorStrategy::Restart {
                max_restarts,
                within,
            } => {
                if !self.can_restart {
                    return Decision::Stop;
                }
                while let Some(first) = self.restarts.front() {
                    if now.saturating_duration_since(*first) >= within {
                        self.restarts.pop_front();
                    } else {
                        break;
                    }
                }
                if self.restarts.len() < max_restarts as usize {
                    self.restarts.push_back(now);
                    Decision::Restart
                } else {
                    Decision::Stop
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_and_escalate_never_restart() {
        let now = Instant::now();
        assert_eq!(
            Supervision::new(SupervisorStrategy::Stop, true).on_failure(now),
            Decision::Stop
        );
        assert_eq!(
            Supervision::new(SupervisorStrategy::Escalate, true).on_failure(now),
            Decision::Escalate
        );
    }

    #[test]
    fn restart_is_bounded_within_the_window() {
        let start = Instant::now();
        let mut s = Supervision::new(
            SupervisorStrategy::restart(2, Duration::from_secs(10)),
            true,
        );
        assert_eq!(s.on_failure(start), Decision::Restart);
        assert_eq!(
            s.on_failure(start + Duration::from_secs(1)),
            Decision::Restart
        );
        assert_eq!(s.on_failure(start + Duration::from_secs(2)), Decision::Stop);
        // Once the first restart leaves the window, one more is allowed.
        let mut s = Supervision::new(
            SupervisorStrategy::restart(2, Duration::from_secs(10)),
            true,
        );
        s.on_failure(start);
        s.on_failure(start + Duration::from_secs(1));
        assert_eq!(
            s.on_failure(start + Duration::from_secs(10)),
            Decision::Restart
        );
        assert_eq!(
            s.on_failure(start + Duration::from_secs(10)),
            Decision::Stop
        );
    }

    #[test]
    fn restart_without_a_factory_stops() {
        let mut s = Supervision::new(
            SupervisorStrategy::restart(5, Duration::from_secs(1)),
            false,
        );
        assert_eq!(s.on_failure(Instant::now()), Decision::Stop);
    }

    #[test]
    fn panic_payloads_become_messages() {
        let f = Failure::from_panic(Box::new("boom"));
        assert_eq!(f.message(), "panicked: boom");
        let f = Failure::from_panic(Box::new(String::from("bang")));
        assert_eq!(f.message(), "panicked: bang");
        let f = Failure::from_panic(Box::new(7_u8));
        assert!(f.message().contains("non-string"));
    }
}
