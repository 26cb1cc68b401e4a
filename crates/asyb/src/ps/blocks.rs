//! Block partition: which block, and where inside it, each parameter row lives; which
//! shard owns each block.
//!
//! The unit of partition is a *row group* of `group_rows` consecutive feature rows (1
//! unless the regularizer couples rows, as group lasso does), so that a regularizer group
//! never straddles two blocks, and the `classes` coordinates of one feature always share a
//! block. The intercept row is a row group of its own, placed after the (padded) feature
//! row groups, so it never shares a regularizer group with a feature.
//!
//! Row groups are spread over M blocks in balanced shares: in turn (`interleaved`: group
//! g in block g mod M, the default), in contiguous runs of their natural order
//! (`contiguous`), or in contiguous runs after a seeded pseudo-random permutation
//! (`hashed`: a 4-round Feistel network with cycle walking, tabulated up to 2^25 groups).
//! Interleaving keeps each block's share of the most frequent features, which compaction
//! numbers first, at the start of the block, and balances the work of the blocks. Block j
//! belongs to shard j mod S.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::Layout;

/// Index of a block, 0..M.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BlockId(pub u32);

/// Index of a shard, 0..S.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardId(pub u32);

/// How row groups are assigned to blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionKind {
    /// Row group g goes to block g mod M: neighbouring ids, hence the most frequent
    /// features once ids are in frequency order, are spread evenly over the blocks.
    Interleaved,
    /// Consecutive feature ids share a block.
    Contiguous,
    /// Feature ids are permuted pseudo-randomly before the contiguous split, which
    /// balances blocks when ids are ordered by frequency.
    Hashed,
}

/// Where a parameter row lives: its block and the offset of its first coordinate inside
/// the block's local coordinate array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub block: u32,
    pub offset: u32,
}

/// The map coordinate <-> block <-> shard.
#[derive(Clone, Debug)]
pub struct BlockPartition {
    layout: Layout,
    group_rows: usize,
    /// Feature row groups (padded), the intercept's not included.
    feature_groups: usize,
    /// All row groups, the intercept's included.
    groups: usize,
    blocks: usize,
    shards: usize,
    /// Balanced split: the first `rem` blocks hold `base + 1` row groups, the rest `base`.
    base: usize,
    rem: usize,
    /// Whether row groups are dealt to blocks in turn.
    interleaved: bool,
    perm: Option<Feistel>,
    /// The permutation of every row group, computed once: `locate` runs once per
    /// nonzero of every minibatch, and the network with its cycle walking costs dozens
    /// of multiplications (more than twice a whole update's time on the reference
    /// workload). Absent above [`PERM_TABLE_MAX`] groups.
    table: Option<Arc<[u32]>>,
}

/// Largest number of row groups whose permutation is tabulated (4 bytes each).
const PERM_TABLE_MAX: usize = 1 << 25;

impl BlockPartition {
    /// A partition of `layout`'s rows into `blocks` blocks over `shards` shards. The
    /// caller validates `1 <= blocks <= feature row groups`, `1 <= shards <= blocks`
    /// and fewer than 2^32 parameter rows (feature ids are u32).
    pub fn new(
        layout: Layout,
        group_rows: usize,
        blocks: usize,
        shards: usize,
        kind: PartitionKind,
        seed: u64,
    ) -> Self {
        assert!(group_rows >= 1 && blocks >= 1 && shards >= 1 && shards <= blocks);
        assert!(
            layout.rows() <= u32::MAX as usize,
            "row ids must fit in u32"
        );
        let feature_groups = layout.features.div_ceil(group_rows);
        let groups = feature_groups + 1;
        let perm = match kind {
            PartitionKind::Contiguous | PartitionKind::Interleaved => None,
            PartitionKind::Hashed => Some(Feistel::new(groups as u64, seed)),
        };
        BlockPartition {
            layout,
            group_rows,
            feature_groups,
            groups,
            blocks,
            shards,
            base: groups / blocks,
            rem: groups % blocks,
            interleaved: kind == PartitionKind::Interleaved,
            table: perm
                .as_ref()
                .filter(|_| groups <= PERM_TABLE_MAX)
                .map(|p| (0..groups as u64).map(|g| p.permute(g) as u32).collect()),
            perm,
        }
    }

