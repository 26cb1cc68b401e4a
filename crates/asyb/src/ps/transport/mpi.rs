//! The MPI transport (cargo feature `mpi`): the same pull and push requests as
//! [`super::local::LocalTransport`], carried between ranks as point-to-point messages.
//!
//! - A server thread ([`serve`]) owns one [`Shard`](crate::ps::shard::Shard) (through
//!   [`ShardApi`]) and answers requests from any rank, one at a time, in arrival order.
//! - A worker's [`MpiTransport`] sends one pull request per server that owns some of the
//!   rows it needs (sparse: the rows' block and offset, never one message per
//!   coordinate), all before it waits for the first reply, and one push per block
//!   update. A reply to a pull carries the values and the server's step counter; a push
//!   carries the counter its worker read from that server, the server computes the
//!   delay, applies or rejects the push, and says which.
//! - [`RemoteShard`] is a shard on another rank seen through [`ShardApi`], for the
//!   coordinator (rank 0): snapshots, loads and drifts of whole blocks.
//!
//! Step counters: each server counts the updates it applied. With one server that is
//! the global step k of the paper; with S servers a push's delay is counted in its own
//! server's updates (about k/S), and the global k reported is the sum of the counters.
//!
//! Waiting: Open MPI's blocking receive spins on a core. Every receive here probes
//! without blocking and sleeps a few microseconds between probes once the message is
//! late, so that a rank's server, worker and control threads share the cores of a
//! small machine.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::topology::{Communicator, SimpleCommunicator};
use parking_lot::Mutex;

use super::wire::{Dec, Enc};
use super::Transport;
use crate::ps::blocks::{BlockId, Loc, ShardId};
use crate::ps::shard::{Clock, DelayStats, PushOutcome, ShardApi};
use crate::{Error, Result};

/// The server this process hosts, if any, for requests from its own threads: they call
/// it directly instead of sending MPI messages to their own rank (which Open MPI
/// delivers slowly between threads: one colocated rank ran 8x fewer updates per second
/// through messages than with direct calls, measured here).
#[derive(Clone)]
pub struct LocalServer {
    pub id: usize,
    pub shard: Arc<dyn ShardApi>,
    pub clock: Arc<Clock>,
    pub stats: Arc<DelayStats>,
}

static LOCAL: Mutex<Option<LocalServer>> = Mutex::new(None);

/// Registers this process's server (before any worker or the coordinator uses it), or
/// clears it with `None`.
pub fn set_local_server(server: Option<LocalServer>) {
    *LOCAL.lock() = server;
}

fn local_server(id: usize) -> Option<LocalServer> {
    LOCAL.lock().as_ref().filter(|l| l.id == id).cloned()
}

/// Message tags.
pub mod tag {
    /// A request to a server thread.
    pub const REQUEST: i32 = 11;
    /// A server's reply to a worker thread.
    pub const TO_WORKER: i32 = 12;
    /// A server's reply to the coordinator.
    pub const TO_COORDINATOR: i32 = 13;
    /// A command from the coordinator to a rank's agent.
    pub const COMMAND: i32 = 14;
    /// An agent's reply to the coordinator.
    pub const ANSWER: i32 = 15;
    /// A note an agent sends unasked (its worker exited).
    pub const NOTE: i32 = 16;
}

/// Request kinds.
mod req {
    pub const PULL: u8 = 1;
    pub const PUSH: u8 = 2;
    pub const READ_BLOCK: u8 = 3;
    pub const LOAD_BLOCK: u8 = 4;
    pub const DRIFT_BLOCK: u8 = 5;
    pub const STATUS: u8 = 6;
    pub const STOP: u8 = 7;
}

/// How a receive waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// A reply due soon: spin, then yield the core.
    Reply,
    /// A request that may take long to come: spin briefly, then sleep in short naps.
    Idle,
    /// A command: sleep a millisecond between probes.
    Command,
}

fn probe(world: &SimpleCommunicator, from: Option<i32>, tag: i32) -> Option<(Vec<u8>, i32)> {
    let found = match from {
        Some(r) => world
            .process_at_rank(r)
            .immediate_matched_probe_with_tag(tag),
        None => world.any_process().immediate_matched_probe_with_tag(tag),
    };
    found.map(|(msg, status)| {
        let src = status.source_rank();
        let (v, _) = (msg, status).matched_receive_vec::<u8>();
        (v, src)
    })
}

