//! The status page's pictures: inline SVG drawn on the server, with no script and nothing
//! fetched. Pure: figures in, markup out, every number bounded so that no input makes a
//! coordinate that is not finite.
//!
//! - [`available`]: a storage filesystem's available space over its recent past
//!   ([`crate::collect::trend`]), the forecast's line ahead of it, and a mark at each cleanup;
//! - [`reclaimable`]: what each kind of object could give back, as one stacked bar.

use std::fmt::Write;

use crate::format::{esc, human_bytes};

/// The drawing's size in SVG units (it scales to the page's width).
const W: f64 = 640.0;
const H: f64 = 180.0;
/// Room left of the plot for the axis' labels, and below it for the times.
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 24.0;

/// A cleanup to mark on the time axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// When it started (unix seconds).
    pub at: i64,
    /// What it was, for the mark's tooltip.
    pub label: String,
}

/// What [`available`] draws.
#[derive(Debug, Clone, Default)]
pub struct Available<'a> {
    /// `id` of the `<svg>` element.
    pub id: &'a str,
    /// Samples `(unix seconds, available bytes)`, oldest first.
    pub points: &'a [(i64, u64)],
    /// The filesystem's size: the top of the axis.
    pub size: u64,
    /// Seconds to full from the newest sample (`+Inf`: not filling; `None`: too few samples).
    pub full_in: Option<f64>,
    /// Cleanups in the period.
    pub marks: &'a [Mark],
    /// Now (unix seconds): the right end of the past.
    pub now: i64,
}

/// "90s", "12m", "3h": a short span for an axis label.
fn short_span(secs: i64) -> String {
    let s = secs.max(0);
    if s < 120 {
        format!("{s}s")
    } else if s < 2 * 3600 {
        format!("{}m", s / 60)
    } else if s < 2 * 86_400 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86_400)
    }
}

/// The available-space chart, or a line saying why there is none yet (fewer than two
/// samples).
pub fn available(a: &Available) -> String {
    let Some(&(first, _)) = a.points.first() else {
        return "<p class=\"muted\">No samples yet for the chart.</p>".into();
    };
    let last = a.points.last().map_or(first, |p| p.0);
    if a.points.len() < 2 || last <= first {
        return "<p class=\"muted\">One sample so far: the chart starts with the next.</p>".into();
    }
    let now = a.now.max(last);
    let past = (now - first).max(60);
    // The forecast looks ahead a third of the past shown, when there is one to draw.
    let filling = a.full_in.filter(|f| f.is_finite() && *f >= 0.0);
    let ahead = if filling.is_some() { past / 3 } else { 0 };
    let (t0, t1) = (now - past, now + ahead);
    let top = a
        .size
        .max(a.points.iter().map(|p| p.1).max().unwrap_or(0))
        .max(1) as f64;
    let x = |t: i64| LEFT + (t - t0) as f64 / (t1 - t0) as f64 * (W - LEFT - RIGHT);
    let y = |b: f64| TOP + (1.0 - (b / top).clamp(0.0, 1.0)) * (H - TOP - BOTTOM);
    let mut s = String::with_capacity(2048 + a.points.len() * 16);
    let _ = write!(
        s,
        "<svg id=\"{}\" class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" xmlns=\"http://www.w3.org/2000/svg\"><title>available space over the last {}</title>",
        esc(a.id),
        short_span(past)
    );
    // The axis: the size at the top, half of it, zero.
    for (frac, label) in [
        (1.0, human_bytes(top as u64)),
        (0.5, human_bytes((top / 2.0) as u64)),
        (0.0, "0".into()),
    ] {
        let yy = y(top * frac);
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#e3e6ea\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#69707d\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            yy + 3.5,
            esc(&label)
        );
    }
    let base = H - BOTTOM + 14.0;
    let _ = write!(
        s,
        "<text x=\"{LEFT}\" y=\"{base}\" font-size=\"10\" fill=\"#69707d\">-{}</text><text x=\"{:.1}\" y=\"{base}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#69707d\">now</text>",
        short_span(past),
        x(now)
    );
    if ahead > 0 {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{base}\" font-size=\"10\" text-anchor=\"end\" fill=\"#69707d\">+{}</text>",
            W - RIGHT,
            short_span(ahead)
        );
    }
    // The cleanups, under the line.
    for m in a.marks.iter().filter(|m| m.at >= t0 && m.at <= now) {
        let xx = x(m.at);
        let _ = write!(
            s,
            "<line class=\"cleanup\" x1=\"{xx:.1}\" y1=\"{TOP}\" x2=\"{xx:.1}\" y2=\"{:.1}\" stroke=\"#3b8f5a\" stroke-width=\"1.5\"><title>{}</title></line>",
            H - BOTTOM,
            esc(&m.label)
        );
    }
    s.push_str(
        "<polyline class=\"avail\" fill=\"none\" stroke=\"#2f5fb3\" stroke-width=\"2\" points=\"",
    );
    for &(t, b) in a.points {
        let _ = write!(s, "{:.1},{:.1} ", x(t.max(t0)), y(b as f64));
    }
    s.push_str("\"/>");
    if let (Some(full_in), Some(&(lt, lb))) = (filling, a.points.last()) {
        // The fitted line's slope through the newest sample, drawn up to zero or the edge.
        let rate = lb as f64 / full_in.max(1.0);
        let end = (now + ahead).min(lt + full_in.ceil().min(i64::MAX as f64 / 2.0) as i64);
        let at_end = (lb as f64 - rate * (end - lt) as f64).max(0.0);
        let _ = write!(
            s,
            "<line class=\"forecast\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#c8322b\" stroke-width=\"1.5\" stroke-dasharray=\"5 4\"><title>forecast: full in {}</title></line>",
            x(lt),
            y(lb as f64),
            x(end),
            y(at_end),
            short_span(full_in.min(1e12) as i64)
        );
    }
    s.push_str("</svg>");
    s
}

