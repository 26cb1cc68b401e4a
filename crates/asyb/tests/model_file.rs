//! Model files through the public API: round trips, every kind of malformed file
//! (crafted with the safetensors crate directly), atomic saves, and, where Python with
//! the `safetensors` and `numpy` packages is installed, loading from Python.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use asyb::model::loss::LossKind;
use asyb::model::reg::{RegKind, RegSpec};
use asyb::model::Layout;
use asyb::model_file::{load, save, ModelMeta, SavedModel, FORMAT_VERSION};
use asyb::Error;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn model(loss: LossKind, features: usize, classes: usize, bias: bool) -> SavedModel {
    let layout = Layout {
        features,
        classes,
        bias,
    };
    let mut weights: Vec<f64> = (0..layout.coords())
        .map(|i| (i as f64 * 0.731).sin() * 3.0)
        .collect();
    if !bias {
        // Without an intercept the bias row stays 0 in memory.
        for w in &mut weights[features * classes..] {
            *w = 0.0;
        }
    }
    let class_labels = match loss {
        LossKind::Softmax => (0..classes).map(|c| 10.0 + c as f32).collect(),
        LossKind::Logistic | LossKind::SquaredHinge => vec![0.0, 1.0],
        LossKind::Squared | LossKind::Huber => Vec::new(),
    };
    let mut extra = BTreeMap::new();
    extra.insert("algorithm".to_string(), "asyb".to_string());
    extra.insert("updates".to_string(), "12345".to_string());
    extra.insert("psi".to_string(), "0.6931".to_string());
    SavedModel {
        meta: ModelMeta {
            loss,
            reg: RegSpec {
                kind: RegKind::L1,
                lambda: 1e-6,
                l1_ratio: 1.0,
                lower: f64::NEG_INFINITY,
                upper: f64::INFINITY,
                group_len: 1,
            },
            blocks: 3,
            layout,
            class_labels,
            alpha: 0.01,
            extra,
        },
        weights,
        feature_ids: None,
    }
}

/// The weights as stored: rounded to f32.
fn rounded(weights: &[f64]) -> Vec<f64> {
    weights.iter().map(|&w| f64::from(w as f32)).collect()
}

fn assert_round_trip(m: &SavedModel) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    save(&path, m).unwrap();
    let back = load(&path).unwrap();
    assert_eq!(back.meta, m.meta);
    assert_eq!(back.weights, rounded(&m.weights));
}

#[test]
fn round_trip_binary_with_bias() {
    assert_round_trip(&model(LossKind::Logistic, 7, 1, true));
}

#[test]
fn round_trip_binary_without_bias() {
    assert_round_trip(&model(LossKind::SquaredHinge, 7, 1, false));
}

#[test]
fn round_trip_softmax() {
    assert_round_trip(&model(LossKind::Softmax, 7, 3, true));
}

#[test]
fn round_trip_regression_without_features() {
    assert_round_trip(&model(LossKind::Squared, 0, 1, true));
}

#[test]
fn same_model_gives_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let m = model(LossKind::Softmax, 7, 3, true);
    save(&a, &m).unwrap();
    save(&b, &m).unwrap();
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

#[test]
fn file_layout_is_the_documented_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let m = model(LossKind::Softmax, 4, 3, true);
    save(&path, &m).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().as_ref().unwrap();
    let expect = [
        ("format", "asyb"),
        ("format_version", "1"),
        ("loss", "softmax"),
        ("regularizer", "l1"),
        ("lambda", "1e-6"),
        ("l1_ratio", "1.0"),
        ("lower", "-inf"),
        ("upper", "inf"),
        ("group_len", "1"),
        ("alpha", "0.01"),
        ("blocks", "3"),
        ("features", "4"),
        ("classes", "3"),
        ("bias", "true"),
        ("class_labels", "[10.0, 11.0, 12.0]"),
        ("algorithm", "asyb"),
        ("updates", "12345"),
        ("psi", "0.6931"),
    ];
    for (key, value) in expect {
        assert_eq!(meta.get(key).map(String::as_str), Some(value), "{key}");
    }
    assert_eq!(meta.len(), expect.len());

    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let w = tensors.tensor("weights").unwrap();
    assert_eq!((w.dtype(), w.shape()), (Dtype::F32, &[4usize, 3][..]));
    // Row-major [d, K]: element [f, c] is in-memory coordinate f * K + c.
    let f32s: Vec<f32> = w
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(f32s[2 * 3 + 1], m.weights[2 * 3 + 1] as f32);
    let b = tensors.tensor("bias").unwrap();
    assert_eq!(b.shape(), &[3]);
    assert_eq!(
        f32::from_le_bytes(b.data()[8..12].try_into().unwrap()),
        m.weights[4 * 3 + 2] as f32
    );
}

