//! One function per subcommand: build the library's inputs from the flags, run, write
//! the outputs (each atomically), print. Every output's directory is checked before the
//! work starts, so that a long run does not fail at its end on a typo.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use asyb::config::{Backend, IndexBaseSetting, TrainConfig, ValidConfig};
use asyb::data::columns::ColumnMap;
use asyb::data::gen::{self, CtrSpec, RegressionSpec};
use asyb::data::libsvm::{IndexBase, ReadReport};
use asyb::model_file::{self, ModelMeta, SavedModel};
use asyb::monitor::{JsonLinesSink, Observe};
use asyb::predict;
use asyb::problem::Problem;
use asyb::train::{RunSummary, Trainer};
use asyb::Error;

use crate::args::{
    ConvertArgs, DemoArgs, EvalArgs, GenCommand, InspectArgs, PredictArgs, TrainArgs,
};
use crate::plot::{self, Series};
use crate::report::{self, Reporter};

/// `println!` that returns a failed write (a closed pipe: `asyb eval | head -1`) as an
/// error instead of panicking; `main` counts a broken pipe as success.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)?
    };
}

/// Fails unless the directory `path` would be written in exists.
fn check_output(field: &str, path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::config(
            field,
            format!(
                "cannot write {}: directory {} does not exist",
                path.display(),
                dir.display()
            ),
        )
        .into());
    }
    if path.is_dir() {
        return Err(Error::config(
            field,
            format!("cannot write {}: it is a directory", path.display()),
        )
        .into());
    }
    Ok(())
}

fn skipped_note(path: &Path, rep: &Option<ReadReport>) {
    if let Some(r) = rep {
        if r.skipped_lines > 0 {
            eprintln!(
                "{}: skipped {} malformed lines (first: {})",
                path.display(),
                r.skipped_lines,
                r.first_skipped.as_deref().unwrap_or("?")
            );
        }
    }
}

pub fn gen(cmd: &GenCommand) -> Result<()> {
    match cmd {
        GenCommand::Ctr(a) => {
            check_output("out", &a.out)?;
            let spec = CtrSpec {
                rows: a.rows,
                features: a.features,
                fields: a.fields,
                values_per_field: a.values_per_field,
                zipf_s: a.zipf,
                positive_rate: a.positive_rate,
                seed: a.seed,
                model_seed: a.model_seed,
            };
            gen::write_ctr(&spec, &a.out)?;
            eprintln!(
                "wrote {} rows x {} features of CTR data to {}",
                a.rows,
                a.features,
                a.out.display()
            );
        }
        GenCommand::Regression(a) => {
            check_output("out", &a.out)?;
            let spec = RegressionSpec {
                rows: a.rows,
                features: a.features,
                nnz_per_row: a.nnz_per_row,
                support: a.support,
                noise: a.noise,
                seed: a.seed,
                model_seed: a.model_seed,
            };
            gen::write_regression(&spec, &a.out)?;
            eprintln!(
                "wrote {} rows x {} features of regression data to {}",
                a.rows,
                a.features,
                a.out.display()
            );
        }
    }
    Ok(())
}

/// TOML file (if any), then flags, then validation.
pub fn train_config(a: &TrainArgs) -> Result<ValidConfig> {
    let mut cfg = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            TrainConfig::from_toml(&text, p)?
        }
        None => TrainConfig::default(),
    };
    a.apply(&mut cfg);
    let vc = cfg.check()?;
    for (field, p) in [
        ("model", &vc.raw.model),
        ("log", &vc.raw.log),
        ("plot", &vc.raw.plot),
    ] {
        if let Some(p) = p {
            check_output(field, p)?;
        }
    }
    Ok(vc)
}

/// What the model file records of the training data.
struct TrainLabels {
    class_labels: Vec<f32>,
    index_base_one: bool,
    /// The original feature ids when they were compacted.
    columns: Option<ColumnMap>,
}

impl TrainLabels {
    fn of(pb: &Problem) -> Self {
        TrainLabels {
            class_labels: pb.class_labels.clone(),
            index_base_one: pb.train_report.as_ref().map_or(true, |r| r.index_base_one),
            columns: pb.columns.clone(),
        }
    }
}

