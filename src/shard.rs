//! Which shard an entity lives in.
//!
//! An entity's shard is a pure function of its id, so every node, every
//! release and every platform agrees on it without coordination:
//!
//! ```text
//! hash  = XXH3-64(seed 0) of the entity id's UTF-8 bytes
//! index = hash mod shards_per_group
//! shard = (group << 16) | index          (a 32-bit ShardId)
//! ```
//!
//! XXH3-64 is a published, platform-independent algorithm (the `xxhash`
//! reference implementation); the golden vectors in the tests below pin both
//! the hash and the mapping, and were cross-checked against an independent
//! implementation. **Changing any of this moves data between shards: it is a
//! breaking change of the storage format.**
//!
//! Shard groups let entity types be sharded independently (Cruster's shard
//! groups); the group number occupies the high 16 bits of the
//! [`ShardId`] and the index the low 16, so `shards_per_group` is at most
//! 65,536 and every group's shards form one contiguous key range in storage.

use std::fmt;

use shoal_storage::ShardId;

/// The default number of shards in each shard group.
pub const DEFAULT_SHARDS_PER_GROUP: u32 = 2048;

/// The largest `shards_per_group`: the index must fit in 16 bits.
pub const MAX_SHARDS_PER_GROUP: u32 = 1 << 16;

/// A shard group's number (0 is the default group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ShardGroup(u16);

impl ShardGroup {
    /// The group every entity type belongs to unless configured otherwise.
    pub const DEFAULT: ShardGroup = ShardGroup(0);

    /// The group with this number.
    pub const fn new(number: u16) -> Self {
        ShardGroup(number)
    }

    /// The group's number.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for ShardGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group-{}", self.0)
    }
}

/// The stable 64-bit hash of an entity id (XXH3-64, seed 0, over its UTF-8
/// bytes).
pub fn entity_hash(entity_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(entity_id.as_bytes())
}

/// The shard of `entity_id` in `group` when each group has
/// `shards_per_group` shards.
///
/// # Panics
/// If `shards_per_group` is 0 or above [`MAX_SHARDS_PER_GROUP`]; a validated
/// [`crate::Config`] never is.
///
/// ```
/// use shoal::shard::{shard_of, ShardGroup};
/// let shard = shard_of(ShardGroup::DEFAULT, "alice", 2048);
/// assert_eq!(shard.get(), 1712);
/// ```
pub fn shard_of(group: ShardGroup, entity_id: &str, shards_per_group: u32) -> ShardId {
    assert!(
        (1..=MAX_SHARDS_PER_GROUP).contains(&shards_per_group),
        "shards_per_group must be within 1..={MAX_SHARDS_PER_GROUP}, got {shards_per_group}"
    );
    let index = entity_hash(entity_id) % u64::from(shards_per_group);
    // `index` < 2^16 by the assertion above.
    shard_id(group, index as u32)
}

/// The shard with `index` (below 2^16) in `group`.
pub(crate) fn shard_id(group: ShardGroup, index: u32) -> ShardId {
    debug_assert!(index < MAX_SHARDS_PER_GROUP);
    ShardId::new((u32::from(group.0) << 16) | index)
}

/// The group and the index within it of a shard made by [`shard_of`].
pub fn split(shard: ShardId) -> (ShardGroup, u32) {
    (ShardGroup((shard.get() >> 16) as u16), shard.get() & 0xFFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (entity id, XXH3-64, index with 2048 shards, index with 64 shards).
    /// Computed with the independent Python `xxhash` package; never edit.
    const GOLDEN: &[(&str, u64, u32, u32)] = &[
        ("", 0x2d06800538d394c2, 1218, 2),
        ("a", 0xe6c632b61e964e1f, 1567, 31),
        ("alice", 0x4da10dd61a0116b0, 1712, 48),
        ("bob", 0x1403c0c40f49b8e5, 229, 37),
        ("c-1", 0x62a08e113fb1cd0c, 1292, 12),
        ("order/2024-11-21/00042", 0xdf66774629433dbb, 1467, 59),
        ("ünïcödé-账户", 0x8c78856715be4959, 345, 25),
    ];

    #[test]
    fn golden_vectors_pin_the_hash_and_the_mapping() {
        for &(id, hash, idx_2048, idx_64) in GOLDEN {
            assert_eq!(entity_hash(id), hash, "hash of {id:?}");
            assert_eq!(
                shard_of(ShardGroup::DEFAULT, id, 2048).get(),
                idx_2048,
                "{id:?}"
            );
            assert_eq!(
                shard_of(ShardGroup::DEFAULT, id, 64).get(),
                idx_64,
                "{id:?}"
            );
        }
        // A long id exercises XXH3's long-input path.
        let long = "x".repeat(300);
        assert_eq!(entity_hash(&long), 0xa5d1b4607dc83554);
    }

    #[test]
    fn groups_occupy_the_high_bits() {
        let shard = shard_of(ShardGroup::new(3), "alice", 2048);
        assert_eq!(shard.get(), (3 << 16) | 1712);
        assert_eq!(split(shard), (ShardGroup::new(3), 1712));
        // The maximum group count and size still fit.
        let shard = shard_of(ShardGroup::new(u16::MAX), "bob", MAX_SHARDS_PER_GROUP);
        let (group, index) = split(shard);
        assert_eq!(group, ShardGroup::new(u16::MAX));
        assert_eq!(u64::from(index), 0x1403c0c40f49b8e5 % 65_536);
    }

    #[test]
    fn every_shard_is_reachable_and_load_is_even() {
        let mut counts = vec![0_u32; 64];
        for i in 0..64_000 {
            let (_, index) = split(shard_of(ShardGroup::DEFAULT, &format!("user-{i}"), 64));
            counts[index as usize] += 1;
        }
        // 1000 expected per shard; a fair hash stays well within ±20%.
        assert!(
            counts.iter().all(|&c| (800..=1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    #[should_panic(expected = "shards_per_group")]
    fn zero_shards_is_refused() {
        shard_of(ShardGroup::DEFAULT, "a", 0);
    }
}
