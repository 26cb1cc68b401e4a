//! What a person sees: the progress of a run on standard error (a bar with ETA and the
//! live objective on a terminal, one plain line per evaluation otherwise) and the final
//! summary table on standard output.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

use asyb::monitor::{EvalRecord, Observe, Progress, RunInfo, TestMetrics};
use asyb::train::{RunSummary, StopReason};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What the progress bar counts.
enum Unit {
    Updates(u64),
    Millis(u64),
    Spinner,
}

/// Progress on standard error.
pub struct Reporter {
    bar: Option<ProgressBar>,
    unit: Unit,
    tty: bool,
    psi_star: Option<f64>,
}

impl Reporter {
    pub fn new(psi_star: Option<f64>) -> Self {
        Reporter {
            bar: None,
            unit: Unit::Spinner,
            tty: std::io::stderr().is_terminal(),
            psi_star,
        }
    }

    fn eval_line(&self, r: &EvalRecord) -> String {
        let mut s = format!(
            "{:>8.2}s  updates {:>10}  epoch {:>6.2}  psi {:.6e}",
            r.train_secs, r.updates, r.epochs, r.psi
        );
        if let Some(p) = self.psi_star {
            let _ = write!(s, "  subopt {:.2e}", rel_gap(r.psi, p));
        }
        if let Some(g) = r.gap {
            let _ = write!(s, "  gap {:.2e}", rel_duality_gap(g, r.psi));
        }
        let _ = write!(s, "  |P|^2 {:.2e}  nnz {}", r.pgm_sq_norm, r.nnz);
        if let Some(t) = &r.test {
            s.push_str(&test_brief(t));
        }
        s
    }
}

/// `gap / |psi|`: the duality gap relative to the objective, a bound on the relative
/// suboptimality.
pub fn rel_duality_gap(gap: f64, psi: f64) -> f64 {
    gap / psi.abs().max(f64::MIN_POSITIVE)
}

/// `(psi - psi*) / |psi*|`, the relative suboptimality.
pub fn rel_gap(psi: f64, psi_star: f64) -> f64 {
    (psi - psi_star) / psi_star.abs().max(f64::MIN_POSITIVE)
}

fn test_brief(t: &TestMetrics) -> String {
    let mut s = format!("  test loss {:.5}", t.loss);
    if let Some(a) = t.accuracy {
        let _ = write!(s, " acc {a:.4}");
    }
    if let Some(a) = t.auc {
        let _ = write!(s, " auc {a:.4}");
    }
    if let Some(r) = t.rmse {
        let _ = write!(s, " rmse {r:.5}");
    }
    s
}

/// ", N classes" for a multiclass problem.
fn classes_note(info: &RunInfo) -> String {
    if info.classes > 1 {
        format!(", {} classes", info.classes)
    } else {
        String::new()
    }
}

/// ", N used" when the feature ids were compacted.
fn used_note(info: &RunInfo) -> String {
    info.used_features
        .map(|u| format!(" ({u} used: ids compacted)"))
        .unwrap_or_default()
}

