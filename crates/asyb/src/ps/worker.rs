//! The worker loop (PAPER.md, "Workers"): pull the model, choose a block uniformly at
//! random, compute the minibatch block gradient `G_j = (1/N) sum_i grad_j f_i(x_hat)` at
//! the pulled model, push it; repeat, never waiting for other workers. The same loop
//! pushes every block (`asy-full`) or takes part in a synchronous round (`sync`).
//!
//! The pull is sparse: only the rows (features) that the minibatch touches, plus the
//! intercept. The loop is monomorphized per loss and allocates nothing per update.
//!
//! Variance reduction (SVRG): with a snapshot, a row's loss derivative is replaced by
//! its difference from the derivative at the snapshot's margins, `l'(z_i) - l'(z~_i)`
//! (the latter computed once per snapshot), so that a push carries `G_j - G~_j`; the
//! shard adds the snapshot's full gradient.
//! The pushed vector is exactly as sparse as before.
//!
//! Pausing: the trainer pauses all workers to evaluate the model; workers park between
//! updates (or between synchronous rounds), so evaluation never runs beside them.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Barrier;

use parking_lot::{Condvar, Mutex, RwLock};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::config::{Algorithm, Sampling};
use crate::data::Dataset;
use crate::hint::prefetch;
use crate::model::loss::Loss;
use crate::ps::blocks::{BlockId, BlockPartition, Loc};
use crate::ps::shard::PushOutcome;
use crate::ps::transport::Transport;

/// How many minibatch rows ahead the gradient loop prefetches a row's entries (and
/// twice that, its bounds).
const ROW_AHEAD: usize = 8;

/// Stop and pause signals between the trainer and its workers.
#[derive(Debug, Default)]
pub struct Control {
    stop: AtomicBool,
    pause: AtomicBool,
    /// Workers parked / still running, guarded for the condition variable.
    state: Mutex<(usize, usize)>,
    changed: Condvar,
    /// Stop once the global step reaches this.
    pub max_updates: AtomicU64,
    /// Pause (for a snapshot) once the global step reaches this.
    pub hold_at: AtomicU64,
}

impl Control {
    /// Control for `workers` workers stopping at `max_updates` block updates.
    pub fn new(workers: usize, max_updates: u64) -> Self {
        Control {
            state: Mutex::new((0, workers)),
            max_updates: AtomicU64::new(max_updates),
            hold_at: AtomicU64::new(u64::MAX),
            ..Default::default()
        }
    }

    /// Asks every worker to stop after its current update.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _g = self.state.lock();
        self.changed.notify_all();
    }

    /// Whether a stop was asked.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Pauses the workers and returns once every running worker is parked.
    pub fn pause(&self) {
        self.pause.store(true, Ordering::Release);
        let mut s = self.state.lock();
        while s.0 < s.1 {
            self.changed.wait(&mut s);
        }
    }

    /// Lets parked workers go on.
    pub fn resume(&self) {
        self.pause.store(false, Ordering::Release);
        let _g = self.state.lock();
        self.changed.notify_all();
    }

    /// Number of workers that have not exited.
    pub fn running(&self) -> usize {
        self.state.lock().1
    }

    /// Whether a pause was asked (by the trainer, or by a worker at `hold_at`).
    pub fn pause_requested(&self) -> bool {
        self.pause.load(Ordering::Acquire)
    }

    /// Asks for a pause from a worker that reached `hold_at`, so that the snapshot is
    /// taken at that step exactly when one worker runs.
    fn hold(&self) {
        self.pause.store(true, Ordering::Release);
    }

    /// Parks the calling worker while a pause is requested.
    fn park(&self) {
        let mut s = self.state.lock();
        s.0 += 1;
        self.changed.notify_all();
        while self.pause.load(Ordering::Acquire) && !self.stopped() {
            self.changed.wait(&mut s);
        }
        s.0 -= 1;
    }

    /// Called by a worker as it exits (also on unwinding), so a pause never waits for it.
    fn exited(&self) {
        let mut s = self.state.lock();
        s.1 -= 1;
        self.changed.notify_all();
    }
}

/// Counts the worker's exit even if it unwinds.
struct ExitGuard<'a>(&'a Control);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        self.0.exited();
    }
}

