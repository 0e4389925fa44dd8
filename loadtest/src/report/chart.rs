//! Inline SVG line charts for the report — percentile curves on a "nines"
//! axis and per-second series — with their axes, ticks and legends, drawn
//! by hand so the report stays one self-contained file.

use super::esc;

const W: f64 = 760.0;
const H: f64 = 300.0;
const LEFT: f64 = 72.0;
// Room for the last x label ("99.99999") to overhang the plot.
const RIGHT: f64 = 40.0;
const BOTTOM: f64 = 46.0;
// Okabe–Ito: stays distinguishable under the common colour-vision deficiencies.
const COLORS: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];

/// A named line: (legend label, (x, y) points).
pub(super) type Series = (String, Vec<(f64, f64)>);

/// Percentile curve on a "nines" axis. On a linear percentile axis
/// everything from p99 to the maximum — the part that matters — would be
/// squeezed against the right edge; counting nines gives each decade of
/// the tail the same width.
pub(super) fn latency_chart(title: &str, dist: &[(f64, f64)]) -> String {
    if dist.is_empty() {
        return "<p class=\"note\">No latency samples were recorded.</p>\n".into();
    }
    let mut last = 0.0_f64;
    let mut pts = Vec::with_capacity(dist.len());
    for &(p, ms) in dist {
        let x = -(1.0 - (p / 100.0).clamp(0.0, 1.0)).log10();
        // p100 (the max) is infinitely many nines out: draw it one nine past the last finite point.
        let x = if x.is_finite() { x } else { last + 1.0 };
        last = last.max(x);
        pts.push((x, ms));
    }
    let n = last.ceil().clamp(1.0, 15.0) as usize;
    let ticks = (0..=n).map(|k| (k as f64, nines_label(k))).collect();
    let series = [("latency".into(), pts)];
    let labels = [title, "percentile", "latency (ms)"];
    let note = "The rightmost point is the maximum, drawn one nine past the last percentile.";
    line_chart(labels, &series, Some(ticks)) + &format!("<p class=\"note\">{note}</p>\n")
}

/// 0 → "0", 1 → "90", 2 → "99", 3 → "99.9", ...
fn nines_label(k: usize) -> String {
    match k {
        0 => "0".into(),
        1 => "90".into(),
        2 => "99".into(),
        _ => format!("99.{}", "9".repeat(k - 2)),
    }
}

pub(super) fn time_chart(title: &str, y_label: &str, series: &[Series]) -> String {
    line_chart([title, "time (s)", y_label], series, None)
}

/// An SVG line chart; `labels` are [title, x label, y label]. `x_ticks`
/// overrides the automatic x axis, for axes whose positions are not the
/// values they show (the nines axis).
fn line_chart(labels: [&str; 3], series: &[Series], x_ticks: Option<Vec<(f64, String)>>) -> String {
    let [title, x_label, y_label] = labels;
    // One NaN would turn the whole scale into NaN; drop bad points instead of the chart.
    let finite = |&&(x, y): &&(f64, f64)| x.is_finite() && y.is_finite();
    // Zero baseline for y: starting at the minimum exaggerates small wobbles.
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0_f64, 0.0_f64);
    for &(x, y) in series.iter().flat_map(|s| &s.1).filter(finite) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return format!("<p class=\"note\">{}: no data.</p>\n", esc(title));
    }
    let xs = x_ticks
        .filter(|t| t.len() >= 2)
        .unwrap_or_else(|| ticks(x0, x1, 6));
    let ys = ticks(y0, y1, 5);
    let (x_lo, x_hi) = (xs[0].0, xs[xs.len() - 1].0);
    let (y_lo, y_hi) = (ys[0].0, ys[ys.len() - 1].0);
    let (right, bottom) = (W - RIGHT, H - BOTTOM);
    let top = 34.0 + 14.0 * series.len().div_ceil(4) as f64;
    let sx = |x: f64| scale(x, x_lo, x_hi, LEFT, right);
    let sy = |y: f64| scale(y, y_lo, y_hi, bottom, top);

    let t = esc(title);
    let mut o = format!(
        "<figure><svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" \
         width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{t}\">\n\
         <text class=\"title\" x=\"{LEFT}\" y=\"18\">{t}</text>\n"
    );
    for (i, (name, _)) in series.iter().enumerate() {
        let (x, y) = (LEFT + (i % 4) as f64 * 165.0, 32.0 + (i / 4) as f64 * 14.0);
        let (color, ry) = (COLORS[i % COLORS.len()], y - 4.0);
        o += &format!("<rect x=\"{x}\" y=\"{ry}\" width=\"14\" height=\"3\" fill=\"{color}\"/>");
        o += &text(x + 18.0, y, "start", name);
    }
    for (v, label) in &ys {
        o += &line("grid", (LEFT, sy(*v)), (right, sy(*v)));
        o += &text(LEFT - 6.0, sy(*v) + 4.0, "end", label);
    }
    for (v, label) in &xs {
        o += &line("axis", (sx(*v), bottom), (sx(*v), bottom + 5.0));
        o += &text(sx(*v), bottom + 18.0, "middle", label);
    }
    o += &line("axis", (LEFT, bottom), (right, bottom));
    o += &line("axis", (LEFT, bottom), (LEFT, top));
    o += &text((LEFT + right) / 2.0, H - 8.0, "middle", x_label);
    let (mid, y_label) = ((bottom + top) / 2.0, esc(y_label));
    o += &format!(
        "<text transform=\"translate(16 {mid:.1}) rotate(-90)\" text-anchor=\"middle\">\
         {y_label}</text>\n"
    );
    for (i, (_, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = pts
            .iter()
            .filter(finite)
            .map(|&(x, y)| (sx(x), sy(y)))
            .collect();
        let coords: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let coords = coords.join(" ");
        o += &format!("<polyline fill=\"none\" stroke=\"{color}\" points=\"{coords}\"/>");
        // A line needs two points; markers keep sparse series and single points visible.
        for (x, y) in pts.iter().filter(|_| pts.len() <= 60) {
            o += &format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.2\" fill=\"{color}\"/>");
        }
        o.push('\n');
    }
    o + "</svg></figure>\n"
}