/// The trained model with everything `predict`, `eval` and `--init-model` need.
fn saved_model(vc: &ValidConfig, labels: &TrainLabels, s: &RunSummary) -> SavedModel {
    let mut extra = std::collections::BTreeMap::new();
    extra.insert("algorithm".into(), s.info.algorithm.clone());
    extra.insert("updates".into(), s.last().updates.to_string());
    extra.insert("train_psi".into(), format!("{:e}", s.last().psi));
    extra.insert("stop_reason".into(), s.stop_reason.describe().into());
    let one_based = labels.index_base_one;
    extra.insert(
        predict::INDEX_BASE_KEY.into(),
        if one_based { "1" } else { "0" }.into(),
    );
    let mut meta = ModelMeta {
        loss: vc.raw.loss,
        reg: s.reg,
        blocks: s.info.blocks,
        layout: s.layout,
        class_labels: labels.class_labels.clone(),
        alpha: vc.raw.alpha,
        extra,
    };
    meta.set_loss(vc.loss);
    SavedModel::of_run(meta, &s.weights, labels.columns.as_ref())
}

/// A flag raised by the first Ctrl-C, which stops training like a stop criterion (the
/// model so far is kept and written); a second Ctrl-C ends the process at once.
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    // Only one handler per process: a second call (never made by the command) would
    // leave Ctrl-C with its default effect, which is still safe.
    let _ = ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting without writing outputs");
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: stopping after the current step (Ctrl-C again to abort)");
    });
    flag
}

/// Runs a training job on a loaded problem with the usual observers.
fn run(
    vc: &ValidConfig,
    pb: &Problem,
    init: Option<Vec<f64>>,
    quiet: bool,
    psi_star: Option<f64>,
) -> Result<RunSummary> {
    let mut reporter = Reporter::new(psi_star);
    let mut log = match &vc.raw.log {
        Some(p) => Some(JsonLinesSink::create(
            p,
            log_header(vc, Some(pb.train.fingerprint())),
        )?),
        None => None,
    };
    let mut trainer = Trainer::new(vc, pb);
    trainer.interrupt_on(interrupt_flag());
    if let Some(w) = init {
        trainer.init_weights(w)?;
    }
    if !quiet {
        trainer.observe(&mut reporter as &mut dyn Observe);
    }
    if let Some(l) = log.as_mut() {
        trainer.observe(l as &mut dyn Observe);
    }
    let s = trainer.run()?;
    if let Some(l) = log.as_mut() {
        l.summary(&log_summary(&s))?;
    }
    Ok(s)
}

/// What the log's first record says of the run besides its plan: the command line,
/// every setting (data paths and seed included) and the training data's fingerprint.
fn log_header(vc: &ValidConfig, fingerprint: Option<u64>) -> serde_json::Value {
    serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>(),
        "config": &vc.raw,
        "train_fingerprint": fingerprint.map(|f| format!("{f:016x}")),
    })
}

/// The log's last record: why and when the run stopped, where it ended, the delays,
/// the lost workers, the traffic and the peak memory.
fn log_summary(s: &RunSummary) -> serde_json::Value {
    let last = s.last();
    serde_json::json!({
        "stop_reason": s.stop_reason.describe(),
        "updates": last.updates,
        "epochs": last.epochs,
        "psi": last.psi,
        "nnz": last.nnz,
        "duality_gap": last.gap,
        "tol": s.convergence.map(|c| c.tol),
        "optimality": s.convergence.map(|c| c.ratio(last)),
        "wall_secs": s.wall_secs,
        "train_secs": s.train_secs,
        "eval_secs": s.eval_secs,
        "delays": &s.delays,
        "failed_workers": &s.failed_workers,
        "traffic": &s.traffic,
        "peak_rss_bytes": report::peak_rss_bytes(),
    })
}

