//! A hand-written SVG chart: throughput and latency per policy, idle latency, and the burn-down
//! against the Postgres limit and peers.

use crate::report::Report;
use crate::stats::Summary;
use std::fmt::Write as _;

/// One policy's seed results.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyBar {
    /// Policy name.
    pub policy: String,
    /// Jobs/s.
    pub throughput: f64,
    /// Sleep bound, jobs/s.
    pub bound: f64,
    /// Submit→complete p50, ms.
    pub p50_ms: f64,
    /// Submit→complete p99, ms.
    pub p99_ms: f64,
}

/// What the chart shows.
#[derive(Debug, Clone, Default)]
pub struct PlotData {
    /// `seed` per policy.
    pub seed: Vec<PolicyBar>,
    /// `latency` distributions by label.
    pub latency: Vec<(String, Summary)>,
    /// `burn`: (jobs/s, Postgres limit).
    pub burn: Option<(f64, Option<f64>)>,
}

const COLORS: [&str; 3] = ["#4e79a7", "#f28e2b", "#e15759"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn fmt(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 1000.0 {
        format!("{:.0}", v)
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A grouped bar chart in the box (x, y, w, h).
struct Panel<'a> {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    title: &'a str,
    unit: &'a str,
    series: &'a [&'a str],
    groups: Vec<(String, Vec<f64>)>,
    reference: Option<(f64, String)>,
}

impl Panel<'_> {
    fn render(&self, out: &mut String) {
        let (x, y, w, h) = (self.x, self.y, self.w, self.h);
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="14" font-weight="bold">{}</text>"#,
            x,
            y + 14.0,
            esc(self.title)
        );
        let top = y + 40.0;
        let bottom = y + h - 30.0;
        let left = x + 50.0;
        let right = x + w - 10.0;
        let mut max = self
            .groups
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        if let Some((r, _)) = &self.reference {
            max = max.max(*r);
        }
        if self.groups.is_empty() || max <= 0.0 {
            let _ = writeln!(
                out,
                r##"<text x="{}" y="{}" font-size="12" fill="#777">no data</text>"##,
                left,
                (top + bottom) / 2.0
            );
            return;
        }
        let max = max * 1.15;
        let scale = |v: f64| bottom - (v / max) * (bottom - top);
        // Axis and 4 grid lines.
        for i in 0..=4 {
            let v = max * f64::from(i) / 4.0;
            let gy = scale(v);
            let _ = writeln!(
                out,
                r##"<line x1="{left}" y1="{gy:.1}" x2="{right}" y2="{gy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end" fill="#555">{}</text>"##,
                left - 4.0,
                gy + 3.0,
                fmt(v)
            );
        }
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" font-size="10" fill="#555">{}</text>"##,
            x,
            top - 8.0,
            esc(self.unit)
        );
        let n = self.groups.len().max(1) as f64;
        let group_w = (right - left) / n;
        let bars = self.series.len().max(1) as f64;
        let bar_w = (group_w * 0.8) / bars;
        for (gi, (label, values)) in self.groups.iter().enumerate() {
            let gx = left + group_w * gi as f64 + group_w * 0.1;
            for (si, v) in values.iter().enumerate() {
                if !v.is_finite() {
                    continue;
                }
                let bx = gx + bar_w * si as f64;
                let by = scale(*v);
                let _ = writeln!(
                    out,
                    r#"<rect x="{bx:.1}" y="{by:.1}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
                    bar_w - 2.0,
                    bottom - by,
                    COLORS[si % COLORS.len()],
                    bx + bar_w / 2.0 - 1.0,
                    by - 3.0,
                    fmt(*v)
                );
            }
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
                gx + group_w * 0.4,
                bottom + 14.0,
                esc(label)
            );
        }
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333"/>"##
        );
        if let Some((r, label)) = &self.reference {
            let ry = scale(*r);
            let _ = writeln!(
                out,
                r##"<line x1="{left}" y1="{ry:.1}" x2="{right}" y2="{ry:.1}" stroke="#333" stroke-dasharray="5,4"/><text x="{right}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
                ry - 4.0,
                esc(label)
            );
        }
        if self.series.len() > 1 {
            for (si, name) in self.series.iter().enumerate() {
                let lx = left + 90.0 * si as f64;
                let _ = writeln!(
                    out,
                    r#"<rect x="{lx}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" font-size="11">{}</text>"#,
                    y + 20.0,
                    COLORS[si % COLORS.len()],
                    lx + 14.0,
                    y + 29.0,
                    esc(name)
                );
            }
        }
    }
}

