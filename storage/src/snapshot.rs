//! Snapshots: a consistent export of a whole dataset (or of a shard range)
//! as a stream of chunks, and its import, which replaces what it covers.
//! This is what Raft snapshots carry.
//!
//! # Format (snapshot format version [`FORMAT_VERSION`])
//! ```text
//! stream = magic "SHOALSNP" (8 bytes) · version u32 BE · frame*
//! frame  = length u32 BE · body (length bytes) · xxh3-64(body) u64 BE
//! body   = protobuf shoal.storage.v1.SnapshotFrame
//! ```
//! The first frame is a `SnapshotHeader` (shard range, whether `node_meta`
//! is included), then `SnapshotRecords` frames (table rows: table by table
//! in table order, keys strictly ascending), then one `SnapshotTrailer`
//! (record count and one xxh3-64 continued over every earlier frame body),
//! then the end of the stream. So a snapshot is self-describing, versioned,
//! and checksummed per frame (damage) and as a whole (frames dropped,
//! repeated or reordered, truncation at a frame boundary). Chunk boundaries
//! carry no meaning: an importer accepts any re-chunking.
//!
//! An export of all shards ([`ShardRange::ALL`]) carries every data table
//! and `node_meta` (the applied marker written by
//! [`Storage::commit_group`](crate::Storage::commit_group)); an export of a
//! narrower range carries only those shards' rows of the data tables.
//!
//! Invariants:
//! - an export reads ONE consistent snapshot (a redb read transaction; a
//!   copy taken under the memory backend's lock), whatever commits run
//!   meanwhile;
//! - memory is bounded on both sides: an export produces at most
//!   [`limits::SNAPSHOT_CHUNKS_AHEAD`] chunks of about
//!   [`limits::SNAPSHOT_CHUNK_BYTES`] ahead of its consumer; the decoder
//!   buffers at most one frame (at most [`limits::SNAPSHOT_FRAME_BYTES_MAX`],
//!   refused from the length prefix before buffering);
//! - the decoder never panics and never trusts its input: garbage, a wrong
//!   magic or version, a checksum mismatch, a frame out of place, a row out
//!   of order or outside the header's range, truncation and trailing bytes
//!   are all errors — and an import that meets one changes nothing.
//!
//! This module does no I/O of its own: backends supply the snapshot to read
//! and the transaction to write.
//!
//! ```
//! use bytes::Bytes;
//! use shoal_storage::{
//!     EntityKey, Epoch, MemoryStorage, MetaKey, ShardId, ShardRange, Storage, WriteBatch, snapshot,
//! };
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let leader = MemoryStorage::new();
//! let key = EntityKey::new(ShardId::new(3), "Counter", "c1")?;
//! let mut batch = WriteBatch::new(key.shard(), Epoch::new(1));
//! batch.put_state(&key, Bytes::from_static(b"7"));
//! let applied = MetaKey::new("applied")?;
//! leader.commit_group(vec![batch], Some((applied.clone(), Bytes::from_static(b"log 12")))).await?;
//!
//! // Stream the whole dataset, applied marker included, into another node.
//! let follower = MemoryStorage::new();
//! let info = follower.import(leader.export(ShardRange::ALL).await?).await?;
//! assert_eq!(info.records, 3); // state, shard epoch row, node_meta row
//! assert_eq!(follower.load_state(&key).await?, Some(Bytes::from_static(b"7")));
//! assert_eq!(follower.read_meta(&applied).await?, Some(Bytes::from_static(b"log 12")));
//!
//! // Damaged input is refused and changes nothing.
//! let garbage = snapshot::stream_from_chunks(vec![Ok(Bytes::from_static(b"junk"))]);
//! assert!(follower.import(garbage).await.is_err());
//! assert_eq!(follower.load_state(&key).await?, Some(Bytes::from_static(b"7")));
//! # Ok::<(), shoal_storage::Error>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ops::ControlFlow;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_core::Stream;
use prost::Message as _;
use tokio::sync::mpsc;
use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

use crate::engine::{KvRead, KvWrite};
use crate::error::{Error, Result};
use crate::keys::{self, Table};
use crate::limits;
use crate::proto::pb;
use crate::types::ShardId;

/// The first 8 bytes of every snapshot stream.
pub const MAGIC: &[u8; 8] = b"SHOALSNP";