/// Asks the kernel to wake this thread's short sleeps on time (the default slack of
/// 50 us would make every wait for a reply at least that long).
fn tight_sleeps() {
    thread_local!(static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    DONE.with(|d| {
        if !d.get() {
            #[cfg(target_os = "linux")]
            // SAFETY: PR_SET_TIMERSLACK only sets this thread's timer slack.
            unsafe {
                libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
            }
            d.set(true);
        }
    });
}

/// Receives the next message with `tag` (from `from`, or from any rank), waiting as
/// `wait` says. Returns the message and its source rank.
///
/// A waiting thread sleeps rather than spins or yields once the message is late: on a
/// machine with as many busy threads as cores, a spinning thread holds the core that
/// the thread it waits for needs, for a whole time slice.
pub fn recv(from: Option<i32>, tag: i32, wait: Wait) -> (Vec<u8>, i32) {
    let world = SimpleCommunicator::world();
    tight_sleeps();
    let mut tries: u32 = 0;
    loop {
        if let Some(m) = probe(&world, from, tag) {
            return m;
        }
        tries = tries.saturating_add(1);
        let nap = match wait {
            Wait::Reply if tries < 16 => 0,
            Wait::Reply if tries < 256 => 2,
            Wait::Reply if tries < 1024 => 20,
            Wait::Reply => 200,
            Wait::Idle if tries < 16 => 0,
            Wait::Idle if tries < 256 => 5,
            Wait::Idle => 50,
            Wait::Command => 1000,
        };
        if nap == 0 {
            std::hint::spin_loop();
        } else {
            std::thread::sleep(Duration::from_micros(nap));
        }
    }
}

/// Receives the next message with `tag`, if one is there.
pub fn try_recv(from: Option<i32>, tag: i32) -> Option<(Vec<u8>, i32)> {
    probe(&SimpleCommunicator::world(), from, tag)
}

/// Sends `msg` to `rank` with `tag`.
pub fn send(rank: i32, tag: i32, msg: &[u8]) {
    SimpleCommunicator::world()
        .process_at_rank(rank)
        .send_with_tag(msg, tag);
}

fn protocol(reason: String) -> Error {
    Error::Runtime {
        role: "transport",
        id: 0,
        reason,
    }
}

/// Serves requests for `shard` until a stop request, then answers it with the delay
/// statistics. `blocks` is the number of blocks of the run; a request for a block this
/// shard does not own is an error (a bug or a foreign message), as is a malformed one.
pub fn serve(
    shard: &dyn ShardApi,
    clock: &Clock,
    stats: &DelayStats,
    blocks: usize,
    servers: usize,
    classes: usize,
) -> Result<()> {
    let me = shard.id().0 as usize;
    let owned = |b: u32| (b as usize) < blocks && b as usize % servers == me;
    let mut locs: Vec<Loc> = Vec::new();
    let mut vals: Vec<f64> = Vec::new();
    let mut grad: Vec<(u32, f64)> = Vec::new();
    loop {
        let (msg, src) = recv(None, tag::REQUEST, Wait::Idle);
        let (kind, mut d) = Dec::new(&msg)?;
        let reply_tag = match d.u8()? {
            0 => tag::TO_WORKER,
            _ => tag::TO_COORDINATOR,
        };
        let block = |d: &mut Dec| -> Result<u32> {
            let b = d.u32()?;
            if owned(b) {
                Ok(b)
            } else {
                Err(protocol(format!("server {me}: block {b} is not mine")))
            }
        };
        match kind {
            req::PULL => {
                let pairs = d.u32_pairs()?;
                d.end()?;
                locs.clear();
                for (b, offset) in pairs {
                    if !owned(b) {
                        return Err(protocol(format!("server {me}: block {b} is not mine")));
                    }
                    locs.push(Loc { block: b, offset });
                }
                vals.clear();
                vals.resize(locs.len() * classes, 0.0);
                // Read before the values, so a push never under-reports its delay.
                let k = clock.now();
                shard.read_rows(&locs, classes, &mut vals);
                let reply = Enc::new(req::PULL, 16 + vals.len() * 8).u64(k).f64s(&vals);
                send(src, reply_tag, &reply.bytes());
            }
            req::PUSH => {
                let b = block(&mut d)?;
                let pulled_at = d.u64()?;
                d.sparse_into(&mut grad)?;
                d.end()?;
                let reply = match shard.apply(BlockId(b), pulled_at, &grad) {
                    PushOutcome::Applied { delay, k } => {
                        Enc::new(req::PUSH, 17).u8(1).u64(delay).u64(k)
                    }
                    PushOutcome::Stale { delay } => Enc::new(req::PUSH, 17).u8(0).u64(delay).u64(0),
                };
                send(src, reply_tag, &reply.bytes());
            }
            req::READ_BLOCK => {
                let b = block(&mut d)?;
                d.end()?;
                let v = shard.snapshot(BlockId(b));
                send(
                    src,
                    reply_tag,
                    &Enc::new(kind, 8 + v.len() * 8).f64s(&v).bytes(),
                );
            }
            req::LOAD_BLOCK | req::DRIFT_BLOCK => {
                let b = block(&mut d)?;
                let v = d.f64s()?;
                d.end()?;
                let expect = shard.snapshot(BlockId(b)).len();
                if v.len() != expect {
                    return Err(protocol(format!(
                        "server {me}: {} values for block {b} of {expect}",
                        v.len()
                    )));
                }
                if kind == req::LOAD_BLOCK {
                    shard.load(BlockId(b), &v);
                } else {
                    shard.set_drift(BlockId(b), &v);
                }
                send(src, reply_tag, &Enc::new(kind, 0).bytes());
            }
            req::STATUS => {
                d.end()?;
                let reply = Enc::new(kind, 16).u64(clock.now()).u64(stats.rejected());
                send(src, reply_tag, &reply.bytes());
            }
            req::STOP => {
                d.end()?;
                send(
                    src,
                    reply_tag,
                    &Enc::new(kind, 0).u64s(&stats.raw()).bytes(),
                );
                return Ok(());
            }
            other => return Err(protocol(format!("server {me}: unknown request {other}"))),
        }
    }
}

fn expect_reply(msg: &[u8], kind: u8) -> Result<Dec<'_>> {
    let (k, d) = Dec::new(msg)?;
    if k != kind {
        return Err(protocol(format!(
            "expected a reply of kind {kind}, got {k}"
        )));
    }
    Ok(d)
}

