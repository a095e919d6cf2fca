//! Shoal.
pub mod actor;
