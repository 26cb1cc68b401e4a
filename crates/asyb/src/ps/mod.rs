//! The parameter server: block partition, shards that own blocks and apply proximal
//! steps, the worker loop, and the transports between them. Knows nothing of file
//! formats.

pub mod blocks;
pub mod shard;
pub mod transport;
pub mod worker;

use std::sync::Arc;

use crate::model::objective::Weights;
use crate::ps::blocks::{BlockId, BlockPartition};
use crate::ps::shard::ShardApi;

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `take(j)` for every block `j < nb`, the blocks dealt to the cores in turn.
fn on_every_core<T: Send>(nb: usize, take: impl Fn(usize) -> T + Sync) -> Vec<T> {
    on_threads(nb, cores(), take)
}

/// `take(j)` for every block `j < nb`, the blocks dealt in turn to at most `threads`
/// threads (the calling one alone for 1).
pub(crate) fn on_threads<T: Send>(
    nb: usize,
    threads: usize,
    take: impl Fn(usize) -> T + Sync,
) -> Vec<T> {
    let threads = threads.min(nb);
    if threads <= 1 {
        return (0..nb).map(take).collect();
    }
    let mut out: Vec<Option<T>> = (0..nb).map(|_| None).collect();
    std::thread::scope(|s| {
        let take = &take;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..nb)
                        .step_by(threads)
                        .map(|j| (j, take(j)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (j, v) in h.join().expect("block thread") {
                out[j] = Some(v);
            }
        }
    });
    out.into_iter()
        .map(|v| v.expect("the threads take every block"))
        .collect()
}

/// The whole model as one dense vector in the [`crate::model::Layout`] order, read from
/// the shards (block `j` on shard `j mod S`).
pub fn gather(partition: &BlockPartition, shards: &[Arc<dyn ShardApi>]) -> Vec<f64> {
    // Read in place where possible: no block copies besides the result.
    if let Some(view) = ModelView::of(partition, shards) {
        return (0..view.len).map(|j| view.at(j)).collect();
    }
    let k = partition.layout().classes;
    // Each block's snapshot brings all its coordinates up to date.
    let blocks = on_every_core(partition.blocks(), |j| {
        shards[j % shards.len()].snapshot(BlockId(j as u32))
    });
    let mut w = vec![0.0; partition.layout().coords()];
    partition.for_each_row(|row, loc| {
        let src = &blocks[loc.block as usize][loc.offset as usize..loc.offset as usize + k];
        w[row * k..(row + 1) * k].copy_from_slice(src);
    });
    w
}

/// The whole model read in place from the shards' cells, in [`crate::model::Layout`]
/// order: what an evaluation or an SVRG snapshot reads while the workers are paused,
/// without the dense copy of [`gather`] (a vector of 8 bytes per coordinate at the
/// memory peak of every such pass, and its copying time). Built only for the partitions
/// whose rows are located with a shift and a mask
/// ([`BlockPartition::interleaved_pow2`]) and shards that hold their blocks in this
/// process.
pub struct ModelView<'a> {
    blocks: Vec<shard::BlockValues<'a>>,
    shift: u32,
    mask: usize,
    len: usize,
}

impl<'a> ModelView<'a> {
    /// The view of every block, each brought up to date first (on every core); `None`
    /// when the partition or a shard does not allow one (use [`gather`]).
    pub fn of(partition: &BlockPartition, shards: &'a [Arc<dyn ShardApi>]) -> Option<Self> {
        Self::on(partition, shards, cores())
    }

    /// [`ModelView::of`], the blocks brought up to date on at most `threads` threads.
    pub fn on(
        partition: &BlockPartition,
        shards: &'a [Arc<dyn ShardApi>],
        threads: usize,
    ) -> Option<Self> {
        let shift = partition.interleaved_pow2()?;
        let blocks = on_threads(partition.blocks(), threads, |j| {
            shards[j % shards.len()].values(BlockId(j as u32))
        })
        .into_iter()
        .collect::<Option<Vec<_>>>()?;
        Some(ModelView {
            blocks,
            shift,
            mask: (1 << shift) - 1,
            len: partition.layout().coords(),
        })
    }
}

impl Weights for ModelView<'_> {
    fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    fn at(&self, j: usize) -> f64 {
        self.blocks[j & self.mask].get(j >> self.shift)
    }

    #[inline(always)]
    fn prefetch_at(&self, j: usize) {
        if j < self.len {
            self.blocks[j & self.mask].prefetch(j >> self.shift);
        }
    }
}

/// A dense vector in [`crate::model::Layout`] order cut into its blocks' local arrays.
pub fn to_blocks(partition: &BlockPartition, w: &[f64]) -> Vec<Vec<f64>> {
    let k = partition.layout().classes;
    let mut blocks: Vec<Vec<f64>> = (0..partition.blocks())
        .map(|j| vec![0.0; partition.block_coords(j)])
        .collect();
    partition.for_each_row(|row, loc| {
        let dst = &mut blocks[loc.block as usize][loc.offset as usize..loc.offset as usize + k];
        dst.copy_from_slice(&w[row * k..(row + 1) * k]);
    });
    blocks
}