/// Per-run counters shared by the workers.
#[derive(Debug, Default)]
pub struct Counters {
    /// Minibatch rows whose gradient was pushed and applied.
    pub samples: AtomicU64,
    /// Pushes rejected as stale.
    pub rejected: AtomicU64,
}

/// Which blocks a push carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockMode {
    /// One block chosen uniformly at random (AsyB-ProxSGD).
    OneRandom,
    /// Every block (Asy-ProxSGD with full updates).
    All,
}

impl BlockMode {
    /// The pushes of `algorithm`: all blocks for asy-full, one random block otherwise.
    pub fn of(algorithm: Algorithm) -> Self {
        if algorithm == Algorithm::AsyFull {
            BlockMode::All
        } else {
            BlockMode::OneRandom
        }
    }
}

/// What a worker needs that is the same for all workers of a run.
pub struct WorkerContext<'a> {
    pub data: &'a Dataset,
    pub partition: &'a BlockPartition,
    pub transport: &'a dyn Transport,
    pub control: &'a Control,
    pub counters: &'a Counters,
    pub batch: usize,
    pub sampling: Sampling,
    pub mode: BlockMode,
    /// SVRG: the loss derivatives of every row at the snapshot's margins (`classes` per
    /// row, as f32), written only while the workers are paused; empty before the first
    /// snapshot (the workers then compute plain SGD gradients).
    pub snapshot: Option<&'a RwLock<Vec<f32>>>,
}

impl<'a> WorkerContext<'a> {
    /// The context of a run of `raw`'s algorithm and sampling, with minibatches of
    /// `batch` rows.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        raw: &crate::config::TrainConfig,
        batch: usize,
        data: &'a Dataset,
        partition: &'a BlockPartition,
        transport: &'a dyn Transport,
        control: &'a Control,
        counters: &'a Counters,
        snapshot: Option<&'a RwLock<Vec<f32>>>,
    ) -> Self {
        WorkerContext {
            data,
            partition,
            transport,
            control,
            counters,
            batch,
            sampling: raw.sampling,
            mode: BlockMode::of(raw.algorithm),
            snapshot,
        }
    }
}

/// Draws minibatches.
pub(crate) struct Sampler {
    /// Worker `w` of `workers`: its share is the rows `w + workers * j`, `j < share`.
    w: usize,
    workers: usize,
    share: usize,
    /// The current pass's permutation of `0..share`, and the next counter to map.
    perm: Permutation,
    next: u64,
    iid: bool,
    n: usize,
}

/// A pseudo-random permutation of `0..m` that takes no memory: a keyed bijection `f` of
/// the `b`-bit integers (`2^b >= m`, `b` as small as possible) applied to `0, 1, 2, ...`,
/// skipping the values `>= m` (at most half of them, so at most two evaluations per
/// value on average). `f` alternates additions of keys, odd multiplications and
/// xorshifts, each a bijection modulo `2^b`. A shuffled list of the rows took 4 bytes
/// per row (8 MB for 2M rows), which is now memory the training does not need.
#[derive(Clone, Copy, Debug)]
struct Permutation {
    bits: u32,
    mask: u64,
    /// Per round: an added key and an odd multiplier.
    keys: [(u64, u64); PERM_ROUNDS],
}

/// Rounds of [`Permutation`]: with two, some keys left batches of label-sorted rows
/// twice as uneven as a random order; four match a random order (the sampler's tests).
const PERM_ROUNDS: usize = 4;

impl Permutation {
    fn new(m: usize, rng: &mut Xoshiro256PlusPlus) -> Self {
        let bits = usize::BITS - m.saturating_sub(1).leading_zeros();
        let mask = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        let mut keys = [(0, 1); PERM_ROUNDS];
        for k in &mut keys {
            *k = (rng.random::<u64>(), rng.random::<u64>() | 1);
        }
        Permutation { bits, mask, keys }
    }

    /// Values of `f` below `2^b`.
    fn domain(&self) -> u64 {
        self.mask.wrapping_add(1)
    }

    /// `f(x)`: each round adds a key, multiplies by an odd number (both carry low bits
    /// up) and folds the high half onto the low one (`x ^= x >> s`); each step is a
    /// bijection modulo `2^b`.
    #[inline]
    fn apply(&self, mut x: u64) -> u64 {
        let m = self.mask;
        let s = self.bits.div_ceil(2).max(1);
        for &(add, mul) in &self.keys {
            x = x.wrapping_add(add).wrapping_mul(mul) & m;
            x ^= x >> s;
        }
        x
    }
}

