//! Model files: a trained parameter vector and what is needed to use it, stored as
//! safetensors so that any safetensors reader (the Python `safetensors` package with
//! numpy, for one) can load it without asyb.
//!
//! Owns the on-disk format only; it knows the parameter [`Layout`] but nothing of
//! training, shards or transports.
//!
//! Layout of a file (format version [`FORMAT_VERSION`]):
//!
//! - tensor `weights`, F32, shape `[d]` when there is one output per feature, `[d, K]`
//!   otherwise; row `i - 1` is LIBSVM feature `i`. This is rows `0..d` of the in-memory
//!   parameter matrix (feature row `f` holds coordinates `f * K .. (f + 1) * K`), i.e.
//!   the in-memory vector minus its intercept row, in the same order.
//! - tensor `bias`, F32, shape `[1]` (`[]` is accepted on load) or `[K]`: the intercept
//!   row, present only when the model trains one.
//! - sparse files (format version 2, written for models trained with compacted feature
//!   ids): tensor `feature_ids`, I64, shape `[n]`, strictly increasing 0-based feature
//!   rows; `weights` then has shape `[n]` or `[n, K]`, row `r` holding feature
//!   `feature_ids[r]`, and every feature not listed has weight 0. Dense weights are
//!   `w = zeros(d); w[feature_ids] = weights`.
//! - `__metadata__` (string to string): `format` = `asyb`, `format_version`, `loss`,
//!   `regularizer`, `lambda`, `l1_ratio`, `lower`, `upper`, `group_len`, `alpha`,
//!   `blocks`, `features`, `classes`, `bias` (`true`/`false`), `class_labels` (a JSON
//!   array of numbers), plus free-form entries ([`ModelMeta::extra`]).
//!
//! Values are f32 on disk, the precision models are served in; [`load`] widens them to
//! f64. The header is written with sorted keys so that the same model always gives the
//! same bytes. [`load`] trusts nothing in the file: every field is checked and every
//! failure is an [`Error::Model`] whose reason names the field.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::TensorInfo;
use safetensors::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};

use crate::io::{atomic_write, io_err};
use crate::model::loss::{Labels, LossKind, LossSpec};
use crate::model::reg::{RegKind, RegSpec};
use crate::model::Layout;
use crate::{Error, Result};

/// Newest version of the file layout: [`load`] reads it and older ones, and refuses
/// newer ones rather than misread them. [`save`] writes version 1 for dense models (so
/// that readers of version 1 still read them) and version 2 for sparse ones.
pub const FORMAT_VERSION: u32 = 2;

/// The first version with the `feature_ids` tensor.
const SPARSE_VERSION: u32 = 2;

/// Value of the `format` metadata field, telling asyb model files from other
/// safetensors files.
const FORMAT_NAME: &str = "asyb";

const WEIGHTS: &str = "weights";
const BIAS: &str = "bias";
const FEATURE_IDS: &str = "feature_ids";

/// Metadata keys written by [`save`] itself; [`ModelMeta::extra`] may not use them.
pub const RESERVED_KEYS: [&str; 15] = [
    "format",
    "format_version",
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

/// What a model file says about its parameters besides their values.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelMeta {
    pub loss: LossKind,
    pub reg: RegSpec,
    /// Number of parameter blocks M the model was trained with.
    pub blocks: usize,
    pub layout: Layout,
    /// Original label value of each class index (softmax), or the two binary label
    /// values `[negative, positive]` as they appeared in the data; may be empty.
    pub class_labels: Vec<f32>,
    /// Weight of the smooth nonconvex term `alpha * x^2 / (1 + x^2)`.
    pub alpha: f64,
    /// Free-form entries (algorithm, updates, final psi, ...), stored under their own
    /// keys; none may be one of [`RESERVED_KEYS`].
    pub extra: BTreeMap<String, String>,
}

impl ModelMeta {
    /// The loss with its parameter, which [`ModelMeta::set_loss`] records among the
    /// extras under the parameter's name (checked on load); a model without the entry
    /// has the parameter's default.
    pub fn loss_spec(&self) -> LossSpec {
        let param = self
            .loss
            .info()
            .param
            .and_then(|p| self.extra.get(p.name).and_then(|v| v.parse::<f64>().ok()));
        LossSpec::new(self.loss, param)
    }

    /// Sets the loss and records its parameter.
    pub fn set_loss(&mut self, spec: LossSpec) {
        self.loss = spec.kind;
        if let Some(p) = spec.kind.info().param {
            self.extra
                .insert(p.name.into(), format!("{:?}", spec.param));
        }
    }
}

/// A model as stored in a file.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedModel {
    pub meta: ModelMeta,
    /// The feature rows in the in-memory layout, intercept row last (zeros when the
    /// layout has no intercept): every feature's row (`meta.layout.coords()` values), or
    /// with `feature_ids` only the rows of those features.
    pub weights: Vec<f64>,
    /// A sparse model: the features whose rows `weights` holds (0-based, strictly
    /// increasing); all other features have weight 0.
    pub feature_ids: Option<Vec<u32>>,
}

