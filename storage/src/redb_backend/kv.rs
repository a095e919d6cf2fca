//! The engine's key-value interface over redb transactions: [`ReadKv`] over
//! a read transaction (a consistent snapshot), [`WriteKv`] over the tables
//! of a write transaction.
//!
//! Thin adapters only: no semantics here (they live in `engine`).

use std::cell::OnceCell;
use std::ops::{Bound, ControlFlow};

use bytes::Bytes;
use redb::{ReadOnlyTable, ReadableTable};

use super::file::{data_table, engine_error};
use crate::engine::{KvRead, KvWrite, Visit};
use crate::error::Result;
use crate::keys::Table;

type Key = &'static [u8];
type Value = &'static [u8];

fn bounds<'a>(start: &'a [u8], end: Option<&'a [u8]>) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    (
        Bound::Included(start),
        end.map_or(Bound::Unbounded, Bound::Excluded),
    )
}

fn get_from(table: &impl ReadableTable<Key, Value>, key: &[u8]) -> Result<Option<Bytes>> {
    let value = table
        .get(key)
        .map_err(|e| engine_error("reading a record")(e.into()))?;
    Ok(value.map(|value| Bytes::copy_from_slice(value.value())))
}

fn contains_in(table: &impl ReadableTable<Key, Value>, key: &[u8]) -> Result<bool> {
    let value = table
        .get(key)
        .map_err(|e| engine_error("reading a record")(e.into()))?;
    Ok(value.is_some())
}

fn scan_in(
    table: &impl ReadableTable<Key, Value>,
    start: &[u8],
    end: Option<&[u8]>,
    visit: &mut Visit<'_>,
) -> Result<()> {
    if end.is_some_and(|end| end <= start) {
        return Ok(());
    }
    let range = table
        .range::<&[u8]>(bounds(start, end))
        .map_err(|e| engine_error("scanning a table")(e.into()))?;
    for entry in range {
        let (key, value) = entry.map_err(|e| engine_error("scanning a table")(e.into()))?;
        if let ControlFlow::Break(()) = visit(key.value(), value.value())? {
            break;
        }
    }
    Ok(())
}

/// A read snapshot; tables are opened on first use.
pub(crate) struct ReadKv {
    txn: redb::ReadTransaction,
    tables: [OnceCell<ReadOnlyTable<Key, Value>>; Table::COUNT],
}

impl ReadKv {
    pub(crate) fn new(txn: redb::ReadTransaction) -> Self {
        ReadKv {
            txn,
            tables: Default::default(),
        }
    }

    fn table(&self, table: Table) -> Result<&ReadOnlyTable<Key, Value>> {
        let cell = &self.tables[table.index()];
        if let Some(opened) = cell.get() {
            return Ok(opened);
        }
        let opened = self
            .txn
            .open_table(data_table(table))
            .map_err(|e| engine_error("opening a table")(e.into()))?;
        Ok(cell.get_or_init(|| opened))
    }
}

impl KvRead for ReadKv {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>> {
        get_from(self.table(table)?, key)
    }

    fn contains(&self, table: Table, key: &[u8]) -> Result<bool> {
        contains_in(self.table(table)?, key)
    }

    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<()> {
        scan_in(self.table(table)?, start, end, visit)
    }
}

/// Every data table of one write transaction, opened once per group commit.
pub(crate) struct WriteKv<'txn> {
    tables: Vec<redb::Table<'txn, Key, Value>>,
}

impl<'txn> WriteKv<'txn> {
    pub(crate) fn open(txn: &'txn redb::WriteTransaction) -> Result<Self> {
        let tables = Table::ALL
            .iter()
            .map(|table| {
                txn.open_table(data_table(*table))
                    .map_err(|e| engine_error("opening a table for writing")(e.into()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(WriteKv { tables })
    }

    fn table(&self, table: Table) -> &redb::Table<'txn, Key, Value> {
        &self.tables[table.index()]
    }
}

impl KvRead for WriteKv<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>> {
        get_from(self.table(table), key)
    }

    fn contains(&self, table: Table, key: &[u8]) -> Result<bool> {
        contains_in(self.table(table), key)
    }

    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<()> {
        scan_in(self.table(table), start, end, visit)
    }
}

impl KvWrite for WriteKv<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.tables[table.index()]
            .insert(key, value)
            .map_err(|e| engine_error("writing a record")(e.into()))?;
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()> {
        self.tables[table.index()]
            .remove(key)
            .map_err(|e| engine_error("deleting a record")(e.into()))?;
        Ok(())
    }

    fn clear(&mut self, table: Table, start: &[u8], end: Option<&[u8]>) -> Result<()> {
        if end.is_some_and(|end| end <= start) {
            return Ok(());
        }
        self.tables[table.index()]
            .retain_in::<&[u8], _>(bounds(start, end), |_, _| false)
            .map_err(|e| engine_error("clearing a key range")(e.into()))
    }
}
