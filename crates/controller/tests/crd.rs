//! The committed CRD and example resources stay in step with the Rust types.

use jobsched_controller::{SchedulerConfig, crd_yaml};
use jobsched_core::PolicyKind;
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::PathBuf;

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

fn yaml_to_json(text: &str) -> Value {
    let value: serde_yaml::Value = serde_yaml::from_str(text).expect("valid YAML");
    serde_json::to_value(value).expect("YAML representable as JSON")
}

/// The generated CRD as JSON.
fn crd() -> Value {
    yaml_to_json(&crd_yaml())
}

/// The openAPIV3Schema of the (single) served version.
fn schema() -> Value {
    let crd = crd();
    let versions = crd["spec"]["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 1);
    versions[0]["schema"]["openAPIV3Schema"].clone()
}

/// A focused OpenAPI v3.0 checker for the subset the CRD uses: type, enum, minimum/maximum
/// with boolean exclusiveMinimum/exclusiveMaximum, required, properties, items, nullable. It
/// is stricter than the API server in one way: unknown fields are errors (the server would
/// silently prune them), so a typo in an example fails the test.
fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if value.is_null() {
        if schema["nullable"] != json!(true) {
            errors.push(format!("{path}: null is not allowed"));
        }
        return;
    }
    if let Some(ty) = schema["type"].as_str() {
        let ok = match ty {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            other => {
                errors.push(format!("{path}: checker does not know type {other}"));
                return;
            }
        };
        if !ok {
            errors.push(format!("{path}: expected {ty}, got {value}"));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    if let Some(x) = value.as_f64() {
        if let Some(min) = schema["minimum"].as_f64() {
            let exclusive = schema["exclusiveMinimum"] == json!(true);
            if x < min || (exclusive && x == min) {
                let op = if exclusive { ">" } else { ">=" };
                errors.push(format!("{path}: {x} must be {op} {min}"));
            }
        }
        if let Some(max) = schema["maximum"].as_f64() {
            let exclusive = schema["exclusiveMaximum"] == json!(true);
            if x > max || (exclusive && x == max) {
                let op = if exclusive { "<" } else { "<=" };
                errors.push(format!("{path}: {x} must be {op} {max}"));
            }
        }
    }
    if let Some(object) = value.as_object() {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().expect("required names are strings");
            if !object.contains_key(name) {
                errors.push(format!("{path}: missing required field {name}"));
            }
        }
        if let Some(properties) = schema["properties"].as_object() {
            for (key, child) in object {
                match properties.get(key) {
                    Some(child_schema) => {
                        check(child_schema, child, &format!("{path}.{key}"), errors)
                    }
                    None => errors.push(format!("{path}: unknown field {key}")),
                }
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            check(items, item, &format!("{path}[{i}]"), errors);
        }
    }
}

fn spec_errors(spec: Value) -> Vec<String> {
    let schema = schema();
    let mut errors = Vec::new();
    check(&schema["properties"]["spec"], &spec, "spec", &mut errors);
    errors
}

#[test]
fn committed_crd_matches_generated() {
    committed_matches("deploy/crds/schedulerconfigs.yaml", &crd_yaml(), "crd.rs");
}

/// The committed CRD file `file` is `generated` (from `crates/controller/src/<source>`); with
/// `UPDATE_CRD=1` it is written first.
fn committed_matches(file: &str, generated: &str, source: &str) {
    let path = repo_file(file);
    if std::env::var("UPDATE_CRD").is_ok_and(|v| v == "1") {
        std::fs::write(&path, generated).expect("write the CRD file");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date with crates/controller/src/{source}; regenerate it with \
         `UPDATE_CRD=1 cargo test -p jobsched-controller --test crd`",
        path.display()
    );
}

#[test]
fn committed_job_schedule_crd_matches_generated() {
    let generated = jobsched_controller::job_schedule_crd_yaml();
    committed_matches(
        "deploy/crds/jobschedules.yaml",
        &generated,
        "schedule_crd.rs",
    );
    let crd = yaml_to_json(&generated);
    assert_eq!(crd["metadata"]["name"], "jobschedules.jobsched.io");
    let version = &crd["spec"]["versions"][0];
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(columns.contains(&"Next fire"), "{columns:?}");
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut errors = Vec::new();
    check(
        spec,
        &json!({"cron": "0 2 * * *", "timezone": "Europe/Berlin", "job": {"jobType": "sleep", "payload": {"duration": 1}, "queue": "reports"}}),
        "spec",
        &mut errors,
    );
    assert!(errors.is_empty(), "{errors:?}");
    for (bad, says) in [
        (
            json!({"job": {"jobType": "sleep"}}),
            "missing required field cron",
        ),
        (json!({"cron": "* * * * *"}), "missing required field job"),
        (
            json!({"cron": "* * * * *", "job": {"jobType": "sleep"}, "overlap": "never"}),
            "is not one of",
        ),
    ] {
        let mut errors = Vec::new();
        check(spec, &bad, "spec", &mut errors);
        assert!(errors.iter().any(|e| e.contains(says)), "{bad}: {errors:?}");
    }
}

#[test]
fn the_job_schedule_example_is_a_valid_schedule() {
    let text =
        std::fs::read_to_string(repo_file("deploy/examples/jobschedule-nightly.yaml")).unwrap();
    let crd = yaml_to_json(&jobsched_controller::job_schedule_crd_yaml());
    let spec_schema =
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let doc = yaml_to_json(&text);
    let mut errors = Vec::new();
    check(spec_schema, &doc["spec"], "spec", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let parsed: jobsched_controller::JobSchedule = serde_yaml::from_str(&text).unwrap();
    let now = chrono::DateTime::parse_from_rfc3339("2030-01-01T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let s = parsed
        .spec
        .to_schedule("nightly-report", "ns/nightly-report", now)
        .unwrap();
    assert_eq!(s.job.queue, "reports");
    assert_eq!(s.job.name, "nightly-report");
    // 02:00 in Berlin (UTC+1 in January) is 01:00 UTC.
    assert_eq!(
        s.next_fire_at.unwrap().to_rfc3339(),
        "2030-01-02T01:00:00+00:00"
    );
    let bad = jobsched_controller::JobScheduleSpec {
        timezone: "Mars/Olympus".into(),
        ..parsed.spec.clone()
    };
    let err = bad.to_schedule("x", "ns/x", now).unwrap_err();
    assert!(err.contains("spec.timezone"), "{err}");
    let mut template = parsed.spec.clone();
    template.job.priority = Some(11);
    let err = template.to_schedule("x", "ns/x", now).unwrap_err();
    assert!(err.contains("spec.job.priority"), "{err}");
}

#[test]
fn crd_has_the_promised_shape() {
    let crd = crd();
    assert_eq!(crd["metadata"]["name"], "schedulerconfigs.jobsched.io");
    assert_eq!(crd["spec"]["group"], "jobsched.io");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["kind"], "SchedulerConfig");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["schedcfg"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"]["status"], json!({}));
    let columns: Vec<(&str, &str)> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["jsonPath"].as_str().unwrap()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Policy", ".spec.policy"),
            ("Ready", ".status.conditions[?(@.type==\"Ready\")].status"),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );

    let spec = &schema()["properties"]["spec"];
    let names: Vec<Value> = PolicyKind::ALL.iter().map(|k| json!(k.as_str())).collect();
    assert_eq!(spec["properties"]["policy"]["enum"], json!(names));
    assert_eq!(spec["required"], json!(["policy"]));
    let quantum = &spec["properties"]["roundRobin"]["properties"]["quantumSeconds"];
    assert_eq!(quantum["type"], "number");
    assert_eq!(quantum["minimum"], json!(0.01));
    assert_eq!(quantum["maximum"], json!(86_400.0));
    assert_eq!(quantum["default"], json!(5.0));
    assert_eq!(spec["properties"]["paused"]["default"], json!(false));

    let status = &schema()["properties"]["status"]["properties"];
    for field in [
        "observedGeneration",
        "activePolicy",
        "lastAppliedTime",
        "conditions",
    ] {
        assert!(status.get(field).is_some(), "status.{field} missing");
    }
    let condition = &status["conditions"]["items"]["properties"];
    for field in [
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    ] {
        assert!(condition.get(field).is_some(), "condition.{field} missing");
    }
}

#[test]
fn examples_are_valid_resources() {
    for name in [
        "schedulerconfig-priority.yaml",
        "schedulerconfig-round-robin.yaml",
    ] {
        let path = repo_file(&format!("deploy/examples/{name}"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let doc = yaml_to_json(&text);
        assert_eq!(doc["apiVersion"], "jobsched.io/v1alpha1", "{name}");
        assert_eq!(doc["kind"], "SchedulerConfig", "{name}");
        assert!(doc["metadata"]["name"].is_string(), "{name}: metadata.name");
        let errors = spec_errors(doc["spec"].clone());
        assert!(
            errors.is_empty(),
            "{name} does not match the CRD schema: {errors:?}"
        );
        let parsed: SchedulerConfig =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let settings = parsed.spec.to_settings("ns/jobsched");
        settings.validate().unwrap();
        for q in &parsed.spec.queues {
            q.to_settings("ns/jobsched").validate().unwrap();
        }
        if name.contains("round-robin") {
            assert_eq!(settings.policy, PolicyKind::RoundRobin);
            assert_eq!(settings.quantum_seconds, 2.5);
        } else {
            assert_eq!(settings.policy, PolicyKind::Priority);
        }
    }
}

#[test]
fn schema_rejects_bad_specs() {
    let ok = [
        json!({"policy": "fcfs"}),
        json!({"policy": "sjf", "paused": true}),
        json!({"policy": "round_robin", "roundRobin": {"quantumSeconds": 0.01}}),
        json!({"policy": "round_robin", "roundRobin": {"quantumSeconds": 86400}}),
        json!({"policy": "round_robin", "roundRobin": {}}),
        json!({"policy": "fcfs", "queues": [{"name": "emails"}]}),
        json!({"policy": "fcfs", "queues": [{"name": "a.b-c_1", "policy": "sjf", "quantumSeconds": 2, "paused": true, "concurrencyLimit": 1000000, "weight": 1000}]}),
        json!({"policy": "fcfs", "queues": [{"name": "x", "concurrencyLimit": null}]}),
    ];
    for spec in ok {
        assert_eq!(spec_errors(spec.clone()), Vec::<String>::new(), "{spec}");
    }
    let bad = [
        (json!({"policy": "lifo"}), "is not one of"),
        (json!({"policy": "Round_Robin"}), "is not one of"),
        (json!({}), "missing required field policy"),
        (
            json!({"policy": "round_robin", "roundRobin": {"quantumSeconds": 0}}),
            "must be >= 0.01",
        ),
        (
            json!({"policy": "round_robin", "roundRobin": {"quantumSeconds": -1.5}}),
            "must be >= 0.01",
        ),
        (
            json!({"policy": "round_robin", "roundRobin": {"quantumSeconds": 1e300}}),
            "must be <= 86400",
        ),
        (
            json!({"policy": "round_robin", "roundRobin": {"quantumSeconds": 86400.5}}),
            "must be <= 86400",
        ),
        (
            json!({"policy": "round_robin", "roundRobin": {"quantumSeconds": "5"}}),
            "expected number",
        ),
        (
            json!({"policy": "fcfs", "paused": "yes"}),
            "expected boolean",
        ),
        (
            json!({"policy": "fcfs", "quantum": 3}),
            "unknown field quantum",
        ),
        (
            json!({"policy": "fcfs", "queues": [{"policy": "sjf"}]}),
            "missing required field name",
        ),
        (
            json!({"policy": "fcfs", "queues": [{"name": "q", "weight": 0}]}),
            "must be >= 1",
        ),
        (
            json!({"policy": "fcfs", "queues": [{"name": "q", "weight": 1001}]}),
            "must be <= 1000",
        ),
        (
            json!({"policy": "fcfs", "queues": [{"name": "q", "concurrencyLimit": 0}]}),
            "must be >= 1",
        ),
        (
            json!({"policy": "fcfs", "queues": [{"name": "q", "policy": "lifo"}]}),
            "is not one of",
        ),
        (
            json!({"policy": "fcfs", "queues": [{"name": "q", "limit": 3}]}),
            "unknown field limit",
        ),
    ];
    for (spec, expected) in bad {
        let errors = spec_errors(spec.clone());
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{spec}: expected an error containing {expected:?}, got {errors:?}"
        );
    }
}

#[test]
fn defaults_match_the_core_defaults() {
    let cfg: SchedulerConfig = serde_yaml::from_str(
        "apiVersion: jobsched.io/v1alpha1\nkind: SchedulerConfig\nmetadata: {name: x}\nspec: {policy: round_robin, roundRobin: {}}\n",
    )
    .unwrap();
    let settings = cfg.spec.to_settings("ns/x");
    assert_eq!(
        settings.quantum_seconds,
        jobsched_core::policy::DEFAULT_QUANTUM_SECONDS
    );
    assert!(!settings.paused);
    assert_eq!(settings.managed_by.as_deref(), Some("ns/x"));
    assert_eq!((settings.concurrency_limit, settings.weight), (None, 1));
    // The default queue's limit and weight come from the spec too.
    let cfg: SchedulerConfig = serde_yaml::from_str(
        "apiVersion: jobsched.io/v1alpha1\nkind: SchedulerConfig\nmetadata: {name: x}\nspec: {policy: fcfs, concurrencyLimit: 5, weight: 2}\n",
    )
    .unwrap();
    let settings = cfg.spec.to_settings("ns/x");
    assert_eq!((settings.concurrency_limit, settings.weight), (Some(5), 2));
    assert!(spec_errors(json!({"policy": "fcfs", "concurrencyLimit": 5, "weight": 2})).is_empty());
    assert!(!spec_errors(json!({"policy": "fcfs", "weight": 0})).is_empty());
}

#[test]
fn rbac_grants_exactly_what_the_controller_uses() {
    let text = std::fs::read_to_string(repo_file("deploy/rbac-controller.yaml")).unwrap();
    let role = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap())
        .find(|doc| doc["kind"] == "Role")
        .expect("a Role");
    let mut rules: Vec<(String, String, Vec<String>)> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| {
            let groups: Vec<String> = serde_json::from_value(rule["apiGroups"].clone()).unwrap();
            let resources: Vec<String> = serde_json::from_value(rule["resources"].clone()).unwrap();
            let verbs: Vec<String> = serde_json::from_value(rule["verbs"].clone()).unwrap();
            groups.into_iter().flat_map(move |g| {
                let verbs = verbs.clone();
                resources
                    .clone()
                    .into_iter()
                    .map(move |r| (g.clone(), r, verbs.clone()))
            })
        })
        .collect();
    rules.sort();
    // Reading and renewing are limited to the controller's own Lease (create cannot be).
    let lease_rule = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["resources"] == serde_json::json!(["leases"])
                && r["verbs"] != serde_json::json!(["create"])
        })
        .expect("a Lease get/update rule");
    assert_eq!(
        lease_rule["resourceNames"],
        serde_json::json!(["jobsched-controller"]),
        "{lease_rule}"
    );
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        rules,
        vec![
            (
                "coordination.k8s.io".into(),
                "leases".into(),
                s(&["create"])
            ),
            (
                "coordination.k8s.io".into(),
                "leases".into(),
                s(&["get", "update"])
            ),
            ("events.k8s.io".into(), "events".into(), s(&["create"])),
            (
                "jobsched.io".into(),
                "jobschedules".into(),
                s(&["get", "list", "watch"])
            ),
            (
                "jobsched.io".into(),
                "jobschedules/status".into(),
                s(&["patch"])
            ),
            (
                "jobsched.io".into(),
                "schedulerconfigs".into(),
                s(&["get", "list", "watch"])
            ),
            (
                "jobsched.io".into(),
                "schedulerconfigs/status".into(),
                s(&["patch"])
            ),
        ]
    );
}
