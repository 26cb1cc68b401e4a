//! The model's math against independent references: loss derivatives against central
//! finite differences and textbook formulas, prox operators against brute-force
//! minimization and their optimality conditions, the closed form of skipped prox steps
//! against the loop it replaces, and the dispatch macros and names.
//!
//! Tolerances, and why:
//! - finite differences: central step h = 1e-6 has truncation error O(h^2 |f'''|) and
//!   rounding error about eps |f| / h <= 1e-7 for the |f| <= ~500 reached here, so 1e-6
//!   relative (to max(1, |f'|)) separates a right derivative from a wrong one;
//! - 1-D brute-force prox: the objective is flat to rounding within
//!   sqrt(eps |phi| eta) ~ 2e-7 of its minimizer, so 1e-6 relative;
//! - prox_skipped vs the loop: both are a few hundred to ten thousand rounded operations
//!   on values of order 1..50, off by ~1e-12 at most, so 1e-9 relative to max(1, |x|)
//!   leaves orders of margin while a slip in the closed form (a step too many or too few,
//!   a wrong factor) lands far outside it.

use asyb::model::loss::{
    log1pexp, sigmoid, Huber, Logistic, Loss, LossKind, Softmax, Squared, SquaredHinge,
};
use asyb::model::reg::{
    BoxConstraint, ElasticNet, GroupLasso, NoReg, RegKind, RegSpec, Regularizer, StepSums, L1, L2,
};
use asyb::{with_loss, with_reg};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// |a - b| <= tol * max(1, |b|): relative for large values, absolute near 0.
fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
}

/// |a - b| <= tol * |b|: for values far below 1, where `close` would pass anything.
fn rel_close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs()
}

fn norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

fn binary_label() -> impl Strategy<Value = f32> {
    prop_oneof![Just(-1.0f32), Just(1.0f32)]
}

// ---------------------------------------------------------------------------------------
// Losses
// ---------------------------------------------------------------------------------------

/// `grad` returns `value`, and agrees with central finite differences of `value` in every
/// coordinate.
fn check_grad_by_differences<L: Loss>(loss: L, z: &[f64], y: f32) -> Result<(), TestCaseError> {
    let mut dz = vec![f64::NAN; z.len()];
    let v = loss.grad(z, y, &mut dz);
    prop_assert!(
        close(v, loss.value(z, y), 1e-12),
        "grad returned {v}, value {}",
        loss.value(z, y)
    );
    for i in 0..z.len() {
        let (mut zp, mut zm) = (z.to_vec(), z.to_vec());
        zp[i] += 1e-6;
        zm[i] -= 1e-6;
        // The step actually taken, free of the rounding of z +- h.
        let step = zp[i] - zm[i];
        let fd = (loss.value(&zp, y) - loss.value(&zm, y)) / step;
        prop_assert!(
            (dz[i] - fd).abs() <= 1e-6 * dz[i].abs().max(1.0),
            "coordinate {i} of z = {z:?}, y = {y}: grad {} vs finite difference {fd}",
            dz[i]
        );
    }
    Ok(())
}

fn grad_of<L: Loss>(loss: L, z: &[f64], y: f32) -> Vec<f64> {
    let mut dz = vec![f64::NAN; z.len()];
    loss.grad(z, y, &mut dz);
    dz
}

/// Softmax probabilities by the textbook formula, only for margins small enough that
/// exp neither overflows nor underflows.
fn naive_softmax(z: &[f64]) -> Vec<f64> {
    let sum: f64 = z.iter().map(|v| v.exp()).sum();
    z.iter().map(|v| v.exp() / sum).collect()
}