/// The snapshot format this build writes and reads (the u32 after
/// [`MAGIC`]). Bump it on any incompatible change to the framing, the
/// tables or their key and value layouts.
pub const FORMAT_VERSION: u32 = 1;

const PREAMBLE_BYTES: usize = MAGIC.len() + 4;
const FRAME_OVERHEAD_BYTES: usize = 4 + 8;

/// A snapshot as a stream of chunks: what [`Storage::export`](crate::Storage::export)
/// returns and [`Storage::import`](crate::Storage::import) takes. Any
/// chunking of the same bytes imports the same; an `Err` item aborts an
/// import.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send + 'static>>;

/// An inclusive range of shards, the scope of an export.
///
/// ```
/// use shoal_storage::{ShardId, ShardRange};
///
/// let range = ShardRange::new(ShardId::new(2), ShardId::new(5))?;
/// assert!(range.contains(ShardId::new(5)) && !range.contains(ShardId::new(6)));
/// assert!(ShardRange::ALL.is_all() && !ShardRange::one(ShardId::new(2)).is_all());
/// assert!(ShardRange::new(ShardId::new(5), ShardId::new(2)).is_err());
/// # Ok::<(), shoal_storage::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShardRange {
    first: ShardId,
    last: ShardId,
}

impl ShardRange {
    /// Every shard.
    pub const ALL: ShardRange = ShardRange {
        first: ShardId::new(0),
        last: ShardId::new(u32::MAX),
    };

    /// Shards `first..=last`; [`Error::Invalid`] if `first > last`.
    pub fn new(first: ShardId, last: ShardId) -> Result<Self> {
        if first > last {
            return Err(Error::invalid(format!(
                "shard range {first}..={last} is empty"
            )));
        }
        Ok(ShardRange { first, last })
    }

    /// Just `shard`.
    pub const fn one(shard: ShardId) -> Self {
        ShardRange {
            first: shard,
            last: shard,
        }
    }

    /// The first shard.
    pub const fn first(self) -> ShardId {
        self.first
    }

    /// The last shard (inclusive).
    pub const fn last(self) -> ShardId {
        self.last
    }

    /// Whether `shard` is in the range.
    pub fn contains(self, shard: ShardId) -> bool {
        self.first <= shard && shard <= self.last
    }

    /// Whether the range covers every shard.
    pub fn is_all(self) -> bool {
        self == ShardRange::ALL
    }

    /// The key range `[start, end)` (no `end`: to the end of the table) of
    /// these shards in every data table.
    fn key_bounds(self) -> ([u8; keys::SHARD_BYTES], Option<[u8; keys::SHARD_BYTES]>) {
        (
            keys::shard_prefix(self.first),
            keys::next_shard_prefix(self.last),
        )
    }
}

impl std::fmt::Display for ShardRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..={}", self.first, self.last)
    }
}

/// What an import brought in.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotInfo {
    /// The shards whose data the snapshot replaced.
    pub shards: ShardRange,
    /// Whether it replaced `node_meta` too (exports of all shards do).
    pub node_meta: bool,
    /// How many rows it carried.
    pub records: u64,
}

/// The stable number of each table in a snapshot (`SnapshotRecord.table`).
fn table_id(table: Table) -> u32 {
    match table {
        Table::ShardEpochs => 1,
        Table::State => 2,
        Table::Journal => 3,
        Table::Messages => 4,
        Table::MessageDue => 5,
        Table::Replies => 6,
        Table::DeadLetters => 7,
        Table::Timers => 8,
        Table::Deferreds => 9,
        Table::NodeMeta => 10,
    }
}

fn table_from_id(id: u32) -> Option<Table> {
    Table::ALL.into_iter().find(|table| table_id(*table) == id)
}

fn decode_error(reason: impl Into<String>) -> Error {
    Error::Decode {
        what: "snapshot",
        reason: reason.into(),
    }
}

// ---- Export ----

/// Writes frames into chunks and hands each chunk to `emit`.
struct Encoder<'a> {
    out: Vec<u8>,
    pending: Vec<pb::SnapshotRecord>,
    pending_bytes: usize,
    records: u64,
    digest: Xxh3Default,
    /// Takes a chunk; `false` when the consumer has gone away.
    emit: &'a mut dyn FnMut(Bytes) -> bool,
}