/// Loads a dense model vector (as from [`gather`]) into the shards.
pub fn scatter(partition: &BlockPartition, shards: &[Arc<dyn ShardApi>], w: &[f64]) {
    for (j, b) in to_blocks(partition, w).iter().enumerate() {
        shards[j % shards.len()].load(BlockId(j as u32), b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;
    use crate::model::loss::Logistic;
    use crate::model::objective::{AnyReg, Objective};
    use crate::model::reg::{RegKind, RegSpec, L1};
    use crate::model::Layout;
    use crate::ps::blocks::{PartitionKind, ShardId};
    use crate::ps::shard::{Clock, Shard, ShardSettings, StepSchedule};
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// After pushes with L1 and a drift (coordinates behind in the lazy history), the
    /// model read in place equals each block's snapshot coordinate by coordinate, and a
    /// pass over rows with it equals the pass over the dense copy.
    #[test]
    fn the_model_read_in_place_equals_the_snapshots() {
        let layout = Layout {
            features: 37,
            classes: 1,
            bias: true,
        };
        let part = BlockPartition::new(layout, 1, 4, 2, PartitionKind::Interleaved, 0);
        let settings = ShardSettings {
            max_delay: None,
            schedule: StepSchedule::Constant { eta: 0.1 },
            alpha: 0.0,
            drift: true,
        };
        let clock = Arc::new(Clock::default());
        let shards: Vec<Arc<dyn ShardApi>> = (0..2)
            .map(|s| {
                Arc::new(Shard::new(
                    ShardId(s),
                    &part,
                    L1 { lambda: 0.05 },
                    settings,
                    clock.clone(),
                    Default::default(),
                )) as Arc<dyn ShardApi>
            })
            .collect();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let w0: Vec<f64> = (0..layout.coords())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        scatter(&part, &shards, &w0);
        for j in 0..4 {
            let drift: Vec<f64> = (0..part.block_coords(j))
                .map(|_| rng.random_range(-0.3..0.3))
                .collect();
            shards[j % 2].set_drift(BlockId(j as u32), &drift);
        }
        for k in 0..200u64 {
            let j = rng.random_range(0..4);
            let c = rng.random_range(0..part.block_coords(j)) as u32;
            shards[j % 2].apply(BlockId(j as u32), k, &[(c, rng.random_range(-1.0..1.0))]);
        }
        let view = ModelView::of(&part, &shards).expect("local shards, 4 interleaved blocks");
        let mut snaps = Vec::new();
        for j in 0..4 {
            snaps.push(shards[j % 2].snapshot(BlockId(j as u32)));
        }
        let mut dense = vec![0.0; layout.coords()];
        part.for_each_row(|row, loc| dense[row] = snaps[loc.block as usize][loc.offset as usize]);
        assert_eq!(view.len(), dense.len());
        for (j, &v) in dense.iter().enumerate() {
            assert_eq!(view.at(j).to_bits(), v.to_bits(), "coordinate {j}");
        }
        assert_ne!(dense, w0, "the pushes moved the model");
        assert_eq!(gather(&part, &shards), dense);
        let rows: Vec<(f32, Vec<(u32, f32)>)> = (0..50)
            .map(|i| {
                let mut r: Vec<(u32, f32)> = (0..37u32)
                    .filter(|f| (f + i) % 5 == 0)
                    .map(|f| (f, 1.0))
                    .collect();
                r.dedup_by_key(|e| e.0);
                (if i % 3 == 0 { 1.0 } else { -1.0 }, r)
            })
            .collect();
        let data = Dataset::from_rows(37, &rows);
        let obj = Objective {
            data: &data,
            rows: None,
            loss: Logistic,
            reg: AnyReg(RegSpec {
                kind: RegKind::L1,
                lambda: 0.05,
                l1_ratio: 1.0,
                lower: 0.0,
                upper: 0.0,
                group_len: 1,
            }),
            layout,
            alpha: 0.0,
            threads: 2,
        };
        let (mut g1, mut g2) = (vec![0.0; dense.len()], vec![0.0; dense.len()]);
        let f1 = obj.f_and_grad(&view, Some(&mut g1));
        let f2 = obj.f_and_grad(&dense, Some(&mut g2));
        assert_eq!((f1, &g1), (f2, &g2));
        assert_eq!(obj.h(&view), obj.h(&dense));
        assert_eq!(
            obj.pgm_sq_norm(&view, &g1, 0.3),
            obj.pgm_sq_norm(&dense, &g2, 0.3)
        );
    }
}