// ---- malformed files ----

/// A tensor to write: name, dtype, shape, little-endian bytes.
type RawTensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// The metadata and tensors of a valid file for `m`, to be spoiled by a test.
fn parts(m: &SavedModel) -> (HashMap<String, String>, Vec<RawTensor>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("valid");
    save(&path, m).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    let tensors = SafeTensors::deserialize(&bytes)
        .unwrap()
        .tensors()
        .into_iter()
        .map(|(name, t)| (name, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    (meta, tensors)
}

fn write_raw(path: &Path, meta: Option<HashMap<String, String>>, tensors: &[RawTensor]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            (
                name.clone(),
                TensorView::new(*dtype, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, meta).unwrap()).unwrap();
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Loads `path`, expecting a model error that names `path` and contains `want`.
fn assert_rejected(path: &Path, want: &str) {
    match load(path) {
        Ok(_) => panic!("loaded a file that should fail with {want:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                matches!(&e, Error::Model { path: p, .. } if p == path),
                "not a model error for the file: {msg}"
            );
            assert!(e.is_user_input());
            assert!(msg.contains(want), "{want:?} not in {msg:?}");
            assert!(!msg.contains('\n'), "not one line: {msg:?}");
            assert!(
                msg.len() < path.as_os_str().len() + 200,
                "too long: {msg:?}"
            );
        }
    }
}

struct Case {
    name: &'static str,
    dir: tempfile::TempDir,
    meta: HashMap<String, String>,
    tensors: Vec<RawTensor>,
}

impl Case {
    /// A valid softmax model with 4 features, 3 classes and an intercept.
    fn new(name: &'static str) -> Case {
        let (meta, tensors) = parts(&model(LossKind::Softmax, 4, 3, true));
        Case {
            name,
            dir: tempfile::tempdir().unwrap(),
            meta,
            tensors,
        }
    }

    fn set(mut self, key: &str, value: &str) -> Self {
        self.meta.insert(key.to_string(), value.to_string());
        self
    }

    fn unset(mut self, key: &str) -> Self {
        self.meta.remove(key);
        self
    }

    fn tensor(mut self, name: &str, dtype: Dtype, shape: Vec<usize>, data: Vec<u8>) -> Self {
        self.tensors.retain(|t| t.0 != name);
        self.tensors.push((name.to_string(), dtype, shape, data));
        self
    }

    fn drop_tensor(mut self, name: &str) -> Self {
        self.tensors.retain(|t| t.0 != name);
        self
    }

    fn rejected_with(self, want: &str) {
        let path = self.dir.path().join(self.name);
        write_raw(&path, Some(self.meta), &self.tensors);
        assert_rejected(&path, want);
    }
}

#[test]
fn crafted_valid_file_loads() {
    let c = Case::new("valid");
    let path = c.dir.path().join("valid");
    write_raw(&path, Some(c.meta), &c.tensors);
    assert_eq!(load(&path).unwrap().meta.layout.classes, 3);
}

#[test]
fn rejects_files_that_are_not_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8]); 4] = [
        ("empty", b""),
        ("text", b"1 3:0.5 7:1\n-1 2:1\n"),
        ("short-header", &[200, 0, 0, 0, 0, 0, 0, 0, b'{']),
        ("bad-json", b"\x08\x00\x00\x00\x00\x00\x00\x00{nope!!}"),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        assert_rejected(&path, "not a safetensors file");
    }
}