impl Encoder<'_> {
    fn frame(&mut self, kind: pb::snapshot_frame::Kind) -> Result<()> {
        let hashed = !matches!(kind, pb::snapshot_frame::Kind::Trailer(_));
        let body = pb::SnapshotFrame { kind: Some(kind) }.encode_to_vec();
        if body.len() > limits::SNAPSHOT_FRAME_BYTES_MAX {
            return Err(Error::invalid(format!(
                "a snapshot frame would be {} bytes, the limit is {}",
                body.len(),
                limits::SNAPSHOT_FRAME_BYTES_MAX
            )));
        }
        let len = u32::try_from(body.len()).map_err(|_| Error::invalid("frame too large"))?;
        self.out.put_u32(len);
        self.out.extend_from_slice(&body);
        self.out.put_u64(xxh3_64(&body));
        if hashed {
            self.digest.update(&body);
        }
        Ok(())
    }

    /// Hands the chunk built so far to the consumer.
    fn emit(&mut self) -> ControlFlow<()> {
        if self.out.is_empty() {
            return ControlFlow::Continue(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.out));
        if (self.emit)(chunk) {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    }

    fn flush_records(&mut self) -> Result<ControlFlow<()>> {
        if !self.pending.is_empty() {
            let records = std::mem::take(&mut self.pending);
            self.pending_bytes = 0;
            self.frame(pb::snapshot_frame::Kind::Records(pb::SnapshotRecords {
                records,
            }))?;
        }
        Ok(self.emit())
    }

    fn push(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<ControlFlow<()>> {
        self.pending.push(pb::SnapshotRecord {
            table: table_id(table),
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
        });
        self.records += 1;
        self.pending_bytes = self
            .pending_bytes
            .saturating_add(key.len() + value.len() + 16);
        if self.pending_bytes >= limits::SNAPSHOT_CHUNK_BYTES {
            return self.flush_records();
        }
        Ok(ControlFlow::Continue(()))
    }
}

/// Encodes the rows of `shards` (and `node_meta` if `shards` is all) read
/// from `kv`, one consistent snapshot, handing chunks to `emit` until it
/// returns `false`.
pub(crate) fn export(
    kv: &impl KvRead,
    shards: ShardRange,
    emit: &mut dyn FnMut(Bytes) -> bool,
) -> Result<()> {
    let node_meta = shards.is_all();
    let mut encoder = Encoder {
        out: Vec::with_capacity(limits::SNAPSHOT_CHUNK_BYTES + 4096),
        pending: Vec::new(),
        pending_bytes: 0,
        records: 0,
        digest: Xxh3Default::new(),
        emit,
    };
    encoder.out.extend_from_slice(MAGIC);
    encoder.out.put_u32(FORMAT_VERSION);
    encoder.frame(pb::snapshot_frame::Kind::Header(pb::SnapshotHeader {
        first_shard: shards.first.get(),
        last_shard: shards.last.get(),
        node_meta,
    }))?;
    let (data_start, data_end) = shards.key_bounds();
    let mut tables = Table::DATA.to_vec();
    if node_meta {
        tables.push(Table::NodeMeta);
    }
    for table in tables {
        // Data tables: the range's shards; `node_meta`: all of it.
        let (start, end) = if table == Table::NodeMeta {
            (&[][..], None)
        } else {
            (&data_start[..], data_end.as_ref().map(|e| e.as_slice()))
        };
        let mut stopped = false;
        kv.scan(table, start, end, &mut |key, value| {
            let flow = encoder.push(table, key, value)?;
            stopped = flow.is_break();
            Ok(flow)
        })?;
        if stopped {
            return Ok(());
        }
    }
    if encoder.flush_records()?.is_break() {
        return Ok(());
    }
    let trailer = pb::SnapshotTrailer {
        records: encoder.records,
        digest: encoder.digest.digest(),
    };
    encoder.frame(pb::snapshot_frame::Kind::Trailer(trailer))?;
    let _ = encoder.emit();
    Ok(())
}

/// The receiving end of an export, as a [`Stream`].
struct ChannelStream(mpsc::Receiver<Result<Bytes>>);

impl Stream for ChannelStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// Runs [`export`] over `kv` on a blocking thread, [`limits::SNAPSHOT_CHUNKS_AHEAD`]
/// chunks ahead of the returned stream's consumer. Dropping the stream
/// stops the export (and releases the snapshot). A failure (or a panic of
/// the storage engine) ends the stream with an `Err` item.
pub(crate) fn spawn_export<K>(kv: K, shards: ShardRange) -> ChunkStream
where
    K: KvRead + Send + 'static,
{
    let (chunks, receiver) = mpsc::channel(limits::SNAPSHOT_CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        let exported = panic::catch_unwind(AssertUnwindSafe(|| {
            export(&kv, shards, &mut |chunk| {
                chunks.blocking_send(Ok(chunk)).is_ok()
            })
        }));
        let error = match exported {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error,
            Err(_) => Error::Backend {
                context: "exporting a snapshot",
                source: "the storage engine panicked (damaged file?)".into(),
            },
        };
        tracing::warn!(%error, "snapshot export failed");
        let _ = chunks.blocking_send(Err(error));
    });
    Box::pin(ChannelStream(receiver))
}