impl SavedModel {
    /// Number of feature rows held in [`SavedModel::weights`].
    pub fn stored_features(&self) -> usize {
        self.feature_ids
            .as_ref()
            .map_or(self.meta.layout.features, Vec::len)
    }

    /// The weights in the layout of a training run on these features: every feature row
    /// (`columns` = `None`), or the rows of the features of `columns` (compacted ids),
    /// each followed by the intercept row. Fails when a nonzero weight belongs to a
    /// feature that `columns` does not hold (it would be lost).
    pub fn weights_for(
        &self,
        columns: Option<&crate::data::columns::ColumnMap>,
    ) -> std::result::Result<Vec<f64>, String> {
        let k = self.meta.layout.classes;
        let row = |r: usize| &self.weights[r * k..(r + 1) * k];
        let bias = row(self.stored_features());
        // The stored row of feature f, if any.
        let stored = |f: u32| match &self.feature_ids {
            None => Some(f as usize),
            Some(ids) => ids.binary_search(&f).ok(),
        };
        let mut out = Vec::new();
        match columns {
            None => {
                out.resize(self.meta.layout.features * k, 0.0);
                for r in 0..self.stored_features() {
                    let f = self.feature_ids.as_ref().map_or(r, |ids| ids[r] as usize);
                    out[f * k..(f + 1) * k].copy_from_slice(row(r));
                }
            }
            Some(cols) if cols.features != self.meta.layout.features => {
                return Err(format!(
                    "model has {} features, the data {}",
                    self.meta.layout.features, cols.features
                ));
            }
            Some(cols) => {
                for &f in cols.ids() {
                    match stored(f) {
                        Some(r) => out.extend_from_slice(row(r)),
                        None => out.extend(std::iter::repeat(0.0).take(k)),
                    }
                }
                let kept: usize = cols.ids().iter().filter_map(|&f| stored(f)).count();
                if kept < self.stored_features() {
                    let lookup = cols.lookup();
                    for r in 0..self.stored_features() {
                        let f = self.feature_ids.as_ref().map_or(r as u32, |ids| ids[r]);
                        if row(r).iter().any(|&w| w != 0.0) && lookup.compact_id(f).is_none() {
                            return Err(format!(
                                "feature {f} (0-based) has a nonzero weight but does not \
                                 occur in the training data, whose feature ids are \
                                 compacted (--compact-features off keeps every feature)"
                            ));
                        }
                    }
                }
            }
        }
        out.extend_from_slice(bias);
        Ok(out)
    }

    /// The model of a run: `meta` with the run's layout and `weights` in it. A run on
    /// compacted feature ids (`columns`) gives a sparse model: the rows of its nonzero
    /// features under their original ids, and the layout of every original feature.
    pub fn of_run(
        mut meta: ModelMeta,
        weights: &[f64],
        columns: Option<&crate::data::columns::ColumnMap>,
    ) -> SavedModel {
        let Some(cols) = columns else {
            return SavedModel {
                meta,
                weights: weights.to_vec(),
                feature_ids: None,
            };
        };
        let k = meta.layout.classes;
        let (mut ids, mut w) = (Vec::new(), Vec::new());
        for (f, c) in cols.lookup().by_original_id() {
            let row = &weights[c as usize * k..(c as usize + 1) * k];
            if row.iter().any(|&x| x != 0.0) {
                ids.push(f);
                w.extend_from_slice(row);
            }
        }
        w.extend_from_slice(&weights[cols.used() * k..]);
        meta.layout.features = cols.features;
        SavedModel {
            meta,
            weights: w,
            feature_ids: Some(ids),
        }
    }

    /// The weights to start a run from (`--init-model`; `path` names the file in
    /// errors): the model must have the run's loss and the layout of its data (`layout`
    /// of the run, `columns` when the feature ids are compacted).
    pub fn warm_start(
        &self,
        path: &Path,
        loss: LossKind,
        layout: Layout,
        columns: Option<&crate::data::columns::ColumnMap>,
    ) -> Result<Vec<f64>> {
        let bad = |reason: String| Error::Model {
            path: path.to_path_buf(),
            reason,
        };
        if self.meta.loss != loss {
            return Err(bad(format!(
                "model was trained with loss {}, this run uses {}",
                self.meta.loss.name(),
                loss.name()
            )));
        }
        let layout = Layout {
            features: columns.map_or(layout.features, |c| c.features),
            ..layout
        };
        if self.meta.layout != layout {
            let l = |x: Layout| {
                format!(
                    "{} features x {} outputs{}",
                    x.features,
                    x.classes,
                    if x.bias { " + bias" } else { "" }
                )
            };
            return Err(bad(format!(
                "model has {}, the data needs {}",
                l(self.meta.layout),
                l(layout)
            )));
        }
        self.weights_for(columns).map_err(bad)
    }
}

