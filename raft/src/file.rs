//! Opening this crate's redb files (the Raft log file, and an older
//! build's applied-state file when migrating it): redb errors mapped to
//! [`enum@Error`]s naming the path, and the magic / format-version check.
//!
//! Invariant: a file is used only if its `meta` table holds the expected
//! magic value and format version; a fresh (empty or missing) file is
//! initialised with both, and with every table, in one durable transaction.
//! Anything else — garbage, a truncated file, a foreign redb database, a
//! Shoal file of another kind, another format version — is an error naming
//! the path, and the file is left untouched. Nothing here panics on file
//! contents; as a last line of defence a panic inside redb while opening is
//! caught and reported as corruption.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use redb::{ReadableDatabase, TableDefinition};

use crate::error::{Error, Result};

/// The `meta` table every file of this crate has: a name → bytes map.
pub(crate) const META: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("meta");
const META_MAGIC: &str = "magic";
const META_FORMAT_VERSION: &str = "format_version";

/// What identifies one kind of file.
pub(crate) struct FileKind {
    /// Human name for errors (`raft log`).
    pub(crate) name: &'static str,
    /// Value of `meta["magic"]`.
    pub(crate) magic: &'static [u8],
    /// Value of `meta["format_version"]` (big-endian `u32`).
    pub(crate) format_version: u32,
}

/// Opens (or creates) `path` as a file of `kind`; `init` creates the kind's
/// other tables inside the initialising transaction of a fresh file.
pub(crate) fn open(
    path: &Path,
    kind: &FileKind,
    init: impl Fn(&redb::WriteTransaction) -> std::result::Result<(), redb::TableError>,
) -> Result<redb::Database> {
    if path.is_dir() {
        return Err(Error::Io {
            path: path.to_owned(),
            source: std::io::Error::other("is a directory, not a file"),
        });
    }
    let opened = panic::catch_unwind(AssertUnwindSafe(|| -> Result<redb::Database> {
        let db = redb::Database::create(path).map_err(|error| open_error(path, kind, error))?;
        check_format(&db, path, kind, &init)?;
        Ok(db)
    }));
    match opened {
        Ok(result) => result,
        Err(_) => Err(Error::Corrupt {
            path: path.to_owned(),
            kind: kind.name,
            reason: "the storage engine panicked while reading the file".to_owned(),
        }),
    }
}

fn open_error(path: &Path, kind: &FileKind, error: redb::DatabaseError) -> Error {
    match error {
        redb::DatabaseError::DatabaseAlreadyOpen => Error::Locked {
            path: path.to_owned(),
        },
        redb::DatabaseError::Storage(redb::StorageError::Io(source))
            if source.kind() != std::io::ErrorKind::InvalidData
                && source.kind() != std::io::ErrorKind::UnexpectedEof =>
        {
            Error::Io {
                path: path.to_owned(),
                source,
            }
        }
        other => Error::Corrupt {
            path: path.to_owned(),
            kind: kind.name,
            reason: format!("the storage engine refused it: {other}"),
        },
    }
}

fn corrupt(path: &Path, kind: &FileKind, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_owned(),
        kind: kind.name,
        reason: reason.into(),
    }
}

fn check_format(
    db: &redb::Database,
    path: &Path,
    kind: &FileKind,
    init: &dyn Fn(&redb::WriteTransaction) -> std::result::Result<(), redb::TableError>,
) -> Result<()> {
    let read = db
        .begin_read()
        .map_err(|e| Error::engine(path, "opening", e))?;
    let fresh = read
        .list_tables()
        .map_err(|e| Error::engine(path, "opening", e))?
        .next()
        .is_none();
    if fresh {
        drop(read);
        return initialise(db, path, kind, init);
    }
    let meta = match read.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Err(corrupt(
                path,
                kind,
                "a redb database without a shoal `meta` table (another program's file?)",
            ));
        }
        Err(redb::TableError::TableTypeMismatch { .. }) => {
            return Err(corrupt(
                path,
                kind,
                "its `meta` table has another layout (another program's file?)",
            ));
        }
        Err(error) => return Err(Error::engine(path, "opening", error)),
    };
    let magic = meta
        .get(META_MAGIC)
        .map_err(|e| Error::engine(path, "opening", e))?
        .map(|value| value.value().to_vec());
    if magic.as_deref() != Some(kind.magic) {
        return Err(corrupt(
            path,
            kind,
            format!(
                "the `meta` table lacks the magic value {:?} (another kind of file?)",
                String::from_utf8_lossy(kind.magic)
            ),
        ));
    }
    let version = meta
        .get(META_FORMAT_VERSION)
        .map_err(|e| Error::engine(path, "opening", e))?
        .map(|value| value.value().to_vec())
        .ok_or_else(|| corrupt(path, kind, "the `meta` table has no format version"))?;
    let version: [u8; 4] = version
        .as_slice()
        .try_into()
        .map_err(|_| corrupt(path, kind, "the format version is not 4 bytes"))?;
    let found = u32::from_be_bytes(version);
    if found != kind.format_version {
        return Err(Error::UnsupportedFormat {
            path: path.to_owned(),
            kind: kind.name,
            found,
            expected: kind.format_version,
        });
    }
    Ok(())
}

fn initialise(
    db: &redb::Database,
    path: &Path,
    kind: &FileKind,
    init: &dyn Fn(&redb::WriteTransaction) -> std::result::Result<(), redb::TableError>,
) -> Result<()> {
    let txn = db
        .begin_write()
        .map_err(|e| Error::engine(path, "initialising", e))?;
    {
        let mut meta = txn
            .open_table(META)
            .map_err(|e| Error::engine(path, "initialising", e))?;
        meta.insert(META_MAGIC, kind.magic)
            .map_err(|e| Error::engine(path, "initialising", e))?;
        meta.insert(
            META_FORMAT_VERSION,
            kind.format_version.to_be_bytes().as_slice(),
        )
        .map_err(|e| Error::engine(path, "initialising", e))?;
    }
    init(&txn).map_err(|e| Error::engine(path, "initialising", e))?;
    txn.commit()
        .map_err(|e| Error::engine(path, "initialising", e))
}