/// Awaits the next item of `stream`.
pub(crate) async fn next_chunk(stream: &mut ChunkStream) -> Option<Result<Bytes>> {
    std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await
}

/// A [`ChunkStream`] yielding `chunks` in order (e.g. a snapshot held in
/// memory or read from a file, to hand to [`Storage::import`](crate::Storage::import)).
pub fn stream_from_chunks(chunks: Vec<Result<Bytes>>) -> ChunkStream {
    Box::pin(IterStream(chunks.into_iter()))
}

/// Reads a whole snapshot stream into one buffer, stopping at the first
/// `Err` item. This holds the whole snapshot in memory: for small datasets
/// and tests; stream large ones instead.
pub async fn read_to_end(mut stream: ChunkStream) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = next_chunk(&mut stream).await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

struct IterStream(std::vec::IntoIter<Result<Bytes>>);

impl Stream for IterStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.0.next())
    }
}

// ---- Import ----

/// What the decoder found, in stream order: the header first, then rows.
#[derive(Debug)]
pub(crate) enum Event {
    /// What the snapshot covers; replace it.
    Header { shards: ShardRange, node_meta: bool },
    /// One row to write.
    Record {
        table: Table,
        key: Bytes,
        value: Bytes,
    },
}

enum State {
    Preamble,
    Header,
    Records,
    Done,
}

/// A streaming, validating decoder: feed it chunks of any size.
pub(crate) struct Decoder {
    buf: BytesMut,
    state: State,
    shards: ShardRange,
    node_meta: bool,
    records: u64,
    digest: Xxh3Default,
    /// The last row seen: (table index, key), for the order check.
    last: Option<(usize, Bytes)>,
}

impl Decoder {
    pub(crate) fn new() -> Self {
        Decoder {
            buf: BytesMut::new(),
            state: State::Preamble,
            shards: ShardRange::ALL,
            node_meta: false,
            records: 0,
            digest: Xxh3Default::new(),
            last: None,
        }
    }

    /// Decodes what `chunk` completes, handing each event to `sink`.
    pub(crate) fn feed(
        &mut self,
        chunk: &[u8],
        sink: &mut dyn FnMut(Event) -> Result<()>,
    ) -> Result<()> {
        if matches!(self.state, State::Done) {
            if chunk.is_empty() {
                return Ok(());
            }
            return Err(decode_error("bytes after the trailer"));
        }
        self.buf.extend_from_slice(chunk);
        loop {
            if matches!(self.state, State::Preamble) {
                let seen = self.buf.len().min(MAGIC.len());
                if self.buf[..seen] != MAGIC[..seen] {
                    return Err(decode_error("not a shoal snapshot (wrong magic)"));
                }
                if self.buf.len() < PREAMBLE_BYTES {
                    return Ok(());
                }
                self.buf.advance(MAGIC.len());
                let found = self.buf.get_u32();
                if found != FORMAT_VERSION {
                    return Err(Error::UnsupportedSnapshot {
                        found,
                        expected: FORMAT_VERSION,
                    });
                }
                self.state = State::Header;
                continue;
            }
            if matches!(self.state, State::Done) {
                if self.buf.is_empty() {
                    return Ok(());
                }
                return Err(decode_error("bytes after the trailer"));
            }
            let Some(prefix) = self.buf.get(..4) else {
                return Ok(());
            };
            let mut len_bytes = [0u8; 4];
            len_bytes.copy_from_slice(prefix);
            let len = u32::from_be_bytes(len_bytes) as usize;
            if len > limits::SNAPSHOT_FRAME_BYTES_MAX {
                return Err(decode_error(format!(
                    "a frame of {len} bytes, the limit is {}",
                    limits::SNAPSHOT_FRAME_BYTES_MAX
                )));
            }
            if self.buf.len() < len + FRAME_OVERHEAD_BYTES {
                return Ok(());
            }
            let mut frame = self.buf.split_to(len + FRAME_OVERHEAD_BYTES).freeze();
            frame.advance(4);
            let body = frame.split_to(len);
            let stored = frame.get_u64();
            if xxh3_64(&body) != stored {
                return Err(decode_error("frame checksum mismatch (damaged data)"));
            }
            self.frame(body, sink)?;
        }
    }

