//! Transports move pull and push requests between workers and shards; they hold no
//! algorithm. [`local::LocalTransport`] calls the shards in process; [`mpi`] (cargo
//! feature `mpi`) carries the same requests between ranks, in the byte form of [`wire`].

pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod wire;

use crate::ps::blocks::{BlockId, Loc};
use crate::ps::shard::PushOutcome;

/// What a worker needs from the parameter server.
pub trait Transport: Send + Sync {
    /// Reads `classes` coordinates at each of `rows` into `out` (row-major, `rows.len() *
    /// classes` values) and returns the global step k read before the values, so that a
    /// push computed from them never under-reports its delay.
    fn pull(&self, rows: &[Loc], classes: usize, out: &mut [f64]) -> u64;

    /// Sends one block's sparse gradient, sorted by local coordinate without
    /// duplicates, computed at a model pulled at step `pulled_at`.
    fn push(&self, block: BlockId, pulled_at: u64, grad: &[(u32, f64)]) -> PushOutcome;

    /// The global step counter k.
    fn now(&self) -> u64;
}
