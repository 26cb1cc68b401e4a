//! Shards: the server side of the parameter server. A shard owns some blocks and applies
//! each push as one proximal step on the WHOLE block (PAPER.md):
//!
//! `x_j <- prox_{eta_k h_j}(x_j - eta_k G_j)`,
//!
//! where `G_j` is sparse (the coordinates the worker's minibatch touched). The step is
//! applied exactly but lazily: coordinates with zero gradient are not visited; each
//! regularizer group records the point of its block's step history up to which it is
//! current, and when it is next read or touched the skipped steps are applied at once
//! in closed form ([`Regularizer::prox_skipped`]). The history (step sizes and their
//! running sums) is rebased, every group brought up to date, when it is full or when
//! the squared-L2 decay sum grows large, so memory and rounding stay bounded.
//!
//! Concurrency: reads never lock. Each group's `last` index doubles as a sequence lock
//! (a writer marks it busy while it rewrites the group's values) and each block has a
//! generation counter bumped around a rebase; a reader retries if either moved. Pushes
//! to one block are serialized by a mutex; pushes to different blocks run in parallel.
//!
//! Diagonal metric: a shard may scale each coordinate's steps by a fixed factor `d_c`
//! (`x_c <- prox_{eta_k d_c h}(x_c - eta_k d_c G_c)`, see [`crate::model::reg`]), for
//! the regularizers whose lazy closed form stays exact under it. The factors are set
//! once, at construction, and shared by every step, so the history needs no change.
//!
//! Drift: with variance reduction (SVRG) every step adds a per-coordinate constant
//! `a_c` to the pushed gradient, `x_c <- prox(x_c - eta_k d_c (G_c + a_c))` on EVERY
//! coordinate of the block; untouched coordinates take it lazily in closed form
//! ([`Regularizer::prox_skipped_drift`]). The drift is replaced only at a snapshot,
//! with the workers paused, after every coordinate is brought up to date.
//!
//! Delay: every push carries the global step at which its worker pulled; the shard
//! computes the delay against the global step counter ([`Clock`]), rejects the push
//! when the delay exceeds `max_delay` (tau), and records it in [`DelayStats`].
//!
//! The shard knows nothing of transports or files: one implementation serves them all.

use std::sync::atomic::{fence, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::hint::prefetch;
use crate::model::nonconvex_deriv;
use crate::model::reg::{drift_unregularized, Regularizer, StepSums};
use crate::ps::blocks::{BlockId, BlockPartition, Loc, ShardId};

/// Marks a group whose values a writer is rewriting.
const BUSY: u16 = u16::MAX;

/// Largest history before a rebase, in steps: a group's currency is a 16-bit history
/// point below [`BUSY`]. A block of more than half a million groups rebases after this
/// many steps rather than after one per [`GROUPS_PER_HISTORY_STEP`] groups; a rebase
/// then costs a few milliseconds every 65 thousand steps of the block.
const MAX_HISTORY: usize = BUSY as usize - 1;

/// A block's history holds one step per this many groups (at least 1024 steps): a
/// rebase visits every group, so it costs this many group updates per step in the
/// long run (a push touches about a thousand), while the history's 32 bytes per step
/// stay a small fraction of the cells' 16 bytes per coordinate. With SVRG the history
/// is emptied at every snapshot anyway.
const GROUPS_PER_HISTORY_STEP: usize = 8;

/// Rebase once the squared-L2 decay sum exceeds this, so that `exp(log_decay)` in the
/// elastic-net closed form stays far from overflow and cancellation.
const MAX_LOG_DECAY: f64 = 40.0;

/// The global step counter k: one tick per applied block update, anywhere.
#[derive(Debug, Default)]
pub struct Clock(AtomicU64);

impl Clock {
    /// A clock starting at `k`.
    pub fn starting_at(k: u64) -> Self {
        Clock(AtomicU64::new(k))
    }

    /// The current step k.
    #[inline]
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn tick(&self) -> u64 {
        self.0.fetch_add(1, Ordering::AcqRel)
    }
}

/// Step size as a function of the global step k.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StepSchedule {
    /// eta_k = eta.
    Constant { eta: f64 },
    /// eta_k = eta0 / sqrt(1 + k / t0).
    Decay { eta0: f64, t0: f64 },
}

impl StepSchedule {
    /// The step size at global step k.
    #[inline]
    pub fn eta(&self, k: u64) -> f64 {
        match *self {
            StepSchedule::Constant { eta } => eta,
            StepSchedule::Decay { eta0, t0 } => eta0 / (1.0 + k as f64 / t0).sqrt(),
        }
    }

    /// The initial step size.
    pub fn eta0(&self) -> f64 {
        self.eta(0)
    }
}

/// What the shard did with a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Applied as global step `k` (the step counter before this update).
    Applied { delay: u64, k: u64 },
    /// Rejected: computed at a model older than the delay bound allows.
    Stale { delay: u64 },
}

/// Number of delay histogram buckets: bucket 0 holds delay 0, bucket b >= 1 holds delays
/// in [2^(b-1), 2^b).
pub const DELAY_BUCKETS: usize = 40;

/// Delay statistics of applied and rejected pushes, shared by the shards of a run.
#[derive(Debug)]
pub struct DelayStats {
    buckets: [AtomicU64; DELAY_BUCKETS],
    applied: AtomicU64,
    rejected: AtomicU64,
    delay_sum: AtomicU64,
    delay_max: AtomicU64,
}

impl Default for DelayStats {
    fn default() -> Self {
        DelayStats {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            applied: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            delay_sum: AtomicU64::new(0),
            delay_max: AtomicU64::new(0),
        }
    }
}

/// A plain copy of [`DelayStats`], for reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DelaySummary {
    /// `(lo, hi, count)`: pushes applied with lo <= delay <= hi.
    pub histogram: Vec<(u64, u64, u64)>,
    pub applied: u64,
    pub rejected: u64,
    pub mean: f64,
    pub max: u64,
}