/// Decodes a push reply.
fn push_outcome(msg: &[u8]) -> Result<PushOutcome> {
    let mut d = expect_reply(msg, req::PUSH)?;
    let applied = d.u8()? == 1;
    let delay = d.u64()?;
    let k = d.u64()?;
    d.end()?;
    Ok(if applied {
        PushOutcome::Applied { delay, k }
    } else {
        PushOutcome::Stale { delay }
    })
}

/// Scratch of one worker's pulls.
#[derive(Default)]
struct PullState {
    /// Each server's step counter at this worker's last pull from it.
    clocks: Vec<u64>,
    /// Requests being built, per server.
    rows: Vec<Vec<(u32, u32)>>,
    /// Where each requested row's values go in the caller's output.
    index: Vec<Vec<usize>>,
}

/// A worker's view of the servers on other ranks (or its own).
pub struct MpiTransport {
    /// Rank of server s.
    servers: Vec<i32>,
    /// The server on this rank, called directly.
    local: Option<LocalServer>,
    state: Mutex<PullState>,
    /// Messages sent and received, and their bytes.
    messages: AtomicU64,
    bytes: AtomicU64,
}

impl MpiTransport {
    /// Block j lives on server `j mod S`, hosted by rank `servers[j mod S]`; the server
    /// registered with [`set_local_server`], if any, is called directly.
    pub fn new(servers: Vec<i32>) -> Self {
        let s = servers.len();
        let local = LOCAL.lock().clone();
        MpiTransport {
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            servers,
            local,
            state: Mutex::new(PullState {
                clocks: vec![0; s],
                rows: vec![Vec::new(); s],
                index: vec![Vec::new(); s],
            }),
        }
    }

