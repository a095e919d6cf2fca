//! Hard limits on everything the storage layer accepts.
//!
//! Every key part and value is bounded so that key encodings stay
//! fixed-width-prefixed (see `keys`), a decoded batch from an untrusted
//! source cannot ask for unbounded memory, and one batch cannot monopolise a
//! group commit. The limits are part of the format: raising one is
//! compatible, lowering one is not.

/// Most bytes in an entity type name (stored with a 1-byte length prefix).
pub const ENTITY_TYPE_BYTES_MAX: usize = 255;

/// Most bytes in an entity id (stored with a 2-byte length prefix).
pub const ENTITY_ID_BYTES_MAX: usize = 4096;

/// Most bytes in a deferred's name (stored with a 1-byte length prefix).
pub const DEFERRED_NAME_BYTES_MAX: usize = 255;

/// Most bytes in a message's handler name.
pub const HANDLER_NAME_BYTES_MAX: usize = 255;

/// Most bytes in a free-text reason: a dead-letter reason or a deferred's
/// failure message.
pub const REASON_BYTES_MAX: usize = 64 * 1024;

/// Most bytes in one value: entity state, journal entry, message payload,
/// reply, timer payload or deferred success value.
pub const VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Most operations in one [`WriteBatch`](crate::WriteBatch).
pub const BATCH_OPS_MAX: usize = 16 * 1024;

/// Most bytes of an encoded [`WriteBatch`](crate::WriteBatch);
/// [`WriteBatch::decode`](crate::WriteBatch::decode) refuses longer input and
/// commits refuse batches whose payloads add up to more.
pub const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Most items one scan returns (`due_messages`, `due_timers`,
/// `dead_letters`); a larger `limit` is clamped to this.
pub const SCAN_ITEMS_MAX: usize = 64 * 1024;

/// Most bytes in a [`MetaKey`](crate::MetaKey).
pub const META_KEY_BYTES_MAX: usize = 255;

/// Most batches in one [`Storage::commit_group`](crate::Storage::commit_group)
/// call; split larger groups.
pub const GROUP_BATCHES_MAX: usize = 16 * 1024;

/// Most payload bytes (as counted by
/// [`WriteBatch::payload_bytes`](crate::WriteBatch::payload_bytes)) of all the
/// batches of one [`Storage::commit_group`](crate::Storage::commit_group)
/// call; split larger groups.
pub const GROUP_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Most bytes of one frame of a snapshot stream (see
/// [`snapshot`](crate::snapshot)); the import decoder refuses a longer
/// length prefix before buffering the frame. A frame holds at least one
/// record, so this bounds one record (a value is at most
/// [`VALUE_BYTES_MAX`], plus a key and a reason).
pub const SNAPSHOT_FRAME_BYTES_MAX: usize = 40 * 1024 * 1024;

/// The size an export aims for in each records frame and each chunk it
/// yields (one record larger than this makes a larger frame).
pub const SNAPSHOT_CHUNK_BYTES: usize = 256 * 1024;

/// Most chunks an export produces ahead of its consumer, and an import
/// buffers ahead of its writer: with [`SNAPSHOT_CHUNK_BYTES`], what bounds
/// the memory of a snapshot transfer, whatever the dataset's size.
pub const SNAPSHOT_CHUNKS_AHEAD: usize = 4;
