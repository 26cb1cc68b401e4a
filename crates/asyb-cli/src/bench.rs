//! `asyb bench perf`: the reference click-through workload of `docs/performance.md`, end
//! to end on the user's machine: generate the data, read the text, write and load the
//! binary cache, compute (once) the reference optimum, train to relative suboptimality
//! 1e-3 and 1e-4 with each worker count, and measure the peak memory of a run from the
//! text in a child process. Prints a table; `--json` keeps the figures.
//!
//! The data, its cache and the optimum stay in `--workdir`, so a second run skips the
//! generation and the reference solver.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use asyb::config::{Algorithm, CompactFeatures, TrainConfig, ValidConfig};
use asyb::data::{gen, CtrSpec};
use asyb::model::loss::LossKind;
use asyb::model::reg::RegKind;
use asyb::monitor::EvalRecord;
use asyb::problem::Problem;
use asyb::train::{RunSummary, Trainer};
use serde::{Deserialize, Serialize};

use crate::args::BenchPerfArgs;

/// The reference problem: L1-regularized logistic regression without intercept.
const FEATURES: usize = 1 << 20;
const LAMBDA: f64 = 1e-6;
const DATA_SEED: u64 = 1;
/// Relative suboptimality targets.
const TARGETS: [f64; 2] = [1e-3, 1e-4];
/// An evaluation interval in seconds that no run reaches.
const NEVER_SECS: f64 = 1e9;

/// The generated data and the problem of `bench perf` (the data stamp of the workdir).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Workload {
    rows: usize,
    features: usize,
    data_seed: u64,
    lambda: f64,
}

/// One training run to the targets.
#[derive(Clone, Debug, Serialize)]
pub struct TargetRun {
    pub workers: usize,
    /// Which of the `--repeat` rounds (its seed is the bench's plus this).
    pub round: usize,
    /// Per target: `(relative suboptimality, training seconds, epochs)`, `None` where the
    /// run stopped before reaching it.
    pub reached: Vec<(f64, Option<(f64, f64)>)>,
    pub updates_per_sec: f64,
    pub samples_per_sec: f64,
    pub mean_delay: f64,
    pub max_delay: u64,
    /// Seconds from the start of the run to the start of training: column statistics,
    /// the automatic step, the shards (counted in "end to end").
    pub setup_secs: f64,
}

/// Everything `bench perf` measured.
#[derive(Clone, Debug, Serialize)]
pub struct PerfReport {
    /// The training runs' algorithm.
    pub algorithm: String,
    pub rows: usize,
    pub features: usize,
    pub nonzeros: usize,
    pub text_bytes: u64,
    pub cache_bytes: u64,
    pub psi_star: f64,
    pub generate_secs: Option<f64>,
    pub read_text_secs: f64,
    /// Labels to -1/+1 and the features renumbered in frequency order, after the read.
    pub prepare_text_secs: f64,
    pub write_cache_secs: f64,
    pub load_cache_secs: f64,
    /// The same for the data loaded from the cache (whose indices are copied out of the
    /// mapping when they are renumbered).
    pub prepare_cache_secs: f64,
    pub runs: Vec<TargetRun>,
    /// Peak RSS of `asyb train` from the text with 2 workers to 1e-3, and its wall time.
    pub peak_rss_bytes: Option<u64>,
    pub rss_run_wall_secs: Option<f64>,
    /// Bytes of the dataset in CSR (binary rows: no values) plus the model's f64s.
    pub csr_plus_model_bytes: u64,
}

pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    asyb::io::atomic_write(path, |w| {
        w.write_all(text.as_bytes())
            .map_err(|e| asyb::Error::io(path, e))
    })?;
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn config(
    train: &Path,
    w: &Workload,
    workers: usize,
    target: Option<f64>,
    a: &BenchPerfArgs,
) -> Result<ValidConfig> {
    let cfg = TrainConfig {
        train: Some(train.to_path_buf()),
        loss: LossKind::Logistic,
        reg: RegKind::L1,
        lambda: w.lambda,
        bias: false,
        features: Some(w.features),
        algorithm: a.algorithm,
        workers: Some(workers),
        epochs: Some(a.max_epochs),
        target_objective: target,
        // Timed to the target, not to convergence.
        tol: 0.0,
        // Evaluations at fixed shares of an epoch only.
        eval_every_secs: Some(NEVER_SECS),
        eval_every_epochs: Some(a.eval_every_epochs),
        eval_rows: None,
        seed: a.seed,
        fista_tol: a.fista_tol,
        ..TrainConfig::default()
    };
    Ok(cfg.check()?)
}

fn run_quiet(vc: &ValidConfig, pb: &Problem) -> Result<RunSummary> {
    Ok(Trainer::new(vc, pb).run()?)
}

