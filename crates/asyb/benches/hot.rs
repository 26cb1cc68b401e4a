//! The hot loops of training on the reference click-through workload
//! (docs/performance.md): generated CTR rows, 2^20 features, as a default run has them:
//! the used features renumbered most frequent first, L1 with the SVRG drift and
//! column-scaled steps, 2 interleaved blocks on one shard.
//!
//! - `plain_csr_pass`: margins of every row against a dense weight vector, one thread,
//!   the floor any row loop is measured against (nonzeros per second);
//! - `full_pass`: the loss gradient pass of evaluation (`Objective::loss_pass`, one
//!   thread, a dense model);
//! - `snapshot_pass`: the SVRG snapshot's pass (`Objective::gradient_pass`: each row's
//!   loss derivative and the gradient, one thread, the model read in the shard's cells);
//! - `minibatch_gradient`: one worker update without its push: sparse pull of 256 random
//!   rows' weights (both blocks), margins, loss derivatives, one block's sorted gradient;
//! - `pull`: the sparse pull alone, `push`: the shard applying one such block gradient
//!   (lazy catch-up, step, prox, publish).
//!
//! Throughput is in nonzeros of the rows (passes, gradient, pull) or in pushed
//! coordinates (push). `ASYB_BENCH_ROWS` sets the rows (default 2,000,000; generation
//! takes a few seconds).

use std::hint::black_box;
use std::sync::Arc;

use asyb::config::{CompactFeatures, Sampling};
use asyb::data::{gen, CtrSpec, Dataset};
use asyb::model::loss::Logistic;
use asyb::model::objective::{AnyReg, Objective};
use asyb::model::reg::{RegSpec, L1};
use asyb::model::Layout;
use asyb::ps::blocks::{BlockId, BlockPartition, Loc, PartitionKind, ShardId};
use asyb::ps::shard::{Clock, DelayStats, Shard, ShardApi, ShardSettings, StepSchedule};
use asyb::ps::transport::local::LocalTransport;
use asyb::ps::transport::Transport;
use asyb::ps::worker::{BlockMode, Control, Counters, MinibatchGradient, WorkerContext};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

// As in the `asyb` command: large blocks on huge pages.
#[global_allocator]
static ALLOC: asyb::alloc::HugeAlloc = asyb::alloc::HugeAlloc;

const FEATURES: usize = 1 << 20;
const BATCH: usize = 256;
const BLOCKS: usize = 2;

struct Setup {
    data: Dataset,
    layout: Layout,
    partition: BlockPartition,
    shard: Arc<dyn ShardApi>,
    transport: LocalTransport,
    w: Vec<f64>,
}

fn setup() -> Setup {
    let rows = std::env::var("ASYB_BENCH_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let mut data = gen::ctr(&CtrSpec {
        rows,
        features: FEATURES,
        seed: 1,
        ..CtrSpec::default()
    })
    .expect("generate");
    // The features a run holds: the used ones, most frequent first.
    let used = asyb::problem::renumber_for_cache(&mut data, CompactFeatures::On)
        .expect("rows with features")
        .used();
    let layout = Layout {
        features: used,
        classes: 1,
        bias: false,
    };
    let partition = BlockPartition::new(layout, 1, BLOCKS, 1, PartitionKind::Interleaved, 1);
    let settings = ShardSettings {
        max_delay: None,
        schedule: StepSchedule::Constant { eta: 0.1 },
        alpha: 0.0,
        drift: true,
    };
    // Column-scaled steps as in a default run: d_j = (n + r0) / (s_j + r0).
    let mut counts = vec![0.0f64; used];
    for &f in data.indices.iter() {
        counts[f as usize] += 1.0;
    }
    let n = data.rows() as f64;
    let r0 = asyb::config::DEFAULT_SCALING_FLOOR;
    let mut metric: Vec<f64> = counts.iter().map(|s| (n + r0) / (s + r0)).collect();
    metric.push(1.0);
    let clock = Arc::new(Clock::default());
    let shard: Arc<dyn ShardApi> = Arc::new(Shard::with_metric(
        ShardId(0),
        &partition,
        L1 { lambda: 1e-6 },
        settings,
        clock.clone(),
        Arc::new(DelayStats::default()),
        Some(&metric),
    ));
    // A model with a realistic support and a drift on every coordinate.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let w: Vec<f64> = (0..layout.coords())
        .map(|_| {
            if rng.random_bool(0.05) {
                rng.random_range(-0.5..0.5)
            } else {
                0.0
            }
        })
        .collect();
    let shards = vec![shard.clone()];
    asyb::ps::scatter(&partition, &shards, &w);
    for j in 0..BLOCKS {
        let drift: Vec<f64> = (0..partition.block_coords(j))
            .map(|_| rng.random_range(-1e-6..1e-6))
            .collect();
        shard.set_drift(BlockId(j as u32), &drift);
    }
    let transport = LocalTransport::new(shards, clock);
    Setup {
        data,
        layout,
        partition,
        shard,
        transport,
        w,
    }
}

