//! Losses: the smooth part f(x) = (1/n) sum_i loss(z_i, y_i), z_i = margins of row i.
//!
//! Each loss is a small `Copy` type in a file of its own, so the worker loop is
//! monomorphized per loss (choose the hot loop once). It owns its facts in
//! [`Loss::INFO`]: its name, the bound on its curvature (the automatic step), how labels
//! are read ([`Labels`]), how a margin becomes a prediction ([`Link`]), the name of its
//! test metric, its parameter. Labels are normalized before training: binary losses see
//! y in {-1, +1}, multiclass losses the class index 0..K-1 as f32, regression losses the
//! raw target.
//!
//! A new loss is one file here plus one line in [`for_each_loss!`]; its unit tests sit
//! in its file, and the crate's tests check every registered loss against finite
//! differences. A loss with a parameter also names it in the config and on the command
//! line (`huber-delta`), as the regularizers' parameters are.

mod huber;
mod logistic;
mod softmax;
mod squared;
mod squared_hinge;

pub use huber::Huber;
pub use logistic::Logistic;
pub use softmax::Softmax;
pub use squared::Squared;
pub use squared_hinge::SquaredHinge;

use serde::{Deserialize, Serialize};

/// The registry: every loss once, as `Variant => Type`. Calls `$m!` with the list
/// (after the tokens given), which generates [`LossKind`] and [`with_loss!`]'s match.
#[doc(hidden)]
#[macro_export]
macro_rules! for_each_loss {
    ([$($m:tt)+] $($args:tt)*) => {
        $($m)+! { $($args)* ;
            Logistic => Logistic,
            Squared => Squared,
            SquaredHinge => SquaredHinge,
            Softmax => Softmax,
            Huber => Huber,
        }
    };
}

/// How a loss reads labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Labels {
    /// Two classes, normalized to -1/+1 (0/1, -1/1 or 1/2 in the data).
    Binary,
    /// Any real target.
    Real,
    /// Up to [`crate::problem::MAX_CLASSES`] classes, normalized to 0..K-1; one output per
    /// class.
    Classes,
}

/// What `predict` writes for a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// The margin itself.
    Margin,
    /// The probability of the positive class, sigmoid(z).
    Probability,
    /// The label of the class with the largest margin.
    Class,
}

/// A loss's one parameter (a scale, such as Huber's delta): its flag and config key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Param {
    /// Flag and config key.
    pub name: &'static str,
    /// Value when not given; must be finite and > 0, as every given value.
    pub default: f64,
}

/// The facts of one loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossInfo {
    /// Command-line and config name; also the name in model files.
    pub name: &'static str,
    /// Bound on the second derivative of the loss in the margin (its Hessian's largest
    /// eigenvalue for several outputs), for every label.
    pub curvature: f64,
    pub labels: Labels,
    pub link: Link,
    /// Name of the held-out mean loss in reports: `logloss` where it is the negative
    /// log-likelihood.
    pub metric: &'static str,
    pub param: Option<Param>,
}

/// A loss of the margins of one row.
pub trait Loss: Copy + Default + Send + Sync + 'static {
    /// The loss's facts.
    const INFO: LossInfo;
    /// The loss with its parameter (see [`LossInfo::param`]); losses without one ignore
    /// it.
    #[inline]
    fn with_param(_param: f64) -> Self {
        Self::default()
    }
    /// Loss of one row with margins `z` (one per output) and normalized label `y`.
    fn value(&self, z: &[f64], y: f32) -> f64;
    /// Writes d loss / d z into `dz` (same length as `z`) and returns the loss value.
    fn grad(&self, z: &[f64], y: f32, dz: &mut [f64]) -> f64;
    /// Writes d loss / d z into `dz` without the loss value (cheaper where the value
    /// needs a logarithm).
    #[inline]
    fn deriv(&self, z: &[f64], y: f32, dz: &mut [f64]) {
        self.grad(z, y, dz);
    }
    /// The second derivative `d^2 loss / d z^2` of a one-output loss at margin `z`, label
    /// `y`, whose derivative there is `deriv` (a generalized one where the loss has a
    /// kink in its derivative): the curvature of the coordinate-descent solver's
    /// quadratic model ([`crate::cd`]). Any value from 0 to [`LossInfo::curvature`] is
    /// valid there (its line search keeps the iterates monotone); the default, the
    /// bound itself, makes the model an upper bound, so every step is accepted whole.
    #[inline]
    fn curvature_at(&self, _z: f64, _y: f32, _deriv: f64) -> f64 {
        Self::INFO.curvature
    }
    /// The convex conjugate `loss*(theta) = sup_z <theta, z> - loss(z, y)` for label `y`,
    /// at a point `theta` of its domain: a derivative `d loss / d z` is one, and so is a
    /// derivative times any factor in [0, 1] (every domain here is convex and holds 0,
    /// where the conjugate is 0). A point just outside the domain by rounding is taken
    /// at its edge. `None` for a loss without one in closed form; the duality gap
    /// ([`crate::model::dual`]) needs it.
    #[inline]
    fn conjugate(&self, _theta: &[f64], _y: f32) -> Option<f64> {
        None
    }
}

