//! The `asyb` command end to end, in a temporary directory per test: bad inputs give one
//! line on standard error, exit code 1 and no output file; good runs write files that
//! the other subcommands read back.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    fn new() -> Self {
        Dir {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn asyb(&self, args: &[&str]) -> Output {
        Command::cargo_bin("asyb")
            .unwrap()
            .current_dir(self.tmp.path())
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs `asyb` with `args`, which must succeed (else the test fails with its
    /// standard error); its output.
    fn asyb_ok(&self, args: &[&str]) -> Output {
        let o = self.asyb(args);
        assert!(o.status.success(), "{}", stderr(&o));
        o
    }

    /// Names in the directory, sorted.
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A failure the way users must see it: exit 1, one line that starts with `error:` and
/// contains every one of `needles`, no panic.
fn assert_bad_input(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "'{n}' not in: {err}");
    }
}

/// A small separable-ish binary problem, 1-based, labels 0/1.
fn small_binary() -> String {
    let mut s = String::new();
    for i in 0..200u32 {
        let a = 1 + i % 7;
        let b = 8 + (i * 3) % 11;
        let y = u32::from((a + b) % 3 == 0);
        s.push_str(&format!("{y} {a}:1 {b}:0.5\n"));
    }
    s
}

/// Writes `a.svm` ([`small_binary`]) and trains `m.safetensors` on it (lambda 1e-3).
fn train_small_model(d: &Dir) {
    d.write("a.svm", small_binary());
    d.asyb_ok(&[
        "train",
        "--train",
        "a.svm",
        "--lambda",
        "1e-3",
        "--model",
        "m.safetensors",
        "--quiet",
    ]);
}

/// Runs `train` with every output asked for and checks that a failure left none.
fn train_fails(dir: &Dir, extra: &[&str], needles: &[&str]) {
    let mut args = vec![
        "train",
        "--model",
        "m.safetensors",
        "--log",
        "run.jsonl",
        "--plot",
        "run.svg",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let before = dir.files();
    let o = dir.asyb(&args);
    assert_bad_input(&o, needles);
    assert_eq!(dir.files(), before, "a failed run changed the directory");
}

#[test]
fn missing_file() {
    let d = Dir::new();
    train_fails(&d, &["--train", "nope.svm"], &["nope.svm", "No such file"]);
}

#[test]
fn empty_file() {
    let d = Dir::new();
    d.write("empty.svm", "");
    train_fails(
        &d,
        &["--train", "empty.svm"],
        &["empty.svm", "no data rows"],
    );
}

#[test]
fn bad_label() {
    let d = Dir::new();
    d.write("a.svm", "1 1:1\nyes 2:1\n");
    train_fails(&d, &["--train", "a.svm"], &["a.svm:2:1", "label 'yes'"]);
    // A binary loss refuses a label that is not -1, 0 or 1.
    d.write("b.svm", "1 1:1\n2 2:1\n");
    train_fails(
        &d,
        &["--train", "b.svm", "--loss", "logistic"],
        &["b.svm:2:1"],
    );
}

#[test]
fn bad_index() {
    let d = Dir::new();
    d.write("a.svm", "1 1:1\n0 x:1\n");
    train_fails(&d, &["--train", "a.svm"], &["a.svm:2:3"]);
    d.write("b.svm", "1 1:1\n0 -3:1\n");
    train_fails(&d, &["--train", "b.svm"], &["b.svm:2:3", "negative"]);
}

#[test]
fn index_zero_when_one_based() {
    let d = Dir::new();
    d.write("a.svm", "1 1:1\n0 0:1 2:1\n");
    train_fails(
        &d,
        &["--train", "a.svm", "--index-base", "1"],
        &["a.svm:2:3", "0"],
    );
}

#[test]
fn unsorted_or_duplicate_indices() {
    let d = Dir::new();
    d.write("a.svm", "1 1:1\n0 3:1 2:1\n");
    train_fails(&d, &["--train", "a.svm"], &["a.svm:2:7", "increasing"]);
    d.write("b.svm", "1 1:1 1:2\n");
    train_fails(&d, &["--train", "b.svm"], &["b.svm:1:7", "duplicate"]);
}

#[test]
fn non_finite_values() {
    let d = Dir::new();
    for (name, v) in [
        ("a.svm", "nan"),
        ("b.svm", "inf"),
        ("c.svm", "-inf"),
        ("e.svm", "1e999"),
    ] {
        d.write(name, format!("1 1:1\n0 2:{v}\n"));
        train_fails(&d, &["--train", name], &[&format!("{name}:2:")]);
    }
    d.write("l.svm", "nan 1:1\n");
    train_fails(
        &d,
        &["--train", "l.svm", "--loss", "squared"],
        &["l.svm:1:1"],
    );
}

#[test]
fn truncated_compressed_file() {
    use std::io::Write;
    let d = Dir::new();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(small_binary().repeat(20).as_bytes()).unwrap();
    let gz = enc.finish().unwrap();
    d.write("ok.svm.gz", &gz);
    d.write("cut.svm.gz", &gz[..gz.len() / 2]);
    train_fails(&d, &["--train", "cut.svm.gz"], &["cut.svm.gz", "truncated"]);
    // The whole file trains.
    d.asyb_ok(&["train", "--train", "ok.svm.gz", "--epochs", "1", "--quiet"]);
}

#[test]
fn zero_features() {
    let d = Dir::new();
    d.write("a.svm", "1\n0\n1\n");
    train_fails(&d, &["--train", "a.svm"], &["a.svm", "no features"]);
}

#[test]
fn blocks_above_features() {
    let d = Dir::new();
    d.write("a.svm", "1 1:1 3:1\n0 2:1\n");
    train_fails(
        &d,
        &["--train", "a.svm", "--blocks", "10"],
        &["invalid blocks", "10 blocks for 3 features"],
    );
}

#[test]
fn bad_numbers_in_flags() {
    let d = Dir::new();
    d.write("a.svm", small_binary());
    train_fails(&d, &["--train", "a.svm", "--lambda", "-1"], &["lambda"]);
    train_fails(&d, &["--train", "a.svm", "--step", "-0.1"], &["step"]);
    train_fails(
        &d,
        &["--train", "a.svm", "--step", "fast"],
        &["--step", "fast"],
    );
    train_fails(&d, &["--train", "a.svm", "--workers", "0"], &["workers"]);
    train_fails(&d, &["--train", "a.svm", "--batch", "0"], &["batch"]);
    train_fails(&d, &["--train", "a.svm", "--epochs", "-2"], &["epochs"]);
    train_fails(
        &d,
        &["--train", "a.svm", "--features", "4294967295"],
        &["invalid features", "32-bit"],
    );
    train_fails(
        &d,
        &["--train", "a.svm", "--eval-every-epochs", "0"],
        &["eval-every-epochs"],
    );
    // bench perf checks its counts and interval before it writes anything.
    for (flag, value, bad) in [
        ("--repeat", "0", "'0'"),
        ("--workers", "1,0", "'0'"),
        ("--eval-every-epochs", "0", "'0'"),
        ("--eval-every-epochs", "inf", "'inf'"),
    ] {
        let o = d.asyb(&["bench", "perf", "--workdir", "w", flag, value]);
        assert_bad_input(&o, &[flag, bad]);
        assert!(!d.path("w").exists());
    }
}

/// Feature ids are 32-bit: a file whose largest index leaves no room for the intercept
/// row is refused, not a panic.
#[test]
fn feature_index_at_the_32_bit_limit() {
    let d = Dir::new();
    d.write("a.svm", "1 1:1 4294967295:1\n0 2:1\n");
    train_fails(&d, &["--train", "a.svm"], &["a.svm", "32-bit"]);
}

#[test]
fn unknown_names() {
    let d = Dir::new();
    d.write("a.svm", small_binary());
    train_fails(
        &d,
        &["--train", "a.svm", "--loss", "hinge2"],
        &["hinge2", "logistic"],
    );
    train_fails(&d, &["--train", "a.svm", "--reg", "l3"], &["l3", "l1"]);
    train_fails(
        &d,
        &["--train", "a.svm", "--algorithm", "adam"],
        &["adam", "asyb"],
    );
    train_fails(
        &d,
        &["--train", "a.svm", "--no-such-flag"],
        &["--no-such-flag"],
    );
}

#[test]
fn output_directory_must_exist() {
    let d = Dir::new();
    d.write("a.svm", small_binary());
    let before = d.files();
    let o = d.asyb(&[
        "train",
        "--train",
        "a.svm",
        "--model",
        "no/dir/m.safetensors",
    ]);
    assert_bad_input(&o, &["no/dir"]);
    assert_eq!(d.files(), before);
}

#[test]
fn config_errors_name_line_and_field() {
    let d = Dir::new();
    d.write("a.svm", small_binary());
    d.write("run.toml", "train = \"a.svm\"\nlamda = 0.1\n");
    train_fails(&d, &["--config", "run.toml"], &["run.toml:2:1", "lamda"]);
    d.write("run2.toml", "train = \"a.svm\"\nworkers = \"two\"\n");
    train_fails(&d, &["--config", "run2.toml"], &["run2.toml:2:11"]);
}

#[test]
fn skip_bad_lines_counts_them() {
    let d = Dir::new();
    d.write("a.svm", format!("{}1 x:1\n0 2:nan\n", small_binary()));
    let o = d.asyb_ok(&[
        "train",
        "--train",
        "a.svm",
        "--skip-bad-lines",
        "--epochs",
        "1",
        "--quiet",
    ]);
    assert!(
        stderr(&o).contains("skipped 2 malformed lines"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).contains("200 rows"), "{}", stdout(&o));
}

/// Every record of the log.
fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The log's start record and its evaluations (the summary record left out).
fn log_records(path: &Path) -> Vec<serde_json::Value> {
    let mut recs = log_lines(path);
    recs.retain(|v| v["type"] != "summary");
    recs
}

#[test]
fn train_predict_eval_round_trip() {
    let d = Dir::new();
    d.write("a.svm", small_binary());
    let o = d.asyb_ok(&[
        "train",
        "--train",
        "a.svm",
        "--test",
        "a.svm",
        "--lambda",
        "1e-3",
        "--algorithm",
        "fista",
        "--model",
        "m.safetensors",
        "--log",
        "run.jsonl",
        "--plot",
        "run.svg",
    ]);
    let out = stdout(&o);
    assert!(out.contains("converged to tolerance"), "{out}");
    let recs = log_records(&d.path("run.jsonl"));
    assert!(recs[0].get("info").is_some());
    let last = recs.last().unwrap();
    let psi = last["psi"].as_f64().unwrap();
    let test_loss = last["test"]["loss"].as_f64().unwrap();
    assert!(std::fs::read_to_string(d.path("run.svg"))
        .unwrap()
        .contains("<svg"));

    // eval on the training file gives back the final objective and test loss.
    let o = d.asyb_ok(&[
        "eval",
        "--model",
        "m.safetensors",
        "--data",
        "a.svm",
        "--json",
    ]);
    let e: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    // The file stores f32 weights: agreement to f32 precision.
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
    assert!(rel(e["psi"].as_f64().unwrap(), psi) < 1e-5, "{e} vs {psi}");
    assert!(rel(e["metrics"]["loss"].as_f64().unwrap(), test_loss) < 1e-5);
    assert_eq!(e["rows"], 200);

    // predict: one probability per row, matching the logloss eval reported.
    d.asyb_ok(&[
        "predict",
        "--model",
        "m.safetensors",
        "--data",
        "a.svm",
        "--out",
        "p.txt",
    ]);
    let probs: Vec<f64> = std::fs::read_to_string(d.path("p.txt"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(probs.len(), 200);
    let labels: Vec<f64> = small_binary()
        .lines()
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    let logloss = probs
        .iter()
        .zip(&labels)
        .map(|(&p, &y)| -if y > 0.0 { p.ln() } else { (1.0 - p).ln() })
        .sum::<f64>()
        / 200.0;
    assert!(rel(logloss, test_loss) < 1e-5, "{logloss} vs {test_loss}");

    // A warm start from the optimum stays there.
    d.asyb_ok(&[
        "train",
        "--train",
        "a.svm",
        "--lambda",
        "1e-3",
        "--algorithm",
        "fista",
        "--init-model",
        "m.safetensors",
        "--log",
        "warm.jsonl",
        "--quiet",
    ]);
    let warm = log_records(&d.path("warm.jsonl"));
    assert!(rel(warm[1]["psi"].as_f64().unwrap(), psi) < 1e-5);
}

/// Scores of `predict` on `data` (one per line), from standard input when `stdin` is
/// given.
fn predict_lines(dir: &Dir, data: &str, stdin: Option<&str>) -> Vec<String> {
    let mut cmd = Command::cargo_bin("asyb").unwrap();
    cmd.current_dir(dir.tmp.path())
        .args(["predict", "--model", "m.safetensors", "--data", data]);
    if let Some(text) = stdin {
        cmd.write_stdin(text.as_bytes().to_vec());
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).lines().map(String::from).collect()
}

/// Rows that come through a pipe, `-` or a FIFO are scored one for one, in order, as the
/// same rows from a regular file: telling a cache from text must not take the stream's
/// first bytes (it did: the first row was lost).
#[test]
fn predictions_line_up_through_pipes_fifos_and_stdin() {
    let d = Dir::new();
    train_small_model(&d);
    let rows = "1 123:1\n0 5:1\n1 7:1\n0 9:1\n";
    d.write("rows.svm", rows);
    let want = predict_lines(&d, "rows.svm", None);
    assert_eq!(want.len(), 4);
    // The rows differ in score, so a lost or shifted row cannot go unnoticed.
    assert_ne!(want[1], want[2]);
    assert_eq!(predict_lines(&d, "/dev/stdin", Some(rows)), want);
    assert_eq!(predict_lines(&d, "-", Some(rows)), want);

    let fifo = d.path("rows.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a valid, NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let writer = {
        let fifo = fifo.clone();
        // Opening a FIFO for writing waits for its reader; should asyb never open it,
        // the thread stays blocked without holding up the test.
        std::thread::spawn(move || std::fs::write(fifo, rows).unwrap())
    };
    assert_eq!(predict_lines(&d, "rows.fifo", None), want);
    writer.join().unwrap();
    // The FIFO was read in place, not replaced by a file.
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &std::fs::symlink_metadata(&fifo).unwrap().file_type()
    ));

    // A cache is memory-mapped: through a pipe it is refused with one line, not read as
    // text.
    d.asyb_ok(&["convert", "a.svm", "--out", "a.cache"]);
    let o = Command::cargo_bin("asyb")
        .unwrap()
        .current_dir(d.tmp.path())
        .args(["predict", "--model", "m.safetensors", "--data", "-"])
        .write_stdin(std::fs::read(d.path("a.cache")).unwrap())
        .output()
        .unwrap();
    assert_bad_input(&o, &["-:", "regular file"]);
    assert!(o.stdout.is_empty());
}

/// A reader that closes its end early (`asyb eval | head -1`) ends the command with
/// success and no message; it used to panic with exit 101.
#[test]
fn a_closed_standard_output_is_success() {
    let d = Dir::new();
    d.write("a.svm", small_binary());
    d.asyb_ok(&[
        "train",
        "--train",
        "a.svm",
        "--model",
        "m.safetensors",
        "--quiet",
    ]);
    for cmd in [
        vec!["eval", "--model", "m.safetensors", "--data", "a.svm"],
        vec!["predict", "--model", "m.safetensors", "--data", "a.svm"],
    ] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("asyb"))
            .current_dir(d.tmp.path())
            .args(&cmd)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Closed before the command reads its model, so its first write finds no reader.
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{cmd:?}: {}", stderr(&o));
        assert!(o.stderr.is_empty(), "{cmd:?}: {}", stderr(&o));
    }
}

