//! The MPI backend under `mpirun`: the MPI-enabled `asyb` is built once (cargo
//! feature `mpi`, into `target/mpi`). Where Open MPI is missing the tests say so and
//! pass, unless `ASYB_REQUIRE_MPI=1` (set by `.ci/run`, which installs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The MPI-enabled binary, or None (with a note) where Open MPI is not installed.
fn mpi_asyb() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let required = std::env::var("ASYB_REQUIRE_MPI").is_ok_and(|v| v == "1");
        let have = Command::new("mpirun")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !have {
            assert!(!required, "ASYB_REQUIRE_MPI=1 but mpirun is not installed");
            eprintln!("mpirun not found: MPI tests skipped (install openmpi-bin libopenmpi-dev libclang-dev)");
            return None;
        }
        let target = workspace().join("target/mpi");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let o = Command::new(cargo)
            .current_dir(workspace())
            .args(["build", "--release", "--features", "mpi", "-p", "asyb-cli"])
            .arg("--target-dir")
            .arg(&target)
            .output()
            .expect("cargo runs");
        assert!(
            o.status.success(),
            "building with --features mpi failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        Some(target.join("release/asyb"))
    })
    .as_deref()
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().unwrap())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn command(&self, bin: &Path, mpi_ranks: Option<usize>, args: &[&str]) -> Command {
        let mut c = match mpi_ranks {
            Some(n) => {
                let mut c = Command::new("mpirun");
                c.args(["--oversubscribe", "-np", &n.to_string()]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        c.current_dir(self.0.path())
            .args(args)
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .stdin(Stdio::null());
        c
    }

    /// Runs and waits at most `secs` (a hang is a failure, not a stuck test).
    fn run(&self, bin: &Path, mpi_ranks: Option<usize>, args: &[&str], secs: u64) -> Output {
        let child = self
            .command(bin, mpi_ranks, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let id = child.id();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = done.clone();
        let watchdog = std::thread::spawn(move || {
            let start = Instant::now();
            while !d.load(std::sync::atomic::Ordering::Relaxed) {
                if start.elapsed() > Duration::from_secs(secs) {
                    let _ = Command::new("kill").args(["-9", &id.to_string()]).status();
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        });
        let o = child.wait_with_output().unwrap();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(
            !watchdog.join().unwrap(),
            "{args:?} on {mpi_ranks:?} ranks did not finish in {secs} s:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The last evaluation's objective in a JSON-lines log, and the first one's step.
fn last_psi(path: &Path) -> (f64, u64) {
    let t = std::fs::read_to_string(path).unwrap();
    let recs: Vec<serde_json::Value> = t
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("psi").is_some())
        .collect();
    (
        recs.last().unwrap()["psi"].as_f64().unwrap(),
        recs[0]["updates"].as_u64().unwrap(),
    )
}

/// A CTR problem on which asyb reaches 1e-3 of the optimum in a few seconds, and its
/// optimum from the in-process fista solver.
fn problem(dir: &Dir, bin: &Path) -> f64 {
    let o = dir.run(
        bin,
        None,
        &[
            "gen",
            "ctr",
            "--rows",
            "30000",
            "--features",
            "4096",
            "--seed",
            "5",
            "--out",
            "d.svm",
        ],
        60,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = dir.run(
        bin,
        None,
        &[
            "train",
            "--train",
            "d.svm",
            "--lambda",
            "1e-4",
            "--algorithm",
            "fista",
            "--quiet",
            "--log",
            "fista.jsonl",
        ],
        120,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    last_psi(&dir.path("fista.jsonl")).0
}

const PROBLEM: [&str; 6] = ["train", "--train", "d.svm", "--lambda", "1e-4", "--quiet"];

/// Done means 1: mpirun -np 3 with one server rank, two colocated ranks, and the
/// in-process backend with 2 workers each reach Psi within 1e-3 (relative) of the same
/// fista optimum; rank 0 writes the one model file; the ranks' rows add up.
#[test]
fn mpi_runs_reach_the_optimum_of_the_in_process_solver() {
    let Some(bin) = mpi_asyb() else { return };
    let dir = Dir::new();
    let psi_star = problem(&dir, bin);
    let target = format!("{:e}", psi_star * (1.0 + 1e-3));
    let run = |ranks: Option<usize>, extra: &[&str], log: &str| {
        let model = format!("{log}.safetensors");
        let args = [
            &PROBLEM[..],
            &[
                "--target-objective",
                &target,
                "--max-seconds",
                "120",
                "--log",
                log,
                "--model",
                &model,
            ],
            extra,
        ]
        .concat();
        let o = dir.run(bin, ranks, &args, 300);
        assert!(o.status.success(), "{extra:?}: {}", text(&o.stderr));
        assert!(
            text(&o.stdout).contains("target objective reached"),
            "{extra:?}: {}",
            text(&o.stdout)
        );
        let (psi, _) = last_psi(&dir.path(log));
        assert!(
            (psi - psi_star) / psi_star <= 1e-3,
            "{extra:?}: {psi} vs {psi_star}"
        );
        assert!(dir.path(&model).exists());
        o
    };
    run(None, &["--workers", "2"], "local.jsonl");
    let o = run(
        Some(3),
        &["--backend", "mpi", "--servers", "1"],
        "mpi3.jsonl",
    );
    // The role map and rows per rank (in the log's run record): ranks 1 and 2 hold
    // every row once.
    let log = std::fs::read_to_string(dir.path("mpi3.jsonl")).unwrap();
    let err = log
        .lines()
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["info"]["cluster"].as_str().map(String::from)
        })
        .expect("a run record with the cluster layout");
    assert!(
        err.contains("3 ranks: rank 0 server 0; ranks 1-2 workers 0-1"),
        "{err}"
    );
    let rows: usize = ["rank 1 ", "rank 2 "]
        .iter()
        .map(|p| {
            let at = err.find(p).unwrap_or_else(|| panic!("{p}: {err}")) + p.len();
            err[at..]
                .split(' ')
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(rows, 30000);
    assert!(text(&o.stdout).contains("2 workers"), "{}", text(&o.stdout));
    run(Some(2), &["--backend", "mpi", "--colocate"], "colo.jsonl");
}

/// `asyb train --train data --backend mpi` and `extra` on `ranks` ranks, which must
/// fail (within a minute): its standard error.
fn mpi_train_fails(dir: &Dir, bin: &Path, ranks: usize, data: &str, extra: &[&str]) -> String {
    let args = [&["train", "--train", data, "--backend", "mpi"][..], extra].concat();
    let o = dir.run(bin, Some(ranks), &args, 60);
    assert!(!o.status.success());
    text(&o.stderr)
}

/// A wrong launch and bad data on one rank: one line on rank 0, non-zero exit of
/// every rank, no hang.
#[test]
fn mpi_errors_are_one_line_and_end_every_rank() {
    let Some(bin) = mpi_asyb() else { return };
    let dir = Dir::new();
    std::fs::write(dir.path("ok.svm"), "1 1:1\n-1 2:1\n".repeat(50)).unwrap();
    let err = mpi_train_fails(&dir, bin, 2, "ok.svm", &["--servers", "2", "--quiet"]);
    assert_eq!(err.matches("error: invalid servers").count(), 1, "{err}");
    assert!(err.contains("leave no worker"), "{err}");
    // A flag refused before MPI starts: also said once.
    let err = mpi_train_fails(&dir, bin, 2, "ok.svm", &["--workers", "2"]);
    assert_eq!(err.matches("error: invalid workers").count(), 1, "{err}");

    // A bad value on line 90 (in the second rank's half).
    let mut t = "1 1:1\n-1 2:1\n".repeat(45);
    t.push_str("1 3:oops\n");
    t.push_str(&"1 1:1\n".repeat(10));
    std::fs::write(dir.path("bad.svm"), t).unwrap();
    let err = mpi_train_fails(&dir, bin, 3, "bad.svm", &["--servers", "1", "--quiet"]);
    assert!(err.contains("bad.svm:91:"), "{err}");
    assert_eq!(err.matches("bad.svm:91:").count(), 1, "{err}");

    // Built without MPI, the backend is refused with the way to get it.
    let plain = assert_cmd::cargo::cargo_bin("asyb");
    let o = dir.run(
        &plain,
        None,
        &["train", "--train", "ok.svm", "--backend", "mpi"],
        60,
    );
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("--features mpi"),
        "{}",
        text(&o.stderr)
    );
}

/// Done means 3 for MPI: a run whose rank is killed with SIGKILL resumes from the
/// newest checkpoint and reaches the target; a truncated checkpoint is refused.
#[test]
fn killed_mpi_run_resumes_from_its_checkpoint() {
    let Some(bin) = mpi_asyb() else { return };
    let dir = Dir::new();
    let psi_star = problem(&dir, bin);
    let target = format!("{:e}", psi_star * (1.0 + 1e-3));
    let mpi = ["--backend", "mpi", "--servers", "1"];
    let mut child = dir
        .command(
            bin,
            Some(3),
            &[
                &PROBLEM[..],
                &mpi[..],
                &[
                    "--epochs",
                    "1000000",
                    "--checkpoint-dir",
                    "ck",
                    "--checkpoint-every",
                    "0.05",
                ],
            ]
            .concat(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let count = || std::fs::read_dir(dir.path("ck")).map_or(0, |d| d.count());
    while count() < 2 && start.elapsed().as_secs() < 120 {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL to one rank: mpirun ends the others.
    let ranks = String::from_utf8(
        Command::new("pgrep")
            .args(["-P", &child.id().to_string()])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let rank = ranks.split_whitespace().next().expect("a rank process");
    assert!(Command::new("kill")
        .args(["-9", rank])
        .status()
        .unwrap()
        .success());
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(t.elapsed().as_secs() < 60, "mpirun outlived a killed rank");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(count() >= 2, "no checkpoint written");

    let resume = |extra: &[&str]| {
        let args = [
            &PROBLEM[..],
            &mpi[..],
            &[
                "--resume",
                "ck",
                "--epochs",
                "1000000",
                "--target-objective",
                &target,
                "--max-seconds",
                "120",
            ],
            extra,
        ]
        .concat();
        dir.run(bin, Some(3), &args, 300)
    };
    let o = resume(&["--log", "r.jsonl"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("target objective reached"));
    let (psi, first_k) = last_psi(&dir.path("r.jsonl"));
    assert!((psi - psi_star) / psi_star <= 1e-3, "{psi} vs {psi_star}");
    assert!(first_k > 0, "the resumed run started from scratch");

    // A truncated checkpoint: refused in one line.
    let newest = std::fs::read_dir(dir.path("ck"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    let o = resume(&[]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert!(err.contains("ckpt-"), "{err}");
}