    /// Messages sent and received so far, and their bytes.
    pub fn traffic(&self) -> (u64, u64) {
        (
            self.messages.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    fn count(&self, bytes: usize) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn fail(e: Error) -> ! {
        // The worker loop has no error path; its thread's failure is caught and reported.
        panic!("{e}")
    }
}

impl Transport for MpiTransport {
    fn pull(&self, rows: &[Loc], classes: usize, out: &mut [f64]) -> u64 {
        let mut st = self.state.lock();
        let st = &mut *st;
        let s_count = self.servers.len();
        for s in 0..s_count {
            st.rows[s].clear();
            st.index[s].clear();
        }
        for (i, l) in rows.iter().enumerate() {
            let s = l.block as usize % s_count;
            st.rows[s].push((l.block, l.offset));
            st.index[s].push(i);
        }
        let local = self.local.as_ref().map(|l| l.id);
        for s in 0..s_count {
            if st.rows[s].is_empty() || local == Some(s) {
                continue;
            }
            let msg = Enc::new(req::PULL, 9 + st.rows[s].len() * 8)
                .u8(0)
                .u32_pairs(st.rows[s].iter().copied())
                .bytes();
            self.count(msg.len());
            send(self.servers[s], tag::REQUEST, &msg);
        }
        if let Some(l) = &self.local {
            // Its share is read while the other servers answer.
            let s = l.id;
            if !st.rows[s].is_empty() {
                let k = l.clock.now();
                l.shard.read_rows(rows, classes, out);
                st.clocks[s] = k;
            }
        }
        for s in 0..s_count {
            if st.rows[s].is_empty() || local == Some(s) {
                continue;
            }
            let (msg, _) = recv(Some(self.servers[s]), tag::TO_WORKER, Wait::Reply);
            self.count(msg.len());
            let r = expect_reply(&msg, req::PULL).and_then(|mut d| {
                let k = d.u64()?;
                let vals = d.f64s()?;
                d.end()?;
                if vals.len() != st.index[s].len() * classes {
                    return Err(protocol("pull reply of the wrong length".into()));
                }
                for (&i, v) in st.index[s].iter().zip(vals.chunks_exact(classes)) {
                    out[i * classes..(i + 1) * classes].copy_from_slice(v);
                }
                Ok(k)
            });
            match r {
                Ok(k) => st.clocks[s] = k,
                Err(e) => Self::fail(e),
            }
        }
        st.clocks.iter().sum()
    }

    fn push(&self, block: BlockId, _pulled_at: u64, grad: &[(u32, f64)]) -> PushOutcome {
        let s = block.0 as usize % self.servers.len();
        let pulled_at = self.state.lock().clocks[s];
        if let Some(l) = self.local.as_ref().filter(|l| l.id == s) {
            return l.shard.apply(block, pulled_at, grad);
        }
        let msg = Enc::new(req::PUSH, 22 + grad.len() * 12)
            .u8(0)
            .u32(block.0)
            .u64(pulled_at)
            .sparse(grad)
            .bytes();
        self.count(msg.len());
        send(self.servers[s], tag::REQUEST, &msg);
        let (reply, _) = recv(Some(self.servers[s]), tag::TO_WORKER, Wait::Reply);
        self.count(reply.len());
        push_outcome(&reply).unwrap_or_else(|e| Self::fail(e))
    }

    fn now(&self) -> u64 {
        self.state.lock().clocks.iter().sum()
    }
}

/// A shard served by another rank (or by this rank's server thread), for the
/// coordinator: one request and its reply per call. Panics on a transport failure (a
/// malformed reply), which is a bug, not an input error.
pub struct RemoteShard {
    id: ShardId,
    servers: usize,
    rank: i32,
    local: Option<LocalServer>,
    /// Held from a request to its reply: replies carry no request id, so two threads
    /// asking the same server at once (a gather on every core) must take turns.
    calling: parking_lot::Mutex<()>,
}

impl RemoteShard {
    /// Server `id` of `servers`, on `rank`.
    pub fn new(id: ShardId, servers: usize, rank: i32) -> Self {
        RemoteShard {
            id,
            servers,
            rank,
            local: local_server(id.0 as usize),
            calling: parking_lot::Mutex::new(()),
        }
    }

    fn call(&self, msg: Enc, kind: u8) -> Vec<u8> {
        let _turn = self.calling.lock();
        send(self.rank, tag::REQUEST, &msg.bytes());
        let (reply, _) = recv(Some(self.rank), tag::TO_COORDINATOR, Wait::Reply);
        if let Err(e) = expect_reply(&reply, kind) {
            panic!("{e}");
        }
        reply
    }

    /// The server's step counter and rejected pushes.
    pub fn status(&self) -> (u64, u64) {
        if let Some(l) = &self.local {
            return (l.clock.now(), l.stats.rejected());
        }
        let r = self.call(Enc::new(req::STATUS, 1).u8(1), req::STATUS);
        let mut d = expect_reply(&r, req::STATUS).expect("checked");
        (d.u64().expect("status"), d.u64().expect("status"))
    }

    /// Sends a whole block's `values` with the request `kind` (the values to load, or
    /// the drift to set) and waits for the server's acknowledgement.
    fn send_block(&self, kind: u8, block: BlockId, values: &[f64]) {
        let msg = Enc::new(kind, 13 + values.len() * 8)
            .u8(1)
            .u32(block.0)
            .f64s(values);
        self.call(msg, kind);
    }

    /// Stops the server thread; returns its delay statistics ([`DelayStats::raw`]).
    pub fn stop(&self) -> Vec<u64> {
        let r = self.call(Enc::new(req::STOP, 1).u8(1), req::STOP);
        let mut d = expect_reply(&r, req::STOP).expect("checked");
        d.u64s().expect("delay statistics")
    }
}

impl ShardApi for RemoteShard {
    fn id(&self) -> ShardId {
        self.id
    }

    fn read(&self, block: BlockId, offset: u32, out: &mut [f64]) {
        let v = self.snapshot(block);
        out.copy_from_slice(&v[offset as usize..offset as usize + out.len()]);
    }

    fn read_rows(&self, rows: &[Loc], classes: usize, out: &mut [f64]) {
        if let Some(l) = &self.local {
            return l.shard.read_rows(rows, classes, out);
        }
        let mine: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].block as usize % self.servers == self.id.0 as usize)
            .collect();
        let msg = Enc::new(req::PULL, 9 + mine.len() * 8)
            .u8(1)
            .u32_pairs(mine.iter().map(|&i| (rows[i].block, rows[i].offset)));
        let r = self.call(msg, req::PULL);
        let mut d = expect_reply(&r, req::PULL).expect("checked");
        let _k = d.u64().expect("pull");
        let vals = d.f64s().expect("pull");
        for (&i, v) in mine.iter().zip(vals.chunks_exact(classes)) {
            out[i * classes..(i + 1) * classes].copy_from_slice(v);
        }
    }

