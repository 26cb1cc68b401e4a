//! Convergence plots: one SVG with four panels, the objective Psi and the squared norm of
//! the prox-gradient mapping ||P(x)||^2 (the paper's convergence measure), each against
//! training time and against block updates, one curve per run.
//!
//! Reads finished [`EvalRecord`]s only; knows nothing of training. Psi is drawn as the
//! gap `Psi - Psi*` on a log axis when a reference optimum `Psi*` is known (the gap is
//! what falls geometrically or as a power law), otherwise as Psi on a linear axis;
//! ||P||^2 is always on a log axis. Input is untrusted: records that cannot be placed
//! (NaN, infinities, values beyond [`MAX_MAGNITUDE`]) are skipped, values at or below
//! zero on a log axis are raised to a floor just under the smallest positive value, and
//! degenerate ranges (one record, constant values) are widened, so that any records
//! give a readable file and never a panic.

use std::path::Path;

use anyhow::{anyhow, Context};
use asyb::monitor::EvalRecord;
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

/// One run's curve: its legend label and its evaluation records in order.
pub struct Series<'a> {
    pub label: String,
    pub records: &'a [EvalRecord],
}

/// Size of the whole figure in pixels.
const SIZE: (u32, u32) = (1280, 960);

/// Values beyond this magnitude are not plotted: they are divergence, not progress, and
/// would squash every other curve. Its inverse is the lowest floor of a log axis. The
/// margin inside f64's range keeps range padding and tick arithmetic finite: plotters'
/// log axis loops for ever when the ratio of its ends overflows to infinity.
const MAX_MAGNITUDE: f64 = 1e150;

/// Most decades a log axis spans (see [`MAX_MAGNITUDE`] for why it must be bounded).
const MAX_DECADES: f64 = 300.0;

/// Tick intervals per axis at most (plotters is asked for one label more than this).
const TICKS: usize = 5;

/// Curves with at most this many points also get a marker at each point, so that a run
/// with a single evaluation still shows up.
const MARKER_MAX_POINTS: usize = 60;

/// Colors of successive series (Okabe-Ito, distinguishable with color-vision deficiency).
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

/// Writes the four-panel figure of `series` to `path` atomically. `psi_star`, when
/// given, is the reference optimum subtracted from Psi before plotting it on a log axis.
pub fn write_svg(
    path: &Path,
    title: &str,
    series: &[Series],
    psi_star: Option<f64>,
) -> anyhow::Result<()> {
    save(path, render_svg(title, series, psi_star))
}

/// Writes a rendered figure atomically, or says which figure could not be drawn.
fn save(path: &Path, svg: anyhow::Result<String>) -> anyhow::Result<()> {
    let svg = svg.with_context(|| format!("cannot draw the plot {}", path.display()))?;
    asyb::io::atomic_write(path, |w| {
        w.write_all(svg.as_bytes()).map_err(asyb::io::io_err(path))
    })?;
    Ok(())
}

/// The speedup figure: measured time-to-target speedup against the number of workers,
/// with the ideal line `speedup = W / base` through the base count's point. `points`
/// are `(W, speedup)`; non-finite ones are skipped.
pub fn write_speedup_svg(
    path: &Path,
    title: &str,
    base: usize,
    points: &[(f64, f64)],
) -> anyhow::Result<()> {
    save(path, render_speedup_svg(title, base, points))
}

fn render_speedup_svg(title: &str, base: usize, points: &[(f64, f64)]) -> anyhow::Result<String> {
    let base = base.max(1) as f64;
    let measured: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(w, s)| w.is_finite() && s.is_finite() && *w > 0.0 && s.abs() < MAX_MAGNITUDE)
        .collect();
    let max_w = measured.iter().map(|p| p.0).fold(1.0, f64::max);
    let max_y = measured.iter().map(|p| p.1).fold(max_w / base, f64::max);
    let curves = [
        Curve {
            label: "measured",
            color: PALETTE[0],
            points: measured.clone(),
        },
        Curve {
            label: "ideal (linear in W)",
            color: RGBColor(150, 150, 150),
            points: vec![(base, 1.0), (max_w.max(base), max_w.max(base) / base)],
        },
    ];
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let body = root
            .titled(&printable(title), ("sans-serif", 22))
            .map_err(plot_err)?;
        let x_hi = max_w * 1.05 + 0.05;
        let y_hi = max_y * 1.05 + 0.05;
        let y_title = format!("speedup over W = {base}");
        chart(
            &body,
            ("workers W", &y_title, "time to target"),
            (0.0..x_hi, x_hi / TICKS as f64),
            0.0..y_hi,
            &|v| tick_label(*v, y_hi / TICKS as f64),
            &curves,
        )?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// The rate figure: log10 of the mean ||P||^2 against log10 K, one curve per worker