proptest! {
    #[test]
    fn logistic_grad_matches_differences(z in -20.0f64..20.0, y in binary_label()) {
        check_grad_by_differences(Logistic, &[z], y)?;
    }

    #[test]
    fn squared_grad_matches_differences(z in -20.0f64..20.0, y in -10.0f32..10.0) {
        check_grad_by_differences(Squared, &[z], y)?;
    }

    #[test]
    fn squared_hinge_grad_matches_differences(z in -20.0f64..20.0, y in binary_label()) {
        // The derivative is continuous but has a kink at y z = 1 where differences lose
        // an order of accuracy.
        prop_assume!((f64::from(y) * z - 1.0).abs() > 1e-4);
        check_grad_by_differences(SquaredHinge, &[z], y)?;
    }

    #[test]
    fn huber_grad_matches_differences(z in -20.0f64..20.0, y in -10.0f32..10.0, delta in 0.01f64..5.0) {
        // The second derivative jumps at |z - y| = delta, where differences lose an order
        // of accuracy.
        prop_assume!(((z - f64::from(y)).abs() - delta).abs() > 1e-4);
        check_grad_by_differences(Huber::with_param(delta), &[z], y)?;
    }

    #[test]
    fn softmax_grad_matches_differences(
        (z, y) in (2usize..=5).prop_flat_map(|k| {
            (prop::collection::vec(-20.0f64..20.0, k), 0..k)
        })
    ) {
        check_grad_by_differences(Softmax, &z, y as f32)?;
    }

    /// Values and gradients against the textbook formulas, in the range where those are
    /// accurate.
    #[test]
    fn binary_losses_match_formulas(z in -20.0f64..20.0, y in binary_label()) {
        let yf = f64::from(y);
        prop_assert!(close(Logistic.value(&[z], y), (1.0 + (-yf * z).exp()).ln(), 1e-12));
        prop_assert!(close(grad_of(Logistic, &[z], y)[0], -yf / (1.0 + (yf * z).exp()), 1e-12));
        let hinge = if yf * z < 1.0 { 1.0 - yf * z } else { 0.0 };
        prop_assert!(close(SquaredHinge.value(&[z], y), hinge * hinge, 1e-12));
        prop_assert!(close(grad_of(SquaredHinge, &[z], y)[0], -2.0 * yf * hinge, 1e-12));
    }

    /// `grad` returns what `value` computes, `deriv` writes what `grad` writes, bit for
    /// bit, and the logistic loss is the stable `log1pexp` and `sigmoid` it shares one
    /// exponential for, over margins far into both tails.
    #[test]
    fn grad_deriv_and_value_agree(z in -800.0f64..800.0, y in binary_label(), t in -10.0f32..10.0) {
        fn same<L: Loss>(loss: L, z: &[f64], y: f32) -> Result<(), TestCaseError> {
            let mut a = vec![f64::NAN; z.len()];
            let mut b = vec![f64::NAN; z.len()];
            let v = loss.grad(z, y, &mut a);
            loss.deriv(z, y, &mut b);
            prop_assert_eq!(v.to_bits(), loss.value(z, y).to_bits());
            prop_assert_eq!(a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            Ok(())
        }
        for zz in [z, z / 1000.0, 0.0, -0.0] {
            same(Logistic, &[zz], y)?;
            same(SquaredHinge, &[zz], y)?;
            same(Squared, &[zz], t)?;
            same(Huber::with_param(0.5), &[zz], t)?;
            same(Softmax, &[zz, -zz, 0.5 * zz], (t.abs() as usize % 3) as f32)?;
            let yf = f64::from(y);
            prop_assert_eq!(grad_of(Logistic, &[zz], y)[0].to_bits(), (-yf * sigmoid(-yf * zz)).to_bits());
            prop_assert_eq!(Logistic.value(&[zz], y).to_bits(), log1pexp(-yf * zz).to_bits());
        }
    }

    #[test]
    fn squared_matches_formula(z in -20.0f64..20.0, y in -10.0f32..10.0) {
        let r = z - f64::from(y);
        prop_assert!(close(Squared.value(&[z], y), r * r / 2.0, 1e-12));
        prop_assert!(close(grad_of(Squared, &[z], y)[0], r, 1e-12));
    }

    #[test]
    fn softmax_matches_formula(
        (z, y) in (2usize..=5).prop_flat_map(|k| {
            (prop::collection::vec(-20.0f64..20.0, k), 0..k)
        })
    ) {
        let p = naive_softmax(&z);
        prop_assert!(close(Softmax.value(&z, y as f32), -p[y].ln(), 1e-10));
        let dz = grad_of(Softmax, &z, y as f32);
        for (c, (&d, &pc)) in dz.iter().zip(&p).enumerate() {
            let expected = pc - if c == y { 1.0 } else { 0.0 };
            prop_assert!(close(d, expected, 1e-12), "class {c}: {d} vs {expected}");
        }
        prop_assert!(dz.iter().sum::<f64>().abs() <= 1e-12);
    }
}

#[test]
fn label_conventions_of_binary_losses() {
    // A confident right answer costs nothing; a confident wrong one costs a lot.
    assert!(Logistic.value(&[10.0], 1.0) < 1e-4);
    assert!(Logistic.value(&[10.0], -1.0) > 10.0);
    assert!(Logistic.value(&[-10.0], -1.0) < 1e-4);
    assert_eq!(Logistic.value(&[0.0], 1.0), std::f64::consts::LN_2);
    assert_eq!(SquaredHinge.value(&[2.0], 1.0), 0.0);
    assert_eq!(SquaredHinge.value(&[2.0], -1.0), 9.0);
    assert_eq!(SquaredHinge.value(&[-0.5], -1.0), 0.25);
    assert_eq!(SquaredHinge.value(&[0.0], 1.0), 1.0);
    // Descent on the margin moves it toward the label.
    assert!(grad_of(Logistic, &[0.0], 1.0)[0] < 0.0);
    assert!(grad_of(Logistic, &[0.0], -1.0)[0] > 0.0);
    assert!(grad_of(SquaredHinge, &[0.0], 1.0)[0] < 0.0);
    assert!(grad_of(SquaredHinge, &[0.0], -1.0)[0] > 0.0);
    assert_eq!(Squared.value(&[3.0], 1.0), 2.0);
}

#[test]
fn logistic_is_stable_at_large_margins() {
    for &(z, y) in &[(1e3, 1.0f32), (-1e3, -1.0), (1e6, 1.0), (-1e300, -1.0)] {
        // Right side: loss and gradient vanish.
        let mut dz = [f64::NAN];
        let v = Logistic.grad(&[z], y, &mut dz);
        assert!(
            v.is_finite() && (0.0..1e-300).contains(&v),
            "z {z} y {y}: {v}"
        );
        assert!(
            dz[0].is_finite() && dz[0].abs() < 1e-300,
            "z {z} y {y}: {}",
            dz[0]
        );
        // Wrong side: the loss is the margin, the gradient -y.
        let v = Logistic.grad(&[-z], y, &mut dz);
        assert!(close(v, z.abs(), 1e-15), "z {} y {y}: {v}", -z);
        assert_eq!(dz[0], -f64::from(y));
    }
    assert_eq!(log1pexp(800.0), 800.0);
    assert_eq!(log1pexp(-800.0), 0.0);
    // log(1 + e) = e - e^2 / 2 + e^3 / 3 - ..., exact to rounding with three terms for
    // e <= 1e-13, where ln(1 + exp(t)) computed naively keeps only about 3 digits.
    for t in [-30.0f64, -40.0, -700.0] {
        let e = t.exp();
        let series = e - e * e / 2.0 + e * e * e / 3.0;
        assert!(
            rel_close(log1pexp(t), series, 1e-14),
            "{t}: {}",
            log1pexp(t)
        );
        assert!(rel_close(Logistic.value(&[-t], 1.0), series, 1e-14));
    }
    assert_eq!(sigmoid(-800.0), 0.0);
    assert_eq!(sigmoid(800.0), 1.0);
    assert!(rel_close(sigmoid(-30.0), (-30.0f64).exp(), 1e-12));
}

#[test]
fn softmax_is_stable_at_large_margins() {
    let z = [1000.0, 1000.5, 999.0, -1000.0];
    // Shifted by hand by 1000: exp(-2000) is 0 to double precision.
    let shifted = [0.0f64, 0.5, -1.0];
    let lse = 1000.0 + shifted.iter().map(|v| v.exp()).sum::<f64>().ln();
    let p: Vec<f64> = shifted.iter().map(|v| (1000.0 + v - lse).exp()).collect();
    for y in 0..4 {
        let mut dz = [f64::NAN; 4];
        let v = Softmax.grad(&z, y as f32, &mut dz);
        assert!(close(v, lse - z[y], 1e-12), "y {y}: {v} vs {}", lse - z[y]);
        assert!(close(Softmax.value(&z, y as f32), lse - z[y], 1e-12));
        for (c, &d) in dz.iter().enumerate() {
            let expected = p.get(c).copied().unwrap_or(0.0) - if c == y { 1.0 } else { 0.0 };
            assert!(
                close(d, expected, 1e-12),
                "y {y} class {c}: {d} vs {expected}"
            );
        }
    }
    // ln 2 comes out of (-1e3 + ln 2) + 1e3, so it carries the rounding of 1e3.
    let v = Softmax.value(&[-1e3, -1e3], 0.0);
    assert!(close(v, std::f64::consts::LN_2, 1e-12), "{v}");
}

// ---------------------------------------------------------------------------------------
// Regularizers
// ---------------------------------------------------------------------------------------

fn spec(kind: RegKind) -> RegSpec {
    RegSpec {
        kind,
        lambda: 1.0,
        l1_ratio: 0.5,
        lower: 0.0,
        upper: 1.0,
        group_len: 1,
    }
}

/// Every regularizer with a range of parameters: L1/L2 strengths including 0, elastic
/// net mixes including the pure ends, boxes including degenerate and one-sided ones, group
/// lengths 1..5.
fn arb_spec() -> impl Strategy<Value = RegSpec> {
    let kind = prop::sample::select(RegKind::ALL.iter().map(|&(_, k)| k).collect::<Vec<_>>());
    let lambda = prop_oneof![1 => Just(0.0), 6 => 0.0f64..3.0];
    let ratio = prop_oneof![
        Just(0.0),
        Just(1.0),
        Just(0.5),
        Just(0.1),
        Just(0.9),
        0.0f64..1.0
    ];
    let lower = prop_oneof![1 => Just(f64::NEG_INFINITY), 6 => -3.0f64..1.0];
    let width = prop_oneof![1 => Just(0.0), 1 => Just(f64::INFINITY), 6 => 0.0f64..4.0];
    (kind, lambda, ratio, lower, width, 1usize..=5).prop_map(
        |(kind, lambda, l1_ratio, lower, width, group_len)| {
            // A box needs a finite end; (-inf, inf) is tested as NoReg already.
            let lower = if width.is_infinite() && lower.is_infinite() {
                -1.0
            } else {
                lower
            };
            let upper = if lower.is_infinite() {
                2.0
            } else {
                lower + width
            };
            RegSpec {
                kind,
                lambda,
                l1_ratio,
                lower,
                upper,
                group_len,
            }
        },
    )
}

/// The group length a spec's regularizer acts on: the group for group lasso, any short
/// vector for separable ones.
fn len_of(s: &RegSpec) -> usize {
    s.group_len
}

/// The box of feasible points of a spec, (-inf, inf) for the unconstrained ones.
fn domain(s: &RegSpec) -> (f64, f64) {
    match s.kind {
        RegKind::Box => (s.lower, s.upper),
        RegKind::Nonneg => (0.0, f64::INFINITY),
        _ => (f64::NEG_INFINITY, f64::INFINITY),
    }
}

fn prox_of<R: Regularizer>(r: &R, eta: f64, y: &[f64]) -> Vec<f64> {
    let mut p = y.to_vec();
    r.prox(eta, &mut p);
    p
}

/// The prox objective `h(z) + ||z - y||^2 / (2 eta)`.
fn prox_objective<R: Regularizer>(r: &R, eta: f64, y: &[f64], z: &[f64]) -> f64 {
    let d2: f64 = z.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum();
    r.value(z) + d2 / (2.0 * eta)
}

/// Golden-section search for the minimizer of a convex function on [a, b].
fn golden_min(f: impl Fn(f64) -> f64, mut a: f64, mut b: f64) -> f64 {
    let inv_phi = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - inv_phi * (b - a);
    let mut d = a + inv_phi * (b - a);
    let (mut fc, mut fd) = (f(c), f(d));
    while b - a > 1e-13 * (1.0 + a.abs().max(b.abs())) {
        if fc <= fd {
            b = d;
            d = c;
            fd = fc;
            c = b - inv_phi * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + inv_phi * (b - a);
            fd = f(d);
        }
    }
    // The ends may be the minimizer (a bound of a box) and the search never evaluates
    // them.
    let mid = (a + b) / 2.0;
    [a, mid, b]
        .into_iter()
        .min_by(|&u, &v| f(u).total_cmp(&f(v)))
        .unwrap()
}

/// Whether `g` is a subgradient of h at `p` (to `tol`), from the textbook
/// subdifferentials, independent of the crate's code.
fn is_subgradient(s: &RegSpec, p: &[f64], g: &[f64], tol: f64) -> Result<(), String> {
    let near = |a: f64, b: f64| (a - b).abs() <= tol * b.abs().max(1.0);
    let fail = |what: &str| Err(format!("{what}: p = {p:?}, g = {g:?}"));
    let separable = |l1: f64, l2: f64| {
        for (&pi, &gi) in p.iter().zip(g) {
            let ok = if pi == 0.0 {
                gi.abs() <= l1 * (1.0 + tol) + tol
            } else {
                near(gi, l1 * pi.signum() + l2 * pi)
            };
            if !ok {
                return fail("not l1 sign(p) + l2 p");
            }
        }
        Ok(())
    };
    match s.kind {
        RegKind::None => separable(0.0, 0.0),
        RegKind::L1 => separable(s.lambda, 0.0),
        RegKind::L2 => separable(0.0, s.lambda),
        RegKind::ElasticNet => separable(s.lambda * s.l1_ratio, s.lambda * (1.0 - s.l1_ratio)),
        RegKind::Box | RegKind::Nonneg => {
            let (lo, up) = domain(s);
            for (&pi, &gi) in p.iter().zip(g) {
                // The normal cone of [lo, up] at p.
                let ok = if !(lo..=up).contains(&pi) {
                    false
                } else if lo == up {
                    true
                } else if pi == lo {
                    gi <= tol
                } else if pi == up {
                    gi >= -tol
                } else {
                    gi.abs() <= tol
                };
                if !ok {
                    return fail("not in the normal cone of the box");
                }
            }
            Ok(())
        }
        RegKind::GroupLasso => {
            let np = norm(p);
            if np == 0.0 {
                if norm(g) <= s.lambda * (1.0 + tol) + tol {
                    Ok(())
                } else {
                    fail("||g|| > lambda at p = 0")
                }
            } else if p
                .iter()
                .zip(g)
                .all(|(&pi, &gi)| near(gi, s.lambda * pi / np))
            {
                Ok(())
            } else {
                fail("g != lambda p / ||p||")
            }
        }
    }
}

/// `p = prox(y)` is optimal: `(y - p) / eta` is a subgradient at p, the objective at p
/// is no larger than at 0 and at random points around p, and for separable regularizers
/// each coordinate matches a 1-D golden-section minimization.
fn check_prox_optimal<R: Regularizer>(
    r: R,
    s: &RegSpec,
    eta: f64,
    y: &[f64],
    seed: u64,
) -> Result<(), TestCaseError> {
    let p = prox_of(&r, eta, y);
    let g: Vec<f64> = y.iter().zip(&p).map(|(a, b)| (a - b) / eta).collect();
    if let Err(e) = is_subgradient(s, &p, &g, 1e-8) {
        return Err(TestCaseError::fail(format!("{s:?} eta {eta} y {y:?}: {e}")));
    }

    let at_p = prox_objective(&r, eta, y, &p);
    prop_assert!(at_p.is_finite(), "{s:?}: infeasible prox {p:?}");
    let slack = 1e-12 * at_p.abs().max(1.0);
    let zero = vec![0.0; y.len()];
    prop_assert!(at_p <= prox_objective(&r, eta, y, &zero) + slack);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    for scale in [1e-3, 1e-2, 1e-1, 1.0] {
        for _ in 0..16 {
            let z: Vec<f64> = p
                .iter()
                .map(|v| v + scale * rng.random_range(-1.0..1.0))
                .collect();
            let at_z = prox_objective(&r, eta, y, &z);
            prop_assert!(
                at_p <= at_z + slack,
                "{s:?} eta {eta} y {y:?}: {at_p} at prox {p:?} > {at_z} at {z:?}"
            );
        }
    }

    if r.group_len() == 1 {
        let (lo, up) = domain(s);
        for (&yi, &pi) in y.iter().zip(&p) {
            // The minimizer lies between 0 and y, or for a box between y and the box;
            // the bracket holds both with a margin, then is cut to the box.
            let finite_or_0 = |v: f64| if v.is_finite() { v } else { 0.0 };
            let a = (yi.min(0.0).min(finite_or_0(up)) - 1.0).max(lo);
            let b = (yi.max(0.0).max(finite_or_0(lo)) + 1.0).min(up);
            let best = golden_min(|z| prox_objective(&r, eta, &[yi], &[z]), a, b);
            prop_assert!(
                close(pi, best, 1e-6),
                "{s:?} eta {eta} y {yi}: prox {pi} vs brute force {best}"
            );
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn prox_is_the_minimizer(
        (s, y) in arb_spec().prop_flat_map(|s| (Just(s), prop::collection::vec(-10.0f64..10.0, len_of(&s)))),
        eta in prop_oneof![Just(1e-3), 1e-3f64..2.0],
        seed in any::<u64>(),
    ) {
        with_reg!(s, |r| check_prox_optimal(r, &s, eta, &y, seed))?;
    }

    #[test]
    fn prox_is_nonexpansive(
        (s, a, b) in arb_spec().prop_flat_map(|s| {
            let v = prop::collection::vec(-10.0f64..10.0, len_of(&s));
            (Just(s), v.clone(), v)
        }),
        eta in 1e-3f64..5.0,
    ) {
        let (pa, pb) = with_reg!(s, |r| (prox_of(&r, eta, &a), prox_of(&r, eta, &b)));
        let dp: Vec<f64> = pa.iter().zip(&pb).map(|(u, v)| u - v).collect();
        let d: Vec<f64> = a.iter().zip(&b).map(|(u, v)| u - v).collect();
        prop_assert!(norm(&dp) <= norm(&d) * (1.0 + 1e-12) + 1e-12, "{s:?}: {pa:?} {pb:?}");
    }

    /// Group lasso on groups of one coordinate is L1.
    #[test]
    fn group_lasso_of_singletons_is_l1(y in -10.0f64..10.0, lambda in 0.0f64..3.0, eta in 1e-3f64..5.0) {
        let g = prox_of(&GroupLasso { lambda, len: 1 }, eta, &[y]);
        let l = prox_of(&L1 { lambda }, eta, &[y]);
        prop_assert!(close(g[0], l[0], 1e-12));
    }
}

#[test]
fn values_at_known_points() {
    let x = [1.0, -3.0];
    assert_eq!(NoReg.value(&x), 0.0);
    assert_eq!(L1 { lambda: 2.0 }.value(&x), 8.0);
    assert_eq!(L2 { lambda: 2.0 }.value(&x), 10.0);
    assert_eq!(
        ElasticNet { l1: 1.0, l2: 4.0 }.value(&[1.0, -2.0]),
        3.0 + 10.0
    );
    let unit = BoxConstraint {
        lower: 0.0,
        upper: 1.0,
    };
    assert_eq!(unit.value(&[0.0, 0.5, 1.0]), 0.0);
    assert_eq!(unit.value(&[0.5, 1.5]), f64::INFINITY);
    assert_eq!(unit.value(&[-0.5]), f64::INFINITY);
    let nonneg = BoxConstraint {
        lower: 0.0,
        upper: f64::INFINITY,
    };
    assert_eq!(nonneg.value(&[0.0, 1e300]), 0.0);
    assert_eq!(nonneg.value(&[1.0, -1e-3]), f64::INFINITY);
    let gl = GroupLasso {
        lambda: 2.0,
        len: 2,
    };
    assert_eq!(
        gl.value(&[3.0, 4.0, 0.0, 0.0, 1.0, 0.0]),
        2.0 * (5.0 + 0.0 + 1.0)
    );
    assert_eq!(
        GroupLasso {
            lambda: 1.0,
            len: 3
        }
        .value(&[1.0, 2.0, 2.0, 0.0, 3.0, 4.0]),
        8.0
    );
}

#[test]
fn prox_at_known_points() {
    assert_eq!(
        prox_of(&L1 { lambda: 2.0 }, 0.5, &[3.0, -3.0, 0.5, -1.0]),
        [2.0, -2.0, 0.0, 0.0]
    );
    assert_eq!(prox_of(&L2 { lambda: 3.0 }, 1.0, &[4.0, -2.0]), [1.0, -0.5]);
    // Shrink by 1 then scale by 1/2.
    assert_eq!(
        prox_of(&ElasticNet { l1: 2.0, l2: 2.0 }, 0.5, &[5.0, -0.9]),
        [2.0, 0.0]
    );
    let b = BoxConstraint {
        lower: -1.0,
        upper: 2.0,
    };
    assert_eq!(prox_of(&b, 7.0, &[-3.0, 0.5, 9.0]), [-1.0, 0.5, 2.0]);
    let nonneg = BoxConstraint {
        lower: 0.0,
        upper: f64::INFINITY,
    };
    assert_eq!(prox_of(&nonneg, 1.0, &[-3.0, 1e300]), [0.0, 1e300]);
    // ||(3, 4)|| = 5 shrinks to 4.
    let p = prox_of(
        &GroupLasso {
            lambda: 2.0,
            len: 2,
        },
        0.5,
        &[3.0, 4.0],
    );
    assert!(close(p[0], 2.4, 1e-15) && close(p[1], 3.2, 1e-15), "{p:?}");
    assert_eq!(
        prox_of(
            &GroupLasso {
                lambda: 2.0,
                len: 2
            },
            2.5,
            &[3.0, 4.0]
        ),
        [0.0, 0.0]
    );
}

// ---------------------------------------------------------------------------------------
// Skipped prox steps in closed form
// ---------------------------------------------------------------------------------------

/// The running sums after each prefix of `etas`: `sums[t]` is the state before step t.
fn history<R: Regularizer>(r: &R, etas: &[f64]) -> Vec<StepSums> {
    let mut sums = vec![StepSums::default()];
    for &eta in etas {
        let last = *sums.last().unwrap();
        sums.push(r.advance(last, eta));
    }
    sums
}

fn skipped<R: Regularizer>(
    r: &R,
    x: &[f64],
    etas: &[f64],
    sums: &[StepSums],
    t0: usize,
    t1: usize,
) -> Vec<f64> {
    let mut v = x.to_vec();
    r.prox_skipped(&mut v, &etas[t0..t1], sums[t0], sums[t1]);
    v
}

fn looped<R: Regularizer>(r: &R, x: &[f64], etas: &[f64]) -> Vec<f64> {
    let mut v = x.to_vec();
    for &eta in etas {
        r.prox(eta, &mut v);
    }
    v
}

fn all_close(a: &[f64], b: &[f64], tol: f64) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(&u, &v)| close(u, v, tol))
}

/// `prox_skipped` over t0..t1 equals the loop of `prox`, and skipping t0..t1 then t1..t2
/// equals skipping t0..t2. `cuts` are fractions of the history choosing t0 <= t1 <= t2.
fn check_skipped<R: Regularizer>(
    r: R,
    s: &RegSpec,
    x: &[f64],
    etas: &[f64],
    cuts: [f64; 3],
) -> Result<(), TestCaseError> {
    let sums = history(&r, etas);
    let mut t: Vec<usize> = cuts
        .iter()
        .map(|c| (c * etas.len() as f64).round() as usize)
        .collect();
    t.sort_unstable();
    let (t0, t1, t2) = (t[0], t[1], t[2]);

    let closed = skipped(&r, x, etas, &sums, t0, t1);
    let reference = looped(&r, x, &etas[t0..t1]);
    prop_assert!(
        all_close(&closed, &reference, 1e-9),
        "{s:?}: steps {t0}..{t1} of {}: closed form {closed:?} vs loop {reference:?}",
        etas.len()
    );

    let split = skipped(&r, &closed, etas, &sums, t1, t2);
    let whole = skipped(&r, x, etas, &sums, t0, t2);
    prop_assert!(
        all_close(&split, &whole, 1e-9),
        "{s:?}: {t0}..{t1}..{t2} split {split:?} vs whole {whole:?}"
    );
    Ok(())
}

proptest! {
    #[test]
    fn skipped_steps_equal_looped_prox(
        (s, x) in arb_spec().prop_flat_map(|s| (Just(s), prop::collection::vec(-50.0f64..50.0, len_of(&s)))),
        etas in prop::collection::vec(prop_oneof![1e-4f64..1.0, 1e-4f64..1e-2], 0..200),
        cuts in [0.0f64..=1.0, 0.0f64..=1.0, 0.0f64..=1.0],
    ) {
        with_reg!(s, |r| check_skipped(r, &s, &x, &etas, cuts))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Long runs of steps, where rounding in the running sums accumulates and, with
    /// larger steps, the decay sum D reaches the thousands.
    #[test]
    fn skipped_steps_equal_looped_prox_over_long_histories(
        (s, x) in arb_spec().prop_flat_map(|s| (Just(s), prop::collection::vec(-50.0f64..50.0, len_of(&s)))),
        base in prop_oneof![1e-4f64..1e-2, 1e-2f64..0.5],
        seed in any::<u64>(),
        cuts in [0.0f64..=1.0, 0.0f64..=1.0, 0.0f64..=1.0],
    ) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let etas: Vec<f64> = (0..10_000).map(|_| base * rng.random_range(0.5..1.5)).collect();
        with_reg!(s, |r| check_skipped(r, &s, &x, &etas, cuts))?;
    }
}

/// L1 with a drift `a` (the SVRG snapshot gradient a coordinate gets when it is not in
/// the minibatch) and a step factor `d`: the closed form over steps `t0..t1` against the
/// loop `x <- soft_threshold(x - d eta a, d eta lambda)`, with equal steps (where the
/// closed form first tries where the mean step puts the crossing of 0), nearly equal
/// and decaying ones, and drifts on both sides of lambda.
fn check_drift(
    x: f64,
    a: f64,
    d: f64,
    lambda: f64,
    etas: &[f64],
    t0: usize,
    t1: usize,
) -> Result<(), TestCaseError> {
    let r = L1 { lambda };
    let mut sums = vec![0.0];
    for &eta in etas {
        sums.push(sums.last().unwrap() + eta);
    }
    let closed = r.prox_skipped_drift(x, a, d, t0, t1, &|t| sums[t]);
    let mut reference = x;
    for &eta in &etas[t0..t1] {
        let e = d * eta;
        let v = reference - e * a;
        reference = v.signum() * (v.abs() - e * lambda).max(0.0);
    }
    prop_assert!(
        close(closed, reference, 1e-9),
        "x {x} a {a} d {d} lambda {lambda}, steps {t0}..{t1}: closed form {closed} vs loop {reference}"
    );
    Ok(())
}

proptest! {
    #[test]
    fn skipped_l1_steps_with_drift_equal_the_loop(
        x in prop_oneof![-5.0f64..5.0, Just(0.0)],
        a in prop_oneof![-2.0f64..2.0, -0.1f64..0.1],
        d in 0.1f64..10.0,
        lambda in 0.0f64..0.2,
        eta in 1e-4f64..0.05,
        kind in 0..3usize,
        seed in any::<u64>(),
        cuts in [0.0f64..=1.0, 0.0f64..=1.0],
    ) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let etas: Vec<f64> = (0..400)
            .map(|t| match kind {
                0 => eta,
                1 => eta * rng.random_range(0.99..1.01),
                _ => eta / (1.0 + t as f64 / 50.0).sqrt(),
            })
            .collect();
        let (t0, t1) = {
            let mut t = cuts.map(|c| (c * etas.len() as f64).round() as usize);
            t.sort_unstable();
            (t[0], t[1])
        };
        check_drift(x, a, d, lambda, &etas, t0, t1)?;
    }
}