/// `x ln x`, 0 at 0 (and below, for rounding): the entropy terms of the logistic
/// losses' conjugates.
#[inline]
pub(crate) fn xlogx(x: f64) -> f64 {
    if x > 0.0 {
        x * x.ln()
    } else {
        0.0
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __loss_kind {
    (; $($var:ident => $ty:ident,)+) => {
        /// Which loss, as named on the command line, in config files and in model files.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum LossKind {
            $(
                #[doc = concat!("[`", stringify!($ty), "`].")]
                $var,
            )+
        }

        impl LossKind {
            /// All kinds with their command-line names.
            pub const ALL: [(&'static str, LossKind); [$(LossKind::$var),+].len()] =
                [$((<$ty as Loss>::INFO.name, LossKind::$var)),+];

            /// The loss's facts.
            pub fn info(self) -> &'static LossInfo {
                match self {
                    $(LossKind::$var => &<$ty as Loss>::INFO,)+
                }
            }
        }
    };
}

for_each_loss!([__loss_kind]);

impl LossKind {
    /// Command-line name.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Whether labels are two classes (normalized to -1/+1).
    pub fn is_binary(self) -> bool {
        self.info().labels == Labels::Binary
    }
}

impl std::str::FromStr for LossKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        crate::parse_name(&Self::ALL, s, "loss")
    }
}

impl Serialize for LossKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for LossKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A loss with its parameter: what a run trains and a model file records.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LossSpec {
    pub kind: LossKind,
    /// The value of [`LossInfo::param`], or 0 for a loss without one.
    pub param: f64,
}

impl LossSpec {
    /// `kind` with `param`, or its default parameter.
    pub fn new(kind: LossKind, param: Option<f64>) -> LossSpec {
        let param = kind
            .info()
            .param
            .map_or(0.0, |p| param.unwrap_or(p.default));
        LossSpec { kind, param }
    }
}

impl From<LossKind> for LossSpec {
    fn from(kind: LossKind) -> LossSpec {
        LossSpec::new(kind, None)
    }
}

/// Numerically stable log(1 + exp(t)).
#[inline]
pub fn log1pexp(t: f64) -> f64 {
    if t > 0.0 {
        t + (-t).exp().ln_1p()
    } else {
        t.exp().ln_1p()
    }
}

/// Numerically stable logistic sigmoid 1 / (1 + exp(-t)).
#[inline]
pub fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}

/// Runs `$body` with `$l` bound to the concrete loss of `$spec` (a [`LossSpec`] or a
/// [`LossKind`] with its default parameter), so that the code in `$body` is
/// monomorphized once per loss.
#[macro_export]
macro_rules! with_loss {
    ($spec:expr, |$l:ident| $body:expr) => {
        $crate::for_each_loss!([$crate::__with_loss]($spec)($l)($body))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __with_loss {
    (($spec:expr) ($l:ident) ($body:expr) ; $($var:ident => $ty:ident,)+) => {{
        let spec: $crate::model::loss::LossSpec = ::core::convert::From::from($spec);
        match spec.kind {
            $($crate::model::loss::LossKind::$var => {
                let $l = <$crate::model::loss::$ty as $crate::model::loss::Loss>::with_param(
                    spec.param,
                );
                $body
            })+
        }
    }};
}