/// Each file's index base: a 1-based test file beside 0-based training data is not read
/// as 0-based (every feature shifted by one, with no error); it is refused, and
/// `--index-base 0` reads a 0-based one that happens to lack index 0. The model keeps
/// the base for `eval` and `predict`.
#[test]
fn a_test_file_is_not_read_in_the_training_files_index_base() {
    let d = Dir::new();
    // small_binary is 1-based with features 1..=18; shifted down, it holds index 0.
    let zero: String = small_binary()
        .lines()
        .map(|l| {
            let mut t = l.split(' ');
            let mut out = t.next().unwrap().to_string();
            for tok in t {
                let (i, v) = tok.split_once(':').unwrap();
                out.push_str(&format!(" {}:{v}", i.parse::<u32>().unwrap() - 1));
            }
            out + "\n"
        })
        .collect();
    assert!(zero.contains(" 0:"));
    d.write("train0.svm", &zero);
    d.write("test1.svm", small_binary());
    // The 0-based rows without index 0: 0-based, but the base cannot be seen.
    let no_zero: String = zero
        .lines()
        .filter(|l| !l.contains(" 0:"))
        .map(|l| format!("{l}\n"))
        .collect();
    d.write("test0.svm", &no_zero);
    train_fails(
        &d,
        &["--train", "train0.svm", "--test", "test1.svm"],
        &["test1.svm", "index 0", "--index-base 0"],
    );
    d.asyb_ok(&[
        "train",
        "--train",
        "train0.svm",
        "--test",
        "test0.svm",
        "--index-base",
        "0",
        "--model",
        "m.safetensors",
        "--quiet",
    ]);
    // The model was trained 0-based: eval follows it, with the same guard.
    let o = d.asyb(&["eval", "--model", "m.safetensors", "--data", "test1.svm"]);
    assert_bad_input(&o, &["test1.svm", "--index-base 0"]);
    let json = |args: &[&str]| -> serde_json::Value {
        let o = d.asyb_ok(args);
        serde_json::from_str(&stdout(&o)).unwrap()
    };
    let a = json(&[
        "eval",
        "--model",
        "m.safetensors",
        "--data",
        "test0.svm",
        "--index-base",
        "0",
        "--json",
    ]);
    assert_eq!(
        a["rows"].as_u64().unwrap() as usize,
        no_zero.lines().count()
    );
    // Rows that hold index 0 show their base: read as when it is given.
    let b = json(&[
        "eval",
        "--model",
        "m.safetensors",
        "--data",
        "train0.svm",
        "--json",
    ]);
    let c = json(&[
        "eval",
        "--model",
        "m.safetensors",
        "--data",
        "train0.svm",
        "--index-base",
        "0",
        "--json",
    ]);
    assert_eq!(b, c);
    assert_eq!(b["rows"], 200);
}

