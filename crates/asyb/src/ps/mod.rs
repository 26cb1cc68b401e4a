//! The parameter server: block partition, shards that own blocks and apply proximal
//! steps, the worker loop, and the transports between them. Knows nothing of file
//! formats.

pub mod blocks;
pub mod shard;
pub mod transport;
pub mod worker;

use std::sync::Arc;

use crate::ps::blocks::{BlockId, BlockPartition};
use crate::ps::shard::ShardApi;

/// The whole model as one dense vector in the [`crate::model::Layout`] order, read from
/// the shards (block `j` on shard `j mod S`).
pub fn gather(partition: &BlockPartition, shards: &[Arc<dyn ShardApi>]) -> Vec<f64> {
    let k = partition.layout().classes;
    // Each block's snapshot brings all its coordinates up to date: on every core.
    let nb = partition.blocks();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(nb);
    let take = |j: usize| shards[j % shards.len()].snapshot(BlockId(j as u32));
    let blocks: Vec<Vec<f64>> = if threads <= 1 {
        (0..nb).map(take).collect()
    } else {
        std::thread::scope(|s| {
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
            let mut out = vec![Vec::new(); nb];
            for h in handles {
                for (j, v) in h.join().expect("snapshot thread") {
                    out[j] = v;
                }
            }
            out
        })
    };
    let mut w = vec![0.0; partition.layout().coords()];
    partition.for_each_row(|row, loc| {
        let src = &blocks[loc.block as usize][loc.offset as usize..loc.offset as usize + k];
        w[row * k..(row + 1) * k].copy_from_slice(src);
    });
    w
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