/// Writes `model` to `path` atomically: on any error an existing file at `path` is left
/// as it was. Fails with [`Error::Model`] when the model is inconsistent (weights of the
/// wrong length, a weight that is not finite in f32, a reserved key in `extra`, ...),
/// so that every file written can be loaded back.
pub fn save(path: &Path, model: &SavedModel) -> Result<()> {
    let file = encode(model).map_err(|reason| model_err(path, reason))?;
    atomic_write(path, |w| {
        w.write_all(&file.head).map_err(io_err(path))?;
        w.write_all(file.data()).map_err(io_err(path))
    })
}

/// Reads and validates the model file at `path`.
pub fn load(path: &Path) -> Result<SavedModel> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode(&bytes).map_err(|reason| model_err(path, reason))
}

fn model_err(path: &Path, reason: String) -> Error {
    Error::Model {
        path: path.to_path_buf(),
        reason,
    }
}

/// An owned tensor (F32 values or I64 ids) for [`safetensors::serialize`].
struct OwnedTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &OwnedTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// The safetensors header, with ordered maps so that it serializes the same way every
/// time (the crate's own header uses hash maps, whose order changes from run to run).
#[derive(Serialize, Deserialize)]
struct SortedHeader {
    #[serde(rename = "__metadata__")]
    metadata: BTreeMap<String, String>,
    #[serde(flatten)]
    tensors: BTreeMap<String, TensorInfo>,
}

/// Length of the little-endian u64 that opens a safetensors file (the header length).
const HEADER_LEN_BYTES: usize = 8;

/// An encoded file: `head` (header length and sorted header) followed by the data part
/// of `raw`, kept apart so that large models are not copied once more to join them.
struct Encoded {
    head: Vec<u8>,
    raw: Vec<u8>,
    data_start: usize,
}

impl Encoded {
    fn data(&self) -> &[u8] {
        &self.raw[self.data_start..]
    }

    #[cfg(test)]
    fn to_bytes(&self) -> Vec<u8> {
        [&self.head[..], self.data()].concat()
    }
}

fn encode(model: &SavedModel) -> std::result::Result<Encoded, String> {
    let meta = &model.meta;
    check_meta(meta)?;
    for key in meta.extra.keys() {
        if RESERVED_KEYS.contains(&key.as_str()) {
            return Err(format!(
                "extra metadata key '{key}' is reserved for the model file format"
            ));
        }
    }
    let layout = meta.layout;
    let (d, k) = (layout.features, layout.classes);
    let n = model.stored_features();
    if model.feature_ids.is_some() {
        sparse_allowed(meta)?;
    }
    if let Some(ids) = &model.feature_ids {
        if let Some(i) = ids
            .iter()
            .enumerate()
            .position(|(i, &f)| f as usize >= d || (i > 0 && ids[i - 1] >= f))
        {
            return Err(format!(
                "feature_ids[{i}] = {}: ids must be strictly increasing and below {d}",
                ids[i]
            ));
        }
    }
    // check_meta has made sure these products do not overflow, and n <= d.
    let coords = (n + 1) * k;
    if model.weights.len() != coords {
        return Err(format!(
            "weights has {} values, the layout ({n} features + intercept) x {k} classes \
             needs {coords}",
            model.weights.len()
        ));
    }
    let (feature_part, bias_part) = model.weights.split_at(n * k);

    let weights = OwnedTensor {
        dtype: Dtype::F32,
        shape: if k == 1 { vec![n] } else { vec![n, k] },
        bytes: to_f32_bytes(WEIGHTS, feature_part, k)?,
    };
    let ids = model.feature_ids.as_ref().map(|ids| OwnedTensor {
        dtype: Dtype::I64,
        shape: vec![ids.len()],
        bytes: ids
            .iter()
            .flat_map(|&f| i64::from(f).to_le_bytes())
            .collect(),
    });
    // Without an intercept the bias row is not part of the model and is not written.
    let bias = if layout.bias {
        Some(OwnedTensor {
            dtype: Dtype::F32,
            shape: vec![k],
            bytes: to_f32_bytes(BIAS, bias_part, k)?,
        })
    } else {
        None
    };
    let mut tensors = vec![(WEIGHTS, &weights)];
    if let Some(bias) = &bias {
        tensors.push((BIAS, bias));
    }
    if let Some(ids) = &ids {
        tensors.push((FEATURE_IDS, ids));
    }
    let version = if ids.is_some() { SPARSE_VERSION } else { 1 };
    let metadata: HashMap<String, String> = meta_fields(meta, version).into_iter().collect();
    let raw = safetensors::serialize(tensors, Some(metadata))
        .map_err(|e| format!("cannot encode safetensors: {e}"))?;
    sort_header(raw)
}