#[test]
fn model_file_errors() {
    let d = Dir::new();
    d.write("a.svm", small_binary());
    d.write("junk.safetensors", "not a model");
    let o = d.asyb(&["eval", "--model", "junk.safetensors", "--data", "a.svm"]);
    assert_bad_input(&o, &["junk.safetensors"]);
    let o = d.asyb(&["predict", "--model", "none.safetensors", "--data", "a.svm"]);
    assert_bad_input(&o, &["none.safetensors"]);
    // A warm start of the wrong shape.
    d.asyb_ok(&[
        "train",
        "--train",
        "a.svm",
        "--model",
        "m.safetensors",
        "--epochs",
        "1",
        "--quiet",
    ]);
    d.write("wide.svm", "1 1:1 40:1\n0 2:1\n");
    train_fails(
        &d,
        &["--train", "wide.svm", "--init-model", "m.safetensors"],
        &["m.safetensors", "features"],
    );
}

#[test]
fn flags_override_the_config_file() {
    let d = Dir::new();
    d.write("a.svm", small_binary());
    d.write(
        "run.toml",
        "train = \"a.svm\"\nworkers = 2\nbatch = 16\nlambda = 0.01\nepochs = 2\nlog = \"run.jsonl\"\n",
    );
    d.asyb_ok(&["train", "--config", "run.toml", "--workers", "1", "--quiet"]);
    let info = &log_records(&d.path("run.jsonl"))[0]["info"];
    assert_eq!(info["workers"], 1, "flag wins");
    assert_eq!(info["batch"], 16, "file value kept");
    assert_eq!(info["lambda"], 0.01);
}

#[test]
fn one_worker_runs_are_bit_for_bit_repeatable() {
    let d = Dir::new();
    d.write("a.svm", small_binary());
    let run = |name: &str| {
        d.asyb_ok(&[
            "train",
            "--train",
            "a.svm",
            "--workers",
            "1",
            "--seed",
            "7",
            "--epochs",
            "3",
            "--blocks",
            "3",
            "--batch",
            "8",
            "--model",
            name,
            "--quiet",
        ]);
        std::fs::read(d.path(name)).unwrap()
    };
    assert_eq!(run("a.safetensors"), run("b.safetensors"));
}

/// A small file runs `cd` by default: the summary names it and why, says the run
/// converged, and gives the gap; the run is repeatable; `cd` where it does not apply is
/// one line that names the way out.
#[test]
fn small_data_runs_cd_to_convergence() {
    let d = Dir::new();
    d.write("a.svm", small_binary());
    let run = |name: &str| {
        let o = d.asyb_ok(&[
            "train", "--train", "a.svm", "--lambda", "1e-3", "--model", name,
        ]);
        (stdout(&o), std::fs::read(d.path(name)).unwrap())
    };
    let (out, model) = run("a.safetensors");
    for needle in [
        "algorithm   cd (auto: 200 rows <= 200000)",
        "stopped     converged to tolerance after",
        "(tol 3e-4): converged",
        "certificate Psi - Psi* <=",
    ] {
        assert!(out.contains(needle), "'{needle}' not in {out}");
    }
    assert!(!out.contains("delays"), "{out}");
    assert_eq!(run("b.safetensors").1, model);
    d.write("m.svm", "0 1:1\n1 2:1\n2 3:1\n");
    train_fails(
        &d,
        &["--train", "m.svm", "--loss", "softmax", "--algorithm", "cd"],
        &["cd needs one output per row, not softmax; use fista"],
    );
}

/// `--weights`: a row of weight k trains as k copies of it (0: left out); a bad
/// weights file is refused naming its line.
#[test]
fn row_weights_train_as_repeated_rows() {
    let d = Dir::new();
    let text = small_binary();
    d.write("a.svm", &text);
    let counts: Vec<usize> = (0..200).map(|i| (i * 7) % 4).collect();
    let weights: String = counts.iter().map(|c| format!("{c}\n")).collect();
    d.write("w.txt", &weights);
    let repeated: String = text
        .lines()
        .zip(&counts)
        .flat_map(|(l, &c)| std::iter::repeat(format!("{l}\n")).take(c))
        .collect();
    d.write("r.svm", &repeated);
    let psi = |extra: &[&str], log: &str| {
        let mut args = vec!["train", "--lambda", "1e-3", "--tol", "1e-9", "--quiet"];
        args.extend_from_slice(&["--log", log]);
        args.extend_from_slice(extra);
        d.asyb_ok(&args);
        let recs = log_records(&d.path(log));
        let last = recs.iter().rev().find(|r| r["type"] == "eval").unwrap();
        last["psi"].as_f64().unwrap()
    };
    let weighted = psi(&["--train", "a.svm", "--weights", "w.txt"], "w.jsonl");
    let copies = psi(&["--train", "r.svm"], "r.jsonl");
    let plain = psi(&["--train", "a.svm"], "p.jsonl");
    assert!(
        (weighted - copies).abs() < 1e-7 * copies,
        "{weighted} vs {copies}"
    );
    assert!(
        (weighted - plain).abs() > 1e-4,
        "weights changed nothing: {plain}"
    );

    d.write("bad.txt", "1\n2\n x\n");
    train_fails(
        &d,
        &["--train", "a.svm", "--weights", "bad.txt"],
        &["bad.txt:3:2: weight 'x' is not a number"],
    );
    d.write("short.txt", "1\n2\n");
    train_fails(
        &d,
        &["--train", "a.svm", "--weights", "short.txt"],
        &["short.txt: 2 weights for 200 training rows"],
    );
    d.write("neg.txt", weights.replacen("0\n", "-1\n", 1));
    train_fails(
        &d,
        &["--train", "a.svm", "--weights", "neg.txt"],
        &["neg.txt:1:1: weight -1 is not a finite number >= 0"],
    );
    train_fails(
        &d,
        &["--train", "a.svm", "--weights", "w.txt", "--skip-bad-lines"],
        &["invalid weights: row weights cannot be used with skip-bad-lines"],
    );
}