impl DelayStats {
    fn record(&self, delay: u64, applied: bool) {
        if !applied {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let b = ((64 - delay.leading_zeros()) as usize).min(DELAY_BUCKETS - 1);
        self.buckets[b].fetch_add(1, Ordering::Relaxed);
        self.applied.fetch_add(1, Ordering::Relaxed);
        self.delay_sum.fetch_add(delay, Ordering::Relaxed);
        self.delay_max.fetch_max(delay, Ordering::Relaxed);
    }

    /// The counters as plain numbers (buckets, then applied, rejected, delay sum and
    /// maximum), to send to another process and [`DelayStats::add_raw`] there.
    pub fn raw(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        for c in [
            &self.applied,
            &self.rejected,
            &self.delay_sum,
            &self.delay_max,
        ] {
            v.push(c.load(Ordering::Relaxed));
        }
        v
    }

    /// Adds another shard's [`DelayStats::raw`] counters; false if `raw` has the wrong
    /// length.
    pub fn add_raw(&self, raw: &[u64]) -> bool {
        if raw.len() != DELAY_BUCKETS + 4 {
            return false;
        }
        for (b, &x) in self.buckets.iter().zip(raw) {
            b.fetch_add(x, Ordering::Relaxed);
        }
        let t = &raw[DELAY_BUCKETS..];
        self.applied.fetch_add(t[0], Ordering::Relaxed);
        self.rejected.fetch_add(t[1], Ordering::Relaxed);
        self.delay_sum.fetch_add(t[2], Ordering::Relaxed);
        self.delay_max.fetch_max(t[3], Ordering::Relaxed);
        true
    }

    /// Pushes rejected so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// A snapshot for reports.
    pub fn summary(&self) -> DelaySummary {
        let applied = self.applied.load(Ordering::Relaxed);
        let histogram = self
            .buckets
            .iter()
            .enumerate()
            .filter_map(|(b, c)| {
                let c = c.load(Ordering::Relaxed);
                let (lo, hi) = if b == 0 {
                    (0, 0)
                } else {
                    (1u64 << (b - 1), (1u64 << b) - 1)
                };
                (c > 0).then_some((lo, hi, c))
            })
            .collect();
        DelaySummary {
            histogram,
            applied,
            rejected: self.rejected(),
            mean: if applied > 0 {
                self.delay_sum.load(Ordering::Relaxed) as f64 / applied as f64
            } else {
                0.0
            },
            max: self.delay_max.load(Ordering::Relaxed),
        }
    }
}

/// Settings every shard of a run shares.
#[derive(Clone, Copy, Debug)]
pub struct ShardSettings {
    /// tau: pushes with a larger delay are rejected. `None`: no bound.
    pub max_delay: Option<u64>,
    pub schedule: StepSchedule,
    /// Weight of the smooth nonconvex term `alpha x^2/(1+x^2)`, applied by the shard to
    /// every coordinate of the block at each step (its gradient is dense), which turns
    /// the lazy update off for such runs.
    pub alpha: f64,
    /// Keep a per-coordinate drift (see the module doc), set by [`ShardApi::set_drift`].
    pub drift: bool,
}

/// The server-side operations every transport uses. Object safe, so that transports hold
/// shards of any regularizer.
pub trait ShardApi: Send + Sync {
    /// This shard's id.
    fn id(&self) -> ShardId;
    /// Reads `out.len()` coordinates of `block` from `offset`, all skipped steps applied.
    fn read(&self, block: BlockId, offset: u32, out: &mut [f64]);
    /// Reads `classes` coordinates at each of `rows` whose block this shard owns into
    /// `out` (row-major, `rows.len() * classes` values; the others are left as they
    /// are). Faster than [`ShardApi::read`] per row: one call, and the memory of the
    /// rows ahead is fetched while the current one is read.
    fn read_rows(&self, rows: &[Loc], classes: usize, out: &mut [f64]);
    /// Applies one push: a sparse block gradient `(local coordinate, value)` sorted by
    /// coordinate without duplicates, computed at a model pulled at global step
    /// `pulled_at`.
    fn apply(&self, block: BlockId, pulled_at: u64, grad: &[(u32, f64)]) -> PushOutcome;
    /// All coordinates of `block`, up to date (a local shard brings the block up to
    /// date in place, so a push to it waits meanwhile).
    fn snapshot(&self, block: BlockId) -> Vec<f64>;
    /// Overwrites all coordinates of `block` (warm start, resume). Not concurrent with
    /// pushes.
    fn load(&self, block: BlockId, values: &[f64]);
    /// All coordinates of `block`, brought up to date and read in place: for a reader
    /// that runs while no push is in flight (the workers paused), without the copy of
    /// [`ShardApi::snapshot`]. `None` where the values are not in this process (a remote
    /// shard): take a snapshot instead.
    fn values(&self, block: BlockId) -> Option<BlockValues<'_>> {
        let _ = block;
        None
    }
    /// Brings every coordinate of `block` up to date, then replaces its drift with
    /// `drift` (one value per coordinate). Not concurrent with pushes.
    ///
    /// # Panics
    /// If the shard was built without `drift` in its settings.
    fn set_drift(&self, block: BlockId, drift: &[f64]);
}

/// A shard owning the blocks `j` with `j mod S == id`.
pub struct Shard<R: Regularizer> {
    id: ShardId,
    shards: usize,
    reg: R,
    settings: ShardSettings,
    blocks: Vec<Block>,
    clock: Arc<Clock>,
    stats: Arc<DelayStats>,
}

/// Everything a read of one coordinate touches, in a quarter of a cache line: rows are
/// read at random, so one line per coordinate instead of one per array is most of the
/// cost of a pull on a large model, and 16 bytes per coordinate are twice the model's 8
/// (the shards are most of the trainer's memory besides the data).
///
/// The value is kept in full. The drift is kept as f32 ([`stored_drift`]) and the step
/// factor as a bfloat16, 8 significant bits ([`stored_scale`]): the rounded values are
/// the drift and the metric every step of the shard uses, so the lazy closed forms stay
/// exact for them; a diagonal metric rounded by at most 0.4% is still one, and the
/// drift's rounding is below the f32 rounding of the derivatives it is summed from.
#[repr(C, align(16))]
struct Cell {
    /// The value's bits.
    x: AtomicU64,
    /// The drift `a_c`'s f32 bits (0 without one); replaced only with the writer lock
    /// held and no push in flight.
    drift: AtomicU32,
    /// The step factor `d_c`'s bfloat16 bits (1 without a metric).
    scale: u16,
    /// In the group's first cell: the history point up to which the group is current,
    /// or [`BUSY`]. Unused in the others.
    last: AtomicU16,
}

/// A block's coordinates read in place ([`ShardApi::values`]).
#[derive(Clone, Copy)]
pub struct BlockValues<'a> {
    cells: &'a [Cell],
}

impl BlockValues<'_> {
    /// Coordinate `c`.
    #[inline(always)]
    pub fn get(&self, c: usize) -> f64 {
        ld(&self.cells[c].x)
    }

    /// Asks the CPU to fetch coordinate `c`, if it exists.
    #[inline(always)]
    pub fn prefetch(&self, c: usize) {
        if let Some(cell) = self.cells.get(c) {
            prefetch(cell);
        }
    }
}

/// Bytes per coordinate of a block's cells.
pub(crate) const CELL_BYTES: u64 = std::mem::size_of::<Cell>() as u64;

/// The drift a shard keeps for `a`: rounded to f32.
pub fn stored_drift(a: f64) -> f64 {
    a as f32 as f64
}

/// The step factor a shard keeps for `d > 0`: clamped to the normal bfloat16 range
/// (about 1.2e-38 to 3.4e38, far outside any column metric's) and rounded to the nearest
/// bfloat16 (8 significant bits), ties to even.
pub fn stored_scale(d: f64) -> f64 {
    unbf16(bf16(d))
}

/// The smallest and largest positive normal bfloat16s.
const BF16_MIN: u16 = 0x0080;
const BF16_MAX: u16 = 0x7F7F;

