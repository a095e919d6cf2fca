//! Test support for storage backends (feature `test-util`).
//!
//! [`conformance`] is the suite every [`Storage`] implementation must pass;
//! [`Fixture`] is what a backend hands it. Nothing here is used in
//! production builds.

use std::any::Any;
use std::sync::Arc;

use crate::storage::Storage;

pub mod conformance;

/// A fresh, empty backend for one conformance case, plus whatever must live
/// as long as it (e.g. the temporary directory holding a data file).
pub struct Fixture {
    storage: Arc<dyn Storage>,
    _guard: Option<Box<dyn Any + Send + Sync>>,
}

impl Fixture {
    /// A fixture owning nothing but the backend.
    pub fn new(storage: impl Storage) -> Self {
        Fixture {
            storage: Arc::new(storage),
            _guard: None,
        }
    }

    /// A fixture that keeps `guard` alive until the case ends (dropped after
    /// the backend's last handle held by the fixture).
    pub fn with_guard(storage: impl Storage, guard: impl Any + Send + Sync) -> Self {
        Fixture {
            storage: Arc::new(storage),
            _guard: Some(Box::new(guard)),
        }
    }

    /// The backend under test.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture").finish_non_exhaustive()
    }
}