/// The reclaimable bytes by kind (`(kind, bytes)`) as one stacked bar with its legend; a line
/// saying so when nothing is reclaimable.
pub fn reclaimable(parts: &[(&str, u64)]) -> String {
    const COLOURS: [&str; 6] = [
        "#2f5fb3", "#d9a300", "#3b8f5a", "#8a4fb3", "#c8322b", "#9aa1ad",
    ];
    let total: u64 = parts.iter().fold(0u64, |t, p| t.saturating_add(p.1));
    if total == 0 {
        return "<p class=\"muted\">Nothing reclaimable.</p>".into();
    }
    let (w, bar_h) = (W, 22.0);
    let mut s = String::with_capacity(1024);
    let _ = write!(
        s,
        "<svg id=\"reclaimable-chart\" class=\"chart\" viewBox=\"0 0 {w} 48\" role=\"img\" xmlns=\"http://www.w3.org/2000/svg\"><title>reclaimable: {}</title>",
        human_bytes(total)
    );
    let mut at = 0.0;
    let mut legend_x = 0.0;
    for (i, (kind, bytes)) in parts.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let width = *bytes as f64 / total as f64 * w;
        if *bytes > 0 {
            let _ = write!(
                s,
                "<rect class=\"part\" data-kind=\"{}\" x=\"{at:.1}\" y=\"0\" width=\"{width:.1}\" height=\"{bar_h}\" fill=\"{colour}\"><title>{}: {}</title></rect>",
                esc(kind),
                esc(kind),
                human_bytes(*bytes)
            );
        }
        at += width;
        let label = format!("{kind} {}", human_bytes(*bytes));
        let _ = write!(
            s,
            "<rect x=\"{legend_x:.1}\" y=\"32\" width=\"10\" height=\"10\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"41\" font-size=\"11\" fill=\"#1d2330\">{}</text>",
            legend_x + 14.0,
            esc(&label)
        );
        legend_x += 14.0 + label.len() as f64 * 6.2 + 14.0;
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_800_000_000;

    fn chart(points: &[(i64, u64)], full_in: Option<f64>, marks: &[Mark]) -> String {
        available(&Available {
            id: "avail-chart",
            points,
            size: 1000,
            full_in,
            marks,
            now: points.last().map_or(T, |p| p.0),
        })
    }

    #[test]
    fn a_filling_disk_is_a_falling_line_with_its_forecast_and_its_cleanups() {
        let points = [(T, 900), (T + 600, 700), (T + 1200, 500)];
        let marks = [Mark {
            at: T + 900,
            label: "watermark cleanup freed 1 GiB".into(),
        }];
        let svg = chart(&points, Some(1500.0), &marks);
        assert!(svg.starts_with("<svg id=\"avail-chart\""), "{svg}");
        assert!(svg.ends_with("</svg>"));
        // Three points, the higher available the nearer the top.
        let pts = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let ys: Vec<f64> = pts
            .split_whitespace()
            .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
            .collect();
        assert_eq!(ys.len(), 3);
        assert!(ys[0] < ys[1] && ys[1] < ys[2], "{ys:?}");
        assert!(svg.contains("class=\"forecast\""), "{svg}");
        assert!(svg.contains("forecast: full in 25m"), "{svg}");
        assert!(svg.contains("class=\"cleanup\""), "{svg}");
        assert!(svg.contains("watermark cleanup freed 1 GiB"));
    }

    #[test]
    fn no_forecast_line_when_not_filling_and_no_mark_outside_the_period() {
        let points = [(T, 500), (T + 600, 600)];
        let marks = [Mark {
            at: T - 5000,
            label: "old".into(),
        }];
        let svg = chart(&points, Some(f64::INFINITY), &marks);
        assert!(!svg.contains("class=\"forecast\""), "{svg}");
        assert!(!svg.contains("class=\"cleanup\""), "{svg}");
        assert!(chart(&points, None, &[]).contains("class=\"avail\""));
    }

    #[test]
    fn too_few_samples_say_so_and_absurd_figures_stay_finite() {
        assert!(chart(&[], None, &[]).contains("No samples yet"));
        assert!(chart(&[(T, 1)], None, &[]).contains("One sample"));
        let svg = chart(&[(T, u64::MAX), (T + 1, 0)], Some(1e300), &[]);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        let svg = chart(&[(T, 10), (T + 1, 0)], Some(0.0), &[]);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    #[test]
    fn the_reclaimable_bar_has_a_part_per_kind_in_proportion_and_escapes_names() {
        let svg = reclaimable(&[("image", 300), ("build_cache", 100), ("<x>", 0)]);
        assert!(
            svg.contains("data-kind=\"image\" x=\"0.0\" y=\"0\" width=\"480.0\""),
            "{svg}"
        );
        assert!(
            svg.contains("data-kind=\"build_cache\" x=\"480.0\""),
            "{svg}"
        );
        assert_eq!(svg.matches("class=\"part\"").count(), 2);
        assert!(svg.contains("&lt;x&gt;") && !svg.contains("<x>"));
        assert!(reclaimable(&[("image", 0)]).contains("Nothing reclaimable"));
        let huge = reclaimable(&[("a", u64::MAX), ("b", u64::MAX)]);
        assert!(!huge.contains("NaN"), "{huge}");
    }
}