/// The crossing of 0 at each possible step of a span of equal steps, and the cases
/// around it: landing on 0 exactly, resting at 0, and drifts of exactly lambda.
#[test]
fn skipped_l1_steps_with_drift_cross_zero_at_every_step() {
    let etas = vec![0.125; 64];
    for k in 0..64 {
        for x in [k as f64 * 0.125 * 1.5, (k as f64 + 0.5) * 0.125 * 1.5] {
            for (a, lambda) in [(1.0, 0.5), (0.5, 0.5), (0.25, 0.5), (-1.0, 0.5), (1.0, 0.0)] {
                for (t0, t1) in [(0, 64), (3, 40), (10, 11)] {
                    check_drift(x, a, 1.0, lambda, &etas, t0, t1).unwrap();
                    check_drift(-x, -a, 2.0, lambda, &etas, t0, t1).unwrap();
                }
            }
        }
    }
}

/// A block that has taken many steps with a squared-L2 part: sum ln(1 + eta l2) grows
/// without bound over a run (here to ~2000), past where exp of it overflows. The
/// closed form must stay exact, not turn into 0 or NaN.
#[test]
fn skipped_steps_stay_exact_when_the_decay_is_huge() {
    let etas = vec![0.5; 5000];
    let x = [100.0, -40.0, 0.3];
    for s in [
        RegSpec {
            kind: RegKind::ElasticNet,
            lambda: 1.1,
            l1_ratio: 1.0 / 11.0,
            ..spec(RegKind::ElasticNet)
        },
        RegSpec {
            kind: RegKind::L2,
            lambda: 1.0,
            ..spec(RegKind::L2)
        },
    ] {
        with_reg!(s, |r| {
            let sums = history(&r, &etas);
            for (t0, t1) in [
                (0, 5000),
                (4990, 5000),
                (1700, 1720),
                (2500, 2501),
                (3000, 3000),
            ] {
                let closed = skipped(&r, &x, &etas, &sums, t0, t1);
                let reference = looped(&r, &x, &etas[t0..t1]);
                assert!(
                    all_close(&closed, &reference, 1e-9) && closed.iter().all(|v| v.is_finite()),
                    "{s:?} steps {t0}..{t1}: closed form {closed:?} vs loop {reference:?}"
                );
            }
        });
    }
}

