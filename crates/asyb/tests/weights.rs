//! Row weights: a row of integer weight c trains as c copies of it. Every solver, on
//! weighted rows, against the same solver on the rows repeated; the duality gap and
//! lambda_max with weights; weights of zero as rows left out.

use asyb::config::{Algorithm, TrainConfig, ValidConfig};
use asyb::data::Dataset;
use asyb::model::loss::LossKind;
use asyb::model::reg::RegKind;
use asyb::problem::Problem;
use asyb::train::{RunSummary, StopReason, Trainer};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Random sparse rows with labels for `loss` (binary 0/1, classes 0..3, or real).
fn rows(loss: LossKind, n: usize, d: usize, seed: u64) -> Dataset {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut ds = Dataset::new(d);
    for _ in 0..n {
        let mut fs: Vec<u32> = (0..4).map(|_| rng.random_range(0..d as u32)).collect();
        fs.sort();
        fs.dedup();
        let entries: Vec<(u32, f32)> = fs
            .into_iter()
            .map(|f| (f, rng.random_range(-1.0f32..1.5)))
            .collect();
        let signal: f32 = entries.iter().map(|&(f, v)| v * (f % 3) as f32).sum();
        let y = match loss {
            LossKind::Squared | LossKind::Huber => signal + rng.random_range(-0.5f32..0.5),
            LossKind::Softmax => f32::from(rng.random_range(0u8..3)),
            _ => f32::from(u8::from(signal + rng.random_range(-1.0f32..1.0) > 0.3)),
        };
        ds.push_row(y, entries);
    }
    ds
}

/// `ds` with each row `i` repeated `c[i]` times.
fn repeated(ds: &Dataset, c: &[u32]) -> Dataset {
    let mut out = Dataset::new(ds.features);
    for (i, &k) in c.iter().enumerate() {
        for _ in 0..k {
            out.push_row(ds.labels[i], ds.row(i).iter());
        }
    }
    out
}

fn weighted(ds: &Dataset, c: &[u32]) -> Dataset {
    let mut w = ds.clone();
    w.weights = Some(c.iter().map(|&k| k as f32).collect());
    w
}

fn weights_of(n: usize, seed: u64, zeros: bool) -> Vec<u32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..n)
        .map(|_| rng.random_range(u32::from(!zeros)..4))
        .collect()
}

fn config(loss: LossKind, reg: RegKind, bias: bool, algorithm: Algorithm) -> TrainConfig {
    TrainConfig {
        loss,
        reg,
        lambda: 2e-3,
        l1_ratio: 0.7,
        bias,
        algorithm,
        workers: Some(1),
        eval_threads: Some(1),
        fista_tol: 1e-15,
        fista_max_iters: 20_000,
        tol: 1e-10,
        seed: 3,
        ..Default::default()
    }
}