/// Converts to little-endian f32 bytes, refusing values that are not finite in f32 (a
/// file that [`load`] would reject must not be written).
fn to_f32_bytes(name: &str, values: &[f64], k: usize) -> std::result::Result<Vec<u8>, String> {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for (i, &v) in values.iter().enumerate() {
        let x = v as f32;
        if !x.is_finite() {
            return Err(format!(
                "tensor '{name}' value {v:?} at {} is not a finite f32",
                index_text(name, i, k)
            ));
        }
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    Ok(bytes)
}

/// Index of flat position `i` as written in the file: `[row, class]` for the weights
/// matrix, `[i]` for vectors.
fn index_text(name: &str, i: usize, k: usize) -> String {
    if name == WEIGHTS && k > 1 {
        format!("[{}, {}]", i / k, i % k)
    } else {
        format!("[{i}]")
    }
}

/// The metadata entries of `meta`, reserved keys and extras together.
fn meta_fields(meta: &ModelMeta, version: u32) -> BTreeMap<String, String> {
    // `{:?}` prints the shortest string that parses back to the same f64, in exponent
    // form for very small or large values, and `inf` for infinite box bounds; both Rust
    // and Python's float() read it.
    let reg = meta.reg;
    let mut m: BTreeMap<String, String> = meta.extra.clone();
    let fields = [
        ("format", FORMAT_NAME.to_string()),
        ("format_version", version.to_string()),
        ("loss", meta.loss.name().to_string()),
        ("regularizer", reg.kind.name().to_string()),
        ("lambda", format!("{:?}", reg.lambda)),
        ("l1_ratio", format!("{:?}", reg.l1_ratio)),
        ("lower", format!("{:?}", reg.lower)),
        ("upper", format!("{:?}", reg.upper)),
        ("group_len", reg.group_len.to_string()),
        ("alpha", format!("{:?}", meta.alpha)),
        ("blocks", meta.blocks.to_string()),
        ("features", meta.layout.features.to_string()),
        ("classes", meta.layout.classes.to_string()),
        ("bias", meta.layout.bias.to_string()),
        ("class_labels", labels_json(&meta.class_labels)),
    ];
    for (key, value) in fields {
        m.insert(key.to_string(), value);
    }
    m
}

/// JSON array of the labels, each the shortest decimal that reads back as the same f32;
/// `{:?}` keeps a fraction on integers (`1.0`), so readers that tell ints from floats
/// see floats.
fn labels_json(labels: &[f32]) -> String {
    let items: Vec<String> = labels.iter().map(|v| format!("{v:?}")).collect();
    format!("[{}]", items.join(", "))
}

/// Replaces the header of a safetensors buffer with the same header, keys sorted.
fn sort_header(raw: Vec<u8>) -> std::result::Result<Encoded, String> {
    let broken = |what: &str| format!("cannot encode safetensors: {what}");
    let (len_bytes, rest) = raw
        .split_first_chunk::<HEADER_LEN_BYTES>()
        .ok_or_else(|| broken("short buffer"))?;
    let n = usize::try_from(u64::from_le_bytes(*len_bytes))
        .ok()
        .filter(|&n| n <= rest.len())
        .ok_or_else(|| broken("header length"))?;
    let parsed: SortedHeader =
        serde_json::from_slice(&rest[..n]).map_err(|e| broken(&e.to_string()))?;
    let mut header = serde_json::to_vec(&parsed).map_err(|e| broken(&e.to_string()))?;
    // The format pads the header with spaces so that the data starts 8-byte aligned.
    header.resize(header.len().next_multiple_of(HEADER_LEN_BYTES), b' ');
    let mut head = Vec::with_capacity(HEADER_LEN_BYTES + header.len());
    head.extend_from_slice(&(header.len() as u64).to_le_bytes());
    head.extend_from_slice(&header);
    Ok(Encoded {
        head,
        raw,
        data_start: HEADER_LEN_BYTES + n,
    })
}

/// Consistency rules shared by [`save`] and [`load`].
fn check_meta(meta: &ModelMeta) -> std::result::Result<(), String> {
    let reg = meta.reg;
    let field = |name: &str, value: String, rule: &str| {
        Err(format!("metadata field '{name}' = {value}: {rule}"))
    };
    if !(reg.lambda.is_finite() && reg.lambda >= 0.0) {
        return field(
            "lambda",
            format!("{:?}", reg.lambda),
            "must be finite and >= 0",
        );
    }
    if !(0.0..=1.0).contains(&reg.l1_ratio) {
        return field(
            "l1_ratio",
            format!("{:?}", reg.l1_ratio),
            "must be in [0, 1]",
        );
    }
    if reg.lower.is_nan() || reg.upper.is_nan() || reg.lower > reg.upper {
        return Err(format!(
            "metadata fields 'lower' = {:?} and 'upper' = {:?}: need lower <= upper",
            reg.lower, reg.upper
        ));
    }
    if reg.group_len == 0 {
        return field("group_len", "0".into(), "must be >= 1");
    }
    if !(meta.alpha.is_finite() && meta.alpha >= 0.0) {
        return field(
            "alpha",
            format!("{:?}", meta.alpha),
            "must be finite and >= 0",
        );
    }
    if meta.blocks == 0 {
        return field("blocks", "0".into(), "must be >= 1");
    }

    if let Some(p) = meta.loss.info().param {
        if let Some(v) = meta.extra.get(p.name) {
            if !v.parse::<f64>().is_ok_and(|x| x.is_finite() && x > 0.0) {
                return field(p.name, shown(v), "must be a finite number > 0");
            }
        }
    }
    let layout = meta.layout;
    let k = layout.classes;
    let labels_kind = meta.loss.info().labels;
    match labels_kind {
        Labels::Classes if k < 2 => {
            return field(
                "classes",
                k.to_string(),
                &format!("{} needs at least 2 classes", meta.loss.name()),
            );
        }
        Labels::Classes => {}
        _ if k != 1 => {
            return field(
                "classes",
                k.to_string(),
                &format!(
                    "loss '{}' has one output per feature, needs 1",
                    meta.loss.name()
                ),
            );
        }
        _ => {}
    }
    if layout
        .features
        .checked_add(1)
        .and_then(|rows| rows.checked_mul(k))
        .and_then(|coords| coords.checked_mul(4))
        .is_none()
    {
        return field(
            "features",
            layout.features.to_string(),
            &format!("too many coordinates with {k} classes"),
        );
    }

    let labels = &meta.class_labels;
    let expected = match labels_kind {
        Labels::Classes => k,
        Labels::Binary => 2,
        Labels::Real => 0,
    };
    if !labels.is_empty() && labels.len() != expected {
        return field(
            "class_labels",
            labels_json(labels),
            &format!(
                "loss '{}' with {k} classes needs {expected} labels (or none)",
                meta.loss.name()
            ),
        );
    }
    for (i, &v) in labels.iter().enumerate() {
        if !v.is_finite() {
            return field(
                "class_labels",
                format!("{v} at [{i}]"),
                "labels must be finite",
            );
        }
        if labels[..i].contains(&v) {
            return field(
                "class_labels",
                format!("{v} twice"),
                "labels must be distinct",
            );
        }
    }
    Ok(())
}

fn decode(bytes: &[u8]) -> std::result::Result<SavedModel, String> {
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let tensors =
        SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let Some(fields) = header.metadata() else {
        return Err("no __metadata__ in the safetensors header: not an asyb model file".into());
    };
    let fields = Fields(fields);

    let format = fields.text("format")?;
    if format != FORMAT_NAME {
        return Err(format!(
            "metadata field 'format' = '{}': not an asyb model file (expected '{FORMAT_NAME}')",
            shown(format)
        ));
    }
    let version: u32 = fields.int("format_version")?;
    if version > FORMAT_VERSION {
        return Err(format!(
            "metadata field 'format_version' = {version}: written by a newer asyb (this one \
             reads up to version {FORMAT_VERSION})"
        ));
    }
    if version == 0 {
        return Err("metadata field 'format_version' = 0: versions start at 1".into());
    }

    // The kinds' own parse errors repeat the value, which `with` already shows.
    let loss: LossKind = fields.with("loss", |s| {
        s.parse()
            .map_err(|_| one_of(LossKind::ALL.iter().map(|(n, _)| *n)))
    })?;
    let kind: RegKind = fields.with("regularizer", |s| {
        s.parse()
            .map_err(|_| one_of(RegKind::ALL.iter().map(|(n, _)| *n)))
    })?;
    let reg = RegSpec {
        kind,
        lambda: fields.float("lambda")?,
        l1_ratio: fields.float("l1_ratio")?,
        lower: fields.float("lower")?,
        upper: fields.float("upper")?,
        group_len: fields.int("group_len")?,
    };
    let layout = Layout {
        features: fields.int("features")?,
        classes: fields.int("classes")?,
        bias: fields.with("bias", |s| match s {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err("expected 'true' or 'false'".to_string()),
        })?,
    };
    let class_labels: Vec<f32> = fields.with("class_labels", |s| {
        serde_json::from_str(s).map_err(|e| format!("expected a JSON array of numbers ({e})"))
    })?;
    let meta = ModelMeta {
        loss,
        reg,
        blocks: fields.int("blocks")?,
        layout,
        class_labels,
        alpha: fields.float("alpha")?,
        extra: fields
            .0
            .iter()
            .filter(|(k, _)| !RESERVED_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    check_meta(&meta)?;

    for (name, _) in tensors.iter() {
        let sparse_ok = version >= SPARSE_VERSION && name == FEATURE_IDS;
        if name != WEIGHTS && name != BIAS && !sparse_ok {
            return Err(format!(
                "unexpected tensor '{}' (an asyb model has '{WEIGHTS}' and '{BIAS}')",
                shown(name)
            ));
        }
    }
    let (d, k) = (layout.features, layout.classes);
    let feature_ids = match tensors.tensor(FEATURE_IDS) {
        Ok(t) => {
            sparse_allowed(&meta)?;
            Some(read_ids(&t, d)?)
        }
        Err(_) => None,
    };
    let (n, what) = match &feature_ids {
        Some(ids) => (ids.len(), format!("{} feature_ids", ids.len())),
        None => (d, format!("features = {d}")),
    };
    let shape_rule = if k == 1 {
        format!("[{n}] for {what}, classes = 1")
    } else {
        format!("[{n}, {k}] for {what}, classes = {k}")
    };
    let weights_shape: &[usize] = if k == 1 { &[n] } else { &[n, k] };
    let w = tensor_f32(&tensors, WEIGHTS, &[weights_shape], &shape_rule)?;
    // Only now is the size claimed by the metadata known to be backed by data in the
    // file (check_meta has ruled out overflow), so allocating it is safe.
    let coords = (n + 1) * k;
    let mut weights = Vec::with_capacity(coords);
    read_f32(WEIGHTS, w.data(), k, &mut weights)?;
    match (layout.bias, tensors.tensor(BIAS).is_ok()) {
        (true, _) => {
            let rule = format!("[{k}] for classes = {k}");
            let shapes: &[&[usize]] = if k == 1 { &[&[1], &[]] } else { &[&[k]] };
            let b = tensor_f32(&tensors, BIAS, shapes, &rule)?;
            read_f32(BIAS, b.data(), k, &mut weights)?;
        }
        (false, true) => {
            return Err(format!(
                "tensor '{BIAS}' is present but metadata field 'bias' = false"
            ));
        }
        (false, false) => weights.resize(coords, 0.0),
    }
    Ok(SavedModel {
        meta,
        weights,
        feature_ids,
    })
}

/// A sparse model leaves the features it does not list at 0: only regularizers that
/// give 0 no cost and that treat features one by one allow that.
fn sparse_allowed(meta: &ModelMeta) -> std::result::Result<(), String> {
    let reg = meta.reg;
    if reg.kind == RegKind::Box && !(reg.lower <= 0.0 && 0.0 <= reg.upper) {
        return Err(format!(
            "tensor '{FEATURE_IDS}' with a box [{:?}, {:?}] that does not hold 0: the \
             features it leaves out would be outside the box",
            reg.lower, reg.upper
        ));
    }
    if reg.kind == RegKind::GroupLasso && reg.group_len > 1 {
        return Err(format!(
            "tensor '{FEATURE_IDS}' with group lasso: groups are runs of consecutive features"
        ));
    }
    Ok(())
}

/// The `feature_ids` tensor: I64 of shape `[n]`, strictly increasing, in `0..d`.
fn read_ids(
    t: &safetensors::tensor::TensorView<'_>,
    d: usize,
) -> std::result::Result<Vec<u32>, String> {
    if t.dtype() != Dtype::I64 || t.shape().len() != 1 {
        return Err(format!(
            "tensor '{FEATURE_IDS}' has dtype {} and shape {:?}, expected I64 [n]",
            t.dtype(),
            t.shape()
        ));
    }
    let mut ids = Vec::with_capacity(t.shape()[0]);
    for (i, chunk) in t.data().chunks_exact(8).enumerate() {
        let mut le = [0u8; 8];
        le.copy_from_slice(chunk);
        let f = i64::from_le_bytes(le);
        let ok = (0..=i64::from(u32::MAX)).contains(&f)
            && (f as u64) < d as u64
            && ids.last().map_or(true, |&p| i64::from(p) < f);
        if !ok {
            return Err(format!(
                "tensor '{FEATURE_IDS}' holds {f} at [{i}]: ids must be strictly increasing \
                 and in 0..{d}"
            ));
        }
        ids.push(f as u32);
    }
    Ok(ids)
}

/// The `__metadata__` map with typed, error-naming accessors.
struct Fields<'a>(&'a HashMap<String, String>);

impl Fields<'_> {
    fn text(&self, key: &str) -> std::result::Result<&str, String> {
        self.0
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("missing metadata field '{key}'"))
    }

    fn with<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> std::result::Result<T, String>,
    ) -> std::result::Result<T, String> {
        let s = self.text(key)?;
        parse(s).map_err(|reason| format!("metadata field '{key}' = '{}': {reason}", shown(s)))
    }

    fn int<T: std::str::FromStr>(&self, key: &str) -> std::result::Result<T, String> {
        self.with(key, |s| {
            s.parse::<T>()
                .map_err(|_| "expected a non-negative integer".to_string())
        })
    }

    fn float(&self, key: &str) -> std::result::Result<f64, String> {
        self.with(key, |s| {
            s.parse::<f64>()
                .map_err(|_| "expected a number".to_string())
        })
    }
}

