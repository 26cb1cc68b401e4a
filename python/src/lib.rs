//! `asyb._asyb`, the Python binding's native module: a thin layer over the library crate
//! that the estimators in `asyb/` (Python) call. It trains on CSR arrays read in place,
//! reads LIBSVM files and asyb caches into CSR arrays, and reads and writes model files.
//! It has no algorithm of its own; every check and error message is the library's.
//!
//! Training runs on a thread of its own while the calling thread waits with the GIL
//! released, waking every few milliseconds to pass evaluation records to the progress
//! callback and to check for Ctrl-C: a pending KeyboardInterrupt stops the run (as the
//! library's interrupt flag does) and is raised once the run has ended.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use asyb::config::{TrainConfig, ValidConfig};
use asyb::data::array::Array;
use asyb::data::columns::ColumnMap;
use asyb::data::libsvm::{IndexBase, LabelRule, ReadOptions};
use asyb::data::Dataset;
use asyb::model::Layout;
use asyb::model_file::{self, ModelMeta, SavedModel};
use asyb::monitor::{EvalRecord, Observe};
use asyb::problem::Problem;
use asyb::train::{check_memory, panic_message, reg_spec, Trainer};
use numpy::{Element, IntoPyArray, PyArray1, PyArrayMethods, PyReadonlyArray1};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString};

