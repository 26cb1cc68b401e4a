//! Losses: the smooth part f(x) = (1/n) sum_i loss(z_i, y_i), z_i = margins of row i.
//!
//! Each loss is a zero-sized (or tiny) `Copy` type so the worker loop is monomorphized
//! per loss (choose the hot loop once). Labels are normalized before training:
//! binary losses see y in {-1, +1}, softmax sees the class index 0..K-1 as f32,
//! squared loss sees the raw target.

use serde::{Deserialize, Serialize};

/// Which loss, as named on the command line and in config files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// log(1 + exp(-y z)), binary labels.
    Logistic,
    /// (z - y)^2 / 2, regression.
    Squared,
    /// max(0, 1 - y z)^2, binary labels.
    SquaredHinge,
    /// Multinomial: logsumexp(z) - z_y, K classes.
    Softmax,
}

impl LossKind {
    /// All kinds with their command-line names.
    pub const ALL: [(&'static str, LossKind); 4] = [
        ("logistic", LossKind::Logistic),
        ("squared", LossKind::Squared),
        ("squared-hinge", LossKind::SquaredHinge),
        ("softmax", LossKind::Softmax),
    ];

    /// Command-line name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// Whether labels are two classes (normalized to -1/+1).
    pub fn is_binary(self) -> bool {
        matches!(self, LossKind::Logistic | LossKind::SquaredHinge)
    }
}

impl std::str::FromStr for LossKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        crate::parse_name(&Self::ALL, s, "loss")
    }
}

/// A loss of the margins of one row.
pub trait Loss: Copy + Send + Sync + 'static {
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
}

/// log(1 + exp(-y z)).
#[derive(Clone, Copy, Debug, Default)]
pub struct Logistic;

/// (z - y)^2 / 2.
#[derive(Clone, Copy, Debug, Default)]
pub struct Squared;

/// max(0, 1 - y z)^2.
#[derive(Clone, Copy, Debug, Default)]
pub struct SquaredHinge;

/// logsumexp(z) - z_y over K classes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Softmax;

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

impl Loss for Logistic {
    #[inline]
    fn value(&self, z: &[f64], y: f32) -> f64 {
        log1pexp(-f64::from(y) * z[0])
    }
    #[inline]
    fn grad(&self, z: &[f64], y: f32, dz: &mut [f64]) -> f64 {
        // d/dz log(1 + exp(-y z)) = -y sigmoid(-y z). One exponential for both, the
        // same values as `sigmoid` and `log1pexp`.
        let y = f64::from(y);
        let t = -y * z[0];
        let e = (-t.abs()).exp();
        if t > 0.0 {
            dz[0] = -y / (1.0 + e);
            t + e.ln_1p()
        } else {
            dz[0] = -y * (e / (1.0 + e));
            e.ln_1p()
        }
    }
    #[inline]
    fn deriv(&self, z: &[f64], y: f32, dz: &mut [f64]) {
        let y = f64::from(y);
        dz[0] = -y * sigmoid(-y * z[0]);
    }
}

impl Loss for Squared {
    #[inline]
    fn value(&self, z: &[f64], y: f32) -> f64 {
        let r = z[0] - f64::from(y);
        0.5 * r * r
    }
    #[inline]
    fn grad(&self, z: &[f64], y: f32, dz: &mut [f64]) -> f64 {
        let r = z[0] - f64::from(y);
        dz[0] = r;
        0.5 * r * r
    }
}

impl Loss for SquaredHinge {
    #[inline]
    fn value(&self, z: &[f64], y: f32) -> f64 {
        let m = (1.0 - f64::from(y) * z[0]).max(0.0);
        m * m
    }
    #[inline]
    fn grad(&self, z: &[f64], y: f32, dz: &mut [f64]) -> f64 {
        let y = f64::from(y);
        let m = (1.0 - y * z[0]).max(0.0);
        dz[0] = -2.0 * y * m;
        m * m
    }
}

impl Loss for Softmax {
    #[inline]
    fn value(&self, z: &[f64], y: f32) -> f64 {
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = z.iter().map(|&v| (v - max).exp()).sum();
        max + sum.ln() - z[y as usize]
    }
    #[inline]
    fn grad(&self, z: &[f64], y: f32, dz: &mut [f64]) -> f64 {
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        for (d, &v) in dz.iter_mut().zip(z) {
            *d = (v - max).exp();
            sum += *d;
        }
        for d in dz.iter_mut() {
            *d /= sum;
        }
        let c = y as usize;
        dz[c] -= 1.0;
        max + sum.ln() - z[c]
    }
}

/// Runs `$body` with `$l` bound to the concrete loss of `$kind`, so that the code in
/// `$body` is monomorphized once per loss.
#[macro_export]
macro_rules! with_loss {
    ($kind:expr, |$l:ident| $body:expr) => {
        match $kind {
            $crate::model::loss::LossKind::Logistic => {
                let $l = $crate::model::loss::Logistic;
                $body
            }
            $crate::model::loss::LossKind::Squared => {
                let $l = $crate::model::loss::Squared;
                $body
            }
            $crate::model::loss::LossKind::SquaredHinge => {
                let $l = $crate::model::loss::SquaredHinge;
                $body
            }
            $crate::model::loss::LossKind::Softmax => {
                let $l = $crate::model::loss::Softmax;
                $body
            }
        }
    };
}