impl Observe for Reporter {
    fn on_start(&mut self, info: &RunInfo) -> asyb::Result<()> {
        eprintln!(
            "training {} + {} (lambda {}) on {} rows x {} features{} ({} nonzeros{})",
            info.loss,
            info.reg,
            info.lambda,
            info.rows,
            info.features,
            used_note(info),
            info.nnz,
            classes_note(info)
        );
        if let Some(lm) = info.lambda_max {
            if info.lambda >= lm {
                eprintln!(
                    "lambda_max {lm:.4e}: lambda is at or above it, so every weight will be zero"
                );
            } else {
                eprintln!(
                    "lambda_max {lm:.4e} (every weight is zero at or above it; lambda is {:.3e} of it)",
                    info.lambda / lm
                );
            }
        }
        if info.algorithm == "fista" {
            eprintln!("algorithm fista (full-gradient reference solver)");
        } else if info.algorithm == "cd" {
            eprintln!("algorithm cd (proximal Newton, coordinate descent on a working set)");
        } else {
            eprintln!(
                "algorithm {}: {} workers, {} blocks, batch {}, {:.0} updates per epoch",
                info.algorithm, info.workers, info.blocks, info.batch, info.updates_per_epoch
            );
            eprintln!("step {:.4e} ({})", info.eta0, info.step_note);
        }
        if let Some(c) = &info.cluster {
            eprintln!("{c}");
        }
        if info.eval_rows < info.rows {
            eprintln!(
                "monitored objective on a fixed subsample of {} rows",
                info.eval_rows
            );
        }
        if !self.tty {
            return Ok(());
        }
        self.unit = match (info.max_updates, info.max_seconds) {
            (Some(u), _) if !full_data(&info.algorithm) => Unit::Updates(u),
            (_, Some(s)) => Unit::Millis((s * 1000.0) as u64),
            _ => Unit::Spinner,
        };
        let bar = match self.unit {
            Unit::Updates(n) | Unit::Millis(n) => ProgressBar::new(n.max(1)),
            Unit::Spinner => ProgressBar::new_spinner(),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let template = match self.unit {
            Unit::Spinner => "{spinner} {elapsed_precise} {msg}",
            _ => "{elapsed_precise} [{bar:30}] {percent:>3}% eta {eta:<4} {msg}",
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
        Ok(())
    }

    fn on_progress(&mut self, p: &Progress) {
        if let Some(bar) = &self.bar {
            match self.unit {
                Unit::Updates(_) => bar.set_position(p.updates),
                Unit::Millis(_) => bar.set_position((p.train_secs * 1000.0) as u64),
                Unit::Spinner => {}
            }
            let mut msg = format!("updates {}  psi {:.6e}", p.updates, p.psi);
            if let Some(s) = self.psi_star {
                let _ = write!(msg, "  subopt {:.2e}", rel_gap(p.psi, s));
            }
            bar.set_message(msg);
        }
    }

    fn on_eval(&mut self, rec: &EvalRecord) -> asyb::Result<()> {
        let line = self.eval_line(rec);
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
        Ok(())
    }

    fn on_finish(&mut self, _last: &EvalRecord) -> asyb::Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        Ok(())
    }
}

fn sci(v: f64) -> String {
    format!("{v:.6e}")
}

/// Whether the run's algorithm is a full-data solver (no workers, no steps, iterations
/// instead of updates).
fn full_data(algorithm: &str) -> bool {
    algorithm
        .parse::<asyb::config::Algorithm>()
        .is_ok_and(|a| a.is_full_data())
}

/// The final summary table.
pub fn summary(s: &RunSummary, data_name: &str, psi_star: Option<f64>) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "\nsummary");
    push_run_lines(&mut o, s, data_name);
    push_start_and_final(&mut o, s, psi_star);
    if !full_data(&s.info.algorithm) {
        push_delays(&mut o, &s.delays);
    } else if s.info.algorithm == "fista" && s.stop_reason == StopReason::Converged {
        // The reference optimum, to the digits a relative gap of 1e-10 needs.
        let _ = writeln!(
            o,
            "  Psi*        {:.12e}  (pass --psi-star to measure other runs' gap)",
            s.last().psi
        );
    }
    o
}

/// Whether the run converged (`tol`), and the duality gap's bound on Psi - Psi*.
fn push_convergence(o: &mut String, s: &RunSummary) {
    let last = s.last();
    if let Some(c) = &s.convergence {
        let r = c.ratio(last);
        let verdict = if s.stop_reason == StopReason::Converged || r <= c.tol {
            "converged"
        } else {
            "not converged"
        };
        let _ = writeln!(
            o,
            "  optimality  ||P(x)|| / ||P(0)|| = {r:.2e} (tol {:e}): {verdict}",
            c.tol
        );
    }
    if let Some(g) = last.gap {
        let _ = writeln!(
            o,
            "  certificate Psi - Psi* <= {g:.3e} (duality gap; {:.2e} of Psi)",
            rel_duality_gap(g, last.psi)
        );
    }
}