/// count, with a reference line of slope -1/2 through the first curve's first point.
/// Points that are not finite and positive are skipped.
pub fn write_rate_svg(
    path: &Path,
    title: &str,
    curves: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    save(path, render_rate_svg(title, curves))
}

fn render_rate_svg(title: &str, curves: &[(String, Vec<(f64, f64)>)]) -> anyhow::Result<String> {
    let logs: Vec<(String, Vec<(f64, f64)>)> = curves
        .iter()
        .map(|(label, pts)| {
            let p = pts
                .iter()
                .filter(|(k, y)| k.is_finite() && *k > 0.0 && y.is_finite() && *y > 0.0)
                .map(|(k, y)| (k.log10(), y.log10()))
                .filter(|(x, y)| x.abs() < 300.0 && y.abs() < 300.0)
                .collect();
            (printable(label), p)
        })
        .collect();
    let mut lines: Vec<Curve> = logs
        .iter()
        .enumerate()
        .map(|(i, (label, points))| Curve {
            label,
            color: PALETTE[i % PALETTE.len()],
            points: points.clone(),
        })
        .collect();
    let all: Vec<(f64, f64)> = logs.iter().flat_map(|c| c.1.iter().copied()).collect();
    let (x_lo, x_hi) = extent(all.iter().map(|p| p.0));
    if let Some(&(x0, y0)) = logs.first().and_then(|c| c.1.first()) {
        lines.push(Curve {
            label: "slope -1/2",
            color: RGBColor(150, 150, 150),
            points: vec![(x0, y0), (x_hi, y0 - 0.5 * (x_hi - x0))],
        });
    }
    let ys = lines.iter().flat_map(|c| c.points.iter().map(|p| p.1));
    let (y_lo, y_hi) = extent(ys);
    let pad = |lo: f64, hi: f64| {
        if lo > hi {
            // No points: an empty unit frame.
            return (0.0, 1.0);
        }
        let w = (hi - lo).max(0.5);
        (lo - 0.1 * w, hi + 0.1 * w)
    };
    let ((x_lo, x_hi), (y_lo, y_hi)) = (pad(x_lo, x_hi), pad(y_lo, y_hi));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 650)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let body = root
            .titled(&printable(title), ("sans-serif", 16))
            .map_err(plot_err)?;
        chart(
            &body,
            ("log10 K (block updates)", "log10 mean ||P(x^k)||^2", "rate"),
            (x_lo..x_hi, (x_hi - x_lo) / TICKS as f64),
            y_lo..y_hi,
            &|v| tick_label(*v, (y_hi - y_lo) / TICKS as f64),
            &lines,
        )?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

#[derive(Clone, Copy)]
enum XAxis {
    TrainSecs,
    Updates,
}

#[derive(Clone, Copy)]
enum YAxis {
    /// Psi, or Psi - Psi* when the optimum is known.
    Psi,
    PgmSqNorm,
}

/// What one panel plots.
struct Panel {
    x: XAxis,
    y: YAxis,
}

/// One series' points in one panel.
struct Curve<'a> {
    label: &'a str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