#[test]
fn missing_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = load(&dir.path().join("nope")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn rejects_files_without_asyb_metadata() {
    let c = Case::new("no-metadata");
    let path = c.dir.path().join(c.name);
    write_raw(&path, None, &c.tensors);
    assert_rejected(&path, "no __metadata__");

    Case::new("no-format")
        .unset("format")
        .rejected_with("missing metadata field 'format'");
    Case::new("other-format")
        .set("format", "pytorch")
        .rejected_with("metadata field 'format' = 'pytorch'");
    // Whatever the file holds, the error stays one short line.
    Case::new("long-format")
        .set("format", &"line\n".repeat(1000))
        .rejected_with("metadata field 'format' = 'line\\nline\\n");
}

#[test]
fn rejects_newer_or_unreadable_versions() {
    let newer = (FORMAT_VERSION + 1).to_string();
    Case::new("newer")
        .set("format_version", &newer)
        .rejected_with(&format!(
            "'format_version' = {newer}: written by a newer asyb"
        ));
    Case::new("zero")
        .set("format_version", "0")
        .rejected_with("'format_version' = 0");
    Case::new("word")
        .set("format_version", "one")
        .rejected_with("metadata field 'format_version' = 'one'");
    Case::new("no-version")
        .unset("format_version")
        .rejected_with("missing metadata field 'format_version'");
}

#[test]
fn rejects_unparsable_or_missing_metadata_fields() {
    let fields = [
        "loss",
        "regularizer",
        "lambda",
        "l1_ratio",
        "lower",
        "upper",
        "group_len",
        "alpha",
        "blocks",
        "features",
        "classes",
        "bias",
        "class_labels",
    ];
    for field in fields {
        Case::new("garbled")
            .set(field, "x1")
            .rejected_with(&format!("metadata field '{field}' = 'x1'"));
        Case::new("missing")
            .unset(field)
            .rejected_with(&format!("missing metadata field '{field}'"));
    }
    Case::new("negative")
        .set("blocks", "-1")
        .rejected_with("metadata field 'blocks' = '-1': expected a non-negative integer");
    Case::new("word")
        .set("lambda", "much")
        .rejected_with("metadata field 'lambda' = 'much': expected a number");
    Case::new("labels-object")
        .set("class_labels", "{\"a\": 1}")
        .rejected_with("metadata field 'class_labels'");
    Case::new("labels-null")
        .set("class_labels", "[1.0, null, 3.0]")
        .rejected_with("metadata field 'class_labels'");
}

#[test]
fn rejects_inconsistent_metadata_values() {
    Case::new("lambda")
        .set("lambda", "NaN")
        .rejected_with("'lambda' = NaN");
    Case::new("l1-ratio")
        .set("l1_ratio", "2")
        .rejected_with("'l1_ratio'");
    Case::new("box")
        .set("lower", "1")
        .set("upper", "0")
        .rejected_with("lower <= upper");
    Case::new("blocks")
        .set("blocks", "0")
        .rejected_with("'blocks'");
    Case::new("softmax-one-class")
        .set("classes", "1")
        .rejected_with("'classes' = 1");
    Case::new("labels-count")
        .set("class_labels", "[1.0, 2.0]")
        .rejected_with("'class_labels'");
    Case::new("huge")
        .set("features", &usize::MAX.to_string())
        .rejected_with("'features'");
    // Large enough to abort the process if it were allocated before the tensor's shape
    // is checked against it.
    Case::new("vast")
        .set("features", &(1usize << 52).to_string())
        .rejected_with("tensor 'weights' has shape [4, 3], expected [4503599627370496, 3]");
}

#[test]
fn rejects_missing_or_unexpected_tensors() {
    Case::new("no-weights")
        .drop_tensor("weights")
        .rejected_with("missing tensor 'weights'");
    Case::new("no-bias")
        .drop_tensor("bias")
        .rejected_with("missing tensor 'bias'");
    Case::new("bias-not-expected")
        .set("bias", "false")
        .rejected_with("tensor 'bias' is present but metadata field 'bias' = false");
    Case::new("stray")
        .tensor("momentum", Dtype::F32, vec![1], f32_bytes(&[0.0]))
        .rejected_with("unexpected tensor 'momentum'");
}

#[test]
fn rejects_wrong_dtype() {
    let f64s: Vec<u8> = (0..12).flat_map(|i| f64::from(i).to_le_bytes()).collect();
    Case::new("f64")
        .tensor("weights", Dtype::F64, vec![4, 3], f64s)
        .rejected_with("tensor 'weights' has dtype F64, expected F32");
    Case::new("i32")
        .tensor("bias", Dtype::I32, vec![3], vec![0; 12])
        .rejected_with("tensor 'bias' has dtype I32");
}

#[test]
fn rejects_shapes_that_disagree_with_the_metadata() {
    let zeros = |n: usize| f32_bytes(&vec![0.0; n]);
    Case::new("fewer-rows")
        .tensor("weights", Dtype::F32, vec![3, 3], zeros(9))
        .rejected_with("tensor 'weights' has shape [3, 3], expected [4, 3]");
    Case::new("transposed")
        .tensor("weights", Dtype::F32, vec![3, 4], zeros(12))
        .rejected_with("has shape [3, 4]");
    Case::new("flat")
        .tensor("weights", Dtype::F32, vec![12], zeros(12))
        .rejected_with("has shape [12]");
    Case::new("features-lie")
        .set("features", "5")
        .rejected_with("expected [5, 3]");
    Case::new("bias-len")
        .tensor("bias", Dtype::F32, vec![1], zeros(1))
        .rejected_with("tensor 'bias' has shape [1], expected [3]");

    // One output per feature: weights [d], bias [1] (or a scalar).
    let dir = tempfile::tempdir().unwrap();
    let (meta, mut tensors) = parts(&model(LossKind::Logistic, 4, 1, true));
    tensors.retain(|t| t.0 != "weights");
    tensors.push(("weights".into(), Dtype::F32, vec![4, 1], zeros(4)));
    let path = dir.path().join("column");
    write_raw(&path, Some(meta.clone()), &tensors);
    assert_rejected(
        &path,
        "has shape [4, 1], expected [4] for features = 4, classes = 1",
    );

    let (_, mut tensors) = parts(&model(LossKind::Logistic, 4, 1, true));
    tensors.retain(|t| t.0 != "bias");
    tensors.push(("bias".into(), Dtype::F32, vec![], f32_bytes(&[0.25])));
    let path = dir.path().join("scalar-bias");
    write_raw(&path, Some(meta), &tensors);
    let m = load(&path).unwrap();
    assert_eq!(m.weights[4], 0.25);
}

#[test]
fn rejects_non_finite_weights() {
    let mut values: Vec<f32> = vec![0.5; 12];
    values[7] = f32::NAN;
    Case::new("nan")
        .tensor("weights", Dtype::F32, vec![4, 3], f32_bytes(&values))
        .rejected_with("tensor 'weights' holds NaN at [2, 1]");
    values[7] = f32::NEG_INFINITY;
    Case::new("inf")
        .tensor("weights", Dtype::F32, vec![4, 3], f32_bytes(&values))
        .rejected_with("tensor 'weights' holds -inf at [2, 1]");
    Case::new("bias-inf")
        .tensor(
            "bias",
            Dtype::F32,
            vec![3],
            f32_bytes(&[0.0, 0.0, f32::INFINITY]),
        )
        .rejected_with("tensor 'bias' holds inf at [2]");
}

// ---- atomic saves ----

fn dir_entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn saving_into_a_missing_directory_fails_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no").join("such");
    let err = save(
        &missing.join("m.safetensors"),
        &model(LossKind::Logistic, 3, 1, true),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(!dir.path().join("no").exists());
    assert!(dir_entries(dir.path()).is_empty());
}

#[test]
fn a_failing_save_keeps_the_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let good = model(LossKind::Logistic, 3, 1, true);
    save(&path, &good).unwrap();
    let before = std::fs::read(&path).unwrap();

    let mut bad = model(LossKind::Logistic, 5, 1, true);
    bad.weights[2] = f64::NAN;
    assert!(matches!(save(&path, &bad), Err(Error::Model { .. })));
    let mut reserved = model(LossKind::Logistic, 5, 1, true);
    reserved.meta.extra.insert("lambda".into(), "0".into());
    let err = save(&path, &reserved).unwrap_err();
    assert!(err.to_string().contains("'lambda' is reserved"), "{err}");

    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(dir_entries(dir.path()), vec![path.clone()]);
    assert_eq!(load(&path).unwrap().weights, rounded(&good.weights));
}