/// The summary's lines on the run: the data, the problem and the algorithm, why and
/// when it stopped, failed workers, messages, times and throughput.
fn push_run_lines(o: &mut String, s: &RunSummary, data_name: &str) {
    let i = &s.info;
    let first = s.first();
    let last = s.last();
    let _ = writeln!(
        o,
        "  data        {data_name}: {} rows, {} features{}, {} nonzeros",
        i.rows,
        i.features,
        used_note(i),
        i.nnz
    );
    let _ = writeln!(
        o,
        "  problem     {} + {} (lambda {}){}",
        i.loss,
        i.reg,
        i.lambda,
        classes_note(i)
    );
    let algorithm = if i.algorithm_note.is_empty() {
        i.algorithm.clone()
    } else {
        format!("{} (auto: {})", i.algorithm, i.algorithm_note)
    };
    if full_data(&i.algorithm) {
        let _ = writeln!(o, "  algorithm   {algorithm}");
    } else {
        let _ = writeln!(
            o,
            "  algorithm   {}, {} workers, {} blocks, batch {}, step {:.4e} ({})",
            algorithm,
            i.workers,
            i.blocks,
            i.batch,
            i.eta0,
            i.step_note.split(':').next().unwrap_or("")
        );
    }
    if full_data(&i.algorithm) {
        let _ = writeln!(
            o,
            "  stopped     {} after {} iterations",
            s.stop_reason.describe(),
            last.updates
        );
    } else {
        let _ = writeln!(
            o,
            "  stopped     {} after {} updates ({:.2} epochs)",
            s.stop_reason.describe(),
            last.updates,
            last.epochs
        );
    }
    push_convergence(o, s);
    for f in &s.failed_workers {
        let _ = writeln!(
            o,
            "  failed      worker {} of {}: {} (the others went on)",
            f.worker, i.workers, f.reason
        );
    }
    if let Some(t) = s.traffic {
        let u = last.updates.saturating_sub(first.updates).max(1) as f64;
        let _ = writeln!(
            o,
            "  messages    {:.2} per update, {:.1} KB per update (worker <-> server, both ways, same-rank calls excluded)",
            t.messages as f64 / u,
            t.bytes as f64 / u / 1e3
        );
    }
    let _ = writeln!(
        o,
        "  time        training {:.2} s, evaluation {:.2} s, wall {:.2} s",
        s.train_secs, s.eval_secs, s.wall_secs
    );
    if full_data(&i.algorithm) {
        let _ = writeln!(o, "  throughput  {:.2} iterations/s", last.updates_per_sec);
    } else {
        let nnz_per_row = i.nnz as f64 / i.rows.max(1) as f64;
        let _ = writeln!(
            o,
            "  throughput  {:.3e} samples/s, {:.3e} nonzeros/s, {:.3e} updates/s",
            last.samples_per_sec,
            last.samples_per_sec * nnz_per_row,
            last.updates_per_sec
        );
    }
}

/// The summary's table of the figures at the start and at the end: the objective, the
/// relative gap (with Psi*), ||P||^2, the nonzeros and the test metrics.
fn push_start_and_final(o: &mut String, s: &RunSummary, psi_star: Option<f64>) {
    let i = &s.info;
    let first = s.first();
    let last = s.last();
    let _ = writeln!(o, "\n  {:<22}{:>16}{:>16}", "", "start", "final");
    let row = |o: &mut String, name: &str, a: String, b: String| {
        let _ = writeln!(o, "  {name:<22}{a:>16}{b:>16}");
    };
    let psi_name = if i.eval_rows < i.rows {
        format!("objective ({} rows)", i.eval_rows)
    } else {
        "objective".to_string()
    };
    row(o, &psi_name, sci(first.psi), sci(last.psi));
    if let Some(p) = psi_star {
        row(
            o,
            "(psi - psi*) / psi*",
            format!("{:.3e}", rel_gap(first.psi, p)),
            format!("{:.3e}", rel_gap(last.psi, p)),
        );
    }
    if let (Some(a), Some(b)) = (first.gap, last.gap) {
        row(
            o,
            "duality gap / |psi|",
            format!("{:.3e}", rel_duality_gap(a, first.psi)),
            format!("{:.3e}", rel_duality_gap(b, last.psi)),
        );
    }
    row(
        o,
        "||P(x)||^2",
        format!("{:.3e}", first.pgm_sq_norm),
        format!("{:.3e}", last.pgm_sq_norm),
    );
    row(o, "nnz", first.nnz.to_string(), last.nnz.to_string());
    if let (Some(a), Some(b)) = (&first.test, &last.test) {
        let metric = i
            .loss
            .parse::<asyb::model::loss::LossKind>()
            .map_or("loss", |k| k.info().metric);
        row(o, &format!("test {metric}"), sci(a.loss), sci(b.loss));
        let opt = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x:.4}"));
        if b.accuracy.is_some() {
            row(o, "test accuracy", opt(a.accuracy), opt(b.accuracy));
        }
        if b.auc.is_some() {
            row(o, "test AUC", opt(a.auc), opt(b.auc));
        }
        if b.rmse.is_some() {
            row(o, "test RMSE", opt(a.rmse), opt(b.rmse));
        }
    }
}

/// The summary's delay statistics and their histogram, one bar per nonempty bucket.
fn push_delays(o: &mut String, d: &asyb::ps::shard::DelaySummary) {
    let _ = writeln!(
        o,
        "\n  delays      mean {:.2}, max {}; {} pushes applied, {} rejected",
        d.mean, d.max, d.applied, d.rejected
    );
    let total = d.applied.max(1) as f64;
    for &(lo, hi, count) in d.histogram.iter().filter(|h| h.2 > 0) {
        let range = if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        };
        let frac = count as f64 / total;
        let bar = "#".repeat((frac * 40.0).round() as usize);
        let _ = writeln!(o, "  {range:>14}  {:>5.1}%  {bar}", frac * 100.0);
    }
}