    /// The parameter layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Number of blocks M.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// Number of shards S.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Coordinates per row group (= regularizer group length for group lasso).
    pub fn group_coords(&self) -> usize {
        self.group_rows * self.layout.classes
    }

    /// Feature rows per row group.
    pub fn group_rows(&self) -> usize {
        self.group_rows
    }

    /// Number of row groups of features (the intercept's excluded).
    pub fn feature_groups(&self) -> usize {
        self.feature_groups
    }

    /// The shard that owns `block`.
    #[inline]
    pub fn shard_of(&self, block: BlockId) -> ShardId {
        ShardId((block.0 as usize % self.shards) as u32)
    }

    /// Row groups held by block `j`.
    pub fn block_groups(&self, j: usize) -> usize {
        self.base + usize::from(j < self.rem)
    }

    /// Local coordinates of block `j`.
    pub fn block_coords(&self, j: usize) -> usize {
        self.block_groups(j) * self.group_coords()
    }

    /// First (permuted) row-group position of block `j` (contiguous and hashed).
    #[cfg(test)]
    fn block_start(&self, j: usize) -> usize {
        j * self.base + j.min(self.rem)
    }

    /// The (block, position within block) of a permuted row-group position.
    #[inline(always)]
    fn split(&self, pos: usize) -> (usize, usize) {
        if self.interleaved {
            // Group g is the (g / M)-th of block g mod M; with M groups or fewer left in
            // the last round, the first blocks get one more (as `block_groups` says).
            let (p, m) = (pos as u32, self.blocks as u32);
            let q = p / m;
            return ((p - q * m) as usize, q as usize);
        }
        // Positions are below 2^32 (row ids are u32); 32-bit division is several times
        // cheaper than 64-bit, and this runs once per nonzero of every minibatch.
        let big = self.rem * (self.base + 1);
        let (p, size, first) = if pos < big {
            (pos, self.base + 1, 0)
        } else {
            (pos - big, self.base, self.rem)
        };
        let (p, size) = (p as u32, size as u32);
        let q = p / size;
        (first + q as usize, (p - q * size) as usize)
    }

    /// Row group of a parameter row (the intercept row maps to the last group).
    #[inline(always)]
    fn group_of_row(&self, row: usize) -> (usize, usize) {
        if row >= self.layout.features {
            (self.feature_groups, 0)
        } else if self.group_rows == 1 {
            (row, 0)
        } else {
            let (r, g) = (row as u32, self.group_rows as u32);
            ((r / g) as usize, (r % g) as usize)
        }
    }

    /// Where parameter row `row` lives (`row == layout.features` is the intercept).
    /// Inlined: it runs once per nonzero of every minibatch, and a call costs a third
    /// of it.
    #[inline(always)]
    pub fn locate(&self, row: usize) -> Loc {
        let (g, within) = self.group_of_row(row);
        let pos = match (&self.table, &self.perm) {
            (Some(t), _) => t[g] as usize,
            (None, None) => g,
            (None, Some(p)) => p.permute(g as u64) as usize,
        };
        let (block, local_group) = self.split(pos);
        Loc {
            block: block as u32,
            offset: ((local_group * self.group_rows + within) * self.layout.classes) as u32,
        }
    }

    /// `Some(m)` when every parameter row `r` (the intercept's included) is coordinate
    /// `r >> m` of block `r mod 2^m`: interleaved over `2^m` blocks, one row per group and
    /// one class (the default partition of a binary or regression model). Such rows are
    /// located with a shift and a mask, cheaply enough for a pass over every nonzero.
    pub fn interleaved_pow2(&self) -> Option<u32> {
        (self.interleaved
            && self.group_rows == 1
            && self.layout.classes == 1
            && self.blocks.is_power_of_two())
        .then(|| self.blocks.trailing_zeros())
    }

    /// Where the intercept row lives.
    pub fn bias_loc(&self) -> Loc {
        self.locate(self.layout.features)
    }

