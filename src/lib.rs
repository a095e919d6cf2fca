//! Shoal: stateful sharded entities, durable workflows and OTP-style actors
//! in one embedded Rust system, with no external infrastructure.
//!
//! # Layout
//! - [`actor`]: the local actor runtime everything else runs on;
//! - [`entity`]: entity types, handlers, typed clients, and the runtime that
//!   activates, persists and passivates entities;
//! - [`Node`]: the embedded entry point (data directory, registered types);
//! - [`shard`]: the stable entity-id → shard mapping;
//! - workflows, persisted messages, [`cron`] and [singletons](mod@singleton): durable
//!   execution on top of entities;
//! - [`server`]: a node served over QUIC + mutual TLS and its remote
//!   [`server::Client`]; [`builtin`] entity types for the `shoal` binary;
//! - [`Config`]: validated entity-runtime settings and their defaults.
//!
//! The storage model lives in the `shoal-storage` crate and the QUIC
//! transport in `shoal-transport`; see `ARCHITECTURE.md` for the map.

pub mod actor;
pub mod builtin;
pub mod cluster;
mod config;
pub mod cron;
pub mod entity;
mod node;
pub mod server;
pub mod shard;
pub mod singleton;
mod sync;
pub mod testing;

pub use node::{DATA_FILE_NAME, Node, NodeBuilder, NodeError};
pub use singleton::{SingletonContext, register_singleton, singleton};

pub use config::{
    Config, ConfigBuilder, ConfigError, DEFAULT_ENTITY_MAILBOX_CAPACITY,
    DEFAULT_ENTITY_MAX_IDLE_TIME, DEFAULT_STORAGE_MESSAGE_MAX_RETRIES,
    DEFAULT_STORAGE_MESSAGE_RETRY_BACKOFF, DEFAULT_STORAGE_POLL_INTERVAL,
};

/// The README's examples, compiled and run as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