/// The library's error as the Python exception it means: a file that cannot be read is
/// an `OSError`, anything else (data, settings, model files) a `ValueError`. The message
/// is the library's one line.
fn py_err(e: asyb::Error) -> PyErr {
    match e {
        asyb::Error::Io { .. } => PyOSError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// The name training data has in error messages.
const X_NAME: &str = "X";

/// Settings from the estimator: keys as in a config file (`lambda`, `l1-ratio`, ...),
/// values bool, int, float or str; `None` keeps the default. Checked as a config file is.
fn config_of(params: &Bound<'_, PyDict>) -> PyResult<ValidConfig> {
    let mut table = toml::Table::new();
    for (k, v) in params.iter() {
        let key: String = k.extract()?;
        let value = if v.is_none() {
            continue;
        } else if v.is_instance_of::<PyBool>() {
            toml::Value::Boolean(v.extract()?)
        } else if v.is_instance_of::<PyInt>() {
            toml::Value::Integer(v.extract().map_err(|_| {
                PyValueError::new_err(format!("invalid {key}: {v} is out of range"))
            })?)
        } else if v.is_instance_of::<PyFloat>() {
            toml::Value::Float(v.extract()?)
        } else if v.is_instance_of::<PyString>() {
            toml::Value::String(v.extract()?)
        } else {
            return Err(PyTypeError::new_err(format!(
                "invalid {key}: expected a bool, int, float or str, got {}",
                v.get_type().name()?
            )));
        };
        table.insert(key, value);
    }
    let raw: TrainConfig =
        toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| {
                // Name the setting: the first that fails on its own.
                let key = table.iter().find_map(|(k, v)| {
                    let one = toml::Table::from_iter([(k.clone(), v.clone())]);
                    toml::Value::Table(one)
                        .try_into::<TrainConfig>()
                        .is_err()
                        .then_some(k)
                });
                let reason = e.message().trim_end().to_string();
                PyValueError::new_err(match key {
                    Some(k) => format!("invalid {k}: {reason}"),
                    None => reason,
                })
            })?;
    raw.check().map_err(py_err)
}

/// A numpy array's items as a dataset array read in place: `T` and `U` have the same
/// size and alignment (`i64` as `usize`, `i32` as `u32`, `f32`), and the array must be
/// contiguous. The array object is kept alive by the result.
fn lend<T: Element + bytemuck::Pod, U: bytemuck::Pod>(
    a: &Bound<'_, PyArray1<T>>,
    what: &str,
) -> PyResult<Array<U>> {
    let ro = a
        .try_readonly()
        .map_err(|e| PyValueError::new_err(format!("{what}: {e}")))?;
    let items: &[T] = ro
        .as_slice()
        .map_err(|_| PyValueError::new_err(format!("{what}: array is not contiguous")))?;
    let items: &[U] = bytemuck::try_cast_slice(items)
        .map_err(|e| PyTypeError::new_err(format!("{what}: {e:?}")))?;
    let owner: Arc<dyn Send + Sync> = Arc::new(a.clone().unbind());
    // SAFETY: `items` is the array's contiguous buffer, aligned for `U` (checked by the
    // cast); `owner` holds a reference to the array object, so the buffer lives as long
    // as the result. The estimator does not write to the arrays it passes, and a caller
    // writing to them from another thread during `fit` is as unsupported as it is for
    // every library that releases the GIL.
    Ok(unsafe { Array::lent(owner, items.as_ptr(), items.len()) })
}

/// An observer that sends every evaluation record, as JSON, to the waiting thread.
struct Forward(mpsc::Sender<String>);

impl Observe for Forward {
    fn on_eval(&mut self, rec: &EvalRecord) -> asyb::Result<()> {
        if let Ok(json) = serde_json::to_string(rec) {
            // The receiver only goes away after the run.
            let _ = self.0.send(json);
        }
        Ok(())
    }
}

/// The model file's description of a model with these settings and layout.
fn meta_of(
    vc: &ValidConfig,
    layout: Layout,
    class_labels: Vec<f32>,
    blocks: usize,
    extra: BTreeMap<String, String>,
) -> ModelMeta {
    let mut meta = ModelMeta {
        loss: vc.raw.loss,
        reg: reg_spec(vc, layout.classes).0,
        blocks,
        layout,
        class_labels,
        alpha: vc.raw.alpha,
        extra,
    };
    meta.set_loss(vc.loss);
    meta
}

/// Weights of a run on compacted feature ids (`columns`) in the layout of every feature.
fn every_feature(meta: ModelMeta, weights: &[f64], columns: Option<&ColumnMap>) -> Vec<f64> {
    SavedModel::of_run(meta, weights, columns)
        .weights_for(None)
        .expect("a model's own rows fit every feature's layout")
}

/// Trains on the CSR matrix (`indptr`, `indices`, `data`; `data` `None`: every value 1)
/// with labels `y` (binary: 0 or 1; softmax: the class index; else the target) and the
/// settings `params`, starting from `init` (every feature's rows and the intercept row)
/// or zero, each row's loss weighted by `weights` where given. Calls `progress` with
/// each evaluation record (a JSON string). Returns the
/// weights (every feature's rows, then the intercept row) and the run's summary as JSON.
#[pyfunction]
#[pyo3(signature = (indptr, indices, data, y, n_features, params, init=None, progress=None, weights=None))]
#[allow(clippy::too_many_arguments)]
fn train<'py>(
    py: Python<'py>,
    indptr: Bound<'py, PyArray1<i64>>,
    indices: Bound<'py, PyArray1<i32>>,
    data: Option<Bound<'py, PyArray1<f32>>>,
    y: Bound<'py, PyArray1<f32>>,
    n_features: usize,
    params: &Bound<'py, PyDict>,
    init: Option<PyReadonlyArray1<'py, f64>>,
    progress: Option<Bound<'py, PyAny>>,
    weights: Option<Bound<'py, PyArray1<f32>>>,
) -> PyResult<(Bound<'py, PyArray1<f64>>, String)> {
    let mut vc = config_of(params)?;
    let ds = Dataset {
        indptr: lend(&indptr, "indptr")?,
        indices: lend(&indices, "indices")?,
        values: data.as_ref().map(|d| lend(d, "data")).transpose()?,
        labels: lend(&y, "y")?,
        weights: weights
            .as_ref()
            .map(|w| lend(w, "sample_weight"))
            .transpose()?,
        features: n_features,
    };
    let x = Path::new(X_NAME);
    ds.validate().map_err(|reason| {
        py_err(asyb::Error::Data {
            path: x.into(),
            reason,
        })
    })?;
    if init.is_some() {
        // A warm start gives every feature's weight; compaction would drop the weights
        // of features absent from X.
        vc.raw.compact_features = asyb::config::CompactFeatures::Off;
    }
    let pb = Problem::from_datasets(&vc, ds, x, None, None).map_err(py_err)?;
    check_memory(&pb, &vc.raw).map_err(py_err)?;
    let init = init
        .map(|w| w.as_slice().map(<[f64]>::to_vec))
        .transpose()?;

    let flag = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<String>();
    let rx = Mutex::new(rx);
    let mut pending: Option<PyErr> = None;
    let outcome = std::thread::scope(|s| {
        let (vc, pb, stop) = (&vc, &pb, flag.clone());
        let run = s.spawn(move || {
            let mut forward = Forward(tx);
            let mut trainer = Trainer::new(vc, pb);
            trainer.interrupt_on(stop);
            if let Some(w) = init {
                trainer.init_weights(w)?;
            }
            trainer.observe(&mut forward);
            trainer.run()
        });
        loop {
            let next = py.detach(|| {
                rx.lock()
                    .expect("only this thread takes the lock")
                    .recv_timeout(Duration::from_millis(20))
            });
            match next {
                Ok(rec) => {
                    if let (Some(cb), None) = (&progress, &pending) {
                        if let Err(e) = cb.call1((rec,)) {
                            flag.store(true, Ordering::SeqCst);
                            pending = Some(e);
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if pending.is_none() {
                if let Err(e) = py.check_signals() {
                    flag.store(true, Ordering::SeqCst);
                    pending = Some(e);
                }
            }
        }
        run.join()
    });
    let summary = match outcome {
        Ok(result) => result.map_err(py_err)?,
        Err(panic) => {
            return Err(PyRuntimeError::new_err(format!(
                "training failed: {}",
                panic_message(panic.as_ref())
            )));
        }
    };
    if let Some(e) = pending {
        return Err(e);
    }
    let meta = meta_of(
        &vc,
        summary.layout,
        Vec::new(),
        summary.info.blocks,
        BTreeMap::new(),
    );
    let weights = every_feature(meta, &summary.weights, pb.columns.as_ref());
    let json = serde_json::to_string(&summary)
        .map_err(|e| PyRuntimeError::new_err(format!("summary: {e}")))?;
    Ok((weights.into_pyarray(py), json))
}

/// The items of a dataset array as a vector (moved out when owned, else copied).
fn take<T: bytemuck::Pod>(a: &mut Array<T>) -> Vec<T> {
    std::mem::take(a.make_mut())
}

/// The CSR arrays of a LIBSVM/SVMlight file (plain or compressed) or an asyb cache:
/// `(indptr int64, indices int32 or int64, data float32, y float32, n_features,
/// one_based)`. `zero_based` is `"auto"`, `"zero"` or `"one"`.
#[pyfunction]
#[pyo3(signature = (path, n_features=None, index_base="auto"))]
#[allow(clippy::type_complexity)]
fn load_svmlight<'py>(
    py: Python<'py>,
    path: PathBuf,
    n_features: Option<usize>,
    index_base: &str,
) -> PyResult<(
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyAny>,
    Bound<'py, PyArray1<f32>>,
    Bound<'py, PyArray1<f32>>,
    usize,
    bool,
)> {
    let index_base = match index_base {
        "auto" => IndexBase::Auto,
        "zero" => IndexBase::Zero,
        "one" => IndexBase::One,
        other => {
            return Err(PyValueError::new_err(format!(
                "invalid index base '{other}' (expected one of: auto, zero, one)"
            )))
        }
    };
    let opts = ReadOptions {
        index_base,
        features: n_features,
        skip_bad_lines: false,
        labels: LabelRule::Any,
    };
    let (mut ds, report) = py
        .detach(|| asyb::data::read(&path, &opts))
        .map_err(py_err)?;
    let features = n_features.unwrap_or(ds.features);
    let nnz = ds.nnz();
    let indptr: Vec<i64> = bytemuck::allocation::cast_vec(take(&mut ds.indptr));
    let indices = take(&mut ds.indices);
    let indices = if features <= i32::MAX as usize {
        let v: Vec<i32> = bytemuck::allocation::cast_vec(indices);
        v.into_pyarray(py).into_any()
    } else {
        let v: Vec<i64> = indices.into_iter().map(i64::from).collect();
        v.into_pyarray(py).into_any()
    };
    let values = match ds.values.as_mut() {
        Some(v) => take(v),
        None => vec![1.0; nnz],
    };
    Ok((
        indptr.into_pyarray(py),
        indices,
        values.into_pyarray(py),
        take(&mut ds.labels).into_pyarray(py),
        features,
        report.index_base_one,
    ))
}

/// Writes a model file: `weights` holds every feature's rows, then the intercept row
/// (`classes` values each); `params` are the settings it was trained with.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn save_model(
    path: PathBuf,
    weights: PyReadonlyArray1<'_, f64>,
    n_features: usize,
    classes: usize,
    bias: bool,
    params: &Bound<'_, PyDict>,
    class_labels: Vec<f32>,
    extra: BTreeMap<String, String>,
) -> PyResult<()> {
    let vc = config_of(params)?;
    let layout = Layout {
        features: n_features,
        classes,
        bias,
    };
    let blocks = extra
        .get("blocks")
        .and_then(|b| b.parse().ok())
        .unwrap_or(1);
    let mut extra = extra;
    extra.remove("blocks");
    let model = SavedModel {
        meta: meta_of(&vc, layout, class_labels, blocks, extra),
        weights: weights.as_slice()?.to_vec(),
        feature_ids: None,
    };
    model_file::save(&path, &model).map_err(py_err)
}

/// Reads a model file: a dict with `weights` (every feature's rows, then the intercept
/// row), `n_features`, `classes`, `bias`, `loss`, the regularizer's settings,
/// `class_labels` and `extra`.
#[pyfunction]
fn load_model<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let model = model_file::load(&path).map_err(py_err)?;
    let weights = model
        .weights_for(None)
        .map_err(|reason| py_err(asyb::Error::Model { path, reason }))?;
    let m = &model.meta;
    let d = PyDict::new(py);
    d.set_item("weights", weights.into_pyarray(py))?;
    d.set_item("n_features", m.layout.features)?;
    d.set_item("classes", m.layout.classes)?;
    d.set_item("bias", m.layout.bias)?;
    d.set_item("loss", m.loss.name())?;
    if let Some(p) = m.loss.info().param {
        d.set_item(p.name, m.loss_spec().param)?;
    }
    d.set_item("reg", m.reg.kind.name())?;
    d.set_item("lambda", m.reg.lambda)?;
    d.set_item("l1_ratio", m.reg.l1_ratio)?;
    d.set_item("lower", m.reg.lower)?;
    d.set_item("upper", m.reg.upper)?;
    d.set_item("alpha", m.alpha)?;
    d.set_item("blocks", m.blocks)?;
    d.set_item("class_labels", m.class_labels.clone())?;
    d.set_item("extra", m.extra.clone())?;
    Ok(d)
}

/// Checks settings as `fit` would, without data: raises the error `fit` would raise.
#[pyfunction]
fn check_params(params: &Bound<'_, PyDict>) -> PyResult<()> {
    config_of(params).map(|_| ())
}

/// The native module.
#[pymodule]
fn _asyb(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_function(wrap_pyfunction!(load_svmlight, m)?)?;
    m.add_function(wrap_pyfunction!(save_model, m)?)?;
    m.add_function(wrap_pyfunction!(load_model, m)?)?;
    m.add_function(wrap_pyfunction!(check_params, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