/// Render the chart.
pub fn render(report: &Report) -> String {
    let data = &report.plot;
    let (w, h) = (1000.0, 700.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let bound = data.seed.first().map(|b| b.bound);
    Panel {
        x: 10.0,
        y: 10.0,
        w: 480.0,
        h: 330.0,
        title: "seed: throughput per policy",
        unit: "jobs/s",
        series: &["throughput"],
        groups: data
            .seed
            .iter()
            .map(|b| (b.policy.clone(), vec![b.throughput]))
            .collect(),
        reference: bound.map(|b| (b, format!("sleep bound {b:.0} j/s"))),
    }
    .render(&mut out);
    Panel {
        x: 510.0,
        y: 10.0,
        w: 480.0,
        h: 330.0,
        title: "seed: submit→complete per policy",
        unit: "ms",
        series: &["p50", "p99"],
        groups: data
            .seed
            .iter()
            .map(|b| (b.policy.clone(), vec![b.p50_ms, b.p99_ms]))
            .collect(),
        reference: None,
    }
    .render(&mut out);
    Panel {
        x: 10.0,
        y: 360.0,
        w: 480.0,
        h: 330.0,
        title: "latency: idle system, no-op jobs",
        unit: "ms",
        series: &["p50", "p90", "p99"],
        groups: data
            .latency
            .iter()
            .map(|(label, s)| (label.clone(), vec![s.p50, s.p90, s.p99]))
            .collect(),
        reference: Some((10.0, "p99 goal 10 ms".into())),
    }
    .render(&mut out);
    let mut burn_groups = Vec::new();
    if let Some((burn, limit)) = data.burn {
        burn_groups.push(("jobsched".to_string(), vec![burn]));
        if let Some(l) = limit {
            burn_groups.push(("Postgres limit".to_string(), vec![l]));
        }
        // Peers measured on the same machine (100k no-op jobs), for scale.
        burn_groups.push(("graphile batched".to_string(), vec![45_000.0]));
        burn_groups.push(("BullMQ".to_string(), vec![18_800.0]));
        burn_groups.push(("graphile default".to_string(), vec![2_800.0]));
    }
    Panel {
        x: 510.0,
        y: 360.0,
        w: 480.0,
        h: 330.0,
        title: "burn: durable no-op jobs/s",
        unit: "jobs/s",
        series: &["jobs/s"],
        groups: burn_groups,
        reference: data.burn.map(|_| (50_000.0, "goal 50,000 j/s".to_string())),
    }
    .render(&mut out);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_a_bar_per_policy_and_escapes_labels() {
        let mut r = Report::default();
        for (p, t) in [("fcfs", 380.0), ("a<b", 390.0)] {
            r.plot.seed.push(PolicyBar {
                policy: p.into(),
                throughput: t,
                bound: 400.0,
                p50_ms: 5.0,
                p99_ms: 9.0,
            });
        }
        let svg = render(&r);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(">fcfs<"));
        assert!(svg.contains("a&lt;b"));
        assert!(svg.contains("sleep bound 400 j/s"));
        // Two throughput bars + two p50 + two p99, plus the p50/p99 legend.
        assert_eq!(svg.matches("<rect x=").count(), 6 + 2);
        // Latency and burn panels have no data.
        assert_eq!(svg.matches("no data").count(), 2);
    }
}
