//! The Python package (`python/`): built into a wheel with maturin (into
//! `target/python`), unpacked beside the test, and its pytest suite run against it, with
//! this crate's `asyb` binary for the tests that compare the two. Where maturin or a
//! Python package the suite needs is missing, the test says so and passes, unless
//! `ASYB_REQUIRE_PYTHON=1` (set by `.ci/run`, which installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Why the suite cannot run here, if it cannot.
fn missing() -> Option<String> {
    let modules = "import numpy, scipy, sklearn, pytest";
    match Command::new("python3").args(["-c", modules]).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Some(format!(
                "python3 cannot `{modules}`: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ))
        }
        Err(e) => return Some(format!("cannot run python3 ({e})")),
    }
    match Command::new("maturin").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("maturin is not installed (pip install maturin)".into()),
    }
}

fn run(c: &mut Command, what: &str) -> String {
    let o = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{what} failed:\n{text}");
    text
}

#[test]
fn the_python_package_passes_its_tests() {
    if let Some(why) = missing() {
        let required = std::env::var("ASYB_REQUIRE_PYTHON").is_ok_and(|v| v == "1");
        assert!(!required, "ASYB_REQUIRE_PYTHON=1 but {why}");
        eprintln!("Python package tests skipped: {why}");
        return;
    }
    let root = workspace();
    let dir = tempfile::tempdir().unwrap();
    let wheels = dir.path().join("wheels");
    run(
        Command::new("maturin")
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "--auditwheel",
                "skip",
                "-i",
                "python3",
            ])
            .args([
                "-m",
                "python/Cargo.toml",
                "--target-dir",
                "target/python",
                "-o",
            ])
            .arg(&wheels),
        "maturin build",
    );
    let wheel = std::fs::read_dir(&wheels)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .expect("maturin wrote a wheel");
    let site = dir.path().join("site");
    run(
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(&site),
        "unpacking the wheel",
    );
    let out = run(
        Command::new("python3")
            .current_dir(dir.path())
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(root.join("python/tests"))
            .env("PYTHONPATH", &site)
            .env("ASYB_BIN", env!("CARGO_BIN_EXE_asyb")),
        "pytest",
    );
    println!("{out}");
    assert!(!out.contains(" skipped"), "no test may skip here:\n{out}");
}