fn one_of<'a>(names: impl Iterator<Item = &'a str>) -> String {
    format!("expected one of: {}", names.collect::<Vec<_>>().join(", "))
}

/// A value from the file, shortened and escaped so that an error stays one short line
/// whatever the file holds.
fn shown(s: &str) -> String {
    const MAX_CHARS: usize = 60;
    let mut out: String = s
        .chars()
        .take(MAX_CHARS)
        .collect::<String>()
        .escape_debug()
        .collect();
    if s.chars().nth(MAX_CHARS).is_some() {
        out.push_str("...");
    }
    out
}

/// The tensor `name`, checked to be F32 with one of `shapes`.
fn tensor_f32<'data>(
    tensors: &SafeTensors<'data>,
    name: &str,
    shapes: &[&[usize]],
    rule: &str,
) -> std::result::Result<safetensors::tensor::TensorView<'data>, String> {
    let t = tensors
        .tensor(name)
        .map_err(|_| format!("missing tensor '{name}'"))?;
    if t.dtype() != Dtype::F32 {
        return Err(format!(
            "tensor '{name}' has dtype {}, expected F32",
            t.dtype()
        ));
    }
    if !shapes.contains(&t.shape()) {
        return Err(format!(
            "tensor '{name}' has shape {:?}, expected {rule}",
            t.shape()
        ));
    }
    Ok(t)
}