    fn frame(&mut self, body: Bytes, sink: &mut dyn FnMut(Event) -> Result<()>) -> Result<()> {
        use pb::snapshot_frame::Kind;
        let frame = pb::SnapshotFrame::decode(body.clone())
            .map_err(|e| decode_error(format!("a frame does not decode: {e}")))?;
        match (&self.state, frame.kind) {
            (State::Header, Some(Kind::Header(header))) => {
                self.digest.update(&body);
                let shards = ShardRange::new(
                    ShardId::new(header.first_shard),
                    ShardId::new(header.last_shard),
                )
                .map_err(|e| decode_error(e.to_string()))?;
                if header.node_meta && !shards.is_all() {
                    return Err(decode_error(
                        "node_meta in a snapshot of part of the shards",
                    ));
                }
                self.shards = shards;
                self.node_meta = header.node_meta;
                self.state = State::Records;
                sink(Event::Header {
                    shards,
                    node_meta: header.node_meta,
                })
            }
            (State::Records, Some(Kind::Records(records))) => {
                self.digest.update(&body);
                for record in records.records {
                    self.record(record, sink)?;
                }
                Ok(())
            }
            (State::Records, Some(Kind::Trailer(trailer))) => {
                if trailer.records != self.records {
                    return Err(decode_error(format!(
                        "the trailer counts {} records, the stream had {}",
                        trailer.records, self.records
                    )));
                }
                if trailer.digest != self.digest.digest() {
                    return Err(decode_error(
                        "stream checksum mismatch (frames missing, repeated or reordered)",
                    ));
                }
                self.state = State::Done;
                Ok(())
            }
            (State::Header, _) => Err(decode_error("the first frame is not a header")),
            (_, None) => Err(decode_error("a frame of an unknown kind")),
            (_, Some(_)) => Err(decode_error("a frame out of place")),
        }
    }

    fn record(
        &mut self,
        record: pb::SnapshotRecord,
        sink: &mut dyn FnMut(Event) -> Result<()>,
    ) -> Result<()> {
        let table = table_from_id(record.table)
            .ok_or_else(|| decode_error(format!("unknown table number {}", record.table)))?;
        if table == Table::NodeMeta {
            if !self.node_meta {
                return Err(decode_error("a node_meta row the header does not announce"));
            }
            let valid = std::str::from_utf8(&record.key).is_ok()
                && !record.key.is_empty()
                && record.key.len() <= limits::META_KEY_BYTES_MAX;
            if !valid {
                return Err(decode_error("a node_meta row with an invalid key"));
            }
        } else {
            let shard = keys::shard_of(table, &record.key)
                .map_err(|_| decode_error(format!("a `{}` key without a shard", table.name())))?;
            if !self.shards.contains(shard) {
                return Err(decode_error(format!(
                    "a `{}` row of shard {shard}, outside the snapshot's shards {}",
                    table.name(),
                    self.shards
                )));
            }
        }
        let position = (table.index(), record.key.clone());
        if let Some(last) = &self.last
            && position <= *last
        {
            return Err(decode_error("rows out of order or repeated"));
        }
        self.last = Some(position);
        self.records += 1;
        sink(Event::Record {
            table,
            key: record.key,
            value: record.value,
        })
    }

    /// Ends the stream: an error unless the trailer was seen.
    pub(crate) fn finish(self) -> Result<SnapshotInfo> {
        match self.state {
            State::Done => Ok(SnapshotInfo {
                shards: self.shards,
                node_meta: self.node_meta,
                records: self.records,
            }),
            State::Preamble if self.buf.is_empty() => Err(decode_error("the stream is empty")),
            _ => Err(decode_error("the stream is truncated (no trailer)")),
        }
    }
}

