//! The in-process transport: workers call the shards directly through shared memory.
//! Reads are lock-free on the shard side, so a pull costs a few loads per coordinate.

use std::sync::Arc;

use super::Transport;
use crate::ps::blocks::{BlockId, Loc};
use crate::ps::shard::{Clock, PushOutcome, ShardApi};

/// Shards in this process, block `j` on shard `j mod S`.
pub struct LocalTransport {
    shards: Vec<Arc<dyn ShardApi>>,
    clock: Arc<Clock>,
}

impl LocalTransport {
    pub fn new(shards: Vec<Arc<dyn ShardApi>>, clock: Arc<Clock>) -> Self {
        LocalTransport { shards, clock }
    }

    #[inline]
    fn shard(&self, block: u32) -> &dyn ShardApi {
        &*self.shards[block as usize % self.shards.len()]
    }
}

impl Transport for LocalTransport {
    fn pull(&self, rows: &[Loc], classes: usize, out: &mut [f64]) -> u64 {
        let k = self.clock.now();
        for shard in &self.shards {
            shard.read_rows(rows, classes, out);
        }
        k
    }

    fn push(&self, block: BlockId, pulled_at: u64, grad: &[(u32, f64)]) -> PushOutcome {
        self.shard(block.0).apply(block, pulled_at, grad)
    }

    fn now(&self) -> u64 {
        self.clock.now()
    }
}