#[test]
fn saving_over_an_existing_model_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    save(&path, &model(LossKind::Logistic, 3, 1, true)).unwrap();
    let newer = model(LossKind::Softmax, 2, 4, false);
    save(&path, &newer).unwrap();
    assert_eq!(load(&path).unwrap().meta, newer.meta);
    assert_eq!(dir_entries(dir.path()), vec![path]);
}

// ---- Python interoperability ----

const PYTHON_CHECK: &str = r#"
import json, math, sys
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

path, expected_path = sys.argv[1], sys.argv[2]
with open(expected_path) as f:
    exp = json.load(f)

tensors = load_file(path)
assert sorted(tensors) == ["bias", "weights"], sorted(tensors)
w, b = tensors["weights"], tensors["bias"]
assert w.dtype == np.float32 and b.dtype == np.float32, (w.dtype, b.dtype)
assert w.shape == tuple(exp["weights_shape"]), w.shape
assert b.shape == (exp["classes"],), b.shape
assert np.array_equal(w, np.array(exp["weights"], dtype=np.float32).reshape(w.shape))
assert np.array_equal(b, np.array(exp["bias"], dtype=np.float32))

with safe_open(path, framework="numpy") as f:
    meta = f.metadata()
for key, value in exp["metadata"].items():
    assert meta[key] == value, (key, meta[key], value)