fn render_svg(title: &str, series: &[Series], psi_star: Option<f64>) -> anyhow::Result<String> {
    // A non-finite optimum would turn every gap into NaN; plot Psi itself instead.
    let psi_star = psi_star.filter(|s| s.is_finite() && s.abs() < MAX_MAGNITUDE);
    let labels: Vec<String> = series.iter().map(|s| printable(&s.label)).collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let body = root
            .titled(&printable(title), ("sans-serif", 26))
            .map_err(plot_err)?;
        let panels = [
            Panel {
                x: XAxis::TrainSecs,
                y: YAxis::Psi,
            },
            Panel {
                x: XAxis::Updates,
                y: YAxis::Psi,
            },
            Panel {
                x: XAxis::TrainSecs,
                y: YAxis::PgmSqNorm,
            },
            Panel {
                x: XAxis::Updates,
                y: YAxis::PgmSqNorm,
            },
        ];
        for (area, panel) in body.split_evenly((2, 2)).iter().zip(&panels) {
            let log_y = psi_star.is_some() || matches!(panel.y, YAxis::PgmSqNorm);
            let curves: Vec<Curve> = series
                .iter()
                .zip(&labels)
                .enumerate()
                .map(|(i, (s, label))| Curve {
                    label,
                    color: PALETTE[i % PALETTE.len()],
                    points: points(s.records, panel, psi_star),
                })
                .filter(|c| !c.points.is_empty())
                .collect();
            draw_panel(area, panel, psi_star, log_y, curves)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

fn plot_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> anyhow::Error {
    anyhow!("plotting failed: {e}")
}

/// The label with control characters replaced, since they are not allowed in SVG text.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The plottable points of `records` in `panel`: x and y finite and within
/// [`MAX_MAGNITUDE`]. Values for a log axis are floored later, per panel (see
/// [`floor_log`]).
fn points(records: &[EvalRecord], panel: &Panel, psi_star: Option<f64>) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter_map(|r| {
            let x = match panel.x {
                XAxis::TrainSecs => r.train_secs,
                XAxis::Updates => r.updates as f64,
            };
            let y = match panel.y {
                YAxis::Psi => r.psi - psi_star.unwrap_or(0.0),
                YAxis::PgmSqNorm => r.pgm_sq_norm,
            };
            let placeable = |v: f64| v.is_finite() && v.abs() <= MAX_MAGNITUDE;
            (placeable(x) && placeable(y)).then_some((x, y))
        })
        .collect()
}

/// Raises every y at or below the floor of a log axis to it: a tenth of the smallest
/// positive value in the panel, so a curve that reaches 0 visibly drops below all others
/// without stretching the axis over hundreds of decades. Returns false, changing
/// nothing, when no value is positive: there is then nothing a log axis could show.
fn floor_log(curves: &mut [Curve]) -> bool {
    let min_positive = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .filter(|&y| y > 0.0)
        .fold(f64::INFINITY, f64::min);
    if !min_positive.is_finite() {
        return false;
    }
    let floor = (min_positive / 10.0).max(1.0 / MAX_MAGNITUDE);
    for c in curves {
        for p in &mut c.points {
            p.1 = p.1.max(floor);
        }
    }
    true
}

/// Smallest and largest of `values` (finite by construction of the points).
fn extent(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// The x range: from 0 (runs start there) or the smallest x if negative, to the largest
/// x; a single x gets a unit-wide range.
fn x_range(curves: &[Curve]) -> (f64, f64) {
    let (lo, hi) = extent(curves.iter().flat_map(|c| c.points.iter().map(|p| p.0)));
    let lo = lo.min(0.0);
    if hi > lo {
        (lo, hi)
    } else {
        (lo, lo + 1.0)
    }
}

/// A linear y range with 5% margins; a constant y gets a margin of 5% of its value.
fn y_range_linear(curves: &[Curve]) -> (f64, f64) {
    let (lo, hi) = extent(curves.iter().flat_map(|c| c.points.iter().map(|p| p.1)));
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else if hi != 0.0 {
        0.05 * hi.abs()
    } else {
        1.0
    };
    (lo - pad, hi + pad)
}

/// A log y range widened to whole decades, so that the axis always has at least two
/// labelled powers of ten (plotters labels only those).
fn y_range_log(curves: &[Curve]) -> (f64, f64) {
    let (lo, hi) = extent(curves.iter().flat_map(|c| c.points.iter().map(|p| p.1)));
    let mut hi_exp = hi.log10().ceil();
    let lo_exp = lo.log10().floor().max(hi_exp - MAX_DECADES);
    if hi_exp <= lo_exp {
        hi_exp = lo_exp + 1.0;
    }
    // Nudged outwards: plotters finds the powers of ten inside the range with a rounded
    // logarithm, which can miss ones lying exactly on its ends.
    let nudge = 1e-9;
    (
        10f64.powf(lo_exp) * (1.0 - nudge),
        10f64.powf(hi_exp) * (1.0 + nudge),
    )
}

/// Titles of the x axis and y axis, and the panel's caption.
fn axis_titles(panel: &Panel, psi_star: Option<f64>) -> (&'static str, String, &'static str) {
    let x = match panel.x {
        XAxis::TrainSecs => "training time (s)",
        XAxis::Updates => "block updates",
    };
    let y = match (panel.y, psi_star) {
        (YAxis::Psi, Some(star)) => format!("Psi - Psi*   (Psi* = {star})"),
        (YAxis::Psi, None) => "Psi".to_string(),
        (YAxis::PgmSqNorm, _) => "||P(x)||^2".to_string(),
    };
    let caption = match (panel.y, psi_star.is_some(), panel.x) {
        (YAxis::Psi, true, XAxis::TrainSecs) => "objective gap vs time",
        (YAxis::Psi, true, XAxis::Updates) => "objective gap vs updates",
        (YAxis::Psi, false, XAxis::TrainSecs) => "objective vs time",
        (YAxis::Psi, false, XAxis::Updates) => "objective vs updates",
        (YAxis::PgmSqNorm, _, XAxis::TrainSecs) => "||P(x)||^2 vs time",
        (YAxis::PgmSqNorm, _, XAxis::Updates) => "||P(x)||^2 vs updates",
    };
    (x, y, caption)
}

/// Writes `note` in place of a chart that has nothing to show.
fn draw_note(
    area: &DrawingArea<SVGBackend, Shift>,
    caption: &str,
    note: &str,
) -> anyhow::Result<()> {
    let (w, h) = area.dim_in_pixel();
    area.draw(&Text::new(
        format!("{caption}: {note}"),
        (w as i32 / 8, h as i32 / 2),
        ("sans-serif", 18),
    ))
    .map_err(plot_err)
}

fn draw_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    panel: &Panel,
    psi_star: Option<f64>,
    log_y: bool,
    mut curves: Vec<Curve>,
) -> anyhow::Result<()> {
    let (x_title, y_title, caption) = axis_titles(panel, psi_star);
    if curves.is_empty() {
        return draw_note(area, caption, "no finite values to plot");
    }
    let (x_lo, x_hi) = x_range(&curves);
    // Plotters puts at most `TICKS + 1` labels on an axis, so they are at least this far
    // apart; labels need the digits to tell them apart at that spacing.
    let x_step = (x_hi - x_lo) / TICKS as f64;
    let titles = (x_title, y_title.as_str(), caption);
    if log_y {
        if !floor_log(&mut curves) {
            return draw_note(area, caption, "no positive values for a log axis");
        }
        let (lo, hi) = y_range_log(&curves);
        // Log ticks are powers of ten, so each label needs only its own leading digit.
        let y_label = |v: &f64| tick_label(*v, *v);
        chart(
            area,
            titles,
            (x_lo..x_hi, x_step),
            (lo..hi).log_scale(),
            &y_label,
            &curves,
        )
    } else {
        let (lo, hi) = y_range_linear(&curves);
        let y_step = (hi - lo) / TICKS as f64;
        let y_label = |v: &f64| tick_label(*v, y_step);
        chart(
            area,
            titles,
            (x_lo..x_hi, x_step),
            lo..hi,
            &y_label,
            &curves,
        )
    }
}

/// Draws one panel's axes, curves and legend on a linear x axis and the y axis `y_spec`
/// (linear or log, hence generic).
fn chart<Y>(
    area: &DrawingArea<SVGBackend, Shift>,
    (x_title, y_title, caption): (&str, &str, &str),
    (x_spec, x_step): (std::ops::Range<f64>, f64),
    y_spec: Y,
    y_label: &dyn Fn(&f64) -> String,
    curves: &[Curve],
) -> anyhow::Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(x_spec, y_spec)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc(x_title)
        .y_desc(y_title)
        .x_labels(TICKS + 1)
        .y_labels(TICKS + 1)
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 14))
        .x_label_formatter(&|v| tick_label(*v, x_step))
        .y_label_formatter(y_label)
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(plot_err)?;
    for c in curves {
        let color = c.color;
        let marker = if c.points.len() <= MARKER_MAX_POINTS {
            3
        } else {
            0
        };
        chart
            .draw_series(
                LineSeries::new(c.points.iter().copied(), color.stroke_width(2)).point_size(marker),
            )
            .map_err(plot_err)?
            .label(c.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

/// A tick label for `v` on an axis whose ticks are about `step` apart: plain decimals
/// with just enough digits to tell neighbouring ticks apart, or scientific notation for
/// very large or small magnitudes.
fn tick_label(v: f64, step: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v == 0.0 { "0".into() } else { format!("{v}") };
    }
    let step = if step.is_finite() && step > 0.0 {
        step
    } else {
        v.abs()
    };
    let mag = v.abs();
    if !(1e-3..1e5).contains(&mag) {
        // Significant digits: enough for the tick spacing, at least one, at most 6.
        let digits = ((mag / step).log10().ceil().max(0.0) as usize).min(5);
        let s = format!("{v:.digits$e}");
        // Trim zeros of the mantissa: 2.50e4 -> 2.5e4, 1.0e-3 -> 1e-3.
        match s.split_once('e') {
            Some((mantissa, exp)) if mantissa.contains('.') => {
                let m = mantissa.trim_end_matches('0').trim_end_matches('.');
                format!("{m}e{exp}")
            }
            _ => s,
        }
    } else {
        let decimals = (-(step.log10().floor())).clamp(0.0, 9.0) as usize;
        let s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(updates: u64, secs: f64, psi: f64, pgm: f64) -> EvalRecord {
        EvalRecord {
            updates,
            train_secs: secs,
            wall_secs: secs,
            psi,
            pgm_sq_norm: pgm,
            ..EvalRecord::default()
        }
    }

    /// A run converging like 1/k, `speed` times faster in wall time per update.
    /// `records` as the one series of a figure, labelled "r".
    fn series_r(records: &[EvalRecord]) -> [Series<'_>; 1] {
        [Series {
            label: "r".into(),
            records,
        }]
    }

    fn run(speed: f64, n: u64) -> Vec<EvalRecord> {
        (0..n)
            .map(|i| {
                let k = (i * 1000) as f64;
                record(
                    i * 1000,
                    k / (20_000.0 * speed),
                    0.3 + 0.4 / (1.0 + k / 500.0),
                    2.0 / (1.0 + k / 100.0).powi(2),
                )
            })
            .collect()
    }

    fn render(series: &[Series], psi_star: Option<f64>) -> String {
        render_svg("test figure", series, psi_star).unwrap()
    }

    #[test]
    fn figure_has_titles_and_legend() {
        let (one, two) = (run(1.0, 40), run(1.9, 40));
        let series = [
            Series {
                label: "1 worker".into(),
                records: &one,
            },
            Series {
                label: "2 workers".into(),
                records: &two,
            },
        ];
        for psi_star in [None, Some(0.3)] {
            let svg = render(&series, psi_star);
            assert!(
                svg.starts_with("<svg") || svg.contains("<svg"),
                "no svg element"
            );
            assert!(svg.trim_end().ends_with("</svg>"));
            for text in [
                "test figure",
                "training time (s)",
                "block updates",
                "||P(x)||^2",
                "1 worker",
                "2 workers",
            ] {
                assert!(svg.contains(text), "{text:?} missing");
            }
            let psi_title = if psi_star.is_some() {
                "Psi - Psi*"
            } else {
                "objective vs time"
            };
            assert!(svg.contains(psi_title), "{psi_title:?} missing");
            // Each legend label appears once per panel.
            assert_eq!(svg.matches("1 worker").count(), 4, "{svg}");
        }
    }

    #[test]
    fn written_file_is_the_rendered_svg() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.svg");
        let recs = run(1.0, 10);
        let series = [Series {
            label: "a & <b>".into(),
            records: &recs,
        }];
        write_svg(&path, "t", &series, Some(0.25)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("<svg"));
        assert!(text.contains("a &amp; &lt;b&gt;") || text.contains("a &amp; &lt;b>"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("curves.svg");
        let recs = run(1.0, 3);
        let series = [Series {
            label: "a".into(),
            records: &recs,
        }];
        assert!(write_svg(&path, "t", &series, None).is_err());
        assert!(!dir.path().join("missing").exists());
    }

    #[test]
    fn edge_cases_do_not_panic() {
        let single = vec![record(0, 0.0, 0.7, 0.0)];
        let constant = vec![record(5, 1.0, 2.0, 1.0); 3];
        let nonfinite = vec![
            record(0, f64::NAN, f64::NAN, f64::INFINITY),
            record(1, 0.1, f64::NEG_INFINITY, f64::NAN),
            record(2, f64::INFINITY, 1.0, 1.0),
        ];
        let all_nan = vec![record(0, 0.0, f64::NAN, f64::NAN); 2];
        let below = vec![
            record(0, 0.0, 0.1, 0.0),
            record(10, 1.0, -0.5, -1.0),
            record(20, 2.0, 0.0, 1e-300),
        ];
        let huge = vec![
            record(0, 0.0, 1e300, 1e300),
            record(u64::MAX, 1e308, -1e308, f64::MIN_POSITIVE),
            record(3, 1e-320, 1e-320, 5e-324),
        ];
        let extremes = vec![
            record(0, -MAX_MAGNITUDE, -MAX_MAGNITUDE, 1.0 / MAX_MAGNITUDE),
            record(1, MAX_MAGNITUDE, MAX_MAGNITUDE, MAX_MAGNITUDE),
        ];
        let near_constant = vec![
            record(0, 1e149, 1e149, 1e149),
            record(
                1,
                1e149 * (1.0 + 1e-15),
                1e149 * (1.0 + 1e-15),
                1e149 * (1.0 + 1e-15),
            ),
        ];
        let empty: Vec<EvalRecord> = Vec::new();
        let weird_label = "tab\tnew\nline\u{0}";
        let cases: Vec<Vec<&[EvalRecord]>> = vec![
            vec![&single],
            vec![&constant],
            vec![&nonfinite],
            vec![&all_nan],
            vec![&below],
            vec![&huge],
            vec![&extremes],
            vec![&near_constant],
            vec![&empty],
            vec![],
            vec![&empty, &single, &below, &huge, &constant],
        ];
        for records in cases {
            let series: Vec<Series> = records
                .iter()
                .map(|r| Series {
                    label: weird_label.into(),
                    records: r,
                })
                .collect();
            for psi_star in [None, Some(0.2), Some(5.0), Some(f64::NAN), Some(-1e300)] {
                let svg = render(&series, psi_star);
                assert!(svg.contains("<svg"));
                assert!(!svg.contains('\0'));
            }
        }
    }

    /// Records built from awkward values in many combinations all render.
    #[test]
    fn awkward_value_combinations_render() {
        let values = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            1e-300,
            5e-324,
            f64::MIN_POSITIVE,
            1.0 / MAX_MAGNITUDE,
            MAX_MAGNITUDE,
            -MAX_MAGNITUDE,
            1e149,
            1e300,
            f64::MAX,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        // A fixed linear congruential sequence: many combinations, same ones every run.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize % n
        };
        for _ in 0..150 {
            let count = 1 + next(4);
            let recs: Vec<EvalRecord> = (0..count)
                .map(|_| {
                    record(
                        [0, 1, 1000, u64::MAX][next(4)],
                        values[next(values.len())],
                        values[next(values.len())],
                        values[next(values.len())],
                    )
                })
                .collect();
            let series = series_r(&recs);
            let psi_star = [None, Some(0.0), Some(values[next(values.len())])][next(3)];
            assert!(render(&series, psi_star).contains("<svg"));
        }
    }

    #[test]
    fn speedup_figure_has_both_lines_and_survives_bad_points() {
        let svg = render_speedup_svg("speedup", 1, &[(1.0, 1.0), (2.0, 1.8), (4.0, 3.1)]).unwrap();
        assert!(svg.contains("measured") && svg.contains("ideal (linear in W)"));
        assert!(svg.contains("workers W") && svg.contains("speedup over W = 1"));
        for bad in [
            &[][..],
            &[(f64::NAN, 1.0), (2.0, f64::INFINITY)][..],
            &[(1.0, 0.0)][..],
        ] {
            assert!(render_speedup_svg("x", 2, bad).unwrap().contains("ideal"));
        }
    }

    #[test]
    fn rate_figure_has_the_reference_slope_and_survives_bad_points() {
        let pts = vec![(1e3, 1e-2), (1e4, 3e-3), (1e5, 1e-3)];
        let svg = render_rate_svg("rate", &[("W=1".into(), pts)]).unwrap();
        assert!(svg.contains("W=1") && svg.contains("slope -1/2"));
        let bad = vec![(0.0, 1.0), (1e3, f64::NAN), (-1.0, -1.0)];
        assert!(render_rate_svg("x", &[("W=1".into(), bad)]).is_ok());
        assert!(render_rate_svg("x", &[]).is_ok());
    }

    #[test]
    fn many_series_cycle_colors() {
        let recs: Vec<Vec<EvalRecord>> = (0..12).map(|i| run(1.0 + i as f64, 5)).collect();
        let series: Vec<Series> = recs
            .iter()
            .enumerate()
            .map(|(i, r)| Series {
                label: format!("run {i}"),
                records: r,
            })
            .collect();
        let svg = render(&series, None);
        assert!(svg.contains("run 11"));
    }

    #[test]
    fn tick_labels_are_short_and_distinct() {
        assert_eq!(tick_label(0.0, 1.0), "0");
        assert_eq!(tick_label(200_000.0, 50_000.0), "2e5");
        assert_eq!(tick_label(250_000.0, 50_000.0), "2.5e5");
        assert_eq!(tick_label(1e-6, 5e-7), "1e-6");
        assert_eq!(tick_label(0.5, 0.1), "0.5");
        assert_eq!(tick_label(1.5, 0.25), "1.5");
        assert_eq!(tick_label(1.25, 0.05), "1.25");
        assert_eq!(tick_label(3000.0, 1000.0), "3000");
        assert_eq!(tick_label(0.512_345_2, 1e-6), "0.512345");
        assert_ne!(tick_label(0.512_345_2, 1e-6), tick_label(0.512_346_2, 1e-6));
    }

    #[test]
    fn log_range_spans_whole_decades() {
        let curve = |ys: &[f64]| Curve {
            label: "c",
            color: PALETTE[0],
            points: ys.iter().map(|&y| (0.0, y)).collect(),
        };
        let close = |(lo, hi): (f64, f64), (want_lo, want_hi): (f64, f64)| {
            assert!((lo / want_lo - 1.0).abs() < 1e-6, "{lo} vs {want_lo}");
            assert!((hi / want_hi - 1.0).abs() < 1e-6, "{hi} vs {want_hi}");
            // Slightly outside, so that both end decades get their labels.
            assert!(lo < want_lo && hi > want_hi);
        };
        close(y_range_log(&[curve(&[0.5, 0.9])]), (0.1, 1.0));
        close(y_range_log(&[curve(&[1.0])]), (1.0, 10.0));
        close(y_range_log(&[curve(&[3e-7, 2.0])]), (1e-7, 10.0));
        // Bounded span, so that plotters' tick search terminates.
        close(y_range_log(&[curve(&[1e-150, 1e150])]), (1e-150, 1e150));
        close(y_range_log(&[curve(&[1e-200, 1e150])]), (1e-150, 1e150));

        let mut cs = vec![curve(&[0.0, -1.0, 1e-3, 1.0])];
        assert!(floor_log(&mut cs));
        assert!((cs[0].points[0].1 - 1e-4).abs() < 1e-18);
        assert!((cs[0].points[1].1 - 1e-4).abs() < 1e-18);
        let mut none_positive = vec![curve(&[0.0, -1.0])];
        assert!(!floor_log(&mut none_positive));
    }

    #[test]
    fn log_axes_label_both_end_decades() {
        let recs = vec![record(0, 0.0, 0.9, 0.9), record(10, 1.0, 0.004, 0.004)];
        let series = series_r(&recs);
        let svg = render(&series, Some(0.0));
        for label in ["\n0.001\n", "\n0.01\n", "\n0.1\n", "\n1\n"] {
            assert!(svg.contains(label), "tick {label:?} missing");
        }
    }

    #[test]
    fn log_panels_without_positive_values_say_so() {
        let recs = vec![record(0, 0.0, 0.5, 0.0), record(10, 1.0, 0.5, 0.0)];
        let series = series_r(&recs);
        let svg = render(&series, Some(0.5));
        assert_eq!(svg.matches("no positive values for a log axis").count(), 4);
        let svg = render(&series, None);
        assert_eq!(svg.matches("no positive values for a log axis").count(), 2);
    }
}