/// `predict --proba`: a softmax model's class probabilities, one line a row in the
/// order of its ascending labels, summing to 1 and largest at the predicted label; a
/// logistic model's P(y = +1), as by default; a squared model has none (one line).
#[test]
fn predict_proba_gives_class_probabilities() {
    let d = Dir::new();
    let mut text = String::new();
    for i in 0..300u32 {
        let c = i % 3;
        let noise = 1 + (i * 7) % 5;
        text.push_str(&format!("{} {}:1 {}:0.5\n", 2 * c + 3, c + 1, 4 + noise));
    }
    d.write("m.svm", &text);
    d.asyb_ok(&[
        "train",
        "--train",
        "m.svm",
        "--loss",
        "softmax",
        "--lambda",
        "1e-3",
        "--model",
        "m.safetensors",
        "--quiet",
    ]);
    let lines = |extra: &[&str]| -> Vec<Vec<f64>> {
        let mut a = vec!["predict", "--model", "m.safetensors", "--data", "m.svm"];
        a.extend_from_slice(extra);
        stdout(&d.asyb_ok(&a))
            .lines()
            .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
            .collect()
    };
    let labels = lines(&[]);
    let proba = lines(&["--proba"]);
    assert_eq!((labels.len(), proba.len()), (300, 300));
    for (l, p) in labels.iter().zip(&proba) {
        assert_eq!(p.len(), 3);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{p:?}");
        let best = (0..3).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
        assert_eq!(l[0], [3.0, 5.0, 7.0][best], "{p:?}");
    }
    d.write("b.svm", small_binary());
    for (loss, name) in [("logistic", "b.safetensors"), ("squared", "s.safetensors")] {
        d.asyb_ok(&[
            "train", "--train", "b.svm", "--loss", loss, "--model", name, "--quiet",
        ]);
    }
    let predict = |model: &str, extra: &[&str]| {
        let mut a = vec!["predict", "--model", model, "--data", "b.svm"];
        a.extend_from_slice(extra);
        d.asyb(&a)
    };
    assert_eq!(
        stdout(&predict("b.safetensors", &["--proba"])),
        stdout(&predict("b.safetensors", &[]))
    );
    assert_bad_input(
        &predict("s.safetensors", &["--proba"]),
        &["proba", "a squared model gives no probabilities"],
    );
}

/// `inspect` lists a model's nonzeros as `eval` counts them, and its largest weights by
/// magnitude, numbered as in the training file: each agrees with the margin `predict
/// --raw` gives a row holding that feature alone, less the intercept.
#[test]
fn inspect_lists_the_largest_weights_by_their_file_ids() {
    let d = Dir::new();
    train_small_model(&d);
    let out = stdout(&d.asyb_ok(&["inspect", "--model", "m.safetensors", "--top", "3"]));
    let field = |name: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .trim()
            .to_string()
    };
    let eval = stdout(&d.asyb_ok(&["eval", "--model", "m.safetensors", "--data", "a.svm"]));
    let nnz = field("nnz");
    assert!(
        eval.contains(&format!("nnz         {nnz}")),
        "{nnz} vs {eval}"
    );
    assert!(field("features").contains("1-based"), "{out}");
    let b: f64 = field("intercept").parse().unwrap();
    let rows: Vec<(u32, f64)> = out
        .lines()
        .skip_while(|l| !l.contains("largest weights"))
        .skip(2)
        .map(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            (v[0].parse().unwrap(), v[1].parse().unwrap())
        })
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(
        rows.windows(2).all(|w| w[0].1.abs() >= w[1].1.abs()),
        "{out}"
    );
    for (f, w) in rows {
        assert!((1..=18).contains(&f), "{out}");
        d.write("one.svm", format!("0 {f}:1\n"));
        let z: f64 = stdout(&d.asyb_ok(&[
            "predict",
            "--model",
            "m.safetensors",
            "--data",
            "one.svm",
            "--raw",
        ]))
        .trim()
        .parse()
        .unwrap();
        assert!(
            (z - b - w).abs() <= 1e-5 * (1.0 + w.abs()),
            "feature {f}: {z} - {b} vs {w}"
        );
    }
}

#[test]
fn demo_objective_falls() {
    let d = Dir::new();
    let o = d.asyb_ok(&["demo"]);
    let out = stdout(&o);
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("objective"))
        .unwrap_or_else(|| panic!("no objective row in {out}"));
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    assert_eq!(v.len(), 2, "{line}");
    assert!(v[1] < v[0], "{line}");
    assert!(out.contains("algorithm   cd (auto: 100000 rows"), "{out}");
    assert!(std::fs::read_to_string(d.path("asyb-demo.svg"))
        .unwrap()
        .contains("<svg"));
    // Progress goes to standard error, one line per evaluation when not a terminal.
    assert!(stderr(&o).contains("updates"), "{}", stderr(&o));
    // The paper's algorithm on request, with its workers, on a smaller set.
    let o = d.asyb_ok(&["demo", "--algorithm", "asyb", "--rows", "20000", "--quiet"]);
    let out = stdout(&o);
    assert!(out.contains("algorithm   asyb, 2 workers"), "{out}");
    assert!(out.contains("delays"), "{out}");
}

