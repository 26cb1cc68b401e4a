//! `asyb sim`: the simulator's speedup table, in the form of `asyb bench speedup` with
//! times in virtual seconds. The simulation itself is the library's (`asyb::sim`).

use anyhow::Result;
use asyb::config::ValidConfig;
use asyb::monitor::EvalRecord;
use asyb::problem::Problem;
use asyb::sim::{self, Calibration, ComputeTime, Machine, SimRun};

use crate::args::SimArgs;
use crate::bench::{
    check_relative_target, cores, print_stdout, problem_title, reference_optimum, speedup_over,
    speedup_table, worker_counts, SpeedupOutputs, SpeedupRow,
};

fn positive(field: &str, v: Option<f64>) -> Result<()> {
    match v {
        Some(x) if !(x.is_finite() && x >= 0.0) => {
            Err(asyb::Error::config(field, format!("{x} must be a finite number >= 0")).into())
        }
        _ => Ok(()),
    }
}

pub fn sim(a: &SimArgs) -> Result<()> {
    let t = &a.train;
    check_sim_args(a)?;
    let mut counts = worker_counts(t, &[1, 2, 4, 8, 16, 32, 64])?;
    counts.sort_unstable();
    counts.dedup();
    let mut raw = crate::commands::train_config(t)?.raw;
    raw.workers = Some(1);
    let vc = raw.clone().check()?;
    let pb = Problem::load(&vc)?;
    raw.eval_rows = None;
    let vc = raw.clone().check()?;
    let psi_star = reference_optimum(t.psi_star, &vc, &pb, &a.optimum_cache)?;
    let goal = psi_star + a.target * psi_star.abs();

    let cal = if a.calibrate {
        Some(calibrate(a, &vc, &pb)?)
    } else {
        None
    };
    let machine = machine(a, cal);
    let budget = sim::Budget {
        eval_every_epochs: 0.125,
        max_epochs: vc.raw.epochs.unwrap_or(50.0),
        max_virtual_secs: vc.raw.max_seconds.unwrap_or(f64::INFINITY),
    };
    let mut rows = Vec::new();
    let mut curves: Vec<(String, Vec<EvalRecord>)> = Vec::new();
    let mut base = None;
    for &w in &counts {
        let r = sim::simulate(&vc, &pb, &machine, w, goal, budget)?;
        eprintln!(
            "W = {w}: {} ({:.1} s of simulation)",
            outcome(&r),
            r.wall_secs
        );
        let b = *base.get_or_insert(r.time_to_target_secs);
        rows.push(SpeedupRow {
            speedup: speedup_over(b, r.time_to_target_secs),
            ..sim_row(&vc, &r, a.target, psi_star)
        });
        curves.push((format!("W={w}"), r.records));
    }
    print_stdout(&speedup_table(
        "asyb sim (virtual seconds)",
        &rows,
        &pb.train_path,
        cores(),
    ))?;
    let title = format!("simulated: {}", problem_title(&vc.raw, a.target));
    SpeedupOutputs {
        json: a.json.as_deref(),
        plot: vc.raw.plot.as_deref(),
        speedup_plot: a.speedup_plot.as_deref(),
    }
    .write(&title, &rows, &curves, psi_star)?;
    Ok(())
}

/// Checks the flags of `asyb sim` before anything is read: the target, the machine's
/// times, the straggler model and the bandwidth, and that the compute time is given or
/// to be measured.
fn check_sim_args(a: &SimArgs) -> Result<()> {
    check_relative_target(&a.train, a.target, "sim")?;
    for (f, v) in [
        ("compute-secs", a.compute_secs),
        ("compute-sigma", a.compute_sigma),
        ("pull-service-secs", a.pull_service_secs),
        ("push-service-secs", a.push_service_secs),
        ("latency-secs", Some(a.latency_secs)),
        ("snapshot-secs", a.snapshot_secs),
        ("straggler-prob", Some(a.straggler_prob)),
    ] {
        positive(f, v)?;
    }
    if a.straggler_prob > 1.0 || a.straggler_slowdown.is_nan() || a.straggler_slowdown < 1.0 {
        return Err(asyb::Error::config(
            "straggler-prob",
            "needs a probability in [0, 1] and a slowdown >= 1",
        )
        .into());
    }
    if a.bandwidth.is_some_and(|b| b.is_nan() || b <= 0.0) {
        return Err(asyb::Error::config("bandwidth", "must be > 0 bytes per second").into());
    }
    if !a.calibrate && a.compute_secs.is_none() {
        return Err(asyb::Error::config(
            "compute-secs",
            "give the compute time per minibatch, or --calibrate to measure it here",
        )
        .into());
    }
    Ok(())
}