    /// Calls `f(row, loc)` for every parameter row, the intercept's included.
    pub fn for_each_row(&self, mut f: impl FnMut(usize, Loc)) {
        for row in 0..=self.layout.features {
            f(row, self.locate(row));
        }
    }

    /// Position of row group `g` after the permutation (identity when contiguous). Used
    /// to check that the permutation is a bijection.
    #[cfg(test)]
    fn position(&self, g: usize) -> usize {
        self.perm
            .as_ref()
            .map_or(g, |p| p.permute(g as u64) as usize)
    }

    /// Total row groups, intercept included.
    pub fn groups(&self) -> usize {
        self.groups
    }
}

/// A keyed pseudo-random permutation of 0..n: a balanced Feistel network on the smallest
/// even number of bits covering n, with cycle walking back into range.
#[derive(Clone, Debug)]
struct Feistel {
    n: u64,
    half_bits: u32,
    keys: [u64; 4],
}

impl Feistel {
    fn new(n: u64, seed: u64) -> Self {
        let bits = (64 - n.saturating_sub(1).leading_zeros()).max(2);
        let half_bits = bits.div_ceil(2);
        let mut s = seed ^ 0x6a09_e667_f3bc_c909;
        let mut keys = [0u64; 4];
        for k in &mut keys {
            s = splitmix64(s);
            *k = s;
        }
        Feistel { n, half_bits, keys }
    }

    fn round_trip(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut l, mut r) = (x >> self.half_bits, x & mask);
        for k in self.keys {
            let f = splitmix64(r ^ k) & mask;
            (l, r) = (r, l ^ f);
        }
        (l << self.half_bits) | r
    }

    #[inline]
    fn permute(&self, x: u64) -> u64 {
        // Cycle walking: the network permutes 0..2^(2 half_bits) (< 4n), so iterating
        // from an in-range value returns to the range after a few steps on average.
        let mut y = self.round_trip(x);
        while y >= self.n {
            y = self.round_trip(y);
        }
        y
    }
}

