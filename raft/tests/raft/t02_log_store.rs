//! [`LogStore`] on disk: vote and entries survive a reopen; foreign,
//! garbage, truncated, damaged and unknown-version files are refused with
//! an error naming the path, never a panic.

use std::path::Path;

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::testing::{blank_ent, log_id};
use openraft::type_config::TypeConfigExt;
use openraft::{RaftLogReader, Vote};
use shoal_raft::{Entry, Error, LogStore, TypeConfig};

async fn append(store: &mut LogStore, entries: Vec<Entry>) -> anyhow::Result<()> {
    let (tx, rx) = TypeConfig::oneshot();
    store.append(entries, IOFlushed::signal(tx)).await?;
    rx.await??;
    Ok(())
}

fn blank(term: u64, index: u64) -> Entry {
    blank_ent::<TypeConfig>(term, 1, index)
}

#[tokio::test]
async fn reopen_keeps_vote_entries_purge_and_committed() -> anyhow::Result<()> {
    crate::init_tracing();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("raft-log.redb");

    tracing::info!("--- write a vote, ten entries, purge three, truncate two");
    {
        let mut store = LogStore::open(&path)?;
        store.save_vote(&Vote::new_committed(3, 1)).await?;
        append(&mut store, (1..=10).map(|i| blank(3, i)).collect()).await?;
        store.purge(log_id::<TypeConfig>(3, 1, 3)).await?;
        store
            .save_committed(Some(log_id::<TypeConfig>(3, 1, 6)))
            .await?;
        store
            .truncate_after(Some(log_id::<TypeConfig>(3, 1, 8)))
            .await?;
    }

    tracing::info!("--- reopen: everything is still there");
    let mut store = LogStore::open(&path)?;
    let mut reader = store.get_log_reader().await;
    assert_eq!(reader.read_vote().await?, Some(Vote::new_committed(3, 1)));
    let entries = reader.try_get_log_entries(0..100).await?;
    let indexes: Vec<u64> = entries.iter().map(|entry| entry.log_id.index).collect();
    assert_eq!(indexes, vec![4, 5, 6, 7, 8]);
    assert_eq!(entries[0], blank(3, 4));
    let state = store.get_log_state().await?;
    assert_eq!(
        state.last_purged_log_id,
        Some(log_id::<TypeConfig>(3, 1, 3))
    );
    assert_eq!(state.last_log_id, Some(log_id::<TypeConfig>(3, 1, 8)));
    assert_eq!(
        store.read_committed().await?,
        Some(log_id::<TypeConfig>(3, 1, 6))
    );

    tracing::info!("--- a second open of the same file is refused while the first lives");
    match LogStore::open(&path) {
        Err(Error::Locked { path: locked }) => assert_eq!(locked, path),
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    Ok(())
}

fn expect_corrupt(path: &Path) {
    match LogStore::open(path) {
        Err(error @ Error::Corrupt { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains(&path.display().to_string()),
                "the error names the path: {message}"
            );
            tracing::info!(%message, "refused");
        }
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn garbage_file_is_refused_naming_the_path() -> anyhow::Result<()> {
    crate::init_tracing();
    let dir = tempfile::tempdir()?;
    // A deterministic pseudo-random byte soup (xorshift, fixed seed).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for (name, len) in [
        ("garbage-small.redb", 17usize),
        ("garbage-big.redb", 64 * 1024),
    ] {
        let path = dir.path().join(name);
        let mut bytes = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push(x as u8);
        }
        std::fs::write(&path, &bytes)?;
        expect_corrupt(&path);
        assert_eq!(std::fs::read(&path)?, bytes, "the file is left untouched");
    }
    Ok(())
}

#[test]
fn foreign_and_wrong_kind_files_are_refused() -> anyhow::Result<()> {
    crate::init_tracing();
    let dir = tempfile::tempdir()?;

    tracing::info!("--- another program's redb database");
    let foreign = dir.path().join("foreign.redb");
    {
        let db = redb::Database::create(&foreign)?;
        let txn = db.begin_write()?;
        txn.open_table(redb::TableDefinition::<u64, u64>::new("other"))?
            .insert(1, 2)?;
        txn.commit()?;
    }
    expect_corrupt(&foreign);

    tracing::info!("--- a redb database whose `meta` table has another layout");
    let other_meta = dir.path().join("other-meta.redb");
    {
        let db = redb::Database::create(&other_meta)?;
        let txn = db.begin_write()?;
        txn.open_table(redb::TableDefinition::<u64, u64>::new("meta"))?
            .insert(1, 2)?;
        txn.commit()?;
    }
    expect_corrupt(&other_meta);

    tracing::info!("--- an older build's applied-state file");
    let state_file = dir.path().join("raft-state.redb");
    crate::t03_state_machine::write_legacy_state_file(&state_file, None)?;
    expect_corrupt(&state_file);
    Ok(())
}

#[test]
fn unknown_format_version_is_refused() -> anyhow::Result<()> {
    crate::init_tracing();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("raft-log.redb");
    drop(LogStore::open(&path)?);
    {
        let db = redb::Database::create(&path)?;
        let txn = db.begin_write()?;
        txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))?
            .insert("format_version", 99u32.to_be_bytes().as_slice())?;
        txn.commit()?;
    }
    match LogStore::open(&path) {
        Err(
            error @ Error::UnsupportedFormat {
                found: 99,
                expected: 1,
                ..
            },
        ) => {
            assert!(error.to_string().contains(&path.display().to_string()));
        }
        other => panic!("expected UnsupportedFormat, got {:?}", other.map(|_| ())),
    }
    Ok(())
}