#[test]
fn cache_trains_like_its_text_and_refuses_damage() {
    let d = Dir::new();
    d.write("a.svm", small_binary());
    d.asyb_ok(&["convert", "a.svm", "--out", "a.cache"]);
    let run_with = |data: &str, model: &str, extra: &[&str]| {
        let args = [
            "train",
            "--train",
            data,
            "--workers",
            "1",
            "--seed",
            "3",
            "--epochs",
            "2",
            "--model",
            model,
            "--quiet",
        ];
        d.asyb_ok(&[&args[..], extra].concat());
        std::fs::read(d.path(model)).unwrap()
    };
    let run = |data: &str, model: &str| run_with(data, model, &[]);
    assert_eq!(
        run("a.svm", "text.safetensors"),
        run("a.cache", "cache.safetensors")
    );
    // A cache of features renumbered by frequency trains the same model, compacting
    // (its stored map) or not (its rows renumbered back).
    let o = d.asyb_ok(&[
        "convert",
        "a.svm",
        "--out",
        "r.cache",
        "--compact-features",
        "on",
    ]);
    assert!(
        stderr(&o).contains("renumbered most frequent first"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        run("a.cache", "c1.safetensors"),
        run("r.cache", "r1.safetensors")
    );
    let on = ["--compact-features", "on"];
    assert_eq!(
        run_with("a.svm", "c2.safetensors", &on),
        run_with("r.cache", "r2.safetensors", &on)
    );
    // Evaluated and scored, it reads as its text: the original feature ids.
    for (what, extra) in [("eval", &["--json"][..]), ("predict", &[][..])] {
        let on = |data: &str| {
            let args = [what, "--model", "c2.safetensors", "--data", data];
            let o = d.asyb_ok(&[&args[..], extra].concat());
            stdout(&o)
        };
        assert_eq!(on("a.svm"), on("r.cache"), "{what}");
    }

    // A damaged cache is refused in one line, naming it.
    let mut bytes = std::fs::read(d.path("a.cache")).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 1;
    d.write("bad.cache", &bytes);
    train_fails(&d, &["--train", "bad.cache"], &["bad.cache", "checksum"]);
    d.write("cut.cache", &bytes[..n / 2]);
    train_fails(&d, &["--train", "cut.cache"], &["cut.cache", "truncated"]);

    // Editing the source makes the cache stale.
    d.write("a.svm", format!("{}1 3:1\n", small_binary()));
    train_fails(&d, &["--train", "a.cache"], &["a.cache", "stale"]);
    // convert refuses to overwrite its input.
    let o = d.asyb(&["convert", "a.svm", "--out", "a.svm"]);
    assert_bad_input(&o, &["overwrite"]);
}

#[test]
fn convert_idx_to_libsvm_and_cache() {
    let d = Dir::new();
    let idx = |dims: &[u32], data: &[u8]| {
        let mut v = vec![0u8, 0, 8, dims.len() as u8];
        for x in dims {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    };
    d.write("img", idx(&[2, 1, 3], &[0, 255, 51, 0, 0, 0]));
    d.write("lab", idx(&[2], &[4, 9]));
    d.asyb_ok(&[
        "convert", "img", "--from", "idx", "--labels", "lab", "--to", "libsvm", "--out", "x.svm",
    ]);
    assert_eq!(
        std::fs::read_to_string(d.path("x.svm")).unwrap(),
        "4 2:1 3:0.2\n9\n"
    );
    let o = d.asyb(&["convert", "img", "--from", "idx", "--out", "x.cache"]);
    assert_bad_input(&o, &["--labels"]);
    d.write("lab3", idx(&[3], &[4, 9, 1]));
    let o = d.asyb(&[
        "convert", "img", "--from", "idx", "--labels", "lab3", "--out", "x.cache",
    ]);
    assert_bad_input(&o, &["lab3", "3 labels for 2 images"]);
    assert!(!d.path("x.cache").exists());
    // One class against the rest.
    d.asyb_ok(&[
        "convert",
        "img",
        "--from",
        "idx",
        "--labels",
        "lab",
        "--positive-class",
        "9",
        "--to",
        "libsvm",
        "--out",
        "b.svm",
    ]);
    assert_eq!(
        std::fs::read_to_string(d.path("b.svm")).unwrap(),
        "0 2:1 3:0.2\n1\n"
    );
    let o = d.asyb(&[
        "convert",
        "img",
        "--from",
        "idx",
        "--labels",
        "lab",
        "--positive-class",
        "7",
        "--out",
        "b.cache",
    ]);
    assert_bad_input(&o, &["lab", "no row has label 7"]);
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_training_and_writes_the_model() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let d = Dir::new();
    d.write("a.svm", small_binary().repeat(50));
    let bin = assert_cmd::cargo::cargo_bin("asyb");
    let mut child = std::process::Command::new(bin)
        .current_dir(d.tmp.path())
        .args([
            "train",
            "--train",
            "a.svm",
            "--algorithm",
            "asyb",
            "--tol",
            "0",
            "--epochs",
            "1e9",
            "--model",
            "m.safetensors",
            "--eval-every",
            "0.05",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training is under way (a progress line after the first evaluation).
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = 0;
    let mut line = String::new();
    while seen < 2 {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "stderr closed early");
        if line.contains("updates") {
            seen += 1;
        }
    }
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{rest}");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("stopped     interrupted"), "{summary}");
    assert!(d.path("m.safetensors").exists());
    d.asyb_ok(&["eval", "--model", "m.safetensors", "--data", "a.svm"]);
}

/// `bench perf` on a small workload: the optimum it computes is the `fista` solver's on
/// the same data, it is cached and reused, both worker counts are timed, and the child
/// run's peak memory is at least the data it holds.
#[test]
fn bench_perf_end_to_end_on_a_small_workload() {
    let dir = Dir::new();
    let args = [
        "bench",
        "perf",
        "--workdir",
        "w",
        "--rows",
        "4000",
        "--fista-tol",
        "1e-9",
        "--max-epochs",
        "3",
        "--eval-every-epochs",
        "0.1",
        "--json",
        "perf.json",
    ];
    let o = dir.asyb_ok(&args);
    assert!(
        stdout(&o).contains("read the LIBSVM text"),
        "{}",
        stdout(&o)
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("perf.json")).unwrap()).unwrap();
    assert_eq!(r["rows"], 4000);
    let nnz = r["nonzeros"].as_u64().unwrap();
    assert!(nnz > 55_000 && nnz <= 60_000, "{nnz}");
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["workers"], 1);
    assert_eq!(runs[1]["workers"], 2);
    assert!(runs[1]["setup_secs"].as_f64().unwrap() >= 0.0);
    assert!(
        stdout(&o).contains("setup before training"),
        "{}",
        stdout(&o)
    );
    if cfg!(target_os = "linux") {
        let csr = r["csr_plus_model_bytes"].as_u64().unwrap();
        assert!(r["peak_rss_bytes"].as_u64().unwrap() > csr);
    }

    // The same optimum from the solver run by hand on the generated text.
    let psi_star = r["psi_star"].as_f64().unwrap();
    dir.asyb_ok(&[
        "train",
        "--train",
        "w/train.svm",
        "--algorithm",
        "fista",
        "--loss",
        "logistic",
        "--reg",
        "l1",
        "--lambda",
        "1e-6",
        "--no-bias",
        "--features",
        "1048576",
        "--fista-tol",
        "1e-9",
        "--eval-rows",
        "4000",
        "--log",
        "f.jsonl",
        "--quiet",
    ]);
    let last = log_records(&dir.path("f.jsonl")).pop().unwrap();
    let by_hand = last["psi"].as_f64().unwrap();
    assert!(
        (psi_star - by_hand).abs() <= 1e-12 * by_hand,
        "{psi_star} vs {by_hand}"
    );

    // The cache it wrote is the one `asyb convert` writes: the text's rows and labels as
    // they are, not as a run prepares them.
    dir.asyb_ok(&[
        "convert",
        "w/train.svm",
        "--features",
        "1048576",
        "--out",
        "c.cache",
    ]);
    assert!(
        std::fs::read(dir.path("w/train.cache")).unwrap()
            == std::fs::read(dir.path("c.cache")).unwrap(),
        "bench perf's cache differs from asyb convert's"
    );

    // A second run reuses the data and the optimum; it times the algorithm it is given.
    let more = ["--no-rss", "--algorithm", "asy-full", "--json", "full.json"];
    let o = dir.asyb_ok(&[&args[..12], &more[..]].concat());
    assert!(stderr(&o).contains("generated earlier"), "{}", stderr(&o));
    assert!(stderr(&o).contains("cached in"), "{}", stderr(&o));
    assert!(stdout(&o).contains("algorithm asy-full;"), "{}", stdout(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("full.json")).unwrap()).unwrap();
    assert_eq!(r["algorithm"], "asy-full");
    assert_eq!(r["psi_star"].as_f64().unwrap(), psi_star);
}

/// 3,000 CTR rows with 4,096 features as `d.svm` in `dir`: small enough for a fista
/// optimum in a fraction of a second.
fn small_ctr_file(dir: &Dir) {
    dir.asyb_ok(&[
        "gen",
        "ctr",
        "--rows",
        "3000",
        "--features",
        "4096",
        "--seed",
        "4",
        "--out",
        "d.svm",
    ]);
}

/// `bench speedup`: one row per worker count, speedup relative to the first, the
/// optimum cached per problem (a new lambda is a new problem), the figures written.
#[test]
fn bench_speedup_table_json_and_cached_optimum() {
    let dir = Dir::new();
    small_ctr_file(&dir);
    let run = |lambda: &str| {
        dir.asyb(&[
            "bench",
            "speedup",
            "--train",
            "d.svm",
            "--lambda",
            lambda,
            "--workers",
            "2,1",
            "--seeds",
            "2",
            "--eval-every",
            "0.02",
            "--optimum-cache",
            "opt.json",
            "--json",
            "sp.json",
            "--plot",
            "runs.svg",
            "--speedup-plot",
            "sp.svg",
        ])
    };
    let o = run("1e-3");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("computing the reference optimum"),
        "{}",
        stderr(&o)
    );
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("sp.json")).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["workers"], 1);
    assert_eq!(rows[1]["workers"], 2);
    assert_eq!(rows[0]["speedup"].as_f64(), Some(1.0));
    for r in rows {
        assert_eq!(r["reached"], 2, "{r}");
        assert!(r["time_to_target_secs"].as_f64().unwrap() > 0.0);
        assert!(r["updates_to_target"].as_u64().unwrap() > 0);
    }
    assert_eq!(rows[0]["max_delay"], 0);
    assert!(stdout(&o).contains("time to target"));
    for f in ["runs.svg", "sp.svg"] {
        assert!(std::fs::read_to_string(dir.path(f))
            .unwrap()
            .contains("<svg"));
    }
    // Same problem: the optimum comes from the cache; another lambda computes its own.
    let o = run("1e-3");
    assert!(stderr(&o).contains("cached in"), "{}", stderr(&o));
    let o = run("2e-3");
    assert!(
        stderr(&o).contains("computing the reference optimum"),
        "{}",
        stderr(&o)
    );
    let cache: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("opt.json")).unwrap()).unwrap();
    assert_eq!(cache.as_array().unwrap().len(), 2);

    // Algorithms compared on the same target: seq runs with one worker only.
    dir.asyb_ok(&[
        "bench",
        "speedup",
        "--train",
        "d.svm",
        "--lambda",
        "1e-3",
        "--workers",
        "1,2",
        "--seeds",
        "1",
        "--eval-every",
        "0.02",
        "--optimum-cache",
        "opt.json",
        "--json",
        "cmp.json",
        "--compare",
        "asyb,asy-full,seq",
    ]);
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("cmp.json")).unwrap()).unwrap();
    let got: Vec<(String, u64)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["algorithm"].as_str().unwrap().to_string(),
                r["workers"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("asyb", 1),
        ("asyb", 2),
        ("asy-full", 1),
        ("asy-full", 2),
        ("seq", 1),
    ];
    assert_eq!(got, want.map(|(a, w)| (a.to_string(), w)));
    for r in rows.as_array().unwrap() {
        assert_eq!(r["reached"], 1, "{r}");
    }
}