/// Elastic net in closed form by hand: two steps of eta = 1 with l1 = 1, l2 = 1 take
/// 10 -> (10 - 1) / 2 = 4.5 -> (4.5 - 1) / 2 = 1.75.
#[test]
fn elastic_net_closed_form_by_hand() {
    let r = ElasticNet { l1: 1.0, l2: 1.0 };
    let etas = [1.0, 1.0];
    let sums = history(&r, &etas);
    let two = skipped(&r, &[10.0, -10.0, 2.0], &etas, &sums, 0, 2);
    assert!(all_close(&two, &[1.75, -1.75, 0.0], 1e-14), "{two:?}");
    let one = skipped(&r, &[10.0], &etas, &sums, 1, 2);
    assert!(all_close(&one, &[4.5], 1e-14), "{one:?}");
    assert_eq!(skipped(&r, &[10.0], &etas, &sums, 1, 1), [10.0]);
}

// ---------------------------------------------------------------------------------------
// Dispatch and names
// ---------------------------------------------------------------------------------------

#[test]
fn with_reg_dispatches_on_the_kind() {
    let base = RegSpec {
        kind: RegKind::None,
        lambda: 2.0,
        l1_ratio: 0.25,
        lower: -1.0,
        upper: 0.5,
        group_len: 2,
    };
    let x = [0.3, -0.4];
    // Group lasso shrinks ||(-0.7, 0.9)|| = sqrt(1.3) by eta lambda = 0.2.
    let shrink = 1.0 - 0.2 / 1.3f64.sqrt();
    // (h(x), h at a point outside [-1, 0.5] and below 0, group length, prox(0.1, (-0.7, 0.9)))
    let cases: [(RegKind, f64, f64, usize, [f64; 2]); 7] = [
        (RegKind::None, 0.0, 0.0, 1, [-0.7, 0.9]),
        (RegKind::L1, 2.0 * 0.7, 2.0 * 1.4, 1, [-0.5, 0.7]),
        (RegKind::L2, 0.25, 1.0, 1, [-0.7 / 1.2, 0.9 / 1.2]),
        // l1 = 0.5, l2 = 1.5
        (
            RegKind::ElasticNet,
            0.5 * 0.7 + 0.75 * 0.25,
            0.5 * 1.4 + 0.75 * 1.0,
            1,
            [-0.65 / 1.15, 0.85 / 1.15],
        ),
        (RegKind::Nonneg, f64::INFINITY, f64::INFINITY, 1, [0.0, 0.9]),
        (RegKind::Box, 0.0, f64::INFINITY, 1, [-0.7, 0.5]),
        (
            RegKind::GroupLasso,
            2.0 * 0.5,
            2.0 * 1.0,
            2,
            [-0.7 * shrink, 0.9 * shrink],
        ),
    ];
    let outside = [0.6, -0.8];
    for (kind, h, h_outside, len, prox) in cases {
        let s = RegSpec { kind, ..base };
        let got = with_reg!(s, |r| r.value(&x));
        assert!(
            got == h || close(got, h, 1e-14),
            "{kind:?}: h(x) = {got}, expected {h}"
        );
        let got = with_reg!(s, |r| r.value(&outside));
        assert!(
            got == h_outside || close(got, h_outside, 1e-14),
            "{kind:?}: {got} vs {h_outside}"
        );
        assert_eq!(with_reg!(s, |r| r.group_len()), len, "{kind:?}");
        let got = with_reg!(s, |r| prox_of(&r, 0.1, &[-0.7, 0.9]));
        assert!(
            all_close(&got, &prox, 1e-14),
            "{kind:?}: prox {got:?}, expected {prox:?}"
        );
    }
}