#[tokio::test]
async fn truncated_file_and_damaged_entry_are_errors() -> anyhow::Result<()> {
    crate::init_tracing();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("raft-log.redb");
    {
        let mut store = LogStore::open(&path)?;
        append(&mut store, (1..=50).map(|i| blank(1, i)).collect()).await?;
    }

    tracing::info!("--- a log entry whose bytes are garbage");
    let damaged = dir.path().join("damaged.redb");
    std::fs::copy(&path, &damaged)?;
    {
        let db = redb::Database::create(&damaged)?;
        let txn = db.begin_write()?;
        txn.open_table(redb::TableDefinition::<u64, &[u8]>::new("log"))?
            .insert(50, b"\xff\xff\xff".as_slice())?;
        txn.commit()?;
    }
    match LogStore::open(&damaged) {
        Err(error @ Error::CorruptRecord { .. }) => {
            assert!(error.to_string().contains("log entry 50"), "{error}");
        }
        other => panic!("expected CorruptRecord, got {:?}", other.map(|_| ())),
    }

    tracing::info!("--- the file cut in half");
    let len = std::fs::metadata(&path)?.len();
    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
    file.set_len(len / 2)?;
    drop(file);
    // redb may repair a truncated file or refuse it; it must never panic or
    // hand back a log with holes.
    match LogStore::open(&path) {
        Ok(mut store) => {
            let state = store.get_log_state().await?;
            let entries = store.get_log_reader().await.try_get_log_entries(..).await?;
            let expected = state.last_log_id.map_or(0, |id| id.index);
            assert_eq!(entries.len() as u64, expected, "no holes");
            tracing::info!(?state, "the truncated file was repaired");
        }
        Err(error) => {
            tracing::info!(%error, "the truncated file was refused");
            assert!(
                error.to_string().contains(&path.display().to_string()),
                "{error}"
            );
        }
    }

    Ok(())
}

#[tokio::test]
async fn an_append_leaving_a_hole_is_refused() -> anyhow::Result<()> {
    crate::init_tracing();
    let dir = tempfile::tempdir()?;
    let mut store = LogStore::open(dir.path().join("raft-log.redb"))?;
    append(&mut store, (1..=3).map(|i| blank(1, i)).collect()).await?;

    let (tx, rx) = TypeConfig::oneshot();
    let result = store.append(vec![blank(1, 5)], IOFlushed::signal(tx)).await;
    let error = result.expect_err("a hole is refused");
    assert!(error.to_string().contains("must be 4"), "{error}");
    assert!(rx.await?.is_err(), "the callback hears the failure too");

    let state = store.get_log_state().await?;
    assert_eq!(state.last_log_id, Some(log_id::<TypeConfig>(1, 1, 3)));

    tracing::info!("--- after a purge of everything, the log continues after the purge point");
    store.purge(log_id::<TypeConfig>(1, 1, 3)).await?;
    assert!(
        store
            .append(vec![blank(1, 6)], IOFlushed::noop())
            .await
            .is_err()
    );
    append(&mut store, vec![blank(1, 4)]).await?;
    Ok(())
}