assert json.loads(meta["class_labels"]) == exp["class_labels"], meta["class_labels"]
assert float(meta["lambda"]) == exp["lambda"], meta["lambda"]
assert float(meta["upper"]) == math.inf, meta["upper"]
assert int(meta["features"]) == w.shape[0]
print("python check ok")
"#;

/// Whether `python3` can import what the check needs; prints why not otherwise.
fn python_available() -> bool {
    // CI sets ASYB_REQUIRE_PYTHON so that a missing package fails instead of skipping.
    let required = std::env::var_os("ASYB_REQUIRE_PYTHON").is_some();
    let probe = Command::new("python3")
        .args(["-c", "import numpy, safetensors.numpy"])
        .output();
    match probe {
        Ok(out) if out.status.success() => true,
        Ok(_) => {
            assert!(!required, "python3 lacks the safetensors or numpy package");
            println!("skipped: python3 lacks the safetensors or numpy package");
            false
        }
        Err(e) => {
            assert!(!required, "cannot run python3 ({e})");
            println!("skipped: cannot run python3 ({e})");
            false
        }
    }
}

#[test]
fn python_safetensors_reads_the_file() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let m = model(LossKind::Softmax, 5, 3, true);
    save(&path, &m).unwrap();

    let (d, k) = (5, 3);
    let stored = rounded(&m.weights);
    let expected = serde_json::json!({
        "weights_shape": [d, k],
        "classes": k,
        "weights": &stored[..d * k],
        "bias": &stored[d * k..],
        "class_labels": [10.0, 11.0, 12.0],
        "lambda": m.meta.reg.lambda,
        "metadata": {
            "format": "asyb",
            "format_version": "1",
            "loss": "softmax",
            "regularizer": "l1",
            "blocks": "3",
            "features": "5",
            "classes": "3",
            "bias": "true",
            "algorithm": "asyb",
        },
    });
    let expected_path = dir.path().join("expected.json");
    std::fs::write(&expected_path, expected.to_string()).unwrap();
    run_python(PYTHON_CHECK, &path, &expected_path);
}