impl Sampler {
    /// Worker `w` of `workers`: shuffled passes over the rows `i = w (mod workers)`, or
    /// i.i.d. draws from all rows.
    pub(crate) fn new(n: usize, w: usize, workers: usize, sampling: Sampling) -> Self {
        Sampler {
            w,
            workers,
            share: n.saturating_sub(w).div_ceil(workers.max(1)),
            perm: Permutation {
                bits: 0,
                mask: 0,
                keys: [(0, 1); PERM_ROUNDS],
            },
            // A new permutation at the first draw.
            next: u64::MAX,
            iid: sampling == Sampling::Iid,
            n,
        }
    }

    pub(crate) fn fill(&mut self, rng: &mut Xoshiro256PlusPlus, out: &mut Vec<u32>, size: usize) {
        out.clear();
        if self.iid {
            out.extend((0..size).map(|_| rng.random_range(0..self.n) as u32));
            return;
        }
        if self.share == 0 {
            return;
        }
        while out.len() < size {
            if self.next >= self.perm.domain() {
                self.perm = Permutation::new(self.share, rng);
                self.next = 0;
            }
            let j = self.perm.apply(self.next);
            self.next += 1;
            if (j as usize) < self.share {
                out.push((self.w + self.workers * j as usize) as u32);
            }
        }
    }
}

/// Reusable buffers of one worker: nothing is allocated per update once they have grown.
struct Scratch {
    batch: Vec<u32>,
    locs: Vec<Loc>,
    vals: Vec<f64>,
    z: Vec<f64>,
    dz: Vec<f64>,
    grads: Vec<Vec<(u32, f64)>>,
    /// The radix sort's second buffer.
    sort_tmp: Vec<(u32, f64)>,
}

impl Scratch {
    fn new(blocks: usize) -> Self {
        Scratch {
            batch: Vec::new(),
            locs: Vec::new(),
            vals: Vec::new(),
            z: Vec::new(),
            dz: Vec::new(),
            grads: vec![Vec::new(); blocks],
            sort_tmp: Vec::new(),
        }
    }
}