#[test]
fn worker_lists_are_for_bench_speedup_only() {
    let dir = Dir::new();
    let data = dir.write("d.svm", small_binary());
    let o = dir.asyb(&[
        "train",
        "--train",
        data.to_str().unwrap(),
        "--workers",
        "1,2",
    ]);
    assert_bad_input(&o, &["workers", "bench speedup"]);
    let o = dir.asyb(&[
        "train",
        "--train",
        data.to_str().unwrap(),
        "--workers",
        "two",
    ]);
    assert_bad_input(&o, &["two"]);
    let o = dir.asyb(&[
        "bench",
        "speedup",
        "--train",
        data.to_str().unwrap(),
        "--model",
        "m.safetensors",
    ]);
    assert_bad_input(&o, &["model", "bench speedup"]);
    assert!(!dir.path("m.safetensors").exists());
}

/// `bench rate` on a small nonconvex problem (logistic + alpha x^2/(1+x^2) + a small L1):
/// the mean ||P||^2 at step c/sqrt(K) falls with K at the theorem's rate, -1/2 or
/// faster; with a large L1 weight it flattens (spurious nonzeros each add about
/// lambda^2 to ||P||^2 whatever the step), and the fit says so.
#[test]
fn bench_rate_fits_the_slope() {
    let dir = Dir::new();
    small_ctr_file(&dir);
    let rate = |extra: &[&str]| {
        let args = [
            &[
                "bench",
                "rate",
                "--train",
                "d.svm",
                "--budgets",
                "250,1000,4000",
                "--workers",
                "1",
                "--json",
                "rate.json",
                "--plot",
                "rate.svg",
            ][..],
            extra,
        ]
        .concat();
        dir.asyb_ok(&args);
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path("rate.json")).unwrap()).unwrap();
        assert_eq!(r["fits"][0]["points"].as_array().unwrap().len(), 3);
        r["slope"].as_f64().unwrap()
    };
    let slope = rate(&[]);
    assert!((-0.8..=-0.4).contains(&slope), "{slope}");
    assert!(std::fs::read_to_string(dir.path("rate.svg"))
        .unwrap()
        .contains("slope -1/2"));
    let flat = rate(&["--lambda", "1e-3"]);
    assert!(flat > -0.3, "{flat}");

    let o = dir.asyb(&["bench", "rate", "--train", "d.svm", "--budgets", "1000"]);
    assert_bad_input(&o, &["budgets"]);
    let o = dir.asyb(&["bench", "rate", "--train", "d.svm", "--step", "0.1"]);
    assert_bad_input(&o, &["step", "bench rate"]);
}