/// `asyb train` from the text with 2 workers to `psi`, in a child process: its peak RSS
/// (from the memory line of its summary: the kernel's per-child maximum would count
/// this process's memory, inherited at the child's exec) and wall time.
fn rss_run(text: &Path, w: &Workload, psi: f64, a: &BenchPerfArgs) -> Result<(Option<u64>, f64)> {
    let exe = std::env::current_exe().context("locating the asyb executable")?;
    let t = Instant::now();
    let out = std::process::Command::new(exe)
        .arg("train")
        .arg("--train")
        .arg(text)
        .args(["--loss", "logistic", "--reg", "l1", "--no-bias", "--quiet"])
        .args(["--lambda", &w.lambda.to_string()])
        .args(["--features", &w.features.to_string()])
        .args(["--algorithm", a.algorithm.name()])
        .args(["--workers", "2", "--eval-every", &NEVER_SECS.to_string()])
        .args(["--eval-every-epochs", &a.eval_every_epochs.to_string()])
        .args(["--eval-rows", &w.rows.to_string()])
        .args(["--target-objective", &format!("{psi:e}")])
        .args(["--epochs", &a.max_epochs.to_string()])
        .args(["--seed", &a.seed.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running asyb train in a child process")?;
    let wall = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "the child training run failed ({})",
        out.status
    );
    let rss = crate::report::parse_memory_line(&String::from_utf8_lossy(&out.stdout));
    Ok((rss, wall))
}

pub fn perf(a: &BenchPerfArgs) -> Result<()> {
    let dir = &a.workdir;
    std::fs::create_dir_all(dir).map_err(|e| asyb::Error::io(dir, e))?;
    let w = Workload {
        rows: a.rows,
        features: FEATURES,
        data_seed: DATA_SEED,
        lambda: LAMBDA,
    };
    let text = dir.join("train.svm");
    let cache = dir.join("train.cache");

    // 1. Generate (unless the same workload is already there).
    let generate_secs = generate_data(&w, &text, &dir.join("train.json"))?;

    // 2. Read the text, 3. write the cache, 4. load it; each read is then prepared for
    // training (labels, feature order), timed apart.
    eprintln!("reading the text, writing and loading the cache ...");
    let (pb, stages) = time_data_stages(&text, &cache, &w, a)?;
    let csr_plus_model_bytes =
        (pb.train.heap_bytes() + pb.layout.coords() * std::mem::size_of::<f64>()) as u64;
    let nonzeros = pb.train.nnz();

    // 5. The optimum.
    let psi_star = match a.psi_star {
        Some(p) => p,
        None => cached_optimum(
            &config(&cache, &w, 1, None, a)?,
            &pb,
            &dir.join("optimum.json"),
        )?,
    };
    let goal = |rel: f64| psi_star * (1.0 + rel);

    // 6. Train to the targets from the cache.
    let mut runs = Vec::new();
    let rounds = a.repeat as usize;
    for (round, workers) in
        (0..rounds).flat_map(|r| a.workers.iter().map(move |&w| (r, w as usize)))
    {
        runs.push(target_run(&cache, &w, &pb, workers, round, psi_star, a)?);
    }
    drop(pb);

    // 7. Peak memory of a run from the text.
    let (peak_rss_bytes, rss_run_wall_secs) = if a.no_rss {
        (None, None)
    } else {
        eprintln!("training from the text in a child process to measure its peak memory ...");
        let (rss, wall) = rss_run(&text, &w, goal(TARGETS[0]), a)?;
        (rss, Some(wall))
    };

    let report = PerfReport {
        algorithm: a.algorithm.name().to_string(),
        rows: w.rows,
        features: w.features,
        nonzeros,
        text_bytes: stages.text_bytes,
        cache_bytes: stages.cache_bytes,
        psi_star,
        generate_secs,
        read_text_secs: stages.read_text_secs,
        prepare_text_secs: stages.prepare_text_secs,
        write_cache_secs: stages.write_cache_secs,
        load_cache_secs: stages.load_cache_secs,
        prepare_cache_secs: stages.prepare_cache_secs,
        runs,
        peak_rss_bytes,
        rss_run_wall_secs,
        csr_plus_model_bytes,
    };
    print_stdout(&perf_table(&report))?;
    if let Some(p) = &a.json {
        write_json_atomic(p, &report)?;
    }
    Ok(())
}

/// Writes the data of `w` to `text` and its stamp to `stamp`, unless the stamp says the
/// same workload is there already: the seconds the generation took, `None` if skipped.
fn generate_data(w: &Workload, text: &Path, stamp: &Path) -> Result<Option<f64>> {
    let have = read_json::<Workload>(stamp).is_some_and(|s| s == *w) && text.exists();
    if have {
        eprintln!("data: {} (generated earlier)", text.display());
        return Ok(None);
    }
    eprintln!(
        "generating {} rows of CTR data into {} ...",
        w.rows,
        text.display()
    );
    let spec = CtrSpec {
        rows: w.rows,
        features: w.features,
        seed: w.data_seed,
        ..CtrSpec::default()
    };
    let t = Instant::now();
    gen::write_ctr(&spec, text)?;
    let secs = t.elapsed().as_secs_f64();
    write_json_atomic(stamp, w)?;
    Ok(Some(secs))
}

/// The sizes and timings of the data stages of `bench perf` (the fields of the same
/// names in [`PerfReport`]).
struct DataStages {
    text_bytes: u64,
    cache_bytes: u64,
    read_text_secs: f64,
    prepare_text_secs: f64,
    write_cache_secs: f64,
    load_cache_secs: f64,
    prepare_cache_secs: f64,
}

/// Reads the text, writes the binary cache from it and loads the cache, timing each
/// step and each read's preparation for training apart: the problem loaded from the
/// cache, ready to train, and the timings.
fn time_data_stages(
    text: &Path,
    cache: &Path,
    w: &Workload,
    a: &BenchPerfArgs,
) -> Result<(Problem, DataStages)> {
    let vc = config(text, w, 1, None, a)?;
    let t = Instant::now();
    let (mut ds, report, _) = Problem::read_train(&vc)?;
    let read_text_secs = t.elapsed().as_secs_f64();
    let text_bytes = file_len(text)?;
    ds.compact_binary();
    // What `asyb convert` does after parsing: the features renumbered, the cache
    // written (on a copy: the text's rows are prepared below).
    let mut rows = ds.clone();
    let t = Instant::now();
    let source = asyb::data::cache::Source::of(text, report.index_base_one)?;
    let map = asyb::problem::renumber_for_cache(&mut rows, CompactFeatures::Auto);
    asyb::data::cache::write_cache(cache, &rows, map.as_ref(), &source)?;
    let write_cache_secs = t.elapsed().as_secs_f64();
    drop(rows);
    let t = Instant::now();
    drop(Problem::from_datasets(&vc, ds, text, None, None)?);
    let prepare_text_secs = t.elapsed().as_secs_f64();
    let cache_bytes = file_len(cache)?;
    let vc = config(cache, w, 1, None, a)?;
    let t = Instant::now();
    let (ds, report, columns) = Problem::read_train(&vc)?;
    let load_cache_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut pb = Problem::from_renumbered(&vc, ds, columns, cache, None, None)?;
    pb.train_report = Some(report);
    let prepare_cache_secs = t.elapsed().as_secs_f64();
    let stages = DataStages {
        text_bytes,
        cache_bytes,
        read_text_secs,
        prepare_text_secs,
        write_cache_secs,
        load_cache_secs,
        prepare_cache_secs,
    };
    Ok((pb, stages))
}

/// The size of the file at `path` in bytes.
fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .map_err(|e| asyb::Error::io(path, e))?
        .len())
}

/// One training run of `bench perf` from the cache with `workers` workers and the seed
/// of `round`, to the smallest target: when it reached each target, its throughput,
/// delays and setup time.
fn target_run(
    cache: &Path,
    w: &Workload,
    pb: &Problem,
    workers: usize,
    round: usize,
    psi_star: f64,
    a: &BenchPerfArgs,
) -> Result<TargetRun> {
    let goal = |rel: f64| psi_star * (1.0 + rel);
    eprintln!("training with {workers} worker(s) to 1e-4 ...");
    let mut vc = config(cache, w, workers, Some(goal(TARGETS[1])), a)?;
    vc.raw.seed = a.seed + round as u64;
    let started = Instant::now();
    let s = run_quiet(&vc, pb)?;
    // The run's wall clock starts with training; what came before it is setup (the
    // little after it, gathering the final model, is counted with it).
    let setup_secs = (started.elapsed().as_secs_f64() - s.wall_secs).max(0.0);
    let last = s.last();
    Ok(TargetRun {
        workers,
        round,
        reached: TARGETS
            .iter()
            .map(|&r| {
                let hit = reached_at(&s.records, goal(r));
                (r, hit.map(|h| (h.train_secs, h.epochs)))
            })
            .collect(),
        updates_per_sec: last.updates_per_sec,
        samples_per_sec: last.samples_per_sec,
        mean_delay: s.delays.mean,
        max_delay: s.delays.max,
        setup_secs,
    })
}