/// Pulls the rows of `s.batch`, computes margins and loss derivatives, and fills
/// `s.grads[j]` for the blocks `j` that `want(j)` selects with the block gradients
/// scaled by `scale`, sorted and merged. Returns the step the pull was taken at.
fn gradient<L: Loss>(
    loss: L,
    ctx: &WorkerContext,
    s: &mut Scratch,
    scale: f64,
    want: impl Fn(u32) -> bool,
) -> u64 {
    let layout = ctx.partition.layout();
    let k = layout.classes;
    let bias = ctx.partition.bias_loc();
    s.locs.clear();
    // No derivatives before the first snapshot: plain SGD (the warm-up).
    let snapshot = ctx.snapshot.map(|m| m.read()).filter(|d| !d.is_empty());
    for (r, &i) in s.batch.iter().enumerate() {
        // Rows are drawn at random: fetch the bounds (and label, and snapshot derivatives)
        // of a row well ahead, and its entries a little ahead, so misses overlap.
        if let Some(&a) = s.batch.get(r + 2 * ROW_AHEAD) {
            ctx.data.prefetch_row_start(a as usize);
            if let Some(m) = &snapshot {
                prefetch(&m[a as usize * k]);
            }
        }
        if let Some(&a) = s.batch.get(r + ROW_AHEAD) {
            ctx.data.prefetch_row_data(a as usize);
        }
        for &f in ctx.data.row(i as usize).indices {
            s.locs.push(ctx.partition.locate(f as usize));
        }
    }
    s.locs.push(bias);
    s.vals.resize(s.locs.len() * k, 0.0);
    let pulled_at = ctx.transport.pull(&s.locs, k, &mut s.vals);
    let bias_vals = &s.vals[s.vals.len() - k..];

    let nb = s.batch.len();
    s.z.resize(nb * k, 0.0);
    s.dz.resize(nb * k, 0.0);
    let mut pos = 0;
    for (r, &i) in s.batch.iter().enumerate() {
        let row = ctx.data.row(i as usize);
        let z = &mut s.z[r * k..(r + 1) * k];
        z.copy_from_slice(bias_vals);
        for q in 0..row.nnz() {
            let v = f64::from(row.value(q));
            for (zc, w) in z.iter_mut().zip(&s.vals[(pos + q) * k..(pos + q + 1) * k]) {
                *zc += v * w;
            }
        }
        pos += row.nnz();
        let y = ctx.data.labels[i as usize];
        let dz = &mut s.dz[r * k..(r + 1) * k];
        loss.deriv(z, y, dz);
        if ctx.data.weights.is_some() {
            // A weighted row's loss, as the objective weighs it (the snapshot's
            // derivatives are weighted too).
            let c = ctx.data.weight(i as usize);
            for d in dz.iter_mut() {
                *d *= c;
            }
        }
        if let Some(m) = &snapshot {
            let i = i as usize;
            for (d, ds) in dz.iter_mut().zip(&m[i * k..(i + 1) * k]) {
                *d -= f64::from(*ds);
            }
        }
    }
    drop(snapshot);

    for (j, g) in s.grads.iter_mut().enumerate() {
        if want(j as u32) {
            g.clear();
        }
    }
    let mut pos = 0;
    for (r, &i) in s.batch.iter().enumerate() {
        let row = ctx.data.row(i as usize);
        let dz = &s.dz[r * k..(r + 1) * k];
        for q in 0..row.nnz() {
            let loc = s.locs[pos + q];
            if want(loc.block) {
                let v = f64::from(row.value(q)) * scale;
                let g = &mut s.grads[loc.block as usize];
                g.extend(
                    dz.iter()
                        .enumerate()
                        .map(|(c, d)| (loc.offset + c as u32, v * d)),
                );
            }
        }
        pos += row.nnz();
    }
    if layout.bias && want(bias.block) {
        let g = &mut s.grads[bias.block as usize];
        for c in 0..k {
            let sum: f64 = (0..nb).map(|r| s.dz[r * k + c]).sum();
            g.push((bias.offset + c as u32, sum * scale));
        }
    }
    for (j, g) in s.grads.iter_mut().enumerate() {
        if want(j as u32) {
            merge_sorted(g, &mut s.sort_tmp);
        }
    }
    pulled_at
}

/// A worker's minibatch gradient outside the run loop, with the loop's buffers and code
/// path: for benchmarks of the hot loop and for tests.
pub struct MinibatchGradient {
    s: Scratch,
}

impl MinibatchGradient {
    pub fn new(blocks: usize) -> Self {
        MinibatchGradient {
            s: Scratch::new(blocks),
        }
    }

    /// Pulls what rows `rows` of `ctx.data` need and computes the block gradient of
    /// block `block` (every block if `None`), scaled by `1 / rows.len()`. Returns the
    /// step the pull was taken at.
    pub fn compute<L: Loss>(
        &mut self,
        loss: L,
        ctx: &WorkerContext,
        rows: &[u32],
        block: Option<BlockId>,
    ) -> u64 {
        self.s.batch.clear();
        self.s.batch.extend_from_slice(rows);
        let scale = 1.0 / rows.len().max(1) as f64;
        gradient(loss, ctx, &mut self.s, scale, |b| {
            block.map_or(true, |j| j.0 == b)
        })
    }

    /// Block `j`'s gradient from the last [`MinibatchGradient::compute`] that included
    /// it: `(offset in the block, value)`, sorted.
    pub fn block(&self, j: BlockId) -> &[(u32, f64)] {
        &self.s.grads[j.0 as usize]
    }
}

/// Below this many pairs a comparison sort beats the radix sort's fixed cost.
const RADIX_MIN: usize = 64;

/// Sorts `(coordinate, value)` pairs by coordinate and sums duplicates (in their order
/// in `g`). A pushed gradient has a few thousand pairs; a radix sort through `tmp` takes
/// a fraction of the instructions of a comparison sort.
fn merge_sorted(g: &mut Vec<(u32, f64)>, tmp: &mut Vec<(u32, f64)>) {
    if g.len() < RADIX_MIN {
        g.sort_by_key(|e| e.0);
    } else {
        radix_sort(g, tmp);
    }
    let mut w = 0;
    for r in 0..g.len() {
        if w > 0 && g[w - 1].0 == g[r].0 {
            g[w - 1].1 += g[r].1;
        } else {
            g[w] = g[r];
            w += 1;
        }
    }
    g.truncate(w);
}