#[test]
fn with_loss_dispatches_on_the_kind() {
    let z = [0.3, -0.2];
    let lse = (0.3f64.exp() + (-0.2f64).exp()).ln();
    let cases = [
        (LossKind::Logistic, (1.0 + (-0.3f64).exp()).ln()),
        (LossKind::Squared, 0.7 * 0.7 / 2.0),
        (LossKind::SquaredHinge, 0.7 * 0.7),
        (LossKind::Softmax, lse + 0.2),
        // |r| = 0.7 lies within the default delta 1: r^2 / 2.
        (LossKind::Huber, 0.7 * 0.7 / 2.0),
    ];
    for (kind, expected) in cases {
        let got = with_loss!(kind, |l| l.value(&z, 1.0));
        assert!(close(got, expected, 1e-14), "{kind:?}: {got} vs {expected}");
    }
    // The parameter reaches the loss: beyond delta 0.5, 0.5 (0.7 - 0.25).
    let spec = asyb::model::loss::LossSpec::new(LossKind::Huber, Some(0.5));
    let got = with_loss!(spec, |l| l.value(&z, 1.0));
    assert!(close(got, 0.225, 1e-14), "{got}");
}

/// Every registered loss: its facts are consistent, `with_param` of its default is its
/// default value, and its curvature bound holds: the derivative changes by at most
/// `curvature` times the change of the margin along random directions.
#[test]
fn every_loss_keeps_its_curvature_bound() {
    use asyb::model::loss::{Labels, LossSpec};
    let mut rng_state = 0x1234_5678_u64;
    let mut next = move || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        (rng_state >> 11) as f64 / (1u64 << 53) as f64
    };
    for (name, kind) in LossKind::ALL {
        let info = kind.info();
        assert_eq!(info.name, name);
        assert!(info.curvature > 0.0 && info.curvature.is_finite(), "{name}");
        if let Some(p) = info.param {
            assert!(p.default > 0.0 && p.default.is_finite(), "{name}");
            assert_eq!(LossSpec::from(kind).param, p.default);
        }
        let k = if info.labels == Labels::Classes { 3 } else { 1 };
        for _ in 0..2000 {
            let z: Vec<f64> = (0..k).map(|_| 8.0 * next() - 4.0).collect();
            let dir: Vec<f64> = (0..k).map(|_| next() - 0.5).collect();
            let t = 1e-3 * next();
            let y = match info.labels {
                Labels::Binary => {
                    if next() < 0.5 {
                        -1.0
                    } else {
                        1.0
                    }
                }
                Labels::Real => (6.0 * next() - 3.0) as f32,
                Labels::Classes => (next() * 3.0).floor().min(2.0) as f32,
            };
            let z2: Vec<f64> = z.iter().zip(&dir).map(|(a, d)| a + t * d).collect();
            let (mut g1, mut g2) = (vec![0.0; k], vec![0.0; k]);
            with_loss!(kind, |l| {
                l.grad(&z, y, &mut g1);
                l.grad(&z2, y, &mut g2);
            });
            // <g2 - g1, dir> <= curvature * t * |dir|^2 (the second derivative along dir).
            let along: f64 = g2
                .iter()
                .zip(&g1)
                .zip(&dir)
                .map(|((a, b), d)| (a - b) * d)
                .sum();
            let dd: f64 = dir.iter().map(|d| d * d).sum();
            assert!(
                along <= info.curvature * t * dd * (1.0 + 1e-9) + 1e-15,
                "{name}: {along} > {} at z {z:?}",
                info.curvature * t * dd
            );
        }
    }
}