fn run(cfg: &TrainConfig, ds: Dataset) -> RunSummary {
    let v: ValidConfig = cfg.check().unwrap();
    let pb = Problem::from_datasets(&v, ds, "train.svm".as_ref(), None, None).unwrap();
    Trainer::new(&v, &pb).run().unwrap()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

const CASES: [(LossKind, RegKind, bool); 6] = [
    (LossKind::Logistic, RegKind::L1, true),
    (LossKind::Logistic, RegKind::ElasticNet, false),
    (LossKind::Squared, RegKind::L1, true),
    (LossKind::Huber, RegKind::L1, true),
    (LossKind::SquaredHinge, RegKind::L2, false),
    (LossKind::Softmax, RegKind::L1, false),
];

#[test]
fn weighted_rows_train_as_repeated_rows_with_every_full_data_solver() {
    for (seed, (loss, reg, bias)) in CASES.into_iter().enumerate() {
        let ds = rows(loss, 80, 12, seed as u64);
        let c = weights_of(ds.rows(), 100 + seed as u64, true);
        let algos: &[Algorithm] = if loss == LossKind::Softmax {
            &[Algorithm::Fista]
        } else {
            &[Algorithm::Fista, Algorithm::Cd]
        };
        for &algo in algos {
            let cfg = config(loss, reg, bias, algo);
            let w = run(&cfg, weighted(&ds, &c));
            let r = run(&cfg, repeated(&ds, &c));
            let what = format!("{loss:?} {reg:?} bias {bias} {algo:?}");
            assert!(
                matches!(w.stop_reason, StopReason::Converged | StopReason::Stalled),
                "{what}: {:?}",
                w.stop_reason
            );
            // The objective at the start (the zero model) and at the end.
            assert!(rel(w.first().psi, r.first().psi) < 1e-6, "{what}: start");
            assert!(
                rel(w.last().psi, r.last().psi) < 1e-6,
                "{what}: {} vs {}",
                w.last().psi,
                r.last().psi
            );
            assert!(max_diff(&w.weights, &r.weights) < 1e-4, "{what}: weights");
            match (w.info.lambda_max, r.info.lambda_max) {
                (Some(a), Some(b)) => assert!(rel(a, b) < 1e-6, "{what}: lambda_max {a} vs {b}"),
                (a, b) => assert_eq!(a.is_some(), b.is_some(), "{what}: lambda_max"),
            }
            // The gap certifies the weighted objective as it does the repeated one.
            if let (Some(gw), Some(gr)) = (w.first().gap, r.first().gap) {
                assert!(rel(gw, gr) < 1e-5, "{what}: gap at zero {gw} vs {gr}");
                let psi_star = r.last().psi;
                assert!(
                    gw >= w.first().psi - psi_star - 1e-12,
                    "{what}: gap below suboptimality"
                );
                let end = w.last().gap.unwrap();
                assert!(
                    (0.0..1e-6).contains(&end),
                    "{what}: gap at the optimum {end}"
                );
            }
        }
    }
}

#[test]
fn weighted_rows_train_as_repeated_rows_with_the_stochastic_algorithm() {
    let ds = rows(LossKind::Logistic, 400, 30, 7);
    let c = weights_of(ds.rows(), 8, false);
    let psi_star = run(
        &config(LossKind::Logistic, RegKind::L1, true, Algorithm::Fista),
        repeated(&ds, &c),
    )
    .last()
    .psi;
    let mut cfg = config(LossKind::Logistic, RegKind::L1, true, Algorithm::Asyb);
    cfg.epochs = Some(40.0);
    cfg.tol = 0.0;
    let s = run(&cfg, weighted(&ds, &c));
    let gap = rel(s.last().psi, psi_star);
    assert!(
        gap < 1e-3,
        "asyb on weighted rows ends {gap:.2e} above the optimum"
    );
    // Weights matter: the unweighted rows have another optimum.
    let plain = run(
        &config(LossKind::Logistic, RegKind::L1, true, Algorithm::Fista),
        ds.clone(),
    );
    assert!(max_diff(&plain.weights, &s.weights) > 1e-2);
}

#[test]
fn weights_of_zero_leave_rows_out_and_bad_weights_are_refused() {
    let ds = rows(LossKind::Logistic, 60, 10, 9);
    let c: Vec<u32> = (0..60).map(|i| u32::from(i % 3 != 0)).collect();
    let cfg = config(LossKind::Logistic, RegKind::L1, true, Algorithm::Cd);
    let w = run(&cfg, weighted(&ds, &c));
    let kept = run(&cfg, repeated(&ds, &c));
    assert!(rel(w.last().psi, kept.last().psi) < 1e-7);
    assert!(max_diff(&w.weights, &kept.weights) < 1e-5);
    // Equal weights are no weights.
    let same = run(&cfg, weighted(&ds, &[5; 60]));
    let plain = run(&cfg, ds.clone());
    assert_eq!(same.weights, plain.weights);

    let v = cfg.check().unwrap();
    let zero = weighted(&ds, &[0; 60]);
    let e = Problem::from_datasets(&v, zero, "t.svm".as_ref(), None, None).unwrap_err();
    assert!(
        e.to_string().contains("t.svm: the row weights sum to 0"),
        "{e}"
    );
    let mut neg = ds.clone();
    neg.weights = Some(vec![1.0; 60].into());
    neg.weights.as_mut().unwrap()[4] = -1.0;
    assert!(neg.validate().unwrap_err().contains("row 5: weight -1"));
}