/// The splitmix64 finalizer (Steele, Lea, Flood 2014): a fast 64-bit mixing function.
#[inline]
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn layout(features: usize, classes: usize) -> Layout {
        Layout {
            features,
            classes,
            bias: true,
        }
    }

    /// The shift-and-mask rule holds exactly where it is offered: interleaved, one row
    /// per group, one class, a power-of-two block count.
    #[test]
    fn interleaved_powers_of_two_locate_by_shift_and_mask() {
        for (features, blocks) in [(1, 1), (10, 2), (11, 4), (1000, 8), (7, 2)] {
            let p = BlockPartition::new(
                layout(features, 1),
                1,
                blocks,
                1,
                PartitionKind::Interleaved,
                0,
            );
            let m = p.interleaved_pow2().expect("offered");
            assert_eq!(1 << m, blocks);
            for row in 0..=features {
                let want = Loc {
                    block: (row & (blocks - 1)) as u32,
                    offset: (row >> m) as u32,
                };
                assert_eq!(p.locate(row), want, "{features} features, {blocks} blocks");
            }
        }
        let none = [
            BlockPartition::new(layout(10, 1), 1, 3, 1, PartitionKind::Interleaved, 0),
            BlockPartition::new(layout(10, 2), 1, 2, 1, PartitionKind::Interleaved, 0),
            BlockPartition::new(layout(10, 1), 2, 2, 1, PartitionKind::Interleaved, 0),
            BlockPartition::new(layout(10, 1), 1, 2, 1, PartitionKind::Contiguous, 0),
            BlockPartition::new(layout(10, 1), 1, 2, 1, PartitionKind::Hashed, 0),
        ];
        assert!(none.iter().all(|p| p.interleaved_pow2().is_none()));
    }

    /// Every row lands in a distinct slot, inside its block, and row groups stay whole.
    fn check_bijective(p: &BlockPartition) {
        let mut seen = HashSet::new();
        let k = p.layout().classes;
        p.for_each_row(|row, loc| {
            assert!((loc.block as usize) < p.blocks());
            assert!((loc.offset as usize) + k <= p.block_coords(loc.block as usize));
            assert_eq!(loc.offset as usize % k, 0);
            assert!(seen.insert((loc.block, loc.offset)), "row {row} collides");
            if row < p.layout().features {
                let first = row - row % p.group_rows();
                let head = p.locate(first);
                assert_eq!(head.block, loc.block, "group of row {row} split");
                let within = (row - first) * k;
                assert_eq!(head.offset as usize + within, loc.offset as usize);
            }
        });
        // The tabulated permutation is the network's.
        if p.table.is_some() {
            let mut direct = p.clone();
            direct.table = None;
            for row in 0..=p.layout().features {
                assert_eq!(p.locate(row), direct.locate(row), "row {row}");
            }
        }
        let groups: HashSet<usize> = (0..p.groups()).map(|g| p.position(g)).collect();
        assert_eq!(groups.len(), p.groups());
        assert!(groups.iter().all(|&g| g < p.groups()));
    }

    #[test]
    fn contiguous_is_balanced_and_bijective() {
        for (d, m, g) in [
            (10, 3, 1),
            (10, 11, 1),
            (1000, 64, 1),
            (17, 4, 3),
            (5, 2, 2),
        ] {
            let p = BlockPartition::new(layout(d, 1), g, m, 1, PartitionKind::Contiguous, 0);
            check_bijective(&p);
            let sizes: Vec<_> = (0..m).map(|j| p.block_groups(j)).collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            assert_eq!(sizes.iter().sum::<usize>(), d.div_ceil(g) + 1);
            assert_eq!(p.block_start(m - 1) + sizes[m - 1], p.groups());
        }
    }

    #[test]
    fn interleaved_deals_groups_in_turn() {
        for (d, m, k, g) in [
            (10, 3, 1, 1),
            (10, 11, 1, 1),
            (1000, 64, 1, 1),
            (17, 4, 2, 3),
            (5, 2, 1, 2),
            (1 << 12, 7, 1, 1),
        ] {
            let p = BlockPartition::new(layout(d, k), g, m, 1, PartitionKind::Interleaved, 0);
            check_bijective(&p);
            let sizes: Vec<_> = (0..m).map(|j| p.block_groups(j)).collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            assert_eq!(sizes.iter().sum::<usize>(), d.div_ceil(g) + 1);
            // Brute force: group q is the (q / m)-th group of block q mod m.
            for row in 0..d {
                let q = row / g;
                let want = Loc {
                    block: (q % m) as u32,
                    offset: (((q / m) * g + row % g) * k) as u32,
                };
                assert_eq!(p.locate(row), want, "row {row} of {d}, {m} blocks");
            }
        }
    }

    #[test]
    fn contiguous_keeps_order() {
        let p = BlockPartition::new(layout(100, 1), 1, 4, 1, PartitionKind::Contiguous, 0);
        let locs: Vec<_> = (0..=100).map(|r| p.locate(r)).collect();
        assert!(locs
            .windows(2)
            .all(|w| (w[0].block, w[0].offset) < (w[1].block, w[1].offset)));
        assert_eq!(p.bias_loc().block, 3);
    }

    #[test]
    fn hashed_is_bijective_and_spreads_neighbours() {
        for (d, m, k, g) in [
            (1000, 8, 1, 1),
            (1 << 12, 64, 1, 1),
            (300, 7, 3, 1),
            (99, 5, 2, 4),
        ] {
            let p = BlockPartition::new(layout(d, k), g, m, 2.min(m), PartitionKind::Hashed, 7);
            check_bijective(&p);
        }
        let p = BlockPartition::new(layout(4096, 1), 1, 8, 1, PartitionKind::Hashed, 7);
        let first_block: HashSet<u32> = (0..64).map(|r| p.locate(r).block).collect();
        assert!(
            first_block.len() >= 6,
            "the first 64 ids fall in {first_block:?}"
        );
    }

    #[test]
    fn shards_round_robin() {
        let p = BlockPartition::new(layout(100, 1), 1, 6, 4, PartitionKind::Contiguous, 0);
        let owners: Vec<_> = (0..6).map(|j| p.shard_of(BlockId(j)).0).collect();
        assert_eq!(owners, vec![0, 1, 2, 3, 0, 1]);
    }
}