/// Runs a Python check script on a model file and a JSON file of what it must hold.
fn run_python(script: &str, model: &Path, expected: &Path) {
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(model)
        .arg(expected)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A sparse softmax model of 1000 features holding the rows of features 3, 70 and 999.
fn sparse_model() -> SavedModel {
    let mut m = model(LossKind::Softmax, 3, 2, true);
    m.meta.layout.features = 1000;
    m.feature_ids = Some(vec![3, 70, 999]);
    m
}

#[test]
fn sparse_models_round_trip_and_expand_to_their_dense_weights() {
    let m = sparse_model();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.safetensors");
    save(&path, &m).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(header.metadata().as_ref().unwrap()["format_version"], "2");
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let ids = tensors.tensor("feature_ids").unwrap();
    assert_eq!((ids.dtype(), ids.shape()), (Dtype::I64, &[3][..]));
    assert_eq!(tensors.tensor("weights").unwrap().shape(), &[3, 2]);

    let back = load(&path).unwrap();
    assert_eq!(back.meta, m.meta);
    assert_eq!(back.feature_ids, m.feature_ids);
    assert_eq!(back.weights, rounded(&m.weights));

    // Dense: feature f's row is the stored row of f, or zeros; the intercept last.
    let dense = back.weights_for(None).unwrap();
    assert_eq!(dense.len(), 1001 * 2);
    for f in 0..1000 {
        let want = match [3, 70, 999].iter().position(|&g| g == f) {
            Some(r) => back.weights[r * 2..r * 2 + 2].to_vec(),
            None => vec![0.0, 0.0],
        };
        assert_eq!(dense[f * 2..f * 2 + 2], want[..], "feature {f}");
    }
    assert_eq!(dense[2000..], back.weights[6..]);
    // A dense model saved from it is read back as the same function.
    let mut d = back.clone();
    d.weights = dense.clone();
    d.feature_ids = None;
    save(&path, &d).unwrap();
    assert_eq!(load(&path).unwrap().weights_for(None).unwrap(), dense);
}

#[test]
fn sparse_weights_follow_compacted_columns_and_refuse_to_lose_weights() {
    use asyb::data::columns::ColumnMap;
    let m = sparse_model();
    let cols = ColumnMap::increasing(1000, vec![2, 3, 70, 500, 999]).unwrap();
    let w = m.weights_for(Some(&cols)).unwrap();
    let r = |i: usize| m.weights[i * 2..i * 2 + 2].to_vec();
    let want: Vec<f64> = [vec![0.0; 2], r(0), r(1), vec![0.0; 2], r(2), r(3)].concat();
    assert_eq!(w, want);
    let fewer = ColumnMap::increasing(1000, vec![3, 999]).unwrap();
    let err = m.weights_for(Some(&fewer)).unwrap_err();
    assert!(err.contains("feature 70"), "{err}");
    let other = ColumnMap::increasing(2000, vec![3]).unwrap();
    let err = m.weights_for(Some(&other)).unwrap_err();
    assert!(err.contains("1000 features, the data 2000"), "{err}");
    // A zero row may be dropped.
    let mut z = m.clone();
    z.weights[2] = 0.0;
    z.weights[3] = 0.0;
    assert_eq!(z.weights_for(Some(&fewer)).unwrap().len(), 3 * 2);
}

#[test]
fn rejects_malformed_feature_ids() {
    let (meta, tensors) = parts(&sparse_model());
    let case = |name: &'static str, ids: &[i64], dtype: Dtype| {
        Case {
            name,
            dir: tempfile::tempdir().unwrap(),
            meta: meta.clone(),
            tensors: tensors.clone(),
        }
        .tensor(
            "feature_ids",
            dtype,
            vec![ids.len()],
            ids.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    };
    case("unsorted", &[3, 999, 70], Dtype::I64).rejected_with("strictly increasing");
    case("repeated", &[3, 3, 70], Dtype::I64).rejected_with("strictly increasing");
    case("negative", &[-1, 3, 70], Dtype::I64).rejected_with("holds -1 at [0]");
    case("beyond", &[3, 70, 1000], Dtype::I64).rejected_with("in 0..1000");
    case("dtype", &[3, 70, 999], Dtype::F64).rejected_with("expected I64");
    case("count", &[3, 70], Dtype::I64).rejected_with("[2, 2] for 2 feature_ids");
    // A version 1 file has no such tensor.
    Case {
        name: "old",
        dir: tempfile::tempdir().unwrap(),
        meta: meta.clone(),
        tensors: tensors.clone(),
    }
    .set("format_version", "1")
    .rejected_with("unexpected tensor 'feature_ids'");
    // Features left out must cost nothing at 0.
    Case {
        name: "box",
        dir: tempfile::tempdir().unwrap(),
        meta,
        tensors,
    }
    .set("regularizer", "box")
    .set("lower", "0.5")
    .set("upper", "1.0")
    .rejected_with("does not hold 0");
}

#[test]
fn python_expands_a_sparse_file_as_documented() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.safetensors");
    let m = sparse_model();
    save(&path, &m).unwrap();
    let dense = load(&path).unwrap().weights_for(None).unwrap();
    let expected_path = dir.path().join("dense.json");
    std::fs::write(&expected_path, serde_json::to_string(&dense).unwrap()).unwrap();
    // The module doc's recipe: w = zeros(d, K); w[feature_ids] = weights.
    let script = r#"
import json, sys
import numpy as np
from safetensors.numpy import load_file
from safetensors import safe_open
t = load_file(sys.argv[1])
with safe_open(sys.argv[1], "np") as f:
    meta = f.metadata()
d, k = int(meta["features"]), int(meta["classes"])
w = np.zeros((d, k), dtype=np.float32)
w[t["feature_ids"]] = t["weights"]
got = np.concatenate([w.ravel(), t["bias"]])
want = np.array(json.load(open(sys.argv[2])), dtype=np.float32)
assert got.shape == want.shape, (got.shape, want.shape)
assert np.array_equal(got, want)
print("python sparse check ok")
"#;
    run_python(script, &path, &expected_path);
}