/// Applies one decoded event inside the importing transaction: a header
/// clears what the snapshot covers, a row is written.
pub(crate) fn apply_event(kv: &mut impl KvWrite, event: Event) -> Result<()> {
    match event {
        Event::Header { shards, node_meta } => {
            let (start, end) = shards.key_bounds();
            for table in Table::DATA {
                kv.clear(table, &start, end.as_ref().map(|e| e.as_slice()))?;
            }
            if node_meta {
                kv.clear(Table::NodeMeta, &[], None)?;
            }
            Ok(())
        }
        Event::Record { table, key, value } => kv.put(table, &key, &value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::tables_with;

    fn exported(kv: &impl KvRead, shards: ShardRange) -> Vec<u8> {
        let mut out = Vec::new();
        export(kv, shards, &mut |chunk| {
            out.extend_from_slice(&chunk);
            true
        })
        .expect("exports");
        out
    }

    type Rows = Vec<(Table, Bytes, Bytes)>;

    fn decode_all(bytes: &[u8], chunk: usize) -> Result<(SnapshotInfo, Rows)> {
        let mut decoder = Decoder::new();
        let mut rows = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            decoder.feed(piece, &mut |event| {
                if let Event::Record { table, key, value } = event {
                    rows.push((table, key, value));
                }
                Ok(())
            })?;
        }
        Ok((decoder.finish()?, rows))
    }

    fn sample() -> impl KvRead {
        let mut rows = Vec::new();
        for shard in 0..4u32 {
            for i in 0..50u32 {
                let mut key = shard.to_be_bytes().to_vec();
                key.extend_from_slice(&i.to_be_bytes());
                rows.push((Table::State, key, vec![i as u8; 100]));
            }
            rows.push((
                Table::ShardEpochs,
                shard.to_be_bytes().to_vec(),
                7u64.to_be_bytes().to_vec(),
            ));
        }
        rows.push((Table::NodeMeta, b"applied".to_vec(), b"42".to_vec()));
        tables_with(rows)
    }

    #[test]
    fn round_trips_under_any_chunking() {
        let kv = sample();
        let bytes = exported(&kv, ShardRange::ALL);
        for chunk in [1, 7, 4096, bytes.len()] {
            let (info, rows) = decode_all(&bytes, chunk).expect("decodes");
            assert_eq!(info.records, 205);
            assert!(info.node_meta);
            assert_eq!(rows.len(), 205);
        }
        let part = exported(&kv, ShardRange::one(ShardId::new(2)));
        let (info, rows) = decode_all(&part, 100).expect("decodes");
        assert!(!info.node_meta);
        assert_eq!(rows.len(), 51);
        assert!(
            rows.iter()
                .all(|(_, key, _)| key[..4] == 2u32.to_be_bytes())
        );
    }

    #[test]
    fn every_truncation_and_damage_is_an_error() {
        let bytes = exported(&sample(), ShardRange::ALL);
        for cut in 0..bytes.len() {
            assert!(decode_all(&bytes[..cut], 997).is_err(), "cut at {cut}");
        }
        for at in (0..bytes.len()).step_by(53) {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x41;
            assert!(decode_all(&damaged, 4096).is_err(), "flip at {at}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode_all(&trailing, 4096).is_err());
    }

    #[test]
    fn random_mutations_never_panic() {
        let seed = 0x5eed_5a17_u64;
        eprintln!("seed {seed:#x}");
        let mut state = seed;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid = exported(&sample(), ShardRange::ALL);
        for _ in 0..2_000 {
            let mut mutated = valid.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % mutated.len() as u64) as usize;
                mutated[at] = next() as u8;
            }
            let chunk = 1 + (next() % 5000) as usize;
            // Any result but a panic; damage is almost always caught.
            let _ = decode_all(&mutated, chunk);
        }
    }

    #[test]
    fn wrong_version_and_garbage_are_clear_errors() {
        let mut bytes = exported(&sample(), ShardRange::ALL);
        bytes[8..12].copy_from_slice(&2u32.to_be_bytes());
        assert!(matches!(
            decode_all(&bytes, 4096),
            Err(Error::UnsupportedSnapshot {
                found: 2,
                expected: 1
            })
        ));
        let error = decode_all(b"definitely not a snapshot", 4).expect_err("garbage");
        assert!(error.to_string().contains("magic"), "{error}");
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        let error = decode_all(&huge, 4096).expect_err("oversized frame");
        assert!(error.to_string().contains("limit"), "{error}");
    }
}
