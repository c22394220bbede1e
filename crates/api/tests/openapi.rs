//! The committed `docs/openapi.json` must match what the code generates.

use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

fn generated() -> String {
    let mut text = serde_json::to_string_pretty(&jobsched_api::openapi()).unwrap();
    text.push('\n');
    text
}

#[test]
fn openapi_spec_matches_committed_file() {
    let path = committed_path();
    let generated = generated();
    if std::env::var("UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        eprintln!("rewrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is out of date with the API code; regenerate it with \
         `UPDATE_OPENAPI=1 cargo test -p jobsched-api openapi` and commit the result"
    );
}

#[test]
fn openapi_covers_every_route() {
    let spec = serde_json::to_value(jobsched_api::openapi()).unwrap();
    let paths = spec["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/jobs/", &["get", "post"][..]),
        ("/jobs/batch", &["post"]),
        ("/jobs/stats", &["get"]),
        ("/jobs/{id}", &["get", "delete"]),
        ("/scheduler/policy", &["put"]),
        ("/scheduler/status", &["get"]),
        ("/scheduler/dead-letter", &["get", "delete"]),
        ("/scheduler/dead-letter/{id}/retry", &["post"]),
        ("/health", &["get"]),
        ("/livez", &["get"]),
        ("/readyz", &["get"]),
    ] {
        for m in methods {
            assert!(
                paths[path][m].is_object(),
                "{m} {path} missing from the spec"
            );
        }
    }
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // Probes need no token.
    assert_eq!(
        spec["paths"]["/health"]["get"]["security"],
        serde_json::json!([{}])
    );
}