/// Checkpoints: a run killed with SIGKILL mid-training resumes from its newest
/// checkpoint (same step, same samples) and reaches the same target objective as an
/// uninterrupted run; a damaged checkpoint or one of another problem is refused.
#[test]
fn killed_run_resumes_from_its_checkpoint() {
    let dir = Dir::new();
    small_ctr_file(&dir);
    let base = ["train", "--train", "d.svm", "--lambda", "1e-3", "--quiet"];
    dir.asyb_ok(&[&base[..], &["--algorithm", "fista", "--log", "f.jsonl"]].concat());
    let last_psi = |log: &str| -> (f64, u64) {
        let text = std::fs::read_to_string(dir.path(log)).unwrap();
        let recs: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|v: &serde_json::Value| v.get("psi").is_some())
            .collect();
        let last = recs.last().unwrap();
        (
            last["psi"].as_f64().unwrap(),
            recs[0]["updates"].as_u64().unwrap(),
        )
    };
    let target = last_psi("f.jsonl").0 * (1.0 + 1e-3);
    let target_s = format!("{target:e}");

    // Killed: a long run checkpointing every 50 ms of training.
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("asyb"))
        .current_dir(dir.tmp.path())
        .args(base)
        .args([
            "--epochs",
            "1000000",
            "--checkpoint-dir",
            "ck",
            "--checkpoint-every",
            "0.05",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let has_ckpt = || {
        std::fs::read_dir(dir.path("ck"))
            .map(|d| d.count() >= 2)
            .unwrap_or(false)
    };
    while !has_ckpt() && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(has_ckpt(), "no checkpoint written");

    let resume = |extra: &[&str]| {
        dir.asyb(
            &[
                &base[..],
                &[
                    "--resume",
                    "ck",
                    "--epochs",
                    "1000000",
                    "--target-objective",
                    &target_s,
                ],
                extra,
            ]
            .concat(),
        )
    };
    let o = resume(&["--log", "r.jsonl"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("target objective reached"),
        "{}",
        stdout(&o)
    );
    let (psi, first_k) = last_psi("r.jsonl");
    assert!(psi <= target, "{psi} > {target}");
    assert!(first_k > 0, "the resumed run started from scratch");

    dir.asyb_ok(
        &[
            &base[..],
            &[
                "--epochs",
                "1000000",
                "--target-objective",
                &target_s,
                "--log",
                "u.jsonl",
            ],
        ]
        .concat(),
    );
    assert!(last_psi("u.jsonl").0 <= target);

    // Another problem: refused.
    let o = dir.asyb(&[
        "train", "--train", "d.svm", "--lambda", "2e-3", "--resume", "ck",
    ]);
    assert_bad_input(&o, &["ckpt-", "another run"]);
    // Damaged: the newest file is refused, naming it.
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path("ck"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let newest = files.last().unwrap().clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    let i = bytes.len() - 12;
    bytes[i] ^= 0x40;
    std::fs::write(&newest, &bytes).unwrap();
    let o = resume(&[]);
    assert_bad_input(
        &o,
        &["checksum", newest.file_name().unwrap().to_str().unwrap()],
    );
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    let o = resume(&[]);
    assert_bad_input(&o, &["truncated"]);
}

/// `asyb sim`: the table and JSON of bench speedup in virtual seconds. With a constant
/// compute time and no server or network cost, one worker's time to the target is its
/// updates times the compute time, and two workers apply two updates per compute time,
/// but for the SVRG snapshots (every 24 updates here), each of which can idle one
/// worker for one compute time while the other finishes; `--calibrate` measures the
/// times here; a missing compute time is refused.
#[test]
fn sim_speedup_in_virtual_time() {
    let dir = Dir::new();
    small_ctr_file(&dir);
    let o = dir.asyb_ok(&[
        "sim",
        "--train",
        "d.svm",
        "--lambda",
        "1e-3",
        "--workers",
        "1,2",
        "--compute-secs",
        "0.001",
        "--optimum-cache",
        "opt.json",
        "--json",
        "sim.json",
        "--speedup-plot",
        "sim.svg",
    ]);
    assert!(
        stdout(&o).contains("asyb sim (virtual seconds)"),
        "{}",
        stdout(&o)
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.path("sim.json")).unwrap()).unwrap();
    assert_eq!(rows.len(), 2);
    let t1 = rows[0]["time_to_target_secs"].as_f64().unwrap();
    let u1 = rows[0]["updates_to_target"].as_u64().unwrap() as f64;
    assert!((t1 - u1 * 1e-3).abs() < 1e-9, "{t1} vs {u1} updates");
    let t2 = rows[1]["time_to_target_secs"].as_f64().unwrap();
    let u2 = rows[1]["updates_to_target"].as_u64().unwrap() as f64;
    let rounds = (u2 / 2.0).ceil();
    assert!(
        t2 >= rounds * 1e-3 - 1e-9 && t2 <= (rounds + (u2 / 24.0).ceil()) * 1e-3 + 1e-9,
        "{t2} vs {u2} updates"
    );
    assert!(rows[1]["speedup"].as_f64().unwrap() > 1.5);
    assert!(rows[1]["max_delay"].as_u64().unwrap() >= 1);
    assert!(std::fs::read_to_string(dir.path("sim.svg"))
        .unwrap()
        .contains("<svg"));

    let o = dir.asyb_ok(&[
        "sim",
        "--train",
        "d.svm",
        "--lambda",
        "1e-3",
        "--workers",
        "1",
        "--calibrate",
        "--calibrate-updates",
        "50",
        "--optimum-cache",
        "opt.json",
    ]);
    assert!(stderr(&o).contains("per minibatch"), "{}", stderr(&o));

    let o = dir.asyb(&["sim", "--train", "d.svm", "--optimum-cache", "opt.json"]);
    assert_bad_input(&o, &["compute-secs", "--calibrate"]);
}

/// Feature ids spread over 2^30: the run holds only the used ids, the model file is
/// sparse and `eval`, `predict` and `--init-model` read it; a dense model of that size,
/// or a warm start that would lose weights, is refused in one line.
#[test]
fn billion_feature_ids_train_compacted_into_a_sparse_model() {
    let d = Dir::new();
    let gen = |rows: &str, seed: &str, out: &str| {
        d.asyb_ok(&[
            "gen",
            "ctr",
            "--rows",
            rows,
            "--features",
            "1073741824",
            "--seed",
            seed,
            "--out",
            out,
        ]);
    };
    gen("3000", "4", "wide.svm");
    // The wide data's problem, solved by fista.
    let fista = [
        "train",
        "--train",
        "wide.svm",
        "--features",
        "1073741824",
        "--algorithm",
        "fista",
        "--lambda",
        "1e-3",
    ];
    let o = d.asyb_ok(
        &[
            &fista[..],
            &["--model", "m.safetensors", "--log", "run.jsonl"],
        ]
        .concat(),
    );
    let out = stdout(&o);
    assert!(out.contains("1073741824 features ("), "{out}");
    assert!(out.contains("used: ids compacted"), "{out}");
    let recs = log_records(&d.path("run.jsonl"));
    let used = recs[0]["info"]["used_features"].as_u64().unwrap();
    assert!(used > 1000 && used <= 45_000, "{used} used features");
    let psi = recs.last().unwrap()["psi"].as_f64().unwrap();
    // A sparse file: only the nonzero rows, a few kilobytes, not 4 GB.
    let size = std::fs::metadata(d.path("m.safetensors")).unwrap().len();
    assert!(size < 1 << 20, "{size} bytes");

    let o = d.asyb_ok(&[
        "eval",
        "--model",
        "m.safetensors",
        "--data",
        "wide.svm",
        "--json",
    ]);
    let e: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let got = e["psi"].as_f64().unwrap();
    assert!((got - psi).abs() / psi < 1e-5, "eval psi {got} vs {psi}");
    let o = d.asyb_ok(&["predict", "--model", "m.safetensors", "--data", "wide.svm"]);
    assert_eq!(stdout(&o).lines().count(), 3000);

    // A warm start from the optimum, on the same data, stays there.
    let warm_start = [
        "--init-model",
        "m.safetensors",
        "--log",
        "warm.jsonl",
        "--quiet",
    ];
    d.asyb_ok(&[&fista[..], &warm_start[..]].concat());
    let warm = log_records(&d.path("warm.jsonl"));
    let first = warm[1]["psi"].as_f64().unwrap();
    assert!((first - psi).abs() / psi < 1e-5, "{first} vs {psi}");

    // Other rows lack some of the model's features: the warm start would lose them.
    gen("300", "9", "other.svm");
    train_fails(
        &d,
        &[
            "--train",
            "other.svm",
            "--features",
            "1073741824",
            "--lambda",
            "1e-3",
            "--init-model",
            "m.safetensors",
        ],
        &["m.safetensors", "does not occur in the training data"],
    );
    // Uncompacted, 2^32 - 2 features cannot be held; group lasso cannot be compacted.
    train_fails(
        &d,
        &[
            "--train",
            "wide.svm",
            "--features",
            "4294967294",
            "--compact-features",
            "off",
        ],
        &["features", "GB of parameter state", "--compact-features on"],
    );
    // Rows without features: nothing to compact, and the dense model is refused.
    d.write("empty.svm", "1\n0\n1\n");
    train_fails(
        &d,
        &["--train", "empty.svm", "--features", "4294967294"],
        &["features", "GB of parameter state"],
    );
    train_fails(
        &d,
        &[
            "--train",
            "wide.svm",
            "--reg",
            "group-lasso",
            "--compact-features",
            "on",
        ],
        &["compact-features", "group-lasso"],
    );
}

/// `--loss huber --huber-delta` trains; the model records delta, so `eval` computes the
/// same objective as the run; the flag is refused with another loss or a bad value.
#[test]
fn huber_loss_with_its_delta_trains_and_evaluates() {
    let d = Dir::new();
    let mut text = String::new();
    for i in 0..300 {
        let (a, b) = (i % 7 + 1, i % 11 + 8);
        let y = 0.5 * a as f64 - 0.25 * (b - 8) as f64 + if i % 25 == 0 { 40.0 } else { 0.0 };
        text.push_str(&format!("{y} {a}:1 {b}:1\n"));
    }
    d.write("r.svm", text);
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--train",
            "r.svm",
            "--algorithm",
            "fista",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        d.asyb(&args)
    };
    let o = train(&[
        "--loss",
        "huber",
        "--huber-delta",
        "0.5",
        "--lambda",
        "1e-4",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = train(&[
        "--loss",
        "huber",
        "--huber-delta",
        "0.5",
        "--lambda",
        "1e-4",
        "--model",
        "h.safetensors",
        "--log",
        "h.jsonl",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let psi = log_records(&d.path("h.jsonl")).last().unwrap()["psi"]
        .as_f64()
        .unwrap();
    let o = d.asyb(&[
        "eval",
        "--model",
        "h.safetensors",
        "--data",
        "r.svm",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let got = e["psi"].as_f64().unwrap();
    assert!(
        (got - psi).abs() <= 1e-5 * psi.abs(),
        "eval {got} vs run {psi}"
    );
    assert!(e["metrics"]["rmse"].as_f64().is_some(), "{e}");

    train_fails(
        &d,
        &[
            "--train",
            "r.svm",
            "--loss",
            "squared",
            "--huber-delta",
            "1",
        ],
        &["huber-delta"],
    );
    train_fails(
        &d,
        &["--train", "r.svm", "--loss", "huber", "--huber-delta", "0"],
        &["huber-delta"],
    );
    let o = d.asyb(&["train", "--help"]);
    assert!(stdout(&o).contains("huber"), "{}", stdout(&o));
}

/// The log is a stream: while a run goes on, its file already holds the start record and
/// evaluations, each a whole line with a type and a time; the run's end adds a summary.
#[test]
fn the_log_is_written_as_the_run_goes() {
    let d = Dir::new();
    let data = d.path("g.svm");
    d.asyb_ok(&[
        "gen",
        "ctr",
        "--rows",
        "20000",
        "--seed",
        "3",
        "--out",
        data.to_str().unwrap(),
    ]);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("asyb"))
        .current_dir(d.path(""))
        .args([
            "train",
            "--train",
            "g.svm",
            "--workers",
            "1",
            "--max-seconds",
            "4",
            "--tol",
            "0",
            "--eval-every",
            "0.2",
            "--log",
            "live.jsonl",
            "--quiet",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    while started.elapsed() < std::time::Duration::from_secs(60) {
        let text = std::fs::read_to_string(d.path("live.jsonl")).unwrap_or_default();
        let evals = text
            .lines()
            .filter(|l| l.contains("\"type\":\"eval\""))
            .count();
        if evals >= 2 {
            seen = text.lines().map(String::from).collect();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let running = child.try_wait().unwrap().is_none();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(
        running,
        "the run had ended before its log showed two evaluations"
    );
    assert!(seen.len() >= 3, "{seen:?}");
    for line in &seen {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            v["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
    }
    let first: serde_json::Value = serde_json::from_str(&seen[0]).unwrap();
    assert_eq!(first["type"], "start");
    assert_eq!(first["run"]["config"]["seed"], 1);
    assert_eq!(first["run"]["config"]["train"], "g.svm");
    assert!(first["run"]["command"].as_array().unwrap().len() > 3);
    assert!(first["run"]["train_fingerprint"].as_str().is_some());
    assert!(first["version"].as_str().is_some());
    let all = log_lines(&d.path("live.jsonl"));
    let last = all.last().unwrap();
    assert_eq!(last["type"], "summary");
    assert_eq!(last["summary"]["stop_reason"], "time budget reached");
    assert!(all[1..all.len() - 1]
        .iter()
        .all(|r| r["type"] == "eval" && r["psi"].is_f64()));
}

/// `--algorithm fista` prints Psi* (the README says so), to the digits a gap needs, and
/// a multi-class file under a binary loss says which loss takes it.
#[test]
fn fista_prints_psi_star_and_labels_point_to_their_loss() {
    let d = Dir::new();
    d.write("a.svm", small_binary());
    let o = d.asyb_ok(&[
        "train",
        "--train",
        "a.svm",
        "--algorithm",
        "fista",
        "--log",
        "f.jsonl",
        "--quiet",
    ]);
    let out = stdout(&o);
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("Psi*"))
        .expect(&out);
    let psi: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let logged = log_records(&d.path("f.jsonl")).pop().unwrap()["psi"]
        .as_f64()
        .unwrap();
    assert!(
        (psi - logged).abs() <= 1e-11 * logged.abs(),
        "{psi} vs {logged}"
    );

    d.write("m.svm", "0 1:1\n9 2:1\n");
    train_fails(
        &d,
        &["--train", "m.svm"],
        &["m.svm:2:1", "not a binary label", "--loss softmax"],
    );
}

/// The default run stops at convergence (`--tol`), says so, and prints a duality gap
/// that bounds its distance to Psi* (from a tight FISTA run); the log's summary has the
/// same figures. `--tol 0` runs the epoch budget.
#[test]
fn the_default_stop_is_convergence_with_a_certificate() {
    let d = Dir::new();
    small_ctr_file(&d);
    let train = |extra: &[&str]| {
        let mut a = vec!["train", "--train", "d.svm", "--lambda", "1e-3", "--quiet"];
        a.extend_from_slice(extra);
        stdout(&d.asyb_ok(&a))
    };
    let out = train(&["--algorithm", "fista", "--fista-tol", "1e-16"]);
    let psi_star: f64 = out
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("Psi*"))
        .and_then(|l| l.split_whitespace().next())
        .expect(&out)
        .parse()
        .unwrap();
    // 3000 rows: `auto` runs cd, which checks tol on the measure the summary prints.
    let out = train(&["--log", "run.jsonl"]);
    assert!(
        out.contains("algorithm   cd (auto: 3000 rows <= 200000)"),
        "{out}"
    );
    assert!(out.contains("stopped     converged to tolerance"), "{out}");
    assert!(out.contains("(tol 3e-4): converged"), "{out}");
    let cert = out
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("certificate Psi - Psi* <= "))
        .expect(&out);
    let printed: f64 = cert.split_whitespace().next().unwrap().parse().unwrap();
    let log = log_lines(&d.path("run.jsonl"));
    let sum = &log.last().unwrap()["summary"];
    let (psi, gap) = (
        sum["psi"].as_f64().unwrap(),
        sum["duality_gap"].as_f64().unwrap(),
    );
    assert!((printed - gap).abs() <= 1e-3 * gap, "{printed} vs {gap}");
    assert!(
        psi - psi_star <= gap && gap < 0.1 * psi,
        "{psi} - {psi_star} vs {gap}"
    );
    assert!(sum["optimality"].as_f64().unwrap() <= 3e-4, "{sum}");
    assert_eq!(sum["tol"].as_f64(), Some(3e-4));
    let out = train(&["--algorithm", "asyb", "--log", "asyb.jsonl"]);
    assert!(out.contains("(tol 3e-4): converged"), "{out}");
    let log = log_lines(&d.path("asyb.jsonl"));
    let sum = &log.last().unwrap()["summary"];
    assert!(sum["optimality"].as_f64().unwrap() <= 3e-4, "{sum}");
    let (psi, gap) = (
        sum["psi"].as_f64().unwrap(),
        sum["duality_gap"].as_f64().unwrap(),
    );
    assert!(
        psi - psi_star <= gap && gap < 0.1 * psi,
        "{psi} - {psi_star} vs {gap}"
    );
    let out = train(&["--tol", "0", "--epochs", "3"]);
    assert!(out.contains("epoch budget reached"), "{out}");
    assert!(!out.contains("optimality"), "{out}");
}

/// Paths in a config file are relative to the file, wherever asyb runs from; a flag's
/// path is relative to the current directory.
#[test]
fn config_paths_are_relative_to_the_config_file() {
    let d = Dir::new();
    std::fs::create_dir(d.path("exp")).unwrap();
    d.write("exp/a.svm", small_binary());
    d.write(
        "exp/run.toml",
        "train = \"a.svm\"\nmodel = \"m.safetensors\"\nepochs = 1\nworkers = 1\n",
    );
    d.asyb_ok(&["train", "--config", "exp/run.toml", "--quiet"]);
    assert!(d.path("exp/m.safetensors").is_file());
    assert!(!d.path("m.safetensors").exists());
    d.asyb_ok(&[
        "train",
        "--config",
        "exp/run.toml",
        "--model",
        "here.safetensors",
        "--quiet",
    ]);
    assert!(d.path("here.safetensors").is_file());
}