/// Measures the machine's times with real one-worker updates (`--calibrate`) and says
/// what it found.
fn calibrate(a: &SimArgs, vc: &ValidConfig, pb: &Problem) -> Result<Calibration> {
    eprintln!(
        "calibrating: {} real one-worker updates ...",
        a.calibrate_updates
    );
    let c = sim::calibrate(vc, pb, a.calibrate_updates)?;
    eprintln!(
        "  compute {:.3e} s per minibatch (median; log-normal sigma {:.2}), push {:.3e} s, snapshot {:.3e} s",
        c.compute.median_secs, c.compute.sigma, c.push_service_secs, c.snapshot_secs
    );
    Ok(c)
}

/// The simulated machine: each time from its flag, else from the calibration `cal`,
/// else none (no bandwidth limit).
fn machine(a: &SimArgs, cal: Option<Calibration>) -> Machine {
    Machine {
        compute: ComputeTime {
            median_secs: a
                .compute_secs
                .or(cal.map(|c| c.compute.median_secs))
                .unwrap_or(0.0),
            sigma: a
                .compute_sigma
                .or(cal.map(|c| c.compute.sigma))
                .unwrap_or(0.0),
            straggler_prob: a.straggler_prob,
            straggler_slowdown: a.straggler_slowdown,
        },
        pull_service_secs: a.pull_service_secs.unwrap_or(0.0),
        push_service_secs: a
            .push_service_secs
            .or(cal.map(|c| c.push_service_secs))
            .unwrap_or(0.0),
        latency_secs: a.latency_secs,
        bandwidth_bytes_per_sec: a.bandwidth.unwrap_or(f64::INFINITY),
        snapshot_secs: a
            .snapshot_secs
            .or(cal.map(|c| c.snapshot_secs))
            .unwrap_or(0.0),
    }
}

/// How a simulated run ended: when it reached the target, or where it stopped short.
fn outcome(r: &SimRun) -> String {
    match (r.time_to_target_secs, r.updates_to_target) {
        (Some(t), Some(u)) => format!("target reached at {t:.3} virtual s, {u} updates"),
        _ => {
            let last = r.records.last();
            format!(
                "target not reached: Psi {:.6e} after {} updates ({:.1} epochs)",
                last.map_or(f64::NAN, |l| l.psi),
                last.map_or(0, |l| l.updates),
                last.map_or(0.0, |l| l.epochs)
            )
        }
    }
}

/// The table row of one simulated run (one seed: its time is the median, minimum and
/// maximum), without its speedup.
fn sim_row(vc: &ValidConfig, r: &SimRun, target: f64, psi_star: f64) -> SpeedupRow {
    SpeedupRow {
        algorithm: vc.raw.algorithm.name().to_string(),
        workers: r.workers,
        oversubscribed: false,
        seeds: 1,
        reached: u64::from(r.time_to_target_secs.is_some()),
        time_to_target_secs: r.time_to_target_secs,
        time_min_secs: r.time_to_target_secs,
        time_max_secs: r.time_to_target_secs,
        speedup: None,
        updates_to_target: r.updates_to_target,
        mean_delay: r.delays.mean,
        max_delay: r.delays.max,
        rejected: r.delays.rejected,
        test_accuracy: None,
        test_auc: None,
        target,
        psi_star,
    }
}