/// Peak resident memory of this process so far (`VmHWM` of /proc/self/status), where
/// the system reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

/// The `VmHWM:  N kB` line of a /proc status file, in bytes.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line["VmHWM:".len()..]
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The summary's memory line: `  memory      peak RSS 321.5 MB`.
pub fn memory_line(bytes: u64) -> String {
    format!("  memory      peak RSS {:.1} MB\n", bytes as f64 / 1e6)
}

/// Reads back the figure of [`memory_line`] from a summary.
pub fn parse_memory_line(summary: &str) -> Option<u64> {
    let rest = summary
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("memory      peak RSS "))?;
    let mb: f64 = rest.strip_suffix(" MB")?.parse().ok()?;
    Some((mb * 1e6).round() as u64)
}

#[cfg(test)]
mod memory_tests {
    use super::*;

    use asyb::model::reg::RegSpec;
    use asyb::model::Layout;
    use asyb::monitor::{EvalRecord, RunInfo};
    use asyb::train::{Convergence, RunSummary, StopReason, WorkerFailure};

    fn summary_of(stop_reason: StopReason, records: Vec<EvalRecord>) -> RunSummary {
        RunSummary {
            info: RunInfo {
                workers: 2,
                algorithm: "asyb".into(),
                ..RunInfo::default()
            },
            stop_reason,
            records,
            delays: Default::default(),
            weights: vec![0.0, 0.0],
            layout: Layout {
                features: 1,
                classes: 1,
                bias: false,
            },
            reg: RegSpec::NONE,
            wall_secs: 1.0,
            train_secs: 1.0,
            eval_secs: 0.0,
            traffic: None,
            failed_workers: Vec::new(),
            convergence: None,
        }
    }

    #[test]
    fn failed_workers_are_listed_in_the_summary() {
        let mut s = summary_of(StopReason::Epochs, vec![EvalRecord::default()]);
        s.failed_workers = vec![WorkerFailure {
            worker: 1,
            reason: "out of data".into(),
        }];
        let text = summary(&s, "d.svm", None);
        assert!(
            text.contains("failed      worker 1 of 2: out of data (the others went on)"),
            "{text}"
        );
    }

    /// The optimality line computes ||P(x)|| / ||P(0)|| from the squared norms and says
    /// whether it is within tol; the certificate line prints the gap and its share of Psi.
    #[test]
    fn convergence_and_certificate_lines() {
        let rec = |pgm_sq_norm: f64, gap: Option<f64>| EvalRecord {
            psi: 0.5,
            pgm_sq_norm,
            gap,
            ..EvalRecord::default()
        };
        let mut s = summary_of(
            StopReason::Converged,
            vec![rec(4.0, Some(0.3)), rec(1e-6, Some(0.01))],
        );
        s.convergence = Some(Convergence {
            tol: 1e-3,
            pgm_at_zero: 4.0,
        });
        let text = summary(&s, "d.svm", None);
        assert!(
            text.contains("optimality  ||P(x)|| / ||P(0)|| = 5.00e-4 (tol 1e-3): converged\n"),
            "{text}"
        );
        assert!(
            text.contains("certificate Psi - Psi* <= 1.000e-2 (duality gap; 2.00e-2 of Psi)"),
            "{text}"
        );
        assert!(text.contains("duality gap / |psi|"), "{text}");
        s.stop_reason = StopReason::Epochs;
        s.records[1] = rec(4e-4, None);
        let text = summary(&s, "d.svm", None);
        assert!(
            text.contains("= 1.00e-2 (tol 1e-3): not converged\n"),
            "{text}"
        );
        assert!(!text.contains("certificate"), "{text}");
        s.convergence = None;
        assert!(!summary(&s, "d.svm", None).contains("optimality"));
    }

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let status = "Name:\tasyb\nVmPeak:\t  900 kB\nVmHWM:\t  321452 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(321_452 * 1024));
        assert_eq!(parse_vm_hwm("VmRSS: 5 kB\n"), None);
    }

    #[test]
    fn the_memory_line_reads_back() {
        let text = format!("summary\n  time        x\n{}", memory_line(321_452 * 1024));
        let back = parse_memory_line(&text).unwrap();
        assert!((back as f64 - 329_166_848.0).abs() <= 50_000.0, "{back}");
    }
}