#[test]
fn loss_names_round_trip() {
    assert_eq!(LossKind::ALL.len(), 5);
    for (name, kind) in LossKind::ALL {
        assert_eq!(name.parse::<LossKind>(), Ok(kind));
        assert_eq!(kind.name(), name);
        // Config files name it the same way as the command line.
        assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
    }
    assert!(LossKind::Logistic.is_binary() && LossKind::SquaredHinge.is_binary());
    assert!(!LossKind::Squared.is_binary() && !LossKind::Softmax.is_binary());
    assert!(!LossKind::Huber.is_binary());
    for bad in ["hinge", "", "Logistic", "logistic "] {
        let err = bad.parse::<LossKind>().unwrap_err();
        assert!(err.contains(&format!("'{bad}'")), "{err}");
        for (name, _) in LossKind::ALL {
            assert!(err.contains(name), "{err} does not list {name}");
        }
    }
}

#[test]
fn reg_names_round_trip() {
    assert_eq!(RegKind::ALL.len(), 7);
    for (name, kind) in RegKind::ALL {
        assert_eq!(name.parse::<RegKind>(), Ok(kind));
        assert_eq!(kind.name(), name);
        assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
    }
    for bad in ["l3", "", "elastic_net", "group"] {
        let err = bad.parse::<RegKind>().unwrap_err();
        assert!(err.contains(&format!("'{bad}'")), "{err}");
        for (name, _) in RegKind::ALL {
            assert!(err.contains(name), "{err} does not list {name}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Convex conjugates (the duality gap's dual objective)
// ---------------------------------------------------------------------------------------

/// Every registered loss has a conjugate, and it is the right one. Fenchel-Young holds
/// with equality at a derivative, `loss(z) + loss*(theta) = <theta, z>` for
/// `theta = d loss / d z`, and as an inequality at every other point of the domain,
/// `loss*(theta') >= <theta', z> - loss(z)`. Together they pin `loss*` down on the domain:
/// it is the supremum, and every derivative attains it.
#[test]
fn every_loss_conjugate_meets_fenchel_young() {
    use asyb::model::loss::Labels;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(31);
    for (name, kind) in LossKind::ALL {
        let info = kind.info();
        let k = if info.labels == Labels::Classes { 3 } else { 1 };
        for _ in 0..3000 {
            let y = match info.labels {
                Labels::Binary => {
                    if rng.random_bool(0.5) {
                        -1.0
                    } else {
                        1.0
                    }
                }
                Labels::Real => rng.random_range(-3.0..3.0f32),
                Labels::Classes => rng.random_range(0..3u8) as f32,
            };
            let z: Vec<f64> = (0..k).map(|_| rng.random_range(-12.0..12.0)).collect();
            let z2: Vec<f64> = (0..k).map(|_| rng.random_range(-12.0..12.0)).collect();
            let t: f64 = rng.random_range(0.0..=1.0);
            let (mut g, mut g2) = (vec![0.0; k], vec![0.0; k]);
            let (value, at, at_scaled) = with_loss!(kind, |l| {
                let value = l.grad(&z, y, &mut g);
                l.grad(&z2, y, &mut g2);
                g2.iter_mut().for_each(|v| *v *= t);
                (value, l.conjugate(&g, y), l.conjugate(&g2, y))
            });
            let (Some(at), Some(at_scaled)) = (at, at_scaled) else {
                panic!("{name}: no conjugate");
            };
            let dot = |a: &[f64]| a.iter().zip(&z).map(|(a, b)| a * b).sum::<f64>();
            let scale = 1.0 + value.abs() + dot(&g).abs();
            assert!(
                (value + at - dot(&g)).abs() <= 1e-12 * scale,
                "{name}: loss {value} + loss* {at} != <theta, z> {} at z {z:?} y {y}",
                dot(&g)
            );
            assert!(
                at_scaled >= dot(&g2) - value - 1e-12 * (1.0 + dot(&g2).abs() + value),
                "{name}: loss*({g2:?}) = {at_scaled} below <theta, z> - loss {}",
                dot(&g2) - value
            );
        }
        // Every domain holds 0 (the dual point of rows with a zero derivative).
        let zero = vec![0.0; k];
        let at0 = with_loss!(kind, |l| l.conjugate(&zero, 0.0));
        assert!(
            at0.is_some_and(f64::is_finite),
            "{name}: loss*(0) = {at0:?}"
        );
    }
}

/// Every regularizer's conjugate by the same two Fenchel-Young conditions, with the
/// subgradient its prox gives: `p = prox_{eta h}(y)` has `(y - p) / eta` in the
/// subdifferential at `p`, so `h(p) + h*(v) = <v, p>` there (after `dual_scale`, which
/// only absorbs rounding here), and `h*(s u) >= <s u, x> - h(x)` at every feasible `x`
/// for any `u` and its scale `s`. The scale is the largest that keeps `h*` finite.
fn check_conjugate<R: Regularizer>(
    r: &R,
    s: &RegSpec,
    eta: f64,
    y: &[f64],
    u: &[f64],
    x: &[f64],
) -> Result<(), TestCaseError> {
    let p = prox_of(r, eta, y);
    let v: Vec<f64> = y.iter().zip(&p).map(|(a, b)| (a - b) / eta).collect();
    let sv = r.dual_scale(&v);
    prop_assert!(sv >= 1.0 - 1e-9, "{s:?}: a subgradient scaled by {sv}");
    let v: Vec<f64> = v.iter().map(|a| a * sv).collect();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f64>();
    let hp = r.value(&p);
    let conj = r.conjugate(&v);
    let scale = 1.0 + hp.abs() + dot(&v, &p).abs() + conj.abs();
    prop_assert!(
        (hp + conj - dot(&v, &p)).abs() <= 1e-9 * scale,
        "{s:?}: h(p) {hp} + h*(v) {conj} != <v, p> {} (p {p:?}, v {v:?})",
        dot(&v, &p)
    );
    let su = r.dual_scale(u);
    prop_assert!((0.0..=1.0).contains(&su), "{s:?}: scale {su}");
    let w: Vec<f64> = u.iter().map(|a| a * su).collect();
    let conj = r.conjugate(&w);
    prop_assert!(conj.is_finite(), "{s:?}: h*({w:?}) = {conj} after scaling");
    let (lo, hi) = domain(s);
    let x: Vec<f64> = x.iter().map(|a| a.clamp(lo, hi)).collect();
    let bound = dot(&w, &x) - r.value(&x);
    prop_assert!(
        conj >= bound - 1e-9 * (1.0 + bound.abs()),
        "{s:?}: h*({w:?}) = {conj} below <w, x> - h(x) = {bound} at {x:?}"
    );
    if su > 0.0 && su < 1.0 {
        let w: Vec<f64> = u.iter().map(|a| a * (su * (1.0 + 1e-6)).min(1.0)).collect();
        prop_assert!(
            r.conjugate(&w).is_infinite(),
            "{s:?}: scale {su} of {u:?} is not the largest"
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn reg_conjugate_meets_fenchel_young(
        (s, y, u, x) in arb_spec().prop_flat_map(|s| {
            let v = || prop::collection::vec(-10.0f64..10.0, len_of(&s));
            (Just(s), v(), v(), v())
        }),
        eta in prop_oneof![Just(1e-3), 1e-3f64..2.0],
    ) {
        with_reg!(s, |r| check_conjugate(&r, &s, eta, &y, &u, &x))?;
    }
}