/// Bits per digit of [`radix_sort`]: two passes cover the coordinates of blocks of up to
/// 4M coordinates, and the counts (8 KiB) stay in the first-level cache.
const RADIX_BITS: u32 = 11;

/// Stable least-significant-digit radix sort by coordinate, one pass per digit up to the
/// largest coordinate's highest; `tmp` is the other buffer (contents undefined after).
fn radix_sort(g: &mut Vec<(u32, f64)>, tmp: &mut Vec<(u32, f64)>) {
    const MASK: u32 = (1 << RADIX_BITS) - 1;
    let max = g.iter().map(|e| e.0).max().unwrap_or(0);
    tmp.clear();
    tmp.resize(g.len(), (0, 0.0));
    let mut start = [0u32; 1 << RADIX_BITS];
    let mut shift = 0;
    while shift < 32 && max >> shift != 0 {
        start.fill(0);
        for e in g.iter() {
            start[(e.0 >> shift & MASK) as usize] += 1;
        }
        let mut sum = 0;
        for c in start.iter_mut() {
            let n = *c;
            *c = sum;
            sum += n;
        }
        for e in g.iter() {
            let b = (e.0 >> shift & MASK) as usize;
            tmp[start[b] as usize] = *e;
            start[b] += 1;
        }
        std::mem::swap(g, tmp);
        shift += RADIX_BITS;
    }
}

/// Tests only: a run with this seed loses worker 1 (a panic) after 20 updates.
#[cfg(test)]
pub(crate) const FAIL_SEED: u64 = 0x5eed_0bad_f00d;