/// Writes `text` to standard output and flushes it.
pub(crate) fn print_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The smallest and the largest of `v`.
fn range(v: impl Iterator<Item = f64>) -> (f64, f64) {
    v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    })
}

/// Megabytes (10^6 bytes).
fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

impl TargetRun {
    /// Training seconds and epochs to the target `rel`, `None` where the run stopped
    /// before reaching it.
    fn time_to(&self, rel: f64) -> Option<(f64, f64)> {
        self.reached.iter().find(|p| p.0 == rel).and_then(|p| p.1)
    }
}

impl PerfReport {
    /// The runs with `workers` workers.
    fn runs_of(&self, workers: usize) -> impl Iterator<Item = &TargetRun> + '_ {
        self.runs.iter().filter(move |x| x.workers == workers)
    }

    /// Median training time (and epochs) of the runs of `workers` that reached `rel`,
    /// with each of those runs' own; `None` if none reached it.
    fn median_to(&self, workers: usize, rel: f64) -> Option<Reached> {
        let hits: Vec<(f64, f64)> = self
            .runs_of(workers)
            .filter_map(|x| x.time_to(rel))
            .collect();
        let secs = median(&mut hits.iter().map(|h| h.0).collect::<Vec<_>>())?;
        let epochs = median(&mut hits.iter().map(|h| h.1).collect::<Vec<_>>())?;
        Some(Reached { secs, epochs, hits })
    }
}

/// The runs of one worker count that reached one target.
struct Reached {
    /// Median training seconds and epochs to the target.
    secs: f64,
    epochs: f64,
    /// Each run's own `(seconds, epochs)`.
    hits: Vec<(f64, f64)>,
}

/// The table `bench perf` prints.
pub fn perf_table(r: &PerfReport) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "\nasyb bench perf: {} rows, {} features, {:.1}M nonzeros; logistic + L1 (lambda {LAMBDA:e}), no intercept; algorithm {}; Psi* = {:.10}\n\n",
        r.rows,
        r.features,
        r.nonzeros as f64 / 1e6,
        r.algorithm,
        r.psi_star
    ));
    push_data_stages(&mut s, r);
    s.push('\n');
    push_training_runs(&mut s, r);
    push_speedups(&mut s, r);
    push_end_to_end(&mut s, r);
    if let Some(rss) = r.peak_rss_bytes {
        s.push_str(&format!(
            "\npeak RSS of `asyb train` from the text, 2 workers, to 1e-3: {:.0} MB = {:.2}x the CSR data plus the model ({:.0} MB); wall {:.1} s with evaluations\n",
            mb(rss),
            rss as f64 / r.csr_plus_model_bytes as f64,
            mb(r.csr_plus_model_bytes),
            r.rss_run_wall_secs.unwrap_or(0.0)
        ));
    }
    s
}

/// The perf table's lines of the data stages: generate, read, write and load the cache.
fn push_data_stages(s: &mut String, r: &PerfReport) {
    s.push_str(&format!("{:<44} {:>10}  {}\n", "stage", "time", "rate"));
    if let Some(g) = r.generate_secs {
        s.push_str(&format!(
            "{:<44} {:>8.2} s\n",
            "generate the LIBSVM text", g
        ));
    }
    s.push_str(&format!(
        "{:<44} {:>8.2} s  {:.0} MB/s ({:.0} MB)\n",
        "read the LIBSVM text",
        r.read_text_secs,
        mb(r.text_bytes) / r.read_text_secs,
        mb(r.text_bytes)
    ));
    s.push_str(&format!(
        "{:<44} {:>8.2} s\n",
        "prepare it (labels, features by frequency)", r.prepare_text_secs
    ));
    s.push_str(&format!(
        "{:<44} {:>8.2} s  ({:.0} MB)\n",
        "write the binary cache (features renumbered)",
        r.write_cache_secs,
        mb(r.cache_bytes)
    ));
    s.push_str(&format!(
        "{:<44} {:>8.2} s  {:.2} GB/s\n",
        "load the binary cache",
        r.load_cache_secs,
        mb(r.cache_bytes) / 1e3 / r.load_cache_secs
    ));
    s.push_str(&format!(
        "{:<44} {:>8.2} s\n",
        "prepare it (labels)", r.prepare_cache_secs
    ));
}

/// The perf table's line per worker count and target: the median time and epochs to
/// it, the throughput and delays, and over several rounds the range of the times.
fn push_training_runs(s: &mut String, r: &PerfReport) {
    s.push_str(&format!(
        "{:<44} {:>10}  {:>7}  {}\n",
        "training from the cache (evaluation excluded)", "time", "epochs", "throughput"
    ));
    let mut counts: Vec<usize> = r.runs.iter().map(|x| x.workers).collect();
    counts.sort_unstable();
    counts.dedup();
    for &workers in &counts {
        let n = r.runs_of(workers).count();
        let samples = median(
            &mut r
                .runs_of(workers)
                .map(|x| x.samples_per_sec)
                .collect::<Vec<_>>(),
        )
        .unwrap_or(0.0);
        let delay = r.runs_of(workers).map(|x| x.mean_delay).sum::<f64>() / n as f64;
        let max_delay = r.runs_of(workers).map(|x| x.max_delay).max().unwrap_or(0);
        for &rel in &TARGETS {
            let label = format!(
                "to {rel:.0e}, {workers} worker{}",
                if workers == 1 { "" } else { "s" }
            );
            match r.median_to(workers, rel) {
                Some(Reached { secs, epochs, hits }) => {
                    s.push_str(&format!(
                        "{label:<44} {secs:>8.2} s  {epochs:>7.2}  {samples:.2e} samples/s, delay mean {delay:.2} max {max_delay}"
                    ));
                    if n > 1 {
                        let (lo, hi) = range(hits.iter().map(|h| h.0));
                        s.push_str(&format!("; {} runs {lo:.2}-{hi:.2} s", hits.len()));
                        if hits.len() < n {
                            s.push_str(&format!(" ({} not reached)", n - hits.len()));
                        }
                    }
                    s.push('\n');
                }
                None => s.push_str(&format!("{label:<44} {:>10}\n", "not reached")),
            }
        }
    }
}