fn random_batches(n: usize, count: usize) -> Vec<Vec<u32>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    (0..count)
        .map(|_| (0..BATCH).map(|_| rng.random_range(0..n) as u32).collect())
        .collect()
}

fn batch_nnz(data: &Dataset, batch: &[u32]) -> u64 {
    batch
        .iter()
        .map(|&i| data.row(i as usize).nnz() as u64)
        .sum()
}

fn passes(c: &mut Criterion, s: &Setup) {
    let mut group = c.benchmark_group("row_passes");
    group.sample_size(10);
    group.throughput(Throughput::Elements(s.data.nnz() as u64));
    group.bench_function("plain_csr_pass", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            for i in 0..s.data.rows() {
                let z: f64 = s.data.row(i).indices.iter().map(|&f| s.w[f as usize]).sum();
                sum += z;
            }
            black_box(sum)
        })
    });
    let obj = Objective {
        data: &s.data,
        rows: None,
        loss: Logistic,
        reg: AnyReg(RegSpec::NONE),
        layout: s.layout,
        alpha: 0.0,
        threads: 1,
    };
    let mut grad = vec![0.0; s.layout.coords()];
    group.bench_function("full_pass", |b| {
        b.iter(|| black_box(obj.loss_pass(&s.w, Some(&mut grad))))
    });
    let shards = [s.shard.clone()];
    let view = asyb::ps::ModelView::of(&s.partition, &shards).expect("interleaved blocks");
    let mut derivs = vec![0.0f32; s.data.rows()];
    group.bench_function("snapshot_pass", |b| {
        b.iter(|| {
            obj.gradient_pass(&view, &mut grad, &mut derivs);
            black_box(grad[0])
        })
    });
    group.finish();
}

fn updates(c: &mut Criterion, s: &Setup) {
    let batches = random_batches(s.data.rows(), 64);
    let per_batch =
        batches.iter().map(|b| batch_nnz(&s.data, b)).sum::<u64>() / batches.len() as u64;
    let control = Control::new(1, u64::MAX);
    let counters = Counters::default();
    let ctx = WorkerContext {
        data: &s.data,
        partition: &s.partition,
        transport: &s.transport,
        control: &control,
        counters: &counters,
        batch: BATCH,
        sampling: Sampling::Iid,
        mode: BlockMode::OneRandom,
        snapshot: None,
    };
    let mut group = c.benchmark_group("update");
    group.throughput(Throughput::Elements(per_batch));

    let mut mg = MinibatchGradient::new(BLOCKS);
    let mut next = 0;
    group.bench_function("minibatch_gradient", |b| {
        b.iter(|| {
            next = (next + 1) % batches.len();
            black_box(mg.compute(Logistic, &ctx, &batches[next], Some(BlockId(0))))
        })
    });

    let locs: Vec<Vec<Loc>> = batches
        .iter()
        .map(|b| {
            b.iter()
                .flat_map(|&i| s.data.row(i as usize).indices.iter())
                .map(|&f| s.partition.locate(f as usize))
                .collect()
        })
        .collect();
    let mut out = vec![0.0; locs.iter().map(Vec::len).max().unwrap_or(0)];
    group.bench_function("pull", |b| {
        b.iter(|| {
            next = (next + 1) % locs.len();
            let l = &locs[next];
            black_box(s.transport.pull(l, 1, &mut out[..l.len()]))
        })
    });

    // Pushes: block 0's gradients of the batches, applied in turn (each push advances
    // the step, so later reads catch up over real histories).
    let grads: Vec<Vec<(u32, f64)>> = batches
        .iter()
        .map(|b| {
            mg.compute(Logistic, &ctx, b, Some(BlockId(0)));
            mg.block(BlockId(0)).to_vec()
        })
        .collect();
    let per_push = grads.iter().map(|g| g.len() as u64).sum::<u64>() / grads.len() as u64;
    group.throughput(Throughput::Elements(per_push));
    group.bench_function("push", |b| {
        b.iter(|| {
            next = (next + 1) % grads.len();
            black_box(s.shard.apply(BlockId(0), s.transport.now(), &grads[next]))
        })
    });
    group.finish();
}

fn hot(c: &mut Criterion) {
    let s = setup();
    passes(c, &s);
    updates(c, &s);
}

criterion_group!(benches, hot);
criterion_main!(benches);
