//! Figures, goals and the three outputs: the table, the JSON document and the SVG chart data.

use crate::stats::Summary;
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt::Write as _;

/// Which way a goal points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cmp {
    /// The value must be at least the target.
    AtLeast,
    /// The value must be at most the target.
    AtMost,
}

/// A target for a figure, with an optional intermediate milestone.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Goal {
    /// Direction.
    pub cmp: Cmp,
    /// The goal.
    pub target: f64,
    /// A lesser milestone on the way to the goal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub milestone: Option<f64>,
}

impl Goal {
    /// `value ≥ target`.
    pub fn at_least(target: f64) -> Goal {
        Goal {
            cmp: Cmp::AtLeast,
            target,
            milestone: None,
        }
    }
    /// `value ≤ target`.
    pub fn at_most(target: f64) -> Goal {
        Goal {
            cmp: Cmp::AtMost,
            target,
            milestone: None,
        }
    }
    /// With a milestone.
    pub fn milestone(mut self, milestone: f64) -> Goal {
        self.milestone = Some(milestone);
        self
    }

    fn reaches(&self, value: f64, target: f64) -> bool {
        match self.cmp {
            Cmp::AtLeast => value >= target,
            Cmp::AtMost => value <= target,
        }
    }

    /// Whether `value` meets the goal (or only the milestone).
    pub fn judge(&self, value: f64) -> Met {
        if self.reaches(value, self.target) {
            Met::Yes
        } else if self.milestone.is_some_and(|m| self.reaches(value, m)) {
            Met::Milestone
        } else {
            Met::No
        }
    }

    fn describe(&self, unit: &str) -> String {
        let op = match self.cmp {
            Cmp::AtLeast => "≥",
            Cmp::AtMost => "≤",
        };
        let mut s = format!("{op} {}", format_value(self.target, unit));
        if let Some(m) = self.milestone {
            let _ = write!(s, " (milestone {op} {})", format_value(m, unit));
        }
        s
    }
}

/// Verdict of a figure against its goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Met {
    /// Goal met.
    Yes,
    /// Only the milestone met.
    Milestone,
    /// Missed.
    No,
}

/// One measured number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    /// Scenario that produced it.
    pub scenario: String,
    /// What it is.
    pub name: String,
    /// The value (`None` when it could not be measured; see `note`).
    pub value: Option<f64>,
    /// Unit (`j/s`, `ms`, `%`, `MiB`, …; empty for plain numbers).
    pub unit: String,
    /// Target, if there is one.
    pub goal: Option<Goal>,
    /// Verdict, when there is a goal and a value.
    pub met: Option<Met>,
    /// Why the value is missing, or context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Format a value for its unit.
pub fn format_value(v: f64, unit: &str) -> String {
    let num = match unit {
        "j/s" | "req/s" | "jobs" | "B/job" => group_thousands(v),
        "%" => format!("{v:.1}"),
        "ms" => {
            if v.abs() >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        }
        "MiB" => format!("{v:.1}"),
        "cores" | "backends" => format!("{v:.2}"),
        "" => {
            if v.fract() == 0.0 && v.abs() < 1e15 {
                format!("{v:.0}")
            } else {
                format!("{v:.3}")
            }
        }
        _ => format!("{v:.2}"),
    };
    if unit.is_empty() {
        num
    } else {
        format!("{num} {unit}")
    }
}

fn group_thousands(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let rounded = v.round() as i64;
    let digits = rounded.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if rounded < 0 {
        out.insert(0, '-');
    }
    out
}

/// Everything the benchmark measured.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// How and where it ran.
    pub meta: Map<String, Value>,
    /// Every figure, in the order measured.
    pub figures: Vec<Figure>,
    /// Per-scenario details (distributions, traces, settings).
    pub details: Map<String, Value>,
    /// Scenarios that failed, with the error.
    pub errors: Vec<String>,
    /// Data for the SVG chart.
    #[serde(skip)]
    pub(crate) plot: crate::plot::PlotData,
}

impl Report {
    /// Record a figure; the verdict is computed from the goal.
    pub fn add(
        &mut self,
        scenario: &str,
        name: impl Into<String>,
        value: Option<f64>,
        unit: &str,
        goal: Option<Goal>,
    ) {
        let met = match (goal, value) {
            (Some(g), Some(v)) => Some(g.judge(v)),
            _ => None,
        };
        self.figures.push(Figure {
            scenario: scenario.to_string(),
            name: name.into(),
            value,
            unit: unit.to_string(),
            goal,
            met,
            note: None,
        });
    }

    /// Record a figure that could not be measured.
    pub fn missing(
        &mut self,
        scenario: &str,
        name: impl Into<String>,
        unit: &str,
        goal: Option<Goal>,
        why: impl Into<String>,
    ) {
        self.add(scenario, name, None, unit, goal);
        if let Some(f) = self.figures.last_mut() {
            f.note = Some(why.into());
        }
    }

    /// Attach a note to the last figure.
    pub fn note(&mut self, note: impl Into<String>) {
        if let Some(f) = self.figures.last_mut() {
            f.note = Some(note.into());
        }
    }