/// Appends little-endian f32 `data` to `out` as f64, refusing NaN and infinities.
fn read_f32(
    name: &str,
    data: &[u8],
    k: usize,
    out: &mut Vec<f64>,
) -> std::result::Result<(), String> {
    for (i, chunk) in data.chunks_exact(4).enumerate() {
        let mut le = [0u8; 4];
        le.copy_from_slice(chunk);
        let v = f32::from_le_bytes(le);
        if !v.is_finite() {
            return Err(format!(
                "tensor '{name}' holds {v} at {}: weights must be finite",
                index_text(name, i, k)
            ));
        }
        out.push(f64::from(v));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(loss: LossKind, classes: usize, bias: bool) -> ModelMeta {
        ModelMeta {
            loss,
            reg: RegSpec {
                kind: RegKind::ElasticNet,
                lambda: 1e-7,
                l1_ratio: 0.5,
                lower: f64::NEG_INFINITY,
                upper: f64::INFINITY,
                group_len: 1,
            },
            blocks: 4,
            layout: Layout {
                features: 5,
                classes,
                bias,
            },
            class_labels: Vec::new(),
            alpha: 0.0,
            extra: BTreeMap::new(),
        }
    }

    fn model(loss: LossKind, classes: usize) -> SavedModel {
        let meta = meta(loss, classes, true);
        let weights = (0..meta.layout.coords())
            .map(|i| (i as f64 * 0.37).sin())
            .collect();
        SavedModel {
            meta,
            weights,
            feature_ids: None,
        }
    }

    fn encode_err(m: &SavedModel) -> String {
        match encode(m) {
            Ok(_) => panic!("encode accepted {m:?}"),
            Err(reason) => reason,
        }
    }

    #[test]
    fn encoding_is_byte_for_byte_repeatable() {
        let mut m = model(LossKind::Softmax, 3);
        for i in 0..20 {
            m.meta.extra.insert(format!("key{i}"), format!("value{i}"));
        }
        let first = encode(&m).unwrap().to_bytes();
        for _ in 0..5 {
            assert_eq!(encode(&m).unwrap().to_bytes(), first);
        }
    }

    #[test]
    fn sorted_header_is_valid_safetensors_with_aligned_data() {
        let m = model(LossKind::Softmax, 3);
        let bytes = encode(&m).unwrap().to_bytes();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
        assert!(
            header.starts_with("{\"__metadata__\":{\"alpha\":"),
            "{header}"
        );
        let tensors = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(tensors.tensor(WEIGHTS).unwrap().shape(), &[5, 3]);
        assert_eq!(tensors.tensor(BIAS).unwrap().shape(), &[3]);
        assert_eq!(decode(&bytes).unwrap().meta, m.meta);
    }

    #[test]
    fn floats_in_metadata_read_back_exactly() {
        let mut m = model(LossKind::Logistic, 1);
        m.meta.reg.lambda = 0.1 + 0.2;
        m.meta.alpha = 1e-300;
        m.meta.reg.kind = RegKind::Box;
        m.meta.reg.lower = -0.0;
        m.meta.reg.upper = 3.0e20;
        m.meta.class_labels = vec![-1.0, 0.1];
        let back = decode(&encode(&m).unwrap().to_bytes()).unwrap();
        assert_eq!(back.meta, m.meta);
        assert_eq!(back.meta.reg.lower.to_bits(), (-0.0f64).to_bits());
    }

    #[test]
    fn save_refuses_inconsistent_models() {
        let good = model(LossKind::Logistic, 1);
        type Spoil = Box<dyn Fn(&mut SavedModel)>;
        let cases: Vec<(&str, Spoil)> = vec![
            ("weights has 5 values", Box::new(|m| m.weights.truncate(5))),
            (
                "'weights' value NaN at [2]",
                Box::new(|m| m.weights[2] = f64::NAN),
            ),
            ("'weights' value 1e40", Box::new(|m| m.weights[0] = 1e40)),
            (
                "'bias' value inf at [0]",
                Box::new(|m| m.weights[5] = f64::INFINITY),
            ),
            ("'lambda'", Box::new(|m| m.meta.reg.lambda = -1.0)),
            ("'lambda'", Box::new(|m| m.meta.reg.lambda = f64::NAN)),
            ("'l1_ratio'", Box::new(|m| m.meta.reg.l1_ratio = 1.5)),
            (
                "lower <= upper",
                Box::new(|m| {
                    m.meta.reg.lower = 2.0;
                    m.meta.reg.upper = 1.0;
                }),
            ),
            ("lower <= upper", Box::new(|m| m.meta.reg.upper = f64::NAN)),
            ("'group_len'", Box::new(|m| m.meta.reg.group_len = 0)),
            ("'alpha'", Box::new(|m| m.meta.alpha = f64::INFINITY)),
            ("'blocks'", Box::new(|m| m.meta.blocks = 0)),
            ("needs 1", Box::new(|m| m.meta.layout.classes = 2)),
            (
                "needs 2 labels",
                Box::new(|m| m.meta.class_labels = vec![1.0]),
            ),
            (
                "distinct",
                Box::new(|m| m.meta.class_labels = vec![1.0, 1.0]),
            ),
            (
                "finite",
                Box::new(|m| m.meta.class_labels = vec![f32::NAN, 1.0]),
            ),
            (
                "too many coordinates",
                Box::new(|m| m.meta.layout.features = usize::MAX),
            ),
            (
                "'format' is reserved",
                Box::new(|m| {
                    m.meta.extra.insert("format".into(), "x".into());
                }),
            ),
        ];
        for (want, spoil) in cases {
            let mut m = good.clone();
            spoil(&mut m);
            let reason = encode_err(&m);
            assert!(reason.contains(want), "{want:?} not in {reason:?}");
            assert!(!reason.contains('\n'), "{reason:?}");
        }
    }

    #[test]
    fn class_counts_follow_the_loss() {
        let mut m = model(LossKind::Softmax, 3);
        m.meta.class_labels = vec![3.0, 1.0, 2.0];
        assert!(encode(&m).is_ok());
        m.meta.class_labels = vec![3.0, 1.0];
        assert!(encode_err(&m).contains("needs 3 labels"));

        let mut one = model(LossKind::Softmax, 1);
        one.meta.layout.classes = 1;
        assert!(encode_err(&one).contains("at least 2 classes"));

        let mut reg = model(LossKind::Squared, 1);
        reg.meta.class_labels = vec![0.0, 1.0];
        assert!(encode_err(&reg).contains("needs 0 labels"));
    }

    proptest::proptest! {
        /// Damaged files (bytes overwritten, file cut short) give an error or a valid
        /// model, never a panic.
        #[test]
        fn damaged_files_never_panic(
            edits in proptest::collection::vec((0usize..4096, proptest::num::u8::ANY), 1..8),
            cut in proptest::option::of(0usize..4096),
        ) {
            let mut bytes = encode(&model(LossKind::Softmax, 3)).unwrap().to_bytes();
            for (at, byte) in edits {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut % (bytes.len() + 1));
            }
            if let Ok(m) = decode(&bytes) {
                proptest::prop_assert_eq!(m.weights.len(), m.meta.layout.coords());
            }
        }
    }

    #[test]
    fn the_loss_parameter_is_recorded_and_checked() {
        let mut m = model(LossKind::Huber, 1);
        m.meta.set_loss(LossSpec::new(LossKind::Huber, Some(0.3)));
        let back = decode(&encode(&m).unwrap().to_bytes()).unwrap();
        assert_eq!(
            back.meta.loss_spec(),
            LossSpec::new(LossKind::Huber, Some(0.3))
        );
        // A model written without the entry has the default.
        m.meta.extra.remove("huber-delta");
        let back = decode(&encode(&m).unwrap().to_bytes()).unwrap();
        assert_eq!(back.meta.loss_spec().param, 1.0);
        for bad in ["0", "-1", "nan", "inf", "x"] {
            m.meta.extra.insert("huber-delta".into(), bad.into());
            let reason = encode_err(&m);
            assert!(reason.contains("huber-delta"), "{reason}");
        }
        // A loss without a parameter records none.
        let mut l = model(LossKind::Logistic, 1);
        l.meta.set_loss(LossKind::Logistic.into());
        assert!(l.meta.extra.is_empty());
        assert_eq!(l.meta.loss_spec(), LossSpec::from(LossKind::Logistic));
    }

    #[test]
    fn bias_row_is_not_checked_or_written_without_an_intercept() {
        let mut m = model(LossKind::Squared, 1);
        m.meta.layout.bias = false;
        m.weights[5] = f64::NAN;
        let back = decode(&encode(&m).unwrap().to_bytes()).unwrap();
        assert_eq!(back.weights[5], 0.0);
        assert!(SafeTensors::deserialize(&encode(&m).unwrap().to_bytes())
            .unwrap()
            .tensor(BIAS)
            .is_err());
    }
}