/// The perf table's speedup from 1 to 2 workers per target: the ratio of the median
/// times, and over several rounds the range of each round's own ratio.
fn push_speedups(s: &mut String, r: &PerfReport) {
    for &rel in &TARGETS {
        if let (Some(at1), Some(at2)) = (r.median_to(1, rel), r.median_to(2, rel)) {
            s.push_str(&format!(
                "{:<44} {:>8.2}x",
                format!("speedup 1 -> 2 workers to {rel:.0e}"),
                at1.secs / at2.secs
            ));
            // Each round's own ratio: its runs were a minute apart at most.
            let pairs: Vec<f64> = r
                .runs_of(1)
                .filter_map(|one| {
                    let two = r.runs_of(2).find(|x| x.round == one.round)?;
                    Some(one.time_to(rel)?.0 / two.time_to(rel)?.0)
                })
                .collect();
            if pairs.len() > 1 {
                let (lo, hi) = range(pairs.iter().copied());
                s.push_str(&format!("  (rounds {lo:.2}-{hi:.2}x)"));
            }
            s.push('\n');
        }
    }
}

/// The perf table's median setup time with 2 workers, and the end-to-end times from the
/// text and from the cache to each target: read and preparation, setup and training.
fn push_end_to_end(s: &mut String, r: &PerfReport) {
    let setup = median(&mut r.runs_of(2).map(|x| x.setup_secs).collect::<Vec<_>>());
    if let Some(setup) = setup {
        s.push_str(&format!(
            "{:<44} {:>8.2} s\n",
            "setup before training, 2 workers", setup
        ));
    }
    for (from, before) in [
        ("text", r.read_text_secs + r.prepare_text_secs),
        ("cache", r.load_cache_secs + r.prepare_cache_secs),
    ] {
        for &rel in &TARGETS {
            if let (Some(at2), Some(setup)) = (r.median_to(2, rel), setup) {
                s.push_str(&format!(
                    "{:<44} {:>8.2} s\n",
                    format!("end to end from the {from} to {rel:.0e}, 2 workers"),
                    before + setup + at2.secs
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(train_secs: f64, psi: f64) -> EvalRecord {
        EvalRecord {
            train_secs,
            epochs: train_secs / 2.0,
            psi,
            ..EvalRecord::default()
        }
    }

    /// The end-to-end lines add the text's (or the cache's) read and preparation, the
    /// setup and the training time to each target, and the speedup divides the two
    /// runs' times.
    #[test]
    fn perf_table_adds_read_setup_and_training() {
        let run = |workers, round, secs: [Option<f64>; 2], setup_secs| TargetRun {
            workers,
            round,
            reached: vec![
                (1e-3, secs[0].map(|t| (t, t / 4.0))),
                (1e-4, secs[1].map(|t| (t, t / 4.0))),
            ],
            updates_per_sec: 1.0,
            samples_per_sec: 1.0,
            mean_delay: 0.0,
            max_delay: 0,
            setup_secs,
        };
        let mut r = PerfReport {
            algorithm: "asyb".into(),
            rows: 10,
            features: 4,
            nonzeros: 20,
            text_bytes: 1_000_000,
            cache_bytes: 500_000,
            psi_star: 0.5,
            generate_secs: None,
            read_text_secs: 0.5,
            prepare_text_secs: 0.15,
            write_cache_secs: 0.1,
            load_cache_secs: 0.01,
            prepare_cache_secs: 0.2,
            runs: vec![
                run(1, 0, [Some(6.0), Some(12.0)], 0.3),
                run(2, 0, [Some(4.0), Some(8.0)], 0.25),
            ],
            peak_rss_bytes: None,
            rss_run_wall_secs: None,
            csr_plus_model_bytes: 100,
        };
        let line = |t: &str, start: &str| {
            t.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no line {start:?} in\n{t}"))
                .to_string()
        };
        // The figure before the unit.
        let figure = |t: &str, start: &str| {
            let l = line(t, start);
            let rest = l[start.len()..].trim_start().to_string();
            rest.split_whitespace().next().unwrap().to_string()
        };
        let t = perf_table(&r);
        assert_eq!(figure(&t, "setup before training, 2 workers"), "0.25");
        assert_eq!(
            figure(&t, "end to end from the text to 1e-3, 2 workers"),
            "4.90"
        );
        assert_eq!(
            figure(&t, "end to end from the text to 1e-4, 2 workers"),
            "8.90"
        );
        assert_eq!(
            figure(&t, "end to end from the cache to 1e-3, 2 workers"),
            "4.46"
        );
        assert_eq!(
            figure(&t, "end to end from the cache to 1e-4, 2 workers"),
            "8.46"
        );
        assert_eq!(figure(&t, "speedup 1 -> 2 workers to 1e-3"), "1.50x");
        assert!(!t.contains("rounds"), "{t}");

        // Three rounds: medians, ranges, each round's own speedup, and a target one
        // round missed.
        r.runs.extend([
            run(1, 1, [Some(7.0), Some(14.0)], 0.3),
            run(2, 1, [Some(3.0), Some(9.0)], 0.2),
            run(1, 2, [Some(5.0), None], 0.3),
            run(2, 2, [Some(3.5), Some(10.0)], 0.4),
        ]);
        let t = perf_table(&r);
        assert_eq!(figure(&t, "to 1e-3, 1 worker"), "6.00");
        assert!(
            line(&t, "to 1e-3, 1 worker").ends_with("; 3 runs 5.00-7.00 s"),
            "{t}"
        );
        assert_eq!(figure(&t, "to 1e-4, 1 worker"), "13.00");
        assert!(
            line(&t, "to 1e-4, 1 worker").ends_with("; 2 runs 12.00-14.00 s (1 not reached)"),
            "{t}"
        );
        assert_eq!(figure(&t, "to 1e-3, 2 workers"), "3.50");
        // 6.0 / 3.5; the rounds' own: 1.50, 2.33, 1.43.
        assert_eq!(figure(&t, "speedup 1 -> 2 workers to 1e-3"), "1.71x");
        assert!(
            line(&t, "speedup 1 -> 2 workers to 1e-3").ends_with("(rounds 1.43-2.33x)"),
            "{t}"
        );
        assert_eq!(figure(&t, "speedup 1 -> 2 workers to 1e-4"), "1.44x");
        assert_eq!(figure(&t, "setup before training, 2 workers"), "0.25");
        assert_eq!(
            figure(&t, "end to end from the cache to 1e-3, 2 workers"),
            "3.96"
        );
    }

    #[test]
    fn line_fit_recovers_an_exact_power_law() {
        let xs: Vec<f64> = [1e3f64, 1e4, 1e5].iter().map(|k| k.ln()).collect();
        let ys: Vec<f64> = xs.iter().map(|x| 2.0 - 0.5 * x).collect();
        let (b, a, r2) = fit_line(&xs, &ys);
        assert!((b + 0.5).abs() < 1e-12 && (a - 2.0).abs() < 1e-10 && (r2 - 1.0).abs() < 1e-12);
        let noisy = [ys[0] + 0.1, ys[1] - 0.1, ys[2] + 0.1];
        assert!(fit_line(&xs, &noisy).2 < 1.0);
    }

    #[test]
    fn the_start_is_left_out_of_the_mean() {
        let mut recs: Vec<EvalRecord> = [(0, 9.0), (10, 2.0), (20, 4.0), (30, 100.0)]
            .iter()
            .map(|&(k, p)| EvalRecord {
                updates: k,
                pgm_sq_norm: p,
                ..EvalRecord::default()
            })
            .collect();
        assert_eq!(mean_after_start(&recs, 20), 3.0);
        recs.clear();
        assert_eq!(mean_after_start(&recs, 20), 0.0);
    }

    #[test]
    fn time_to_target_is_the_first_evaluation_at_or_below_it() {
        let recs = [
            record(0.0, 0.7),
            record(1.0, 0.3),
            record(2.0, 0.25),
            record(3.0, 0.2),
        ];
        assert_eq!(reached_at(&recs, 0.25).map(|r| r.train_secs), Some(2.0));
        assert!(reached_at(&recs, 0.1).is_none());
    }
}

/// A reference optimum in the cache file of `bench speedup`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CachedOptimum {
    /// The data's fingerprint and every setting that changes the problem.
    key: String,
    fista_tol: f64,
    psi_star: f64,
    iterations: u64,
    secs: f64,
}

/// Psi* from `cache` for this problem, or from the `fista` solver (then cached).
pub(crate) fn cached_optimum(vc: &ValidConfig, pb: &Problem, cache: &Path) -> Result<f64> {
    let key = asyb::train::problem_key(&vc.raw, pb);
    let mut entries: Vec<CachedOptimum> = read_json(cache).unwrap_or_default();
    if let Some(o) = entries
        .iter()
        .find(|o| o.key == key && o.fista_tol <= vc.raw.fista_tol)
    {
        eprintln!(
            "reference optimum Psi* = {:.11} (cached in {}: fista, {} iterations)",
            o.psi_star,
            cache.display(),
            o.iterations
        );
        return Ok(o.psi_star);
    }
    eprintln!(
        "computing the reference optimum with fista (tolerance {:e}; cached in {}) ...",
        vc.raw.fista_tol,
        cache.display()
    );
    let mut raw = vc.raw.clone();
    raw.algorithm = Algorithm::Fista;
    raw.epochs = None;
    raw.max_updates = None;
    raw.max_seconds = None;
    raw.target_objective = None;
    raw.workers = None;
    let fvc = raw.check()?;
    let t = Instant::now();
    let s = run_quiet(&fvc, pb)?;
    let o = CachedOptimum {
        key,
        fista_tol: vc.raw.fista_tol,
        psi_star: s.last().psi,
        iterations: s.last().updates,
        secs: t.elapsed().as_secs_f64(),
    };
    eprintln!(
        "  Psi* = {:.11} after {} iterations, {:.1} s ({})",
        o.psi_star,
        o.iterations,
        o.secs,
        s.stop_reason.describe()
    );
    entries.retain(|e| e.key != o.key);
    entries.push(o.clone());
    write_json_atomic(cache, &entries)?;
    Ok(o.psi_star)
}

/// One worker count's runs, as `bench speedup` reports them.
#[derive(Clone, Debug, Serialize)]
pub struct SpeedupRow {
    pub algorithm: String,
    pub workers: usize,
    pub oversubscribed: bool,
    pub seeds: u64,
    /// Runs that reached the target.
    pub reached: u64,
    /// Median, min and max training seconds to the target over the runs that reached it.
    pub time_to_target_secs: Option<f64>,
    pub time_min_secs: Option<f64>,
    pub time_max_secs: Option<f64>,
    /// Median time of the smallest worker count over this one's.
    pub speedup: Option<f64>,
    /// Median block updates to the target.
    pub updates_to_target: Option<u64>,
    pub mean_delay: f64,
    pub max_delay: u64,
    pub rejected: u64,
    /// Median test accuracy and AUC at the evaluation that reached the target (with
    /// `--test`).
    pub test_accuracy: Option<f64>,
    pub test_auc: Option<f64>,
    pub target: f64,
    pub psi_star: f64,
}

/// The median of `v` (the mean of the middle two for an even count), `None` if empty.
fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// The first evaluation at or below `psi`.
fn reached_at(records: &[EvalRecord], psi: f64) -> Option<&EvalRecord> {
    records.iter().find(|r| r.psi <= psi)
}

/// Refuses the train flags a bench sets itself or has no use for.
pub(crate) fn refuse_flags(flags: &[(&str, bool)], why: &str) -> Result<()> {
    match flags.iter().find(|f| f.1) {
        Some((flag, _)) => Err(asyb::Error::config(*flag, why).into()),
        None => Ok(()),
    }
}

/// The train flags no bench uses: it writes no model, log or checkpoint of its runs.
pub(crate) fn output_flags(t: &crate::args::TrainArgs) -> [(&'static str, bool); 5] {
    [
        ("model", t.model.is_some()),
        ("log", t.log.is_some()),
        ("init-model", t.init_model.is_some()),
        ("checkpoint-dir", t.checkpoint_dir.is_some()),
        ("resume", t.resume.is_some()),
    ]
}

/// The worker counts of `--workers`, or `default` without it; each must be at least 1.
pub(crate) fn worker_counts(t: &crate::args::TrainArgs, default: &[usize]) -> Result<Vec<usize>> {
    let counts = t
        .workers
        .as_ref()
        .map_or_else(|| default.to_vec(), |w| w.0.clone());
    if counts.contains(&0) {
        return Err(asyb::Error::config("workers", "every count must be at least 1").into());
    }
    Ok(counts)
}

/// Refuses the train flags of a `command` that sets its own target from `--target` and
/// Psi*, and checks `target`, the relative suboptimality to reach.
pub(crate) fn check_relative_target(
    t: &crate::args::TrainArgs,
    target: f64,
    command: &str,
) -> Result<()> {
    let why = format!("not used by {command} (it sets the target from --target and Psi*)");
    refuse_flags(&output_flags(t), &why)?;
    refuse_flags(&[("target-objective", t.target_objective.is_some())], &why)?;
    if !(target.is_finite() && target > 0.0) {
        return Err(asyb::Error::config("target", "must be a finite number > 0").into());
    }
    Ok(())
}

/// Psi*: `given` (`--psi-star`), or the reference optimum cached in `cache` (computed
/// there first if it is not).
pub(crate) fn reference_optimum(
    given: Option<f64>,
    vc: &ValidConfig,
    pb: &Problem,
    cache: &Path,
) -> Result<f64> {
    match given {
        Some(p) => Ok(p),
        None => cached_optimum(vc, pb, cache),
    }
}

/// The speedup of a run that took `time` over the base run's `base` (both to the same
/// target), where both reached it.
pub(crate) fn speedup_over(base: Option<f64>, time: Option<f64>) -> Option<f64> {
    match (base, time) {
        (Some(b), Some(x)) if x > 0.0 => Some(b / x),
        _ => None,
    }
}

/// The problem and target, as the figures of `bench speedup` and `sim` name them.
pub(crate) fn problem_title(raw: &TrainConfig, target: f64) -> String {
    format!(
        "{} + {} (lambda {}), target {:e} relative",
        raw.loss.name(),
        raw.reg.name(),
        raw.lambda,
        target
    )
}

/// The number of cores the table reports, and that a worker count above it is
/// oversubscribed.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn speedup(a: &crate::args::BenchSpeedupArgs) -> Result<()> {
    let t = &a.train;
    check_relative_target(t, a.target, "bench speedup")?;
    if a.seeds == 0 {
        return Err(asyb::Error::config("seeds", "must be at least 1").into());
    }
    let mut counts = worker_counts(t, &[1, 2, 4, 8])?;
    counts.sort_unstable();
    counts.dedup();
    let vc = crate::commands::train_config(t)?;
    if vc.raw.algorithm.is_full_data() {
        return Err(asyb::Error::config(
            "algorithm",
            format!(
                "bench speedup times the algorithms with workers, not {}",
                vc.raw.algorithm.name()
            ),
        )
        .into());
    }
    let pb = Problem::load(&vc)?;
    let mut raw = vc.raw.clone();
    // Worker counts are compared on the asynchronous algorithm: `auto` is asyb here.
    if raw.algorithm == Algorithm::Auto {
        raw.algorithm = Algorithm::Asyb;
    }
    // Every run is measured on every row: the target is a fraction of the exact Psi*,
    // and each runs to it.
    raw.eval_rows = None;
    raw.tol = 0.0;
    if raw.epochs.is_none() && raw.max_updates.is_none() && raw.max_seconds.is_none() {
        raw.epochs = Some(50.0);
    }
    let vc = raw.clone().check()?;
    let psi_star = reference_optimum(t.psi_star, &vc, &pb, &a.optimum_cache)?;
    let goal = psi_star + a.target * psi_star.abs();
    let cores = cores();

    let algorithms = if a.compare.is_empty() {
        vec![raw.algorithm]
    } else {
        a.compare.clone()
    };
    if let Some(a) = algorithms.iter().find(|a| a.is_full_data()) {
        return Err(asyb::Error::config(
            "compare",
            format!(
                "bench speedup compares the algorithms with workers, not {}",
                a.name()
            ),
        )
        .into());
    }
    let mut rows = Vec::new();
    let mut curves: Vec<(String, Vec<EvalRecord>)> = Vec::new();
    for &alg in &algorithms {
        let mut first = None;
        for &w in &counts {
            if alg == Algorithm::Seq && w > 1 {
                continue;
            }
            let mut row = speedup_row(&raw, &pb, alg, w, a, goal, psi_star, &mut curves)?;
            row.oversubscribed = w > cores;
            let base = *first.get_or_insert(row.time_to_target_secs);
            row.speedup = speedup_over(base, row.time_to_target_secs);
            rows.push(row);
        }
    }
    let several = algorithms.len() > 1;
    if !several {
        for c in &mut curves {
            c.0 =
                c.0.split_once(' ')
                    .map_or(c.0.clone(), |(_, w)| w.to_string());
        }
    }

    print_stdout(&speedup_table(
        "asyb bench speedup",
        &rows,
        &pb.train_path,
        cores,
    ))?;
    let outputs = SpeedupOutputs {
        json: a.json.as_deref(),
        plot: vc.raw.plot.as_deref(),
        speedup_plot: a.speedup_plot.as_deref(),
    };
    outputs.write(&problem_title(&vc.raw, a.target), &rows, &curves, psi_star)?;
    if several && a.speedup_plot.is_some() {
        eprintln!(
            "note: the speedup figure shows the first algorithm, {}",
            rows.first().map_or("", |r| r.algorithm.as_str())
        );
    }
    Ok(())
}

/// Where `bench speedup` and `sim` write their results.
pub(crate) struct SpeedupOutputs<'a> {
    pub json: Option<&'a Path>,
    pub plot: Option<&'a Path>,
    pub speedup_plot: Option<&'a Path>,
}

impl SpeedupOutputs<'_> {
    /// The rows as JSON, the convergence curves, and the speedup of the first
    /// algorithm against the smallest worker count.
    pub fn write(
        &self,
        title: &str,
        rows: &[SpeedupRow],
        curves: &[(String, Vec<EvalRecord>)],
        psi_star: f64,
    ) -> Result<()> {
        if let Some(p) = self.json {
            write_json_atomic(p, &rows)?;
        }
        if let Some(p) = self.plot {
            let series: Vec<crate::plot::Series> = curves
                .iter()
                .map(|(label, records)| crate::plot::Series {
                    label: label.clone(),
                    records,
                })
                .collect();
            crate::plot::write_svg(p, title, &series, Some(psi_star))?;
        }
        if let Some(p) = self.speedup_plot {
            let first_alg = rows.first().map(|r| r.algorithm.clone());
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| Some(&r.algorithm) == first_alg.as_ref())
                .filter_map(|r| r.speedup.map(|s| (r.workers as f64, s)))
                .collect();
            let base = rows.first().map_or(1, |r| r.workers);
            crate::plot::write_speedup_svg(p, title, base, &points)?;
        }
        Ok(())
    }
}

/// Runs of one algorithm with `w` workers, one per seed, to `goal`.
#[allow(clippy::too_many_arguments)]
fn speedup_row(
    raw: &TrainConfig,
    pb: &Problem,
    alg: Algorithm,
    w: usize,
    a: &crate::args::BenchSpeedupArgs,
    goal: f64,
    psi_star: f64,
    curves: &mut Vec<(String, Vec<EvalRecord>)>,
) -> Result<SpeedupRow> {
    let mut times = Vec::new();
    let mut updates = Vec::new();
    let mut accuracy = Vec::new();
    let mut auc = Vec::new();
    let (mut delay_sum, mut max_delay, mut rejected) = (0.0, 0, 0);
    for s in 0..a.seeds {
        let mut r = raw.clone();
        r.algorithm = alg;
        r.workers = Some(w);
        r.seed = raw.seed.wrapping_add(s);
        r.target_objective = Some(goal);
        r.tol = 0.0;
        let rvc = r.check()?;
        let sum = run_quiet(&rvc, pb)?;
        let hit = reached_at(&sum.records, goal);
        eprintln!(
            "{} W = {w}, seed {}: {}",
            alg.name(),
            r.seed,
            match hit {
                Some(h) => format!(
                    "target reached in {:.2} s, {} updates",
                    h.train_secs, h.updates
                ),
                None => format!("target not reached ({})", sum.stop_reason.describe()),
            }
        );
        if let Some(h) = hit {
            times.push(h.train_secs);
            updates.push(h.updates as f64);
            if let Some(t) = &h.test {
                accuracy.extend(t.accuracy);
                auc.extend(t.auc);
            }
        }
        delay_sum += sum.delays.mean;
        max_delay = max_delay.max(sum.delays.max);
        rejected += sum.delays.rejected;
        if s == 0 {
            curves.push((format!("{} W={w}", alg.name()), sum.records.clone()));
        }
    }
    let (lo, hi) = (
        times.iter().copied().reduce(f64::min),
        times.iter().copied().reduce(f64::max),
    );
    Ok(SpeedupRow {
        algorithm: alg.name().to_string(),
        workers: w,
        oversubscribed: false,
        seeds: a.seeds,
        reached: times.len() as u64,
        time_to_target_secs: median(&mut times),
        time_min_secs: lo,
        time_max_secs: hi,
        speedup: None,
        updates_to_target: median(&mut updates).map(|u| u.round() as u64),
        mean_delay: delay_sum / a.seeds as f64,
        max_delay,
        rejected,
        test_accuracy: median(&mut accuracy),
        test_auc: median(&mut auc),
        target: a.target,
        psi_star,
    })
}

/// The table `bench speedup` prints.
pub fn speedup_table(title: &str, rows: &[SpeedupRow], data: &Path, cores: usize) -> String {
    let mut s = String::new();
    if let Some(r) = rows.first() {
        s.push_str(&format!(
            "\n{title}: {}, target (Psi - Psi*) / Psi* <= {:e}, Psi* = {:.10}, {} seed(s) per count, {cores} cores\n\n",
            data.display(),
            r.target,
            r.psi_star,
            r.seeds
        ));
    }
    let tests = rows.iter().any(|r| r.test_accuracy.is_some());
    s.push_str(&format!(
        "{:<9} {:>4}  {:>26}  {:>8}  {:>10}  {:>10}  {:>9}  {:>8}{}\n",
        "algorithm",
        "W",
        "time to target (min-max)",
        "speedup",
        "updates",
        "mean delay",
        "max delay",
        "rejected",
        if tests { "  test acc" } else { "" }
    ));
    for r in rows {
        let time = match (r.time_to_target_secs, r.time_min_secs, r.time_max_secs) {
            (Some(m), Some(lo), Some(hi)) => format!("{m:.2} s ({lo:.2}-{hi:.2})"),
            _ => "not reached".into(),
        };
        let partial = if r.reached < r.seeds {
            format!(" [{}/{} reached]", r.reached, r.seeds)
        } else {
            String::new()
        };
        let acc = match (tests, r.test_accuracy) {
            (true, Some(x)) => format!("  {x:>8.4}"),
            (true, None) => format!("  {:>8}", "-"),
            _ => String::new(),
        };
        s.push_str(&format!(
            "{:<9} {:>4}  {:>26}  {:>8}  {:>10}  {:>10.2}  {:>9}  {:>8}{}{}{}\n",
            r.algorithm,
            r.workers,
            time,
            r.speedup.map_or("-".into(), |x| format!("{x:.2}x")),
            r.updates_to_target.map_or("-".into(), |u| u.to_string()),
            r.mean_delay,
            r.max_delay,
            r.rejected,
            acc,
            if r.oversubscribed {
                " oversubscribed"
            } else {
                ""
            },
            partial
        ));
    }
    s
}

/// One budget's run of `bench rate`.
#[derive(Clone, Debug, Serialize)]
pub struct RatePoint {
    pub budget: u64,
    pub step: f64,
    /// Mean of ||P(x^k)||^2 over the evenly spaced evaluations at k = K/m, ..., K.
    pub mean_pgm_sq_norm: f64,
    /// ||P||^2 at the end of the run (k = K).
    pub final_pgm_sq_norm: f64,
    pub final_psi: f64,
    pub mean_delay: f64,
}

/// The least-squares line of log(mean ||P||^2) against log(K) for one worker count.
#[derive(Clone, Debug, Serialize)]
pub struct RateFit {
    pub workers: usize,
    pub slope: f64,
    pub intercept: f64,
    pub r_squared: f64,
    pub points: Vec<RatePoint>,
}

/// What `bench rate --json` writes.
#[derive(Clone, Debug, Serialize)]
pub struct RateReport {
    /// The first worker count's slope.
    pub slope: f64,
    pub c: f64,
    pub alpha: f64,
    pub lambda: f64,
    pub fits: Vec<RateFit>,
}

/// Least squares `y = a + b x`: `(b, a, R^2)`.
fn fit_line(xs: &[f64], ys: &[f64]) -> (f64, f64, f64) {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let syy: f64 = ys.iter().map(|y| (y - my) * (y - my)).sum();
    let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let r2 = if sxx > 0.0 && syy > 0.0 {
        sxy * sxy / (sxx * syy)
    } else {
        1.0
    };
    (b, my - b * mx, r2)
}

/// Mean `pgm_sq_norm` of the evaluations at `0 < k <= budget`. The start is left out:
/// its weight in the average over all K iterates is 1/K, but it would weigh 1/m in the
/// mean of m evenly spaced evaluations and, being the largest value, swamp it.
fn mean_after_start(records: &[EvalRecord], budget: u64) -> f64 {
    let v: Vec<f64> = records
        .iter()
        .filter(|r| r.updates > 0 && r.updates <= budget)
        .map(|r| r.pgm_sq_norm)
        .collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

pub fn rate(a: &crate::args::BenchRateArgs) -> Result<()> {
    let t = &a.train;
    let budgets = rate_budgets(a)?;
    let counts = worker_counts(t, &[1, 2])?;
    let vc = crate::commands::train_config(t)?;
    let pb = Problem::load(&vc)?;
    let raw = rate_config(&vc.raw, t);
    let c = match a.c {
        Some(c) => c,
        None => {
            let mut probe = raw.clone();
            probe.workers = Some(1);
            probe.max_updates = Some(1);
            let s = run_quiet(&probe.check()?, &pb)?;
            s.info.eta0 * (budgets[0] as f64).sqrt()
        }
    };
    let mut fits = Vec::new();
    for &w in &counts {
        fits.push(rate_fit(&raw, &pb, w, &budgets, c, a.points)?);
    }
    let report = RateReport {
        slope: fits[0].slope,
        c,
        alpha: raw.alpha,
        lambda: raw.lambda,
        fits,
    };
    print_stdout(&rate_table(&report))?;
    if let Some(p) = &a.json {
        write_json_atomic(p, &report)?;
    }
    if let Some(p) = &vc.raw.plot {
        write_rate_plot(p, &report, &raw)?;
    }
    Ok(())
}

/// Checks the flags of `bench rate`: the budgets K, sorted and without repeats.
fn rate_budgets(a: &crate::args::BenchRateArgs) -> Result<Vec<u64>> {
    let t = &a.train;
    let why = "not used by bench rate (each run is K updates at the step c / sqrt(K))";
    refuse_flags(&output_flags(t), why)?;
    refuse_flags(
        &[
            ("step", t.step.is_some()),
            ("epochs", t.epochs.is_some()),
            ("max-updates", t.max_updates.is_some()),
            ("target-objective", t.target_objective.is_some()),
        ],
        why,
    )?;
    let mut budgets = a.budgets.clone();
    budgets.sort_unstable();
    budgets.dedup();
    if budgets.len() < 2 || budgets[0] == 0 {
        return Err(asyb::Error::config("budgets", "at least two budgets, each at least 1").into());
    }
    if a.points == 0 || a.points > budgets[0] {
        return Err(asyb::Error::config(
            "points",
            format!("must be between 1 and the smallest budget ({})", budgets[0]),
        )
        .into());
    }
    if let Some(c) = a.c {
        if !(c.is_finite() && c > 0.0) {
            return Err(asyb::Error::config("c", "must be a finite number > 0").into());
        }
    }
    Ok(budgets)
}

/// The settings of every `bench rate` run, from the user's: the theorem's setting, no
/// time or epoch limit, evaluations on every row and only at the update counts asked.
fn rate_config(user: &TrainConfig, t: &crate::args::TrainArgs) -> TrainConfig {
    use asyb::config::{StepScaling, VarianceReduction};
    let mut raw = user.clone();
    // The theorem's setting: the stochastic algorithm (`auto` is asyb here) with plain
    // stochastic gradients of minibatches of 256 unless given, one step for every
    // coordinate, a nonconvex smooth part (alpha defaults to 1e-3 here).
    if raw.algorithm == asyb::config::Algorithm::Auto {
        raw.algorithm = asyb::config::Algorithm::Asyb;
    }
    raw.batch = raw.batch.or(Some(asyb::config::DEFAULT_BATCH));
    raw.variance_reduction = VarianceReduction::None;
    raw.step_scaling = StepScaling::None;
    raw.step_decay = false;
    if t.alpha.is_none() {
        raw.alpha = 1e-3;
    }
    raw.epochs = None;
    raw.max_seconds = None;
    // Every run uses its whole budget.
    raw.tol = 0.0;
    raw.eval_every_secs = Some(NEVER_SECS);
    raw.eval_rows = None;
    raw
}

/// The runs of `bench rate` with `w` workers, one per budget K at the step c / sqrt(K),
/// and the line fitted to their log mean ||P||^2 against log K.
fn rate_fit(
    raw: &TrainConfig,
    pb: &Problem,
    w: usize,
    budgets: &[u64],
    c: f64,
    evaluations: u64,
) -> Result<RateFit> {
    use asyb::config::StepSetting;
    let mut points = Vec::new();
    for &k in budgets {
        let mut r = raw.clone();
        r.workers = Some(w);
        r.max_updates = Some(k);
        r.eval_every_updates = Some((k / evaluations).max(1));
        let step = c / (k as f64).sqrt();
        r.step = StepSetting::Fixed(step);
        let s = run_quiet(&r.check()?, pb)?;
        let last = s.last();
        let p = RatePoint {
            budget: k,
            step,
            mean_pgm_sq_norm: mean_after_start(&s.records, k),
            final_pgm_sq_norm: last.pgm_sq_norm,
            final_psi: last.psi,
            mean_delay: s.delays.mean,
        };
        eprintln!(
            "W = {w}, K = {k}: step {step:.4e}, mean ||P||^2 {:.4e}, final {:.4e}, Psi {:.6e}",
            p.mean_pgm_sq_norm, p.final_pgm_sq_norm, p.final_psi
        );
        points.push(p);
    }
    let usable: Vec<&RatePoint> = points
        .iter()
        .filter(|p| p.mean_pgm_sq_norm.is_finite() && p.mean_pgm_sq_norm > 0.0)
        .collect();
    anyhow::ensure!(
        usable.len() >= 2,
        "W = {w}: fewer than two budgets gave a finite positive ||P||^2 (did the runs diverge? try a smaller --c)"
    );
    let xs: Vec<f64> = usable.iter().map(|p| (p.budget as f64).ln()).collect();
    let ys: Vec<f64> = usable.iter().map(|p| p.mean_pgm_sq_norm.ln()).collect();
    let (slope, intercept, r_squared) = fit_line(&xs, &ys);
    Ok(RateFit {
        workers: w,
        slope,
        intercept,
        r_squared,
        points,
    })
}

/// The figure of `bench rate`: mean ||P||^2 against K for each worker count.
fn write_rate_plot(p: &Path, report: &RateReport, raw: &TrainConfig) -> Result<()> {
    let curves: Vec<(String, Vec<(f64, f64)>)> = report
        .fits
        .iter()
        .map(|f| {
            (
                format!("W={} (slope {:.2})", f.workers, f.slope),
                f.points
                    .iter()
                    .map(|p| (p.budget as f64, p.mean_pgm_sq_norm))
                    .collect(),
            )
        })
        .collect();
    let title = format!(
        "mean ||P(x^k)||^2 over K updates at step {:.3} / sqrt(K); {} + {} (lambda {}) + nonconvex alpha {}",
        report.c,
        raw.loss.name(),
        raw.reg.name(),
        raw.lambda,
        raw.alpha
    );
    crate::plot::write_rate_svg(p, &title, &curves)?;
    Ok(())
}

/// The table `bench rate` prints.
pub fn rate_table(r: &RateReport) -> String {
    let mut s = format!(
        "\nasyb bench rate: step c / sqrt(K) with c = {:.4}, nonconvex alpha {}, lambda {}\n",
        r.c, r.alpha, r.lambda
    );
    for f in &r.fits {
        s.push_str(&format!(
            "\nW = {}: slope {:.3} (R^2 {:.3}); the theorem bounds the mean by C / sqrt(K), a slope of -0.5 or below\n",
            f.workers, f.slope, f.r_squared
        ));
        s.push_str(&format!(
            "{:>10}  {:>10}  {:>14}  {:>14}  {:>12}\n",
            "K", "step", "mean ||P||^2", "final ||P||^2", "mean delay"
        ));
        for p in &f.points {
            s.push_str(&format!(
                "{:>10}  {:>10.3e}  {:>14.4e}  {:>14.4e}  {:>12.2}\n",
                p.budget, p.step, p.mean_pgm_sq_norm, p.final_pgm_sq_norm, p.mean_delay
            ));
        }
    }
    s
}