    /// A figure without a goal: [`Report::add`] with `goal` `None`.
    pub fn figure(
        &mut self,
        scenario: &str,
        name: impl Into<String>,
        value: Option<f64>,
        unit: &str,
    ) {
        self.add(scenario, name, value, unit, None);
    }

    /// Record p50/p90/p99 of a distribution in milliseconds.
    pub fn add_latency(
        &mut self,
        scenario: &str,
        what: &str,
        summary: Option<Summary>,
        goals: (Option<Goal>, Option<Goal>),
    ) {
        match summary {
            Some(s) => {
                self.add(scenario, format!("{what} p50"), Some(s.p50), "ms", goals.0);
                self.figure(scenario, format!("{what} p90"), Some(s.p90), "ms");
                self.add(scenario, format!("{what} p99"), Some(s.p99), "ms", goals.1);
            }
            None => {
                for (p, g) in [("p50", goals.0), ("p90", None), ("p99", goals.1)] {
                    self.missing(scenario, format!("{what} {p}"), "ms", g, "no samples");
                }
            }
        }
    }

    /// Store a scenario's detail object.
    pub fn detail(&mut self, scenario: &str, key: &str, value: impl Serialize) {
        let v = serde_json::to_value(value).unwrap_or(Value::Null);
        let entry = self
            .details
            .entry(scenario.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = entry {
            m.insert(key.to_string(), v);
        }
    }

    /// The value of a figure by scenario and name.
    pub fn value(&self, scenario: &str, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|f| f.scenario == scenario && f.name == name)
            .and_then(|f| f.value)
    }

    /// The table: scenario, figure, value, goal, met?
    pub fn table(&self) -> String {
        let header = ["scenario", "figure", "value", "goal", "met?", "note"];
        let rows: Vec<[String; 6]> = self
            .figures
            .iter()
            .map(|f| {
                let value = match f.value {
                    Some(v) => format_value(v, &f.unit),
                    None => "n/a".to_string(),
                };
                let goal = f.goal.map(|g| g.describe(&f.unit)).unwrap_or_default();
                let met = match f.met {
                    Some(Met::Yes) => "yes",
                    Some(Met::Milestone) => "milestone only",
                    Some(Met::No) => "NO",
                    None if f.goal.is_some() => "n/a",
                    None => "",
                };
                [
                    f.scenario.clone(),
                    f.name.clone(),
                    value,
                    goal,
                    met.to_string(),
                    f.note.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let mut width = header.map(|h| h.chars().count());
        for row in &rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String; 6]| {
            let mut s = String::new();
            for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
                let pad = w - cell.chars().count();
                if i == 2 {
                    // Right-align values.
                    let _ = write!(s, "{}{cell}", " ".repeat(pad));
                } else {
                    let _ = write!(s, "{cell}{}", " ".repeat(pad));
                }
                if i < 5 {
                    s.push_str("  ");
                }
            }
            s.trim_end().to_string()
        };
        let mut out = String::new();
        out.push_str(&line(&header.map(String::from)));
        out.push('\n');
        out.push_str(&width.map(|w| "-".repeat(w)).join("  "));
        out.push('\n');
        for row in &rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        if !self.errors.is_empty() {
            out.push_str("\nErrors:\n");
            for e in &self.errors {
                let _ = writeln!(out, "  {e}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_judge_with_milestones() {
        let g = Goal::at_least(50_000.0).milestone(20_000.0);
        assert_eq!(g.judge(60_000.0), Met::Yes);
        assert_eq!(g.judge(25_000.0), Met::Milestone);
        assert_eq!(g.judge(10_000.0), Met::No);
        assert_eq!(Goal::at_most(2.0).judge(2.0), Met::Yes);
        assert_eq!(Goal::at_most(2.0).judge(2.01), Met::No);
    }

    #[test]
    fn values_format_per_unit() {
        assert_eq!(format_value(12_345.6, "j/s"), "12,346 j/s");
        assert_eq!(format_value(999.0, "j/s"), "999 j/s");
        assert_eq!(format_value(1.234, "ms"), "1.23 ms");
        assert_eq!(format_value(97.04, "%"), "97.0 %");
        assert_eq!(format_value(0.98765, ""), "0.988");
        assert_eq!(format_value(3.0, ""), "3");
    }

    #[test]
    fn table_lists_every_figure_with_verdict() {
        let mut r = Report::default();
        r.add(
            "burn",
            "throughput",
            Some(25_000.0),
            "j/s",
            Some(Goal::at_least(50_000.0).milestone(20_000.0)),
        );
        r.missing("burn", "worker RSS", "MiB", None, "url mode");
        let t = r.table();
        assert!(t.contains("25,000 j/s"), "{t}");
        assert!(t.contains("milestone only"), "{t}");
        assert!(t.contains("n/a") && t.contains("url mode"), "{t}");
        assert_eq!(r.value("burn", "throughput"), Some(25_000.0));
    }
}
