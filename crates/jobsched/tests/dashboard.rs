//! The Grafana dashboard only queries metrics the code exports, so no panel is empty.

use std::collections::BTreeSet;

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if k == "expr" {
                    out.push(v.as_str().unwrap_or_default().to_string());
                } else {
                    exprs(v, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// Every `jobsched_…` identifier in a PromQL expression.
fn metric_refs(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("jobsched_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            out.insert(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

#[test]
fn every_dashboard_query_names_an_exported_metric() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/jobsched-dashboard.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut all = Vec::new();
    exprs(&dash, &mut all);
    assert!(all.len() >= 20, "dashboard has only {} queries", all.len());
    jobsched_controller::register_metrics();
    let exported: BTreeSet<String> = jobsched_metrics::metric_names().into_iter().collect();
    let mut used = BTreeSet::new();
    for e in &all {
        for m in metric_refs(e) {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| m.strip_suffix(s).filter(|b| exported.contains(*b)))
                .unwrap_or(&m)
                .to_string();
            assert!(
                exported.contains(&base),
                "dashboard query `{e}` uses `{m}`, which the code does not export"
            );
            used.insert(base);
        }
    }
    // The dashboard covers most of what we export.
    let unused: Vec<_> = exported
        .iter()
        .filter(|m| m.starts_with("jobsched_") && !used.contains(*m))
        .collect();
    assert!(
        unused.len() <= 2,
        "exported but not on the dashboard: {unused:?}"
    );
    // A datasource variable, not a hard-coded datasource.
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["type"] == "datasource"));
    assert!(
        !serde_json::to_string(&dash)
            .unwrap()
            .contains("\"uid\":\"prometheus\"")
    );
}

#[test]
fn metric_refs_finds_names() {
    let r = metric_refs("sum(rate(jobsched_a_total[1m])) / x_jobsched_b + jobsched_c_bucket");
    assert_eq!(
        r.into_iter().collect::<Vec<_>>(),
        ["jobsched_a_total", "jobsched_c_bucket"]
    );
}