/// Runs asynchronous worker `w` of `workers` until the run stops.
pub fn run_async<L: Loss>(loss: L, ctx: &WorkerContext, w: usize, workers: usize, seed: u64) {
    let _exit = ExitGuard(ctx.control);
    let blocks = ctx.partition.blocks();
    let mut rng =
        Xoshiro256PlusPlus::seed_from_u64(seed ^ (w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut sampler = Sampler::new(ctx.data.rows(), w, workers, ctx.sampling);
    let mut s = Scratch::new(blocks);
    let scale = 1.0 / ctx.batch as f64;
    loop {
        if ctx.control.stopped() {
            return;
        }
        if ctx.transport.now() >= ctx.control.max_updates.load(Ordering::Relaxed) {
            ctx.control.stop();
            return;
        }
        if ctx.transport.now() >= ctx.control.hold_at.load(Ordering::Acquire) {
            ctx.control.hold();
        }
        if ctx.control.pause_requested() {
            ctx.control.park();
            continue;
        }
        #[cfg(test)]
        if seed == FAIL_SEED && w == 1 && ctx.transport.now() >= 20 {
            panic!("injected failure of worker 1");
        }
        sampler.fill(&mut rng, &mut s.batch, ctx.batch);
        match ctx.mode {
            BlockMode::OneRandom => {
                let j = rng.random_range(0..blocks) as u32;
                let pulled_at = gradient(loss, ctx, &mut s, scale, |b| b == j);
                push(
                    ctx,
                    BlockId(j),
                    pulled_at,
                    &s.grads[j as usize],
                    s.batch.len(),
                );
            }
            BlockMode::All => {
                let pulled_at = gradient(loss, ctx, &mut s, scale, |_| true);
                for j in 0..blocks {
                    push(
                        ctx,
                        BlockId(j as u32),
                        pulled_at,
                        &s.grads[j],
                        s.batch.len(),
                    );
                }
            }
        }
    }
}

fn push(ctx: &WorkerContext, block: BlockId, pulled_at: u64, grad: &[(u32, f64)], rows: usize) {
    match ctx.transport.push(block, pulled_at, grad) {
        PushOutcome::Applied { .. } => {
            ctx.counters
                .samples
                .fetch_add(rows as u64, Ordering::Relaxed);
        }
        PushOutcome::Stale { .. } => {
            ctx.counters.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// State shared by the workers of a synchronous run.
pub struct SyncRound {
    barrier: Barrier,
    /// Each worker's block gradients of this round.
    parts: Mutex<Vec<Vec<(u32, f64)>>>,
    /// The leader's decision for the next round, read by all after the second barrier:
    /// 0 go on, 1 park, 2 stop.
    decision: AtomicUsize,
}

impl SyncRound {
    pub fn new(workers: usize, blocks: usize) -> Self {
        SyncRound {
            barrier: Barrier::new(workers),
            parts: Mutex::new(vec![Vec::new(); blocks]),
            decision: AtomicUsize::new(0),
        }
    }
}

/// Runs worker `w` of a synchronous run: every round each worker computes the gradient
/// of its share of an N-row minibatch for all blocks; the leader sums them, applies every
/// block's step, and decides whether the next round runs, parks or stops.
pub fn run_sync<L: Loss>(
    loss: L,
    ctx: &WorkerContext,
    round: &SyncRound,
    w: usize,
    workers: usize,
    seed: u64,
) {
    let _exit = ExitGuard(ctx.control);
    let blocks = ctx.partition.blocks();
    let mut rng =
        Xoshiro256PlusPlus::seed_from_u64(seed ^ (w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut sampler = Sampler::new(ctx.data.rows(), w, workers, ctx.sampling);
    let mut s = Scratch::new(blocks);
    // Share the N rows: the first N mod W workers take one more.
    let share = ctx.batch / workers + usize::from(w < ctx.batch % workers);
    let scale = 1.0 / ctx.batch as f64;
    loop {
        sampler.fill(&mut rng, &mut s.batch, share);
        if share > 0 {
            gradient(loss, ctx, &mut s, scale, |_| true);
            let mut parts = round.parts.lock();
            for (acc, g) in parts.iter_mut().zip(&s.grads) {
                acc.extend_from_slice(g);
            }
        }
        if round.barrier.wait().is_leader() {
            let mut parts = round.parts.lock();
            for (j, g) in parts.iter_mut().enumerate() {
                merge_sorted(g, &mut s.sort_tmp);
                let k = ctx.transport.now();
                push(ctx, BlockId(j as u32), k, g, 0);
                g.clear();
            }
            ctx.counters
                .samples
                .fetch_add(ctx.batch as u64, Ordering::Relaxed);
            let done = ctx.control.stopped()
                || ctx.transport.now() >= ctx.control.max_updates.load(Ordering::Relaxed);
            if ctx.transport.now() >= ctx.control.hold_at.load(Ordering::Acquire) {
                ctx.control.hold();
            }
            let decision = if done {
                2
            } else if ctx.control.pause_requested() {
                1
            } else {
                0
            };
            round.decision.store(decision, Ordering::Release);
        }
        round.barrier.wait();
        match round.decision.load(Ordering::Acquire) {
            2 => {
                ctx.control.stop();
                return;
            }
            1 => ctx.control.park(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::loss::Softmax;
    use crate::model::reg::L1;
    use crate::model::Layout;
    use crate::ps::blocks::PartitionKind;
    use crate::ps::blocks::ShardId;
    use crate::ps::shard::{Clock, DelayStats, Shard, ShardApi, ShardSettings, StepSchedule};
    use crate::ps::transport::local::LocalTransport;
    use std::sync::Arc;

    /// The pushed block gradients equal the dense minibatch gradient
    /// `(1/N) sum_r x_r (softmax(z_r) - e_{y_r})^T` at the shards' model, with rows and
    /// features repeated within the minibatch, every block present once per
    /// coordinate, sorted.
    #[test]
    fn block_gradients_match_a_dense_minibatch_gradient() {
        let (d, k) = (40usize, 3usize);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let rows: Vec<(f32, Vec<(u32, f32)>)> = (0..30)
            .map(|_| {
                // Features drawn from a small range so that rows share them.
                let mut f: Vec<u32> = (0..6)
                    .map(|_| rng.random_range(0..12u32) * 3 % d as u32)
                    .collect();
                f.sort_unstable();
                f.dedup();
                let y = rng.random_range(0..k) as f32;
                (
                    y,
                    f.into_iter()
                        .map(|j| (j, rng.random_range(-1.0f32..2.0)))
                        .collect(),
                )
            })
            .collect();
        let data = Dataset::from_rows(d, &rows);
        let layout = Layout {
            features: d,
            classes: k,
            bias: true,
        };
        let blocks = 3;
        let part = BlockPartition::new(layout, 1, blocks, 2, PartitionKind::Hashed, 5);
        let settings = ShardSettings {
            max_delay: None,
            schedule: StepSchedule::Constant { eta: 0.1 },
            alpha: 0.0,
            drift: false,
        };
        let clock = Arc::new(Clock::default());
        let shards: Vec<Arc<dyn ShardApi>> = (0..2)
            .map(|i| {
                Arc::new(Shard::new(
                    ShardId(i),
                    &part,
                    L1 { lambda: 0.0 },
                    settings,
                    clock.clone(),
                    Arc::new(DelayStats::default()),
                )) as Arc<dyn ShardApi>
            })
            .collect();
        let w: Vec<f64> = (0..layout.coords())
            .map(|_| rng.random_range(-0.5..0.5))
            .collect();
        crate::ps::scatter(&part, &shards, &w);
        let transport = LocalTransport::new(shards.clone(), clock);
        let control = Control::new(1, u64::MAX);
        let counters = Counters::default();
        let ctx = WorkerContext {
            data: &data,
            partition: &part,
            transport: &transport,
            control: &control,
            counters: &counters,
            batch: 0,
            sampling: Sampling::Shuffle,
            mode: BlockMode::All,
            snapshot: None,
        };
        let mut mg = MinibatchGradient::new(blocks);
        // Rows repeated in the minibatch, as i.i.d. sampling does.
        let batch = [0, 3, 3, 7, 12, 29, 0, 18, 5, 5, 21];
        let scale = 1.0 / batch.len() as f64;
        mg.compute(Softmax, &ctx, &batch, None);

        let mut dense = vec![0.0; layout.coords()];
        for &i in &batch {
            let row = data.row(i as usize);
            let mut z: Vec<f64> = w[d * k..].to_vec();
            for (f, v) in row.iter() {
                for c in 0..k {
                    z[c] += f64::from(v) * w[f as usize * k + c];
                }
            }
            let m = z.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = z.iter().map(|x| (x - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            let y = data.labels[i as usize] as usize;
            let dz: Vec<f64> = (0..k)
                .map(|c| e[c] / sum - f64::from(u8::from(c == y)))
                .collect();
            for (f, v) in row.iter() {
                for c in 0..k {
                    dense[f as usize * k + c] += scale * f64::from(v) * dz[c];
                }
            }
            for c in 0..k {
                dense[d * k + c] += scale * dz[c];
            }
        }
        let mut seen = vec![false; layout.coords()];
        for j in 0..blocks {
            let g = mg.block(BlockId(j as u32));
            assert!(
                g.windows(2).all(|p| p[0].0 < p[1].0),
                "block {j} not sorted"
            );
            for &(off, v) in g {
                // Map the block coordinate back to the global one.
                let c = (off as usize) % k;
                let row = (0..=d)
                    .find(|&r| {
                        let l = part.locate(r);
                        l.block == j as u32 && l.offset as usize == off as usize - c
                    })
                    .expect("a pushed coordinate belongs to a parameter row");
                let global = row * k + c;
                assert!(!seen[global]);
                seen[global] = true;
                assert!(
                    (v - dense[global]).abs() < 1e-12,
                    "coordinate {global}: {v} vs {}",
                    dense[global]
                );
            }
        }
        // Every coordinate with a nonzero gradient was pushed.
        for (c, &g) in dense.iter().enumerate() {
            assert!(g == 0.0 || seen[c], "coordinate {c} missing");
        }
    }

    #[test]
    fn merge_sums_duplicates_in_order() {
        let mut g = vec![(5, 1.0), (2, 0.5), (5, 2.0), (0, -1.0), (2, 0.25)];
        merge_sorted(&mut g, &mut Vec::new());
        assert_eq!(g, vec![(0, -1.0), (2, 0.75), (5, 3.0)]);
    }

    /// The radix path (long gradients, coordinates over several bytes, duplicates)
    /// equals a comparison sort and a sum per coordinate in the pairs' order.
    #[test]
    fn radix_merge_equals_sort_and_sum() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        let mut tmp = Vec::new();
        for (len, range) in [
            (64, 10u32),
            (500, 1 << 9),
            (3000, 1 << 19),
            (2000, u32::MAX),
        ] {
            let g: Vec<(u32, f64)> = (0..len)
                .map(|_| (rng.random_range(0..range), rng.random_range(-1.0..1.0)))
                .collect();
            let mut want: Vec<(u32, f64)> = Vec::new();
            let mut sorted = g.clone();
            sorted.sort_by_key(|e| e.0);
            for (c, v) in sorted {
                match want.last_mut() {
                    Some(last) if last.0 == c => last.1 += v,
                    _ => want.push((c, v)),
                }
            }
            let mut got = g.clone();
            merge_sorted(&mut got, &mut tmp);
            assert_eq!(got, want, "{len} pairs below {range}");
        }
    }

    #[test]
    fn shuffled_passes_cover_each_share_once_per_pass() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        for (n, workers) in [(20, 3), (1, 1), (2, 2), (1000, 1), (4097, 2), (65536, 3)] {
            for w in 0..workers {
                let mut s = Sampler::new(n, w, workers, Sampling::Shuffle);
                let share: Vec<u32> = (w as u32..n as u32).step_by(workers).collect();
                let mut passes = Vec::new();
                for _ in 0..3 {
                    let mut out = Vec::new();
                    s.fill(&mut rng, &mut out, share.len());
                    let mut seen = out.clone();
                    seen.sort();
                    assert_eq!(seen, share, "n {n}, worker {w} of {workers}");
                    passes.push(out);
                }
                if share.len() > 10 {
                    assert_ne!(passes[0], passes[1], "a new order each pass");
                    assert_ne!(passes[0], share, "shuffled");
                }
            }
        }
    }

    /// On rows sorted by label (the first half positive), every pass's batches of 256
    /// hold as many positives as under a random order: their standard deviation is
    /// sqrt(256 / 4 (1 - 256 / n)) = 7.98 within 15% for each of 40 keys, and the signs
    /// of consecutive draws are uncorrelated. With two rounds instead of four, some keys
    /// gave 4.4 or 17.
    #[test]
    fn shuffled_batches_of_sorted_rows_are_as_mixed_as_random() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        let n = 1usize << 16;
        let want = (256.0 / 4.0 * (1.0 - 256.0 / n as f64)).sqrt();
        for _ in 0..40 {
            let p = Permutation::new(n, &mut rng);
            let (mut counts, mut batch, mut lag, mut prev) = (Vec::new(), 0.0, 0.0, 0.0);
            let mut drawn = 0usize;
            for c in 0..p.domain() {
                let j = p.apply(c) as usize;
                if j >= n {
                    continue;
                }
                let sign = if j < n / 2 { 1.0 } else { -1.0 };
                batch += f64::from(sign > 0.0);
                lag += sign * prev;
                prev = sign;
                drawn += 1;
                if drawn % 256 == 0 {
                    counts.push(batch);
                    batch = 0.0;
                }
            }
            let mean = counts.iter().sum::<f64>() / counts.len() as f64;
            let sd = (counts.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / counts.len() as f64)
                .sqrt();
            assert!((sd / want - 1.0).abs() < 0.15, "sd {sd} vs {want}");
            assert!(
                (lag / n as f64).abs() < 0.02,
                "lag-1 correlation {}",
                lag / n as f64
            );
        }
    }

    /// Where a row lands in a pass is close to uniform: over 4,000 passes over 64 rows,
    /// each row is first about 4000/64 = 62.5 times (a chi-square test, 63 degrees of
    /// freedom, far tail), and two consecutive draws are not the same pair too often.
    #[test]
    fn shuffled_positions_are_close_to_uniform() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
        let (n, passes) = (64usize, 4000usize);
        let mut s = Sampler::new(n, 0, 1, Sampling::Shuffle);
        let mut first = vec![0usize; n];
        let mut pairs = std::collections::HashMap::new();
        let mut out = Vec::new();
        for _ in 0..passes {
            s.fill(&mut rng, &mut out, n);
            first[out[0] as usize] += 1;
            *pairs.entry((out[0], out[1])).or_insert(0usize) += 1;
        }
        let e = passes as f64 / n as f64;
        let chi2: f64 = first.iter().map(|&c| (c as f64 - e).powi(2) / e).sum();
        assert!(chi2 < 120.0, "chi-square {chi2}");
        // 4,032 possible pairs: a pair seen 20 times would mean a few keys dominate.
        assert!(
            pairs.values().all(|&c| c < 20),
            "{:?}",
            pairs.values().max()
        );
    }
}