    fn apply(&self, block: BlockId, pulled_at: u64, grad: &[(u32, f64)]) -> PushOutcome {
        if let Some(l) = &self.local {
            return l.shard.apply(block, pulled_at, grad);
        }
        let msg = Enc::new(req::PUSH, 22 + grad.len() * 12)
            .u8(1)
            .u32(block.0)
            .u64(pulled_at)
            .sparse(grad);
        push_outcome(&self.call(msg, req::PUSH)).expect("push reply")
    }

    fn snapshot(&self, block: BlockId) -> Vec<f64> {
        if let Some(l) = &self.local {
            return l.shard.snapshot(block);
        }
        let r = self.call(
            Enc::new(req::READ_BLOCK, 5).u8(1).u32(block.0),
            req::READ_BLOCK,
        );
        let mut d = expect_reply(&r, req::READ_BLOCK).expect("checked");
        d.f64s().expect("block values")
    }

    fn load(&self, block: BlockId, values: &[f64]) {
        if let Some(l) = &self.local {
            return l.shard.load(block, values);
        }
        self.send_block(req::LOAD_BLOCK, block, values);
    }

    fn set_drift(&self, block: BlockId, drift: &[f64]) {
        if let Some(l) = &self.local {
            return l.shard.set_drift(block, drift);
        }
        self.send_block(req::DRIFT_BLOCK, block, drift);
    }
}