/// The bfloat16 bits nearest to `d` (positive; clamped to the normal range, so never 0
/// or infinite): the f32 rounding's result, corrected by its neighbours where rounding
/// twice (f64 to f32 to bfloat16) missed the nearest.
fn bf16(d: f64) -> u16 {
    let d = d.clamp(unbf16(BF16_MIN), unbf16(BF16_MAX));
    let b = (d as f32).to_bits();
    let h = (((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16).clamp(BF16_MIN, BF16_MAX);
    let err = |h: u16| (unbf16(h) - d).abs();
    [
        h.saturating_sub(1).max(BF16_MIN),
        h.saturating_add(1).min(BF16_MAX),
    ]
    .into_iter()
    .fold(h, |best, c| {
        let (e, eb) = (err(c), err(best));
        if e < eb || (e == eb && c % 2 == 0 && best % 2 == 1) {
            c
        } else {
            best
        }
    })
}

#[inline]
fn unbf16(h: u16) -> f64 {
    f32::from_bits(u32::from(h) << 16) as f64
}

impl Cell {
    #[inline]
    fn drift(&self) -> f64 {
        f32::from_bits(self.drift.load(Ordering::Relaxed)) as f64
    }

    #[inline]
    fn scale(&self) -> f64 {
        unbf16(self.scale)
    }
}

/// One block: values, per-group currency, and the history of its steps.
struct Block {
    /// Coordinates per regularizer group.
    gl: usize,
    /// Groups `bias_groups.0 .. bias_groups.1` hold the intercept: never regularized.
    bias_groups: (usize, usize),
    cells: Box<[Cell]>,
    /// Steps recorded since the last rebase, published with Release.
    hist_len: AtomicU32,
    /// Odd while a rebase rewrites the block.
    generation: AtomicU64,
    etas: Box<[AtomicU64]>,
    sums: Box<[[AtomicU64; 3]]>,
    writer: Mutex<Vec<f64>>,
    /// Whether the cells hold step factors (a diagonal metric; only with groups of 1).
    scaled: bool,
    /// Whether the cells hold a drift (only with groups of 1).
    drifting: bool,
}

/// How many coordinates ahead [`ShardApi::read_rows`] and a push prefetch.
const PREFETCH_AHEAD: usize = 12;

#[inline]
fn ld(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

#[inline]
fn st(a: &AtomicU64, v: f64) {
    a.store(v.to_bits(), Ordering::Relaxed)
}

impl Block {
    fn new(
        coords: usize,
        gl: usize,
        bias_groups: (usize, usize),
        scale: Option<Box<[f64]>>,
        drift: bool,
    ) -> Self {
        let groups = coords / gl;
        let cap = (groups / GROUPS_PER_HISTORY_STEP).clamp(1024, MAX_HISTORY);
        // A metric or a drift is kept per coordinate and read as a group of one.
        assert!(gl == 1 || (scale.is_none() && !drift));
        let cells = (0..coords)
            .map(|c| Cell {
                x: AtomicU64::new(0),
                drift: AtomicU32::new(0),
                scale: bf16(scale.as_ref().map_or(1.0, |s| s[c])),
                last: AtomicU16::new(0),
            })
            .collect();
        Block {
            gl,
            bias_groups,
            cells,
            hist_len: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            // Zeroed allocations: the system's fresh zero pages, resident only once a
            // step is recorded there (with SVRG a history is emptied at every snapshot,
            // long before it fills).
            etas: bytemuck::zeroed_slice_box(cap),
            sums: bytemuck::zeroed_slice_box(cap + 1),
            writer: Mutex::new(vec![0.0; gl]),
            scaled: scale.is_some(),
            drifting: drift,
        }
    }

    /// The drift of coordinate `c`, 0 without one.
    #[inline]
    fn drift_at(&self, c: usize) -> f64 {
        self.cells[c].drift()
    }

    /// The step factors of group `g`, if the block has a metric (groups of 1 then).
    #[inline]
    fn group_scale(&self, g: usize) -> Option<[f64; 1]> {
        self.scaled.then(|| [self.cells[g].scale()])
    }

    /// Group `g`'s currency: its first cell's `last`.
    #[inline]
    fn last(&self, g: usize) -> &AtomicU16 {
        &self.cells[g * self.gl].last
    }

    /// The cells of group `g`.
    #[inline]
    fn group(&self, g: usize) -> &[Cell] {
        &self.cells[g * self.gl..(g + 1) * self.gl]
    }

    /// Applies the skipped steps `from..to` with the drift to group `g` (one coordinate
    /// per group: drift needs [`Regularizer::DRIFT`]). Reads the history's running sums
    /// directly, so a lock-free reader must validate afterwards.
    #[inline]
    fn skip_drift<R: Regularizer>(
        &self,
        reg: &R,
        g: usize,
        buf: &mut [f64],
        from: usize,
        to: usize,
    ) {
        let eta_sum = |t: usize| ld(&self.sums[t][0]);
        let bias = self.is_bias(g);
        for (i, v) in buf.iter_mut().enumerate() {
            let c = g * self.gl + i;
            let a = self.drift_at(c);
            let d = self.cells[c].scale();
            *v = if bias {
                drift_unregularized(*v, a, d, from, to, &eta_sum)
            } else {
                reg.prox_skipped_drift(*v, a, d, from, to, &eta_sum)
            };
        }
    }

    /// Applies the skipped steps between history points `a` and `b` to group `g`.
    #[inline]
    fn skip<R: Regularizer>(
        &self,
        reg: &R,
        g: usize,
        buf: &mut [f64],
        etas: &[f64],
        a: StepSums,
        b: StepSums,
    ) {
        match self.group_scale(g) {
            None => reg.prox_skipped(buf, etas, a, b),
            Some(d) => reg.prox_skipped_scaled(buf, &d, etas, a, b),
        }
    }

    fn groups(&self) -> usize {
        self.cells.len() / self.gl
    }

    #[inline]
    fn is_bias(&self, g: usize) -> bool {
        g >= self.bias_groups.0 && g < self.bias_groups.1
    }

    #[inline]
    fn sums_at(&self, t: usize) -> StepSums {
        let s = &self.sums[t];
        StepSums {
            eta: ld(&s[0]),
            log_decay: ld(&s[1]),
            weighted_eta: ld(&s[2]),
        }
    }

    fn set_sums(&self, t: usize, v: StepSums) {
        let s = &self.sums[t];
        st(&s[0], v.eta);
        st(&s[1], v.log_decay);
        st(&s[2], v.weighted_eta);
    }

    /// Applies the steps `from..to` of the history to group `g`'s values in `buf`.
    #[inline]
    fn catch_up<R: Regularizer>(&self, reg: &R, g: usize, buf: &mut [f64], from: usize, to: usize) {
        if from >= to {
            return;
        }
        if self.drifting {
            self.skip_drift(reg, g, buf, from, to);
            return;
        }
        if self.is_bias(g) {
            return;
        }
        let (a, b) = (self.sums_at(from), self.sums_at(to));
        if R::STEP_LIST {
            let etas: Vec<f64> = self.etas[from..to].iter().map(ld).collect();
            self.skip(reg, g, buf, &etas, a, b);
        } else {
            self.skip(reg, g, buf, &[], a, b);
        }
    }

    /// Reads group `g` into `buf`, up to date, without locking: the groups that
    /// [`Block::read_one`] does not read (a drift always takes that path).
    fn read_group<R: Regularizer>(&self, reg: &R, g: usize, buf: &mut [f64]) {
        debug_assert!(!self.drifting);
        loop {
            let gen = self.generation.load(Ordering::Acquire);
            let l1 = self.last(g).load(Ordering::Acquire);
            if gen & 1 == 1 || l1 == BUSY {
                std::hint::spin_loop();
                continue;
            }
            let t = self.hist_len.load(Ordering::Acquire);
            for (v, a) in buf.iter_mut().zip(self.group(g)) {
                *v = ld(&a.x);
            }
            // Copy what the closed form needs before validating the read.
            let span =
                (u32::from(l1) < t).then(|| (self.sums_at(l1 as usize), self.sums_at(t as usize)));
            let etas: Vec<f64> = if R::STEP_LIST && u32::from(l1) < t {
                self.etas[l1 as usize..t as usize].iter().map(ld).collect()
            } else {
                Vec::new()
            };
            fence(Ordering::Acquire);
            if self.last(g).load(Ordering::Relaxed) != l1
                || self.generation.load(Ordering::Relaxed) != gen
            {
                continue;
            }
            if let Some((a, b)) = span {
                if !self.is_bias(g) {
                    self.skip(reg, g, buf, &etas, a, b);
                }
            }
            return;
        }
    }

    /// Whether reads, pushes and rebases take the scalar path ([`Block::catch_up_one`]):
    /// one-coordinate groups whose closed form needs no list of steps (a drift's never
    /// does).
    #[inline]
    fn scalar<R: Regularizer>(&self) -> bool {
        self.gl == 1 && (self.drifting || !R::STEP_LIST)
    }

    /// Reads coordinate `c` of a block of one-coordinate groups, up to date, without
    /// locking: [`Block::read_group`] for one value, with no slices and the closed form
    /// inlined. This is most of a pull's work.
    #[inline]
    fn read_one<R: Regularizer>(&self, reg: &R, c: usize) -> f64 {
        debug_assert_eq!(self.gl, 1);
        if !self.scalar::<R>() {
            let mut v = [0.0];
            self.read_group(reg, c, &mut v);
            return v[0];
        }
        let cell = &self.cells[c];
        loop {
            let gen = self.generation.load(Ordering::Acquire);
            let l1 = cell.last.load(Ordering::Acquire);
            if gen & 1 == 1 || l1 == BUSY {
                std::hint::spin_loop();
                continue;
            }
            let t = self.hist_len.load(Ordering::Acquire);
            // On torn data the closed form computes garbage (never panics) and the read
            // retries.
            let v = self.catch_up_one(reg, c, ld(&cell.x), l1 as usize, t as usize);
            fence(Ordering::Acquire);
            if cell.last.load(Ordering::Relaxed) != l1
                || self.generation.load(Ordering::Relaxed) != gen
            {
                continue;
            }
            return v;
        }
    }

    /// Coordinate `c` of a block of one-coordinate groups, value `x` at history point
    /// `from`, brought to point `to`: [`Block::catch_up`] for one value. Not for a
    /// regularizer that needs the list of steps without a drift.
    #[inline(always)]
    fn catch_up_one<R: Regularizer>(
        &self,
        reg: &R,
        c: usize,
        x: f64,
        from: usize,
        to: usize,
    ) -> f64 {
        debug_assert!(self.scalar::<R>());
        if from >= to {
            return x;
        }
        let cell = &self.cells[c];
        if self.drifting {
            let (a, d) = (cell.drift(), cell.scale());
            let eta_sum = |t: usize| ld(&self.sums[t][0]);
            if self.is_bias(c) {
                drift_unregularized(x, a, d, from, to, &eta_sum)
            } else {
                reg.prox_skipped_drift(x, a, d, from, to, &eta_sum)
            }
        } else if self.is_bias(c) {
            x
        } else {
            let mut v = [x];
            self.skip(reg, c, &mut v, &[], self.sums_at(from), self.sums_at(to));
            v[0]
        }
    }

    /// Asks the CPU to fetch the memory that reading coordinate `c` touches.
    #[inline]
    fn prefetch(&self, c: usize) {
        prefetch(&self.cells[c]);
    }

    /// Writes group `g` as current at history point `t` (writer holds the mutex).
    #[inline]
    fn publish(&self, g: usize, vals: &[f64], t: u32) {
        self.last(g).store(BUSY, Ordering::Relaxed);
        fence(Ordering::Release);
        for (a, &v) in self.group(g).iter().zip(vals) {
            st(&a.x, v);
        }
        debug_assert!(t < u32::from(BUSY));
        self.last(g).store(t as u16, Ordering::Release);
    }

    /// Loads group `g` (writer side) and brings it to history point `t`.
    #[inline]
    fn materialize<R: Regularizer>(&self, reg: &R, g: usize, t: usize, buf: &mut [f64]) {
        for (v, a) in buf.iter_mut().zip(self.group(g)) {
            *v = ld(&a.x);
        }
        let l = self.last(g).load(Ordering::Relaxed) as usize;
        self.catch_up(reg, g, buf, l, t);
    }

    /// Appends a step of size `eta` to the history; rebases when needed.
    fn record_step<R: Regularizer>(&self, reg: &R, t: usize, eta: f64, buf: &mut [f64]) {
        st(&self.etas[t], eta);
        let next = reg.advance(self.sums_at(t), eta);
        self.set_sums(t + 1, next);
        self.hist_len.store((t + 1) as u32, Ordering::Release);
        if t + 1 >= self.etas.len() || next.log_decay > MAX_LOG_DECAY {
            self.rebase(reg, t + 1, buf);
        }
    }

    /// Brings every group to history point `t` and empties the history.
    fn rebase<R: Regularizer>(&self, reg: &R, t: usize, buf: &mut [f64]) {
        // An empty history: every group was published at point 0 since the last rebase
        // (pushes record a step after publishing at its end point), so all are current.
        // Snapshots and evaluations ask for a rebase of every block; this spares a pass
        // over the cells when nothing was pushed since.
        if t == 0 {
            debug_assert!((0..self.groups()).all(|g| self.last(g).load(Ordering::Relaxed) == 0));
            return;
        }
        let gen = self.generation.load(Ordering::Relaxed);
        self.generation.store(gen + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        if self.scalar::<R>() {
            for (c, cell) in self.cells.iter().enumerate() {
                let last = cell.last.load(Ordering::Relaxed) as usize;
                st(&cell.x, self.catch_up_one(reg, c, ld(&cell.x), last, t));
                cell.last.store(0, Ordering::Relaxed);
            }
        } else {
            for g in 0..self.groups() {
                self.materialize(reg, g, t, buf);
                for (a, &v) in self.group(g).iter().zip(buf.iter()) {
                    st(&a.x, v);
                }
                self.last(g).store(0, Ordering::Relaxed);
            }
        }
        self.set_sums(0, StepSums::default());
        self.hist_len.store(0, Ordering::Relaxed);
        self.generation.store(gen + 2, Ordering::Release);
    }
}

impl<R: Regularizer> Shard<R> {
    /// Shard `id` of `partition.shards()`, all coordinates zero.
    pub fn new(
        id: ShardId,
        partition: &BlockPartition,
        reg: R,
        settings: ShardSettings,
        clock: Arc<Clock>,
        stats: Arc<DelayStats>,
    ) -> Self {
        Self::with_metric(id, partition, reg, settings, clock, stats, None)
    }

    /// Like [`Shard::new`], with steps in the diagonal metric `diag(1/d)`: `metric`
    /// holds one factor `d > 0` per parameter row in [`crate::model::Layout`] order (the
    /// intercept's last), shared by the row's `classes` coordinates.
    ///
    /// # Panics
    /// If a metric is given for a regularizer without [`Regularizer::DIAGONAL_METRIC`]
    /// (the config check refuses that combination) or has the wrong length.
    pub fn with_metric(
        id: ShardId,
        partition: &BlockPartition,
        reg: R,
        settings: ShardSettings,
        clock: Arc<Clock>,
        stats: Arc<DelayStats>,
        metric: Option<&[f64]>,
    ) -> Self {
        let gl = reg.group_len();
        assert!(
            !settings.drift || (R::DRIFT && gl == 1),
            "this regularizer has no exact lazy prox with a drift"
        );
        let mut scales: Vec<Option<Vec<f64>>> = vec![None; partition.blocks()];
        if let Some(d) = metric {
            assert!(
                R::DIAGONAL_METRIC,
                "this regularizer has no exact lazy prox in a diagonal metric"
            );
            assert_eq!(d.len(), partition.layout().rows());
            let k = partition.layout().classes;
            for (j, s) in scales.iter_mut().enumerate() {
                // Padding coordinates are never touched; 1 keeps them inert.
                *s = Some(vec![1.0; partition.block_coords(j)]);
            }
            partition.for_each_row(|row, loc| {
                let s = scales[loc.block as usize].as_mut().expect("filled above");
                s[loc.offset as usize..loc.offset as usize + k].fill(d[row]);
            });
        }
        let bias = partition.bias_loc();
        let classes = partition.layout().classes;
        let shards = partition.shards();
        let blocks = (0..partition.blocks())
            .filter(|j| j % shards == id.0 as usize)
            .map(|j| {
                let coords = partition.block_coords(j);
                debug_assert_eq!(coords % gl, 0);
                let bias_groups = if bias.block as usize == j {
                    let lo = bias.offset as usize;
                    (lo / gl, (lo + classes).div_ceil(gl))
                } else {
                    (0, 0)
                };
                Block::new(
                    coords,
                    gl,
                    bias_groups,
                    scales[j].take().map(Vec::into_boxed_slice),
                    settings.drift,
                )
            })
            .collect();
        Shard {
            id,
            shards,
            reg,
            settings,
            blocks,
            clock,
            stats,
        }
    }

    #[inline]
    fn block(&self, b: BlockId) -> &Block {
        &self.blocks[b.0 as usize / self.shards]
    }

    /// Block `b` if this shard owns it (no division with one shard).
    #[inline]
    fn owned(&self, b: u32) -> Option<&Block> {
        if self.shards == 1 {
            return self.blocks.get(b as usize);
        }
        let b = b as usize;
        (b % self.shards == self.id.0 as usize).then(|| &self.blocks[b / self.shards])
    }

    /// Dense step: every group of the block, with the nonconvex term's gradient.
    fn apply_dense(&self, blk: &Block, t: usize, eta: f64, grad: &[(u32, f64)], buf: &mut [f64]) {
        let alpha = self.settings.alpha;
        let mut next = grad.iter().peekable();
        for g in 0..blk.groups() {
            blk.materialize(&self.reg, g, t, buf);
            let base = g * blk.gl;
            let bias = blk.is_bias(g);
            let d = blk.group_scale(g);
            for (i, v) in buf.iter_mut().enumerate() {
                let c = (base + i) as u32;
                let mut gc = if bias {
                    0.0
                } else {
                    nonconvex_deriv(alpha, *v)
                };
                while let Some(&&(cc, gv)) = next.peek() {
                    if cc != c {
                        break;
                    }
                    gc += gv;
                    next.next();
                }
                gc += blk.drift_at(base + i);
                match d {
                    None => *v -= eta * gc,
                    Some(d) => *v -= eta * d[i] * gc,
                }
            }
            if !bias {
                match d {
                    None => self.reg.prox(eta, buf),
                    Some(d) => self.reg.prox_scaled(eta, &d, buf),
                }
            }
            blk.publish(g, buf, (t + 1) as u32);
        }
    }

    /// [`Shard::apply_sparse`] for a block of one-coordinate groups (the regularizers
    /// with a closed form that needs no step list, or any with a drift): one value per
    /// entry, no slices, the closed form inlined.
    fn apply_sparse_one(&self, blk: &Block, t: usize, eta: f64, grad: &[(u32, f64)]) {
        for (i, &(c, gc)) in grad.iter().enumerate() {
            if let Some(&(n, _)) = grad.get(i + PREFETCH_AHEAD) {
                blk.prefetch(n as usize);
            }
            let c = c as usize;
            let cell = &blk.cells[c];
            let last = cell.last.load(Ordering::Relaxed) as usize;
            let x = blk.catch_up_one(&self.reg, c, ld(&cell.x), last, t);
            let g = gc + cell.drift();
            let mut v = [if blk.scaled {
                x - eta * cell.scale() * g
            } else {
                x - eta * g
            }];
            if !blk.is_bias(c) {
                if blk.scaled {
                    self.reg.prox_scaled(eta, &[cell.scale()], &mut v);
                } else {
                    self.reg.prox(eta, &mut v);
                }
            }
            blk.publish(c, &v, (t + 1) as u32);
        }
    }

    /// Sparse step: only the groups the gradient touches; the rest catch up lazily.
    fn apply_sparse(&self, blk: &Block, t: usize, eta: f64, grad: &[(u32, f64)], buf: &mut [f64]) {
        let gl = blk.gl;
        let mut i = 0;
        while i < grad.len() {
            if let Some(&(c, _)) = grad.get(i + PREFETCH_AHEAD) {
                blk.prefetch(c as usize);
            }
            let g = grad[i].0 as usize / gl;
            blk.materialize(&self.reg, g, t, buf);
            let base = g * gl;
            let d = blk.group_scale(g);
            while i < grad.len() && grad[i].0 as usize / gl == g {
                let c = grad[i].0 as usize - base;
                let gc = grad[i].1 + blk.drift_at(base + c);
                match d {
                    None => buf[c] -= eta * gc,
                    Some(d) => buf[c] -= eta * d[c] * gc,
                }
                i += 1;
            }
            if !blk.is_bias(g) {
                match d {
                    None => self.reg.prox(eta, buf),
                    Some(d) => self.reg.prox_scaled(eta, &d, buf),
                }
            }
            blk.publish(g, buf, (t + 1) as u32);
        }
    }
}

impl<R: Regularizer> ShardApi for Shard<R> {
    fn id(&self) -> ShardId {
        self.id
    }

    fn read(&self, block: BlockId, offset: u32, out: &mut [f64]) {
        let blk = self.block(block);
        let gl = blk.gl;
        let offset = offset as usize;
        if gl == 1 {
            for (i, o) in out.iter_mut().enumerate() {
                *o = blk.read_one(&self.reg, offset + i);
            }
            return;
        }
        let mut buf = vec![0.0; gl];
        let end = offset + out.len();
        let mut c = offset;
        while c < end {
            let g = c / gl;
            blk.read_group(&self.reg, g, &mut buf);
            let stop = ((g + 1) * gl).min(end);
            out[c - offset..stop - offset].copy_from_slice(&buf[c - g * gl..stop - g * gl]);
            c = stop;
        }
    }

    fn read_rows(&self, rows: &[Loc], classes: usize, out: &mut [f64]) {
        for (i, (loc, o)) in rows.iter().zip(out.chunks_exact_mut(classes)).enumerate() {
            if let Some(next) = rows.get(i + PREFETCH_AHEAD) {
                if let Some(b) = self.owned(next.block) {
                    b.prefetch(next.offset as usize);
                }
            }
            let Some(blk) = self.owned(loc.block) else {
                continue;
            };
            if blk.gl == 1 {
                for (c, v) in o.iter_mut().enumerate() {
                    *v = blk.read_one(&self.reg, loc.offset as usize + c);
                }
            } else {
                self.read(BlockId(loc.block), loc.offset, o);
            }
        }
    }

    fn apply(&self, block: BlockId, pulled_at: u64, grad: &[(u32, f64)]) -> PushOutcome {
        debug_assert!(grad.windows(2).all(|w| w[0].0 < w[1].0));
        let blk = self.block(block);
        let mut buf = blk.writer.lock();
        let k = self.clock.now();
        let delay = k.saturating_sub(pulled_at);
        if self.settings.max_delay.is_some_and(|tau| delay > tau) {
            self.stats.record(delay, false);
            return PushOutcome::Stale { delay };
        }
        let eta = self.settings.schedule.eta(k);
        let t = blk.hist_len.load(Ordering::Relaxed) as usize;
        if self.settings.alpha > 0.0 {
            self.apply_dense(blk, t, eta, grad, &mut buf);
        } else if blk.scalar::<R>() {
            self.apply_sparse_one(blk, t, eta, grad);
        } else {
            self.apply_sparse(blk, t, eta, grad, &mut buf);
        }
        blk.record_step(&self.reg, t, eta, &mut buf);
        let k = self.clock.tick();
        self.stats.record(delay, true);
        PushOutcome::Applied { delay, k }
    }

    fn snapshot(&self, block: BlockId) -> Vec<f64> {
        // Brought up to date in place (a rebase, under the writer lock) rather than
        // read through the closed form: the same work once, after which the reads
        // below, an SVRG drift's rebase and the next pulls skip no steps.
        let blk = self.block(block);
        let mut buf = blk.writer.lock();
        let t = blk.hist_len.load(Ordering::Relaxed) as usize;
        blk.rebase(&self.reg, t, &mut buf);
        blk.cells.iter().map(|c| ld(&c.x)).collect()
    }

    fn values(&self, block: BlockId) -> Option<BlockValues<'_>> {
        // Brought up to date as for a snapshot; the values stay current until the next
        // push.
        let blk = self.block(block);
        let mut buf = blk.writer.lock();
        let t = blk.hist_len.load(Ordering::Relaxed) as usize;
        blk.rebase(&self.reg, t, &mut buf);
        Some(BlockValues { cells: &blk.cells })
    }

    fn set_drift(&self, block: BlockId, drift: &[f64]) {
        let blk = self.block(block);
        let mut buf = blk.writer.lock();
        assert!(blk.drifting, "a shard built with drift");
        assert_eq!(drift.len(), blk.cells.len());
        let t = blk.hist_len.load(Ordering::Relaxed) as usize;
        blk.rebase(&self.reg, t, &mut buf);
        for (c, &v) in blk.cells.iter().zip(drift) {
            c.drift.store((v as f32).to_bits(), Ordering::Relaxed);
        }
    }

    fn load(&self, block: BlockId, values: &[f64]) {
        let blk = self.block(block);
        let _w = blk.writer.lock();
        assert_eq!(values.len(), blk.cells.len());
        let t = blk.hist_len.load(Ordering::Relaxed);
        for (g, chunk) in values.chunks(blk.gl).enumerate() {
            blk.publish(g, chunk, t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::reg::{BoxConstraint, ElasticNet, GroupLasso, NoReg, L1, L2};
    use crate::model::Layout;
    use crate::ps::blocks::PartitionKind;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// The paper's step applied densely: every group of the block, every push; with a
    /// diagonal metric (`scale`, per block and coordinate) and a drift added to every
    /// coordinate's gradient when given.
    struct Dense<R> {
        reg: R,
        blocks: Vec<Vec<f64>>,
        bias: (usize, usize, usize),
        gl: usize,
        scale: Option<Vec<Vec<f64>>>,
        drift: Option<Vec<Vec<f64>>>,
    }

    impl<R: Regularizer> Dense<R> {
        fn push(&mut self, j: usize, eta: f64, alpha: f64, grad: &[(u32, f64)]) {
            let x = &mut self.blocks[j];
            let mut g = vec![0.0; x.len()];
            for &(c, v) in grad {
                g[c as usize] += v;
            }
            let d = |c: usize| self.scale.as_ref().map_or(1.0, |s| s[j][c]);
            for c in 0..x.len() {
                let is_bias = j == self.bias.0 && c >= self.bias.1 && c < self.bias.2;
                let nc = if is_bias {
                    0.0
                } else {
                    nonconvex_deriv(alpha, x[c])
                };
                let a = self.drift.as_ref().map_or(0.0, |a| a[j][c]);
                x[c] -= eta * d(c) * (g[c] + nc + a);
            }
            for (gi, group) in x.chunks_mut(self.gl).enumerate() {
                let lo = gi * self.gl;
                let is_bias = j == self.bias.0 && lo < self.bias.2 && lo + self.gl > self.bias.1;
                if !is_bias {
                    match &self.scale {
                        None => self.reg.prox(eta, group),
                        Some(s) => self.reg.prox_scaled(eta, &s[j][lo..lo + self.gl], group),
                    }
                }
            }
        }
    }

    /// Options of [`lazy_equals_dense`] beyond the plain step.
    #[derive(Clone, Copy, Default)]
    struct Extras {
        /// Random per-row step factors in [0.2, 50).
        scaled: bool,
        /// A random drift, replaced every `drift_every` pushes (0: no drift).
        drift_every: usize,
    }

    /// Runs `pushes` random pushes through a lazy shard and the dense reference, checking
    /// random reads along the way and every coordinate at the end.
    fn lazy_equals_dense<R: Regularizer>(
        reg: R,
        classes: usize,
        alpha: f64,
        seed: u64,
        pushes: usize,
    ) {
        lazy_equals_dense_with(reg, classes, alpha, seed, pushes, Extras::default());
    }

    fn lazy_equals_dense_with<R: Regularizer>(
        reg: R,
        classes: usize,
        alpha: f64,
        seed: u64,
        pushes: usize,
        extras: Extras,
    ) {
        let features = 37;
        let layout = Layout {
            features,
            classes,
            bias: true,
        };
        let group_rows = reg.group_len() / classes;
        let blocks = 3;
        let part = BlockPartition::new(
            layout,
            group_rows.max(1),
            blocks,
            1,
            PartitionKind::Hashed,
            seed,
        );
        let settings = ShardSettings {
            max_delay: None,
            schedule: StepSchedule::Decay {
                eta0: 0.9,
                t0: 50.0,
            },
            alpha,
            drift: extras.drift_every > 0,
        };
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let metric: Option<Vec<f64>> = extras.scaled.then(|| {
            (0..layout.rows())
                .map(|_| rng.random_range(0.2..50.0))
                .collect()
        });
        let clock = Arc::new(Clock::default());
        let shard = Shard::with_metric(
            ShardId(0),
            &part,
            reg,
            settings,
            clock.clone(),
            Default::default(),
            metric.as_deref(),
        );
        let mut dense = Dense::new(reg, &part, classes, metric.as_deref());
        // Start from a nonzero model so that shrinkage has something to act on.
        for j in 0..blocks {
            let init: Vec<f64> = (0..part.block_coords(j))
                .map(|_| rng.random_range(-2.0..2.0))
                .collect();
            shard.load(BlockId(j as u32), &init);
            dense.blocks[j] = init;
        }
        for step in 0..pushes {
            if extras.drift_every > 0 && step % extras.drift_every == 0 {
                set_random_drift(&shard, &mut dense, &part, &mut rng);
            }
            let j = rng.random_range(0..blocks);
            let n = part.block_coords(j);
            let touched = rng.random_range(0..4.min(n) + 1);
            let mut grad: Vec<(u32, f64)> = (0..touched)
                .map(|_| (rng.random_range(0..n) as u32, rng.random_range(-3.0..3.0)))
                .collect();
            grad.sort_by_key(|e| e.0);
            grad.dedup_by_key(|e| e.0);
            let eta = settings.schedule.eta(clock.now());
            let out = shard.apply(BlockId(j as u32), clock.now(), &grad);
            assert!(matches!(out, PushOutcome::Applied { delay: 0, .. }));
            dense.push(j, eta, alpha, &grad);
            if step % 7 == 0 {
                check_random_reads(&shard, &dense, &part, classes, &mut rng, step);
            }
        }
        for j in 0..blocks {
            let lazy = shard.snapshot(BlockId(j as u32));
            for (c, (&a, &b)) in lazy.iter().zip(&dense.blocks[j]).enumerate() {
                assert!(close(a, b), "block {j} coord {c}: lazy {a} dense {b}");
            }
        }
    }

    /// Whether a lazy shard's value `a` agrees with the dense reference's `b`.
    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * b.abs().max(1.0)
    }

    impl<R: Regularizer> Dense<R> {
        /// The zero model of `part`'s blocks, with the step factors `metric` per
        /// parameter row where given (rounded as the shard keeps them) and no drift.
        fn new(reg: R, part: &BlockPartition, classes: usize, metric: Option<&[f64]>) -> Self {
            let blocks = part.blocks();
            let bias = part.bias_loc();
            let per_block = |v: &[f64]| -> Vec<Vec<f64>> {
                let mut out: Vec<Vec<f64>> = (0..blocks)
                    .map(|j| vec![1.0; part.block_coords(j)])
                    .collect();
                part.for_each_row(|row, loc| {
                    let o = loc.offset as usize;
                    out[loc.block as usize][o..o + classes].fill(v[row]);
                });
                out
            };
            Dense {
                reg,
                blocks: (0..blocks)
                    .map(|j| vec![0.0; part.block_coords(j)])
                    .collect(),
                bias: (
                    bias.block as usize,
                    bias.offset as usize,
                    bias.offset as usize + classes,
                ),
                gl: reg.group_len(),
                // The shard keeps the factors and the drifts rounded: so does the
                // reference.
                scale: metric
                    .map(|m| per_block(&m.iter().map(|&d| stored_scale(d)).collect::<Vec<_>>())),
                drift: None,
            }
        }
    }

    /// Gives the shard and the reference the same new random drift.
    fn set_random_drift<R: Regularizer>(
        shard: &Shard<R>,
        dense: &mut Dense<R>,
        part: &BlockPartition,
        rng: &mut Xoshiro256PlusPlus,
    ) {
        // Per coordinate, from a range where L1's drift may be inside or outside
        // [-lambda, lambda].
        let drift: Vec<Vec<f64>> = (0..part.blocks())
            .map(|j| {
                (0..part.block_coords(j))
                    .map(|_| rng.random_range(-0.6..0.6))
                    .collect()
            })
            .collect();
        for (j, a) in drift.iter().enumerate() {
            shard.set_drift(BlockId(j as u32), a);
        }
        dense.drift = Some(
            drift
                .iter()
                .map(|b| b.iter().map(|&a| stored_drift(a)).collect())
                .collect(),
        );
    }

    /// Reads a random coordinate of the shard, and through the pull's path its
    /// parameter row with the first block's first, checking both against the reference.
    fn check_random_reads<R: Regularizer>(
        shard: &Shard<R>,
        dense: &Dense<R>,
        part: &BlockPartition,
        classes: usize,
        rng: &mut Xoshiro256PlusPlus,
        step: usize,
    ) {
        let jr = rng.random_range(0..part.blocks());
        let c = rng.random_range(0..part.block_coords(jr));
        let mut v = [0.0];
        shard.read(BlockId(jr as u32), c as u32, &mut v);
        assert!(
            close(v[0], dense.blocks[jr][c]),
            "step {step} block {jr} coord {c}: lazy {} dense {}",
            v[0],
            dense.blocks[jr][c]
        );
        // The pull's path: several parameter rows at once.
        let gl = classes;
        let g0 = c / gl * gl;
        let locs = [
            Loc {
                block: jr as u32,
                offset: g0 as u32,
            },
            Loc {
                block: 0,
                offset: 0,
            },
        ];
        let mut out = vec![0.0; 2 * gl];
        shard.read_rows(&locs, gl, &mut out);
        let want = dense.blocks[jr][g0..g0 + gl]
            .iter()
            .chain(&dense.blocks[0][..gl]);
        for (a, b) in out.iter().zip(want) {
            assert!(close(*a, *b), "step {step} pulled {a} dense {b}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn lazy_l1(seed in any::<u64>(), lambda in 1e-3f64..0.5) {
            lazy_equals_dense(L1 { lambda }, 1, 0.0, seed, 400);
        }

        #[test]
        fn lazy_l2(seed in any::<u64>(), lambda in 1e-3f64..2.0) {
            lazy_equals_dense(L2 { lambda }, 2, 0.0, seed, 400);
        }

        #[test]
        fn lazy_elastic_net(seed in any::<u64>(), l1 in 0.0f64..0.5, l2 in 0.0f64..2.0) {
            lazy_equals_dense(ElasticNet { l1, l2 }, 1, 0.0, seed, 400);
        }

        #[test]
        fn lazy_box(seed in any::<u64>(), lo in -1.5f64..0.0, width in 0.1f64..2.0) {
            lazy_equals_dense(BoxConstraint { lower: lo, upper: lo + width }, 1, 0.0, seed, 300);
            lazy_equals_dense(BoxConstraint { lower: 0.0, upper: f64::INFINITY }, 2, 0.0, seed, 300);
        }

        #[test]
        fn lazy_group_lasso(seed in any::<u64>(), lambda in 1e-3f64..0.5, rows in 1usize..4, classes in 1usize..3) {
            lazy_equals_dense(GroupLasso { lambda, len: rows * classes }, classes, 0.0, seed, 400);
        }

        #[test]
        fn lazy_l1_scaled(seed in any::<u64>(), lambda in 1e-3f64..0.5) {
            let scaled = Extras { scaled: true, drift_every: 0 };
            lazy_equals_dense_with(L1 { lambda }, 1, 0.0, seed, 400, scaled);
            lazy_equals_dense_with(L1 { lambda }, 2, 0.0, seed, 400, scaled);
        }

        #[test]
        fn lazy_none_and_box_scaled(seed in any::<u64>(), lo in -1.5f64..0.0, width in 0.1f64..2.0) {
            let scaled = Extras { scaled: true, drift_every: 0 };
            lazy_equals_dense_with(NoReg, 1, 0.0, seed, 300, scaled);
            lazy_equals_dense_with(BoxConstraint { lower: lo, upper: lo + width }, 1, 0.0, seed, 300, scaled);
            lazy_equals_dense_with(BoxConstraint { lower: 0.0, upper: f64::INFINITY }, 2, 0.0, seed, 300, scaled);
        }

        #[test]
        fn lazy_l1_with_drift(seed in any::<u64>(), lambda in 1e-3f64..0.5, scaled in any::<bool>(), every in 1usize..150) {
            let extras = Extras { scaled, drift_every: every };
            lazy_equals_dense_with(L1 { lambda }, 1, 0.0, seed, 400, extras);
            lazy_equals_dense_with(L1 { lambda }, 2, 0.0, seed, 400, extras);
            lazy_equals_dense_with(NoReg, 1, 0.0, seed, 300, extras);
        }

        #[test]
        fn drift_with_the_nonconvex_term(seed in any::<u64>(), lambda in 1e-3f64..0.5) {
            let extras = Extras { scaled: true, drift_every: 50 };
            lazy_equals_dense_with(L1 { lambda }, 1, 0.3, seed, 200, extras);
        }

        #[test]
        fn nonconvex_term_is_applied_densely(seed in any::<u64>(), lambda in 1e-3f64..0.5) {
            lazy_equals_dense(L1 { lambda }, 1, 0.3, seed, 200);
            lazy_equals_dense(NoReg, 1, 0.3, seed, 200);
        }
    }

    /// Enough pushes to one small block to fill its history (capacity 1024) several times,
    /// and an L2 strong enough to trigger the decay-sum rebase: results must not move.
    #[test]
    fn rebases_are_exact() {
        lazy_equals_dense(L1 { lambda: 0.01 }, 1, 0.0, 3, 5000);
        let extras = Extras {
            scaled: true,
            drift_every: 1500,
        };
        lazy_equals_dense_with(L1 { lambda: 0.01 }, 1, 0.0, 6, 5000, extras);
        lazy_equals_dense(ElasticNet { l1: 0.01, l2: 5.0 }, 1, 0.0, 4, 3000);
        lazy_equals_dense(
            GroupLasso {
                lambda: 0.01,
                len: 2,
            },
            1,
            0.0,
            5,
            4000,
        );
    }

    /// Statistics sent between processes add up to those of one shared counter.
    #[test]
    fn delay_statistics_merge_across_processes() {
        let (a, b, both) = (
            DelayStats::default(),
            DelayStats::default(),
            DelayStats::default(),
        );
        for (d, applied) in [(0, true), (3, true), (9, false), (17, true)] {
            a.record(d, applied);
            both.record(d, applied);
        }
        for (d, applied) in [(1, true), (40, true), (2, false)] {
            b.record(d, applied);
            both.record(d, applied);
        }
        let merged = DelayStats::default();
        assert!(merged.add_raw(&a.raw()));
        assert!(merged.add_raw(&b.raw()));
        assert_eq!(merged.summary(), both.summary());
        assert_eq!(merged.summary().max, 40);
        assert!(!merged.add_raw(&[1, 2, 3]));
    }

    /// `features` features (and an intercept with `bias`) in `blocks` contiguous blocks
    /// of one-row groups, on one shard.
    fn contiguous(features: usize, bias: bool, blocks: usize) -> BlockPartition {
        let layout = Layout {
            features,
            classes: 1,
            bias,
        };
        BlockPartition::new(layout, 1, blocks, 1, PartitionKind::Contiguous, 0)
    }

    /// The constant step `eta` for pushes at most `max_delay` steps old, without the
    /// nonconvex term or a drift.
    fn constant_step(eta: f64, max_delay: Option<u64>) -> ShardSettings {
        ShardSettings {
            max_delay,
            schedule: StepSchedule::Constant { eta },
            alpha: 0.0,
            drift: false,
        }
    }

    #[test]
    fn stale_pushes_are_rejected_and_counted() {
        let part = contiguous(10, true, 2);
        let settings = constant_step(0.1, Some(2));
        let clock = Arc::new(Clock::default());
        let stats = Arc::new(DelayStats::default());
        let shard = Shard::new(
            ShardId(0),
            &part,
            NoReg,
            settings,
            clock.clone(),
            stats.clone(),
        );
        for _ in 0..3 {
            assert!(matches!(
                shard.apply(BlockId(0), 0, &[(0, 1.0)]),
                PushOutcome::Applied { .. }
            ));
        }
        // k = 3 now: a push pulled at 0 is 3 steps old.
        assert_eq!(
            shard.apply(BlockId(1), 0, &[(0, 1.0)]),
            PushOutcome::Stale { delay: 3 }
        );
        assert_eq!(
            shard.apply(BlockId(1), 1, &[(0, 1.0)]),
            PushOutcome::Applied { delay: 2, k: 3 }
        );
        let s = stats.summary();
        assert_eq!((s.applied, s.rejected, s.max), (4, 1, 2));
        assert_eq!(s.histogram, vec![(0, 0, 1), (1, 1, 1), (2, 3, 2)]);
        // x_0 of block 0 after three steps of -0.1 * 1.0 from 0, no regularizer.
        let mut v = [0.0];
        shard.read(BlockId(0), 0, &mut v);
        assert!((v[0] + 0.3).abs() < 1e-12);
    }

    /// A cell is a quarter cache line; the kept factors are the nearest bfloat16s (checked
    /// against their two neighbours) and the drifts the nearest f32s.
    #[test]
    fn cells_are_16_bytes_with_rounded_factors_and_drifts() {
        assert_eq!(std::mem::size_of::<Cell>(), 16);
        assert_eq!(stored_scale(1.0), 1.0);
        assert_eq!(stored_scale(0.375), 0.375);
        // Rounded once from f64: 1 + 2^-8 + 2^-30 is nearer 1 + 2^-7 than 1 (through f32
        // it would tie and go to 1).
        assert_eq!(
            stored_scale(1.0 + 2f64.powi(-8) + 2f64.powi(-30)),
            1.0 + 2f64.powi(-7)
        );
        // Out of range factors are clamped to finite, positive ones.
        assert!(stored_scale(1e46).is_finite() && stored_scale(1e46) > 3e38);
        assert!(stored_scale(1e-45) > 0.0 && stored_scale(1e-45) < 2e-38);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        for _ in 0..10_000 {
            let d: f64 = 10f64.powf(rng.random_range(-30.0..30.0));
            let h = bf16(d);
            let err = |h: u16| (unbf16(h) - d).abs();
            assert!(err(h) <= err(h - 1) && err(h) <= err(h + 1), "{d}");
            assert!(err(h) <= d * 2f64.powi(-8), "{d}");
            let a: f64 = rng.random_range(-1.0..1.0);
            assert_eq!(stored_drift(a), a as f32 as f64);
        }
    }

    /// A block of more groups than the 16-bit currency allows history steps for rebases
    /// at the cap: an untouched coordinate read after more steps than the cap equals L1's
    /// shrinkage summed over all of them.
    #[test]
    fn huge_blocks_rebase_at_the_history_cap() {
        let part = contiguous(1 << 20, false, 1);
        let eta = 0.5;
        let settings = constant_step(eta, None);
        let lambda = 2e-6;
        let shard = Shard::new(
            ShardId(0),
            &part,
            L1 { lambda },
            settings,
            Arc::new(Clock::default()),
            Default::default(),
        );
        let coords = part.block_coords(0);
        assert!(coords / GROUPS_PER_HISTORY_STEP > MAX_HISTORY);
        shard.load(BlockId(0), &vec![1.0; coords]);
        let steps = MAX_HISTORY + 5000;
        for k in 0..steps {
            shard.apply(BlockId(0), k as u64, &[(0, 0.0)]);
        }
        let mut v = [0.0];
        shard.read(BlockId(0), 7, &mut v);
        let want = 1.0 - steps as f64 * eta * lambda;
        assert!((v[0] - want).abs() < 1e-9, "{} vs {want}", v[0]);
        // The touched coordinate took the same steps.
        shard.read(BlockId(0), 0, &mut v);
        assert!((v[0] - want).abs() < 1e-9, "{} vs {want}", v[0]);
    }

    /// Two writer threads and a reader hammer the shard; afterwards the result equals a
    /// sequential replay of the applied pushes in their global order (pushes commute
    /// only per block, and each block's pushes were serialized in step order).
    #[test]
    fn concurrent_pushes_match_sequential_replay() {
        let part = contiguous(200, true, 4);
        // Constant: two blocks may apply at the same k concurrently, and a decaying step
        // would then differ from the replay's.
        let settings = constant_step(0.5, None);
        let reg = L1 { lambda: 0.05 };
        let clock = Arc::new(Clock::default());
        let shard = Arc::new(Shard::new(
            ShardId(0),
            &part,
            reg,
            settings,
            clock.clone(),
            Default::default(),
        ));
        let log = Arc::new(Mutex::new(Vec::new()));
        std::thread::scope(|s| {
            let part = &part;
            for w in 0..2u64 {
                let (shard, log) = (shard.clone(), log.clone());
                s.spawn(move || {
                    let mut rng = Xoshiro256PlusPlus::seed_from_u64(w);
                    for _ in 0..3000 {
                        let j = rng.random_range(0..4u32);
                        let n = part.block_coords(j as usize);
                        let mut grad: Vec<(u32, f64)> = (0..3)
                            .map(|_| (rng.random_range(0..n) as u32, rng.random_range(-1.0..1.0)))
                            .collect();
                        grad.sort_by_key(|e| e.0);
                        grad.dedup_by_key(|e| e.0);
                        if let PushOutcome::Applied { k, .. } = shard.apply(BlockId(j), 0, &grad) {
                            log.lock().push((k, j, grad));
                        }
                    }
                });
            }
            let shard = shard.clone();
            s.spawn(move || {
                let mut v = [0.0];
                for i in 0..20000u32 {
                    shard.read(BlockId(i % 4), i % 40, &mut v);
                    assert!(v[0].is_finite());
                }
            });
        });
        let mut log = std::mem::take(&mut *log.lock());
        log.sort_by_key(|e| e.0);
        let replay = Shard::new(
            ShardId(0),
            &part,
            reg,
            settings,
            Arc::new(Clock::default()),
            Default::default(),
        );
        for (_, j, grad) in &log {
            replay.apply(BlockId(*j), 0, grad);
        }
        for j in 0..4 {
            assert_eq!(shard.snapshot(BlockId(j)), replay.snapshot(BlockId(j)));
        }
    }
}
