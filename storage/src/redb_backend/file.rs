//! Opening the data file: redb errors mapped to clear storage errors naming
//! the path, the `meta` table, and the format-version check.
//!
//! Invariant: a file is used only if its `meta` table holds [`MAGIC`] and
//! [`FORMAT_VERSION`]; a fresh (empty or missing) file is initialised with
//! both and every data table in one transaction. Anything else — garbage, a
//! truncated file, a foreign redb database, another format version — is an
//! error naming the path, and the file is left untouched. Nothing here
//! panics on file contents; as a last line of defence a panic inside the
//! engine while opening is caught and reported as corruption.

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use redb::{ReadableDatabase, TableDefinition, TableHandle};

use super::config::RedbConfig;
use crate::error::{Error, Result};
use crate::keys::Table;

/// Marks a redb file as a Shoal storage file (value of `meta["magic"]`).
pub const MAGIC: &[u8] = b"shoal-storage";

/// The on-disk format this build reads and writes (value of
/// `meta["format_version"]`, a big-endian `u32`). Bump it on any
/// incompatible change to tables, key layouts or record encodings.
pub const FORMAT_VERSION: u32 = 1;

pub(crate) const META: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("meta");
const META_MAGIC: &str = "magic";
const META_FORMAT_VERSION: &str = "format_version";

/// The redb definition of a data table (or of `node_meta`): byte keys to
/// byte values.
pub(crate) fn data_table(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

/// Opens (or creates) the data file and checks its format.
pub(crate) fn open(config: &RedbConfig) -> Result<redb::Database> {
    let path = config.path();
    if !config.create_if_missing() && !path.exists() {
        return Err(Error::Io {
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::NotFound, "data file does not exist"),
        });
    }
    if path.is_dir() {
        return Err(Error::Io {
            path: path.to_owned(),
            source: io::Error::other("is a directory, not a data file"),
        });
    }
    let opened = panic::catch_unwind(AssertUnwindSafe(|| -> Result<redb::Database> {
        let db = redb::Builder::new()
            .set_cache_size(config.cache_bytes())
            .create(path)
            .map_err(|error| open_error(path, error.into()))?;
        check_format(&db, path)?;
        Ok(db)
    }));
    match opened {
        Ok(result) => result,
        Err(_) => Err(Error::Corrupt {
            path: path.to_owned(),
            reason: "the storage engine panicked while reading the file".to_owned(),
        }),
    }
}

/// Checks `meta`, or initialises a fresh database.
fn check_format(db: &redb::Database, path: &Path) -> Result<()> {
    let read = db.begin_read().map_err(|e| open_error(path, e.into()))?;
    let mut tables = read.list_tables().map_err(|e| open_error(path, e.into()))?;
    let fresh = tables.next().is_none();
    drop(tables);
    if fresh {
        drop(read);
        return initialise(db, path);
    }
    let meta = match read.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Err(corrupt(
                path,
                "a redb database without a shoal `meta` table (another program's file?)",
            ));
        }
        Err(error) => return Err(open_error(path, error.into())),
    };
    let magic = meta
        .get(META_MAGIC)
        .map_err(|e| open_error(path, e.into()))?
        .map(|value| value.value().to_vec());
    if magic.as_deref() != Some(MAGIC) {
        return Err(corrupt(
            path,
            "the `meta` table lacks the shoal magic value",
        ));
    }
    let version = meta
        .get(META_FORMAT_VERSION)
        .map_err(|e| open_error(path, e.into()))?
        .map(|value| value.value().to_vec())
        .ok_or_else(|| corrupt(path, "the `meta` table has no format version"))?;
    let version: [u8; 4] = version
        .as_slice()
        .try_into()
        .map_err(|_| corrupt(path, "the format version is not 4 bytes"))?;
    let found = u32::from_be_bytes(version);
    if found != FORMAT_VERSION {
        return Err(Error::UnsupportedFormat {
            path: path.to_owned(),
            found,
            expected: FORMAT_VERSION,
        });
    }
    let present: Vec<String> = read
        .list_tables()
        .map_err(|e| open_error(path, e.into()))?
        .map(|handle| handle.name().to_owned())
        .collect();
    if let Some(missing) = Table::DATA
        .iter()
        .find(|table| !present.iter().any(|name| name == table.name()))
    {
        return Err(corrupt(
            path,
            &format!("data table `{}` is missing", missing.name()),
        ));
    }
    drop(read);
    if !present.iter().any(|name| name == Table::NodeMeta.name()) {
        // Files written before `node_meta` existed: adding an empty table is
        // compatible both ways (older builds ignore it), so the format
        // version stays.
        let txn = db.begin_write().map_err(|e| open_error(path, e.into()))?;
        txn.open_table(data_table(Table::NodeMeta))
            .map_err(|e| open_error(path, e.into()))?;
        txn.commit().map_err(|e| open_error(path, e.into()))?;
        tracing::info!(path = %path.display(), "added the `node_meta` table");
    }
    Ok(())
}

fn initialise(db: &redb::Database, path: &Path) -> Result<()> {
    let txn = db.begin_write().map_err(|e| open_error(path, e.into()))?;
    {
        let mut meta = txn
            .open_table(META)
            .map_err(|e| open_error(path, e.into()))?;
        meta.insert(META_MAGIC, MAGIC)
            .map_err(|e| open_error(path, e.into()))?;
        meta.insert(META_FORMAT_VERSION, FORMAT_VERSION.to_be_bytes().as_slice())
            .map_err(|e| open_error(path, e.into()))?;
        for table in Table::ALL {
            txn.open_table(data_table(table))
                .map_err(|e| open_error(path, e.into()))?;
        }
    }
    txn.commit().map_err(|e| open_error(path, e.into()))?;
    tracing::info!(path = %path.display(), format_version = FORMAT_VERSION, "initialised a new storage file");
    Ok(())
}

fn corrupt(path: &Path, reason: &str) -> Error {
    Error::Corrupt {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Maps an error met while opening to an error naming the path.
pub(crate) fn open_error(path: &Path, error: redb::Error) -> Error {
    let path = path.to_owned();
    match error {
        redb::Error::DatabaseAlreadyOpen => Error::Locked { path },
        redb::Error::Io(source) if source.kind() == io::ErrorKind::UnexpectedEof => {
            Error::Corrupt {
                path,
                reason: format!("the file is truncated ({source})"),
            }
        }
        // redb reports a bad header (e.g. "magic number mismatch") this way.
        redb::Error::Io(source) if source.kind() == io::ErrorKind::InvalidData => Error::Corrupt {
            path,
            reason: source.to_string(),
        },
        redb::Error::Io(source) => Error::Io { path, source },
        redb::Error::Corrupted(reason) => Error::Corrupt { path, reason },
        redb::Error::UpgradeRequired(version) => Error::Corrupt {
            path,
            reason: format!(
                "written in redb file format {version}, which this build does not read"
            ),
        },
        redb::Error::RepairAborted => Error::Corrupt {
            path,
            reason: "the file needed a repair, which was aborted".to_owned(),
        },
        redb::Error::TableTypeMismatch { .. } | redb::Error::TableIsMultimap(_) => Error::Corrupt {
            path,
            reason: format!("a table has an unexpected type ({error})"),
        },
        other => Error::Corrupt {
            path,
            reason: other.to_string(),
        },
    }
}

/// Maps an error met while serving (after a successful open).
pub(crate) fn engine_error(context: &'static str) -> impl FnOnce(redb::Error) -> Error {
    move |error| Error::Backend {
        context,
        source: error.to_string().into(),
    }
}