fn write_outputs(
    vc: &ValidConfig,
    labels: &TrainLabels,
    s: &RunSummary,
    plot_path: Option<&Path>,
    psi_star: Option<f64>,
) -> Result<()> {
    if let Some(p) = &vc.raw.model {
        model_file::save(p, &saved_model(vc, labels, s))?;
    }
    if let Some(p) = plot_path {
        let title = format!(
            "{} + {} (lambda {}), {} workers",
            s.info.loss, s.info.reg, s.info.lambda, s.info.workers
        );
        let label = format!("{} W={}", s.info.algorithm, s.info.workers);
        plot::write_svg(
            p,
            &title,
            &[Series {
                label,
                records: &s.records,
            }],
            psi_star,
        )?;
    }
    Ok(())
}

fn print_summary(s: &RunSummary, data_name: &str, psi_star: Option<f64>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(report::summary(s, data_name, psi_star).as_bytes())?;
    if let Some(b) = report::peak_rss_bytes() {
        out.write_all(report::memory_line(b).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

pub fn train(a: &TrainArgs) -> Result<()> {
    if a.workers.as_ref().is_some_and(|w| w.0.len() != 1) {
        return Err(Error::config(
            "workers",
            "train takes one worker count (lists are for asyb bench speedup)",
        )
        .into());
    }
    let vc = match train_config(a) {
        Ok(vc) => vc,
        // Under mpirun every rank finds the same fault in the flags; rank 0 says it.
        Err(_) if a.backend == Some(Backend::Mpi) && launcher_rank().is_some_and(|r| r > 0) => {
            return Err(crate::Silent.into())
        }
        Err(e) => return Err(e),
    };
    if vc.raw.backend == Backend::Mpi {
        return train_mpi(a, &vc);
    }
    let pb = Problem::load(&vc)?;
    skipped_note(&pb.train_path, &pb.train_report);
    if let Some(p) = &pb.test_path {
        skipped_note(p, &pb.test_report);
    }
    // Before a warm start, which would allocate the dense weights.
    asyb::train::check_memory(&pb, &vc.raw)?;
    let init = match &vc.raw.init_model {
        Some(p) => Some(init_weights(p, &vc, &pb)?),
        None => None,
    };
    let s = run(&vc, &pb, init, a.quiet, a.psi_star)?;
    write_outputs(
        &vc,
        &TrainLabels::of(&pb),
        &s,
        vc.raw.plot.as_deref(),
        a.psi_star,
    )?;
    print_summary(&s, &pb.train_path.display().to_string(), a.psi_star)?;
    list_outputs(&vc)?;
    interrupted_status(&s)
}

/// This process's rank as the MPI launcher (mpirun, srun) set it, before MPI starts.
fn launcher_rank() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_RANK",
        "PMIX_RANK",
        "PMI_RANK",
        "SLURM_PROCID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// `asyb train --backend mpi`, on every rank: rank 0 reports and writes the outputs.
#[cfg(feature = "mpi")]
fn train_mpi(a: &TrainArgs, vc: &ValidConfig) -> Result<()> {
    let (var, value) = asyb::cluster::OMPI_EAGER_LIMIT;
    if std::env::var_os(var).is_none() {
        // Before MPI starts its threads.
        std::env::set_var(var, value);
    }
    let cluster = asyb::cluster::Cluster::init(|m| eprintln!("error: {m}"))?;
    let rank0 = cluster.rank() == 0;
    let roles = match cluster.roles(vc) {
        Ok(r) => r,
        // Every rank finds the same fault; rank 0 says it.
        Err(_) if !rank0 => return Err(crate::Silent.into()),
        Err(e) => return Err(e.into()),
    };
    if !rank0 {
        cluster.train(vc, &roles, &mut [], None)?;
        return Ok(());
    }
    let mut reporter = Reporter::new(a.psi_star);
    let mut log = match &vc.raw.log {
        Some(p) => Some(JsonLinesSink::create(p, log_header(vc, None))?),
        None => None,
    };
    let mut observers: Vec<&mut dyn Observe> = Vec::new();
    if !a.quiet {
        observers.push(&mut reporter);
    }
    if let Some(l) = log.as_mut() {
        observers.push(l);
    }
    let run = cluster
        .train(vc, &roles, &mut observers, Some(interrupt_flag()))?
        .expect("rank 0 gets the run");
    drop(observers);
    if let Some(l) = log.as_mut() {
        l.summary(&log_summary(&run.summary))?;
    }
    let labels = TrainLabels {
        class_labels: run.class_labels,
        index_base_one: run.index_base_one,
        columns: None,
    };
    let s = run.summary;
    write_outputs(vc, &labels, &s, vc.raw.plot.as_deref(), a.psi_star)?;
    let name = vc
        .raw
        .train
        .as_ref()
        .map_or(String::new(), |p| p.display().to_string());
    print_summary(&s, &name, a.psi_star)?;
    list_outputs(vc)?;
    interrupted_status(&s)
}

#[cfg(not(feature = "mpi"))]
fn train_mpi(_: &TrainArgs, _: &ValidConfig) -> Result<()> {
    Err(Error::config(
        "backend",
        "this asyb was built without MPI: build it with 'cargo build --release --features mpi' (needs Open MPI and libclang)",
    )
    .into())
}

/// An interrupted run wrote its outputs but did not finish: the command says so through
/// its exit status (130, as for a process ended by SIGINT).
fn interrupted_status(s: &RunSummary) -> Result<()> {
    if s.stop_reason == asyb::train::StopReason::Interrupted {
        return Err(crate::Interrupted.into());
    }
    Ok(())
}

fn list_outputs(vc: &ValidConfig) -> Result<()> {
    for (what, p) in [
        ("model", &vc.raw.model),
        ("log", &vc.raw.log),
        ("plot", &vc.raw.plot),
    ] {
        if let Some(p) = p {
            outln!("  {what:<10}  {}", p.display());
        }
    }
    Ok(())
}

/// A warm start must describe the same parameters as the problem.
fn init_weights(path: &Path, vc: &ValidConfig, pb: &Problem) -> Result<Vec<f64>> {
    let m = model_file::load(path)?;
    Ok(m.warm_start(path, vc.raw.loss, pb.layout, pb.columns.as_ref())?)
}

fn index_base(s: Option<IndexBaseSetting>) -> Option<IndexBase> {
    match s {
        None | Some(IndexBaseSetting::Auto) => None,
        Some(IndexBaseSetting::Zero) => Some(IndexBase::Zero),
        Some(IndexBaseSetting::One) => Some(IndexBase::One),
    }
}

pub fn predict(a: &PredictArgs) -> Result<()> {
    if let Some(p) = &a.out {
        check_output("out", p)?;
    }
    let model = model_file::load(&a.model)?;
    if a.proba && !predict::has_probabilities(&model) {
        return Err(asyb::Error::config(
            "proba",
            format!(
                "a {} model gives no probabilities (logistic and softmax do); use --raw for its scores",
                model.meta.loss.name()
            ),
        )
        .into());
    }
    let (ds, rep) = predict::read_for_model(
        &a.data,
        &model,
        index_base(a.index_base),
        a.skip_bad_lines,
        false,
    )?;
    skipped_note(&a.data, &Some(rep));
    let kind = match (a.raw, a.proba) {
        (true, _) => predict::ScoreKind::Margins,
        (_, true) => predict::ScoreKind::Probabilities,
        _ => predict::ScoreKind::Default,
    };
    let scores = predict::scores(&model, &ds, kind);
    let fill = |w: &mut dyn Write| -> std::io::Result<()> {
        let mut line = String::new();
        for s in &scores {
            line.clear();
            for (j, v) in s.iter().enumerate() {
                if j > 0 {
                    line.push(' ');
                }
                line.push_str(&format!("{v}"));
            }
            line.push('\n');
            w.write_all(line.as_bytes())?;
        }
        Ok(())
    };
    match &a.out {
        Some(p) => asyb::io::atomic_write(p, |w| fill(w).map_err(asyb::io::io_err(p)))?,
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            fill(&mut out)?;
            out.flush()?;
        }
    }
    Ok(())
}

pub fn eval(a: &EvalArgs) -> Result<()> {
    let model = model_file::load(&a.model)?;
    let (ds, rep) = predict::read_for_model(
        &a.data,
        &model,
        index_base(a.index_base),
        a.skip_bad_lines,
        true,
    )?;
    skipped_note(&a.data, &Some(rep));
    let e = predict::evaluate(&model, &ds);
    if a.json {
        outln!("{}", serde_json::to_string(&e)?);
        return Ok(());
    }
    let m = &e.metrics;
    outln!("rows        {}", e.rows);
    outln!("objective   {:.6e}", e.psi);
    let loss_name = model.meta.loss.info().metric;
    outln!("{loss_name:<11} {:.6e}", m.loss);
    if let Some(v) = m.accuracy {
        outln!("accuracy    {v:.4}");
    }
    if let Some(v) = m.auc {
        outln!("AUC         {v:.4}");
    }
    if let Some(v) = m.rmse {
        outln!("RMSE        {v:.6}");
    }
    outln!(
        "nnz         {} of {} weights",
        e.nnz,
        model.meta.layout.features * model.meta.layout.classes
    );
    Ok(())
}

/// Features of the demo data: large enough to be sparse, small enough to start fast.
const DEMO_FEATURES: usize = 1 << 18;

pub fn demo(a: &DemoArgs) -> Result<()> {
    check_output("plot", &a.plot)?;
    let test_rows = (a.rows / 5).max(1);
    let spec = CtrSpec {
        rows: a.rows,
        features: DEMO_FEATURES,
        seed: a.seed,
        ..CtrSpec::default()
    };
    eprintln!(
        "generating CTR data: {} training and {test_rows} test rows, {} fields hashed into {} features",
        a.rows, spec.fields, spec.features
    );
    let train = gen::ctr(&spec)?;
    let test = gen::ctr(&CtrSpec {
        rows: test_rows,
        seed: a.seed.wrapping_add(1_000_003),
        ..spec.clone()
    })?;
    let cfg = TrainConfig {
        lambda: 1e-5,
        workers: Some(a.workers),
        algorithm: a.algorithm,
        seed: a.seed,
        ..TrainConfig::default()
    };
    let vc = cfg.check()?;
    let name = PathBuf::from("demo CTR data");
    let pb = Problem::from_datasets(
        &vc,
        train,
        &name,
        Some(test),
        Some(Path::new("demo CTR test data")),
    )?;
    let s = run(&vc, &pb, None, a.quiet, None)?;
    write_outputs(&vc, &TrainLabels::of(&pb), &s, Some(&a.plot), None)?;
    print_summary(&s, "generated CTR data", None)?;
    outln!("  plot        {}", a.plot.display());
    interrupted_status(&s)?;
    if s.last().psi < s.first().psi {
        outln!(
            "\nthe objective fell from {:.6} to {:.6}: next, try 'asyb gen ctr --out train.svm' and 'asyb train --train train.svm'",
            s.first().psi,
            s.last().psi
        );
    }
    Ok(())
}

/// `asyb inspect`: the model's problem, its nonzero weights and the largest of them,
/// with feature ids numbered as in its training file.
pub fn inspect(a: &InspectArgs) -> Result<()> {
    let m = model_file::load(&a.model)?;
    let meta = &m.meta;
    let k = meta.layout.classes;
    let base = match predict::model_index_base(&m) {
        asyb::data::libsvm::IndexBase::Zero => 0u64,
        _ => 1,
    };
    // (feature as in the file, class, weight) of every nonzero feature weight.
    let mut nonzero: Vec<(u64, usize, f64)> = Vec::new();
    for r in 0..m.stored_features() {
        let f = m
            .feature_ids
            .as_ref()
            .map_or(r as u64, |ids| u64::from(ids[r]));
        for c in 0..k {
            let w = m.weights[r * k + c];
            if w != 0.0 {
                nonzero.push((f + base, c, w));
            }
        }
    }
    let intercept = &m.weights[m.stored_features() * k..][..k];
    outln!("model       {}", a.model.display());
    outln!(
        "problem     {} + {} (lambda {})",
        meta.loss.name(),
        meta.reg.kind.name(),
        meta.reg.lambda
    );
    outln!(
        "features    {} (ids as in the training file: {}-based)",
        meta.layout.features,
        base
    );
    if k > 1 {
        let labels: Vec<String> = meta.class_labels.iter().map(|l| l.to_string()).collect();
        outln!("classes     {} (labels {})", k, labels.join(" "));
    }
    if meta.layout.bias {
        let b: Vec<String> = intercept.iter().map(|b| format!("{b:.6e}")).collect();
        outln!("intercept   {}", b.join(" "));
    } else {
        outln!("intercept   none");
    }
    outln!(
        "nnz         {} of {} weights",
        nonzero.len(),
        meta.layout.features * k
    );
    nonzero.sort_by(|a, b| b.2.abs().total_cmp(&a.2.abs()).then(a.0.cmp(&b.0)));
    let shown = a.top.min(nonzero.len());
    if shown > 0 {
        outln!("\nthe {shown} largest weights by magnitude");
        if k > 1 {
            outln!("{:>12}  {:>8}  {:>14}", "feature", "class", "weight");
        } else {
            outln!("{:>12}  {:>14}", "feature", "weight");
        }
        for &(f, c, w) in &nonzero[..shown] {
            if k > 1 {
                let label = meta.class_labels.get(c).map_or(c as f64, |&l| f64::from(l));
                outln!("{f:>12}  {label:>8}  {w:>14.6e}");
            } else {
                outln!("{f:>12}  {w:>14.6e}");
            }
        }
    }
    Ok(())
}

pub fn convert(a: &ConvertArgs) -> Result<()> {
    check_output("out", &a.out)?;
    let same = match (
        std::fs::canonicalize(&a.input),
        std::fs::canonicalize(&a.out),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    };
    if same {
        return Err(Error::config("out", "the cache must not overwrite its input").into());
    }
    if asyb::data::cache::is_cache(&a.input) {
        return Err(Error::Data {
            path: a.input.clone(),
            reason: "already a binary cache".into(),
        }
        .into());
    }
    let t = std::time::Instant::now();
    let (mut ds, rep) = if a.from == "idx" {
        let labels = a.labels.as_ref().ok_or_else(|| {
            Error::config(
                "labels",
                "--from idx needs --labels with the IDX labels file",
            )
        })?;
        let ds = asyb::data::idx::read_idx(&a.input, labels)?;
        let rep = ReadReport {
            rows: ds.rows(),
            index_base_one: false,
            bytes: std::fs::metadata(&a.input).map_or(0, |m| m.len()),
            ..ReadReport::default()
        };
        (ds, rep)
    } else {
        let opts = asyb::data::ReadOptions {
            index_base: index_base(Some(a.index_base)).unwrap_or(IndexBase::Auto),
            features: a.features,
            skip_bad_lines: a.skip_bad_lines,
            labels: asyb::data::LabelRule::Any,
        };
        asyb::data::read_libsvm(&a.input, &opts)?
    };
    if let Some(c) = a.positive_class {
        if !ds.labels.contains(&c) {
            return Err(Error::Data {
                path: a.labels.clone().unwrap_or_else(|| a.input.clone()),
                reason: format!("no row has label {c} (--positive-class)"),
            }
            .into());
        }
        for y in ds.labels.iter_mut() {
            *y = if *y == c { 1.0 } else { 0.0 };
        }
    }
    ds.compact_binary();
    skipped_note(&a.input, &Some(rep.clone()));
    let parse_secs = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let mut renumbered = None;
    if a.to == "libsvm" {
        asyb::data::write_libsvm(&a.out, &ds)?;
    } else {
        let source = asyb::data::cache::Source::of(&a.input, rep.index_base_one)?;
        let map = asyb::problem::renumber_for_cache(&mut ds, a.compact_features);
        asyb::data::cache::write_cache(&a.out, &ds, map.as_ref(), &source)?;
        renumbered = map;
    }
    let out_bytes = std::fs::metadata(&a.out).map_or(0, |m| m.len());
    eprintln!(
        "read {} rows, {} features, {} nonzeros ({:.1} MB) in {parse_secs:.2} s; wrote {} ({:.1} MB) in {:.2} s",
        ds.rows(),
        renumbered.as_ref().map_or(ds.features, |m| m.features),
        ds.nnz(),
        rep.bytes as f64 / 1e6,
        a.out.display(),
        out_bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    if let Some(m) = renumbered {
        eprintln!(
            "stored the {} used of {} features renumbered most frequent first (--compact-features)",
            m.used(),
            m.features
        );
    }
    Ok(())
}