fn text(x: f64, y: f64, anchor: &str, s: &str) -> String {
    let s = esc(s);
    format!("<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\">{s}</text>\n")
}

fn line(class: &str, (x1, y1): (f64, f64), (x2, y2): (f64, f64)) -> String {
    format!("<line class=\"{class}\" x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\"/>")
}

/// Labelled ticks from [`nice_ticks`].
fn ticks(lo: f64, hi: f64, target: usize) -> Vec<(f64, String)> {
    nice_ticks(lo, hi, target)
        .into_iter()
        .map(|v| (v, fmt_tick(v)))
        .collect()
}

/// Maps `v` from [lo, hi] to [a, b]; a degenerate range maps to the middle
/// rather than dividing by zero.
fn scale(v: f64, lo: f64, hi: f64, a: f64, b: f64) -> f64 {
    if hi > lo {
        a + (v - lo) / (hi - lo) * (b - a)
    } else {
        (a + b) / 2.0
    }
}

/// About `target` ticks covering [lo, hi], spaced 1, 2 or 5 × 10^k, always
/// at least two distinct values.
fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) {
        return nice_ticks(0.0, 1.0, target);
    }
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    // A flat series or a single point still needs a span to scale against.
    let hi = if hi > lo { hi } else { lo + lo.abs().max(1.0) };
    let raw = (hi - lo) / target.max(1) as f64;
    let exp = raw.log10().floor() as i32;
    let mult = match raw / 10f64.powi(exp) {
        n if n <= 1.0 => 1.0,
        n if n <= 2.0 => 2.0,
        n if n <= 5.0 => 5.0,
        _ => 10.0,
    };
    // Scaling integer multiples last keeps labels free of float noise
    // (0.6 rather than 0.6000000000000001).
    let (num, den) = (mult * 10f64.powi(exp.max(0)), 10f64.powi(-exp.min(0)));
    let at = |n: f64| n * num / den;
    let step = at(1.0);
    let (first, last) = ((lo / step).floor(), (hi / step).ceil());
    if !(last - first).is_finite() || last <= first || last - first > 100.0 {
        return vec![lo, hi];
    }
    (first as i64..=last as i64).map(|n| at(n as f64)).collect()
}

fn fmt_tick(v: f64) -> String {
    // Suffixes keep wide labels clear of the axis title. Display gives the
    // shortest exact form (2.5, 0.2); + 0.0 turns -0 into 0.
    match v.abs() {
        a if a >= 1e6 => format!("{}M", v / 1e6),
        a if a >= 1e4 => format!("{}k", v / 1e3),
        _ => format!("{}", v + 0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_use_1_2_5_steps() {
        assert_eq!(nice_ticks(0.0, 10.0, 5), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(nice_ticks(0.0, 1.0, 5), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(
            nice_ticks(3.0, 97.0, 5),
            [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
        );
        assert_eq!(
            nice_ticks(0.0, 4500.0, 5),
            [0.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0]
        );
        let labels = [nice_ticks(0.0, 1.0, 5)[3], -0.0, 1500.0, 25e3, 2.5e6].map(fmt_tick);
        assert_eq!(labels, ["0.6", "0", "1500", "25k", "2.5M"]);
        for (lo, hi) in [
            (0.0, 0.0),
            (7.0, 7.0),
            (f64::NAN, 1.0),
            (-3.0, -1.0),
            (0.0, 1e-9),
        ] {
            let t = nice_ticks(lo, hi, 5);
            assert!(
                t.len() >= 2 && t.windows(2).all(|w| w[0] < w[1]),
                "{lo}..{hi}: {t:?}"
            );
        }
    }
    #[test]
    fn nines() {
        assert_eq!([0, 2, 4].map(nines_label), ["0", "99", "99.99"]);
    }
}
