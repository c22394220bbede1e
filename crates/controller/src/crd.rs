//! The `SchedulerConfig` custom resource (`jobsched.io/v1alpha1`), generated from these types.

use jobsched_core::policy::{
    DEFAULT_QUANTUM_SECONDS, DEFAULT_WEIGHT, MAX_CONCURRENCY_LIMIT, MAX_QUANTUM_SECONDS,
    MAX_WEIGHT, MIN_QUANTUM_SECONDS, MIN_WEIGHT,
};
use jobsched_core::queue::MAX_QUEUE_NAME_CHARS;
use jobsched_core::{PolicyKind, PolicySettings};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use schemars::r#gen::SchemaGenerator;
use schemars::schema::{InstanceType, Metadata, NumberValidation, Schema, SchemaObject};
use serde::{Deserialize, Serialize};

/// API group of the resource.
pub const GROUP: &str = "jobsched.io";
/// API version of the resource.
pub const VERSION: &str = "v1alpha1";

/// The desired scheduling settings of a jobsched installation.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "jobsched.io",
    version = "v1alpha1",
    kind = "SchedulerConfig",
    namespaced,
    shortname = "schedcfg",
    status = "SchedulerConfigStatus",
    derive = "PartialEq",
    doc = "SchedulerConfig selects the scheduling policy of a jobsched installation. The controller follows one object (by name) per installation and writes its settings to the scheduler.",
    printcolumn = r#"{"name":"Policy","type":"string","description":"Scheduling policy","jsonPath":".spec.policy"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","description":"Whether the policy is applied","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerConfigSpec {
    /// Scheduling policy: fcfs, sjf, priority or round_robin.
    #[schemars(schema_with = "policy_schema")]
    pub policy: PolicyKind,
    /// Round Robin settings (used when policy is round_robin).
    pub round_robin: Option<RoundRobinSpec>,
    /// When true the scheduler dispatches nothing; running jobs finish.
    #[serde(default)]
    pub paused: bool,
    /// Most jobs of the `default` queue running at once across the cluster (1 to 1000000;
    /// unset: no limit).
    #[serde(default)]
    #[schemars(schema_with = "limit_schema")]
    pub concurrency_limit: Option<u32>,
    /// The `default` queue's share of a worker's slots while named queues also have work,
    /// relative to their weights (1 to 1000, default 1).
    #[serde(default = "default_weight")]
    #[schemars(schema_with = "weight_schema")]
    pub weight: u32,
    /// Named queues this object sets (the `default` queue is the settings above). While it
    /// lists a queue, the REST API cannot change that queue's settings; a queue left out again
    /// keeps its settings and is released to the REST API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<QueueSpec>,
}

/// One named queue's settings (the fields of `PUT /queues/{name}`).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    /// Queue name: 1 to 64 of a-z, 0-9, `-`, `_`, `.`, starting with a letter or digit; not
    /// `default` (whose settings are spec.policy, spec.roundRobin and spec.paused).
    #[schemars(schema_with = "queue_name_schema")]
    pub name: String,
    /// Scheduling policy of the queue: fcfs (default), sjf, priority or round_robin.
    #[serde(default = "default_policy")]
    #[schemars(schema_with = "policy_schema")]
    pub policy: PolicyKind,
    /// Round Robin time quantum in seconds (0.01 to 86400, default 5).
    #[serde(default = "default_quantum")]
    #[schemars(schema_with = "quantum_schema")]
    pub quantum_seconds: f64,
    /// When true, none of the queue's jobs start; running ones finish.
    #[serde(default)]
    pub paused: bool,
    /// Most of the queue's jobs running at once across the cluster (1 to 1000000; unset: no
    /// limit).
    #[serde(default)]
    #[schemars(schema_with = "limit_schema")]
    pub concurrency_limit: Option<u32>,
    /// The queue's share of a worker's slots while other queues also have work, relative to
    /// their weights (1 to 1000, default 1).
    #[serde(default = "default_weight")]
    #[schemars(schema_with = "weight_schema")]
    pub weight: u32,
}

fn default_policy() -> PolicyKind {
    PolicyKind::Fcfs
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

impl QueueSpec {
    /// The settings this entry asks for, owned by `managed_by` (`namespace/name`).
    pub fn to_settings(&self, managed_by: &str) -> PolicySettings {
        PolicySettings {
            policy: self.policy,
            quantum_seconds: self.quantum_seconds,
            paused: self.paused,
            managed_by: Some(managed_by.to_string()),
            concurrency_limit: self.concurrency_limit,
            weight: self.weight,
        }
    }
}

/// Round Robin settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoundRobinSpec {
    /// Time quantum in seconds (0.01 to 86400, default 5).
    #[serde(default = "default_quantum")]
    #[schemars(schema_with = "quantum_schema")]
    pub quantum_seconds: f64,
}

impl Default for RoundRobinSpec {
    fn default() -> Self {
        RoundRobinSpec {
            quantum_seconds: DEFAULT_QUANTUM_SECONDS,
        }
    }
}

fn default_quantum() -> f64 {
    DEFAULT_QUANTUM_SECONDS
}

/// Observed state, written by the controller.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerConfigStatus {
    /// The `metadata.generation` this status describes.
    pub observed_generation: Option<i64>,
    /// The policy the controller last applied from this object.
    #[serde(default)]
    #[schemars(schema_with = "optional_policy_schema")]
    pub active_policy: Option<PolicyKind>,
    /// When the controller last changed the scheduler's settings from this object (RFC 3339).
    #[serde(default)]
    #[schemars(schema_with = "date_time_schema")]
    pub last_applied_time: Option<String>,
    /// Standard conditions; `Ready` tells whether the spec is in effect.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A status condition in the standard Kubernetes shape.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type (`Ready`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable `PascalCase` reason: `Applied`, `InvalidSpec`, `RedisUnavailable`, ...
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[schemars(schema_with = "date_time_schema")]
    pub last_transition_time: String,
    /// The `metadata.generation` the condition was set for.
    pub observed_generation: Option<i64>,
}

impl SchedulerConfigSpec {
    /// The Round Robin quantum this spec asks for (the default when unset).
    pub fn quantum_seconds(&self) -> f64 {
        self.round_robin
            .as_ref()
            .map_or(DEFAULT_QUANTUM_SECONDS, |rr| rr.quantum_seconds)
    }

    /// The scheduler settings this spec asks for, owned by `managed_by` (`namespace/name`).
    pub fn to_settings(&self, managed_by: &str) -> PolicySettings {
        PolicySettings {
            policy: self.policy,
            quantum_seconds: self.quantum_seconds(),
            paused: self.paused,
            managed_by: Some(managed_by.to_string()),
            concurrency_limit: self.concurrency_limit,
            weight: self.weight,
        }
    }
}

fn policy_values() -> Vec<serde_json::Value> {
    PolicyKind::ALL
        .iter()
        .map(|k| serde_json::Value::from(k.as_str()))
        .collect()
}

fn policy_schema(_: &mut SchemaGenerator) -> Schema {
    Schema::Object(SchemaObject {
        instance_type: Some(InstanceType::String.into()),
        enum_values: Some(policy_values()),
        ..Default::default()
    })
}

fn optional_policy_schema(_: &mut SchemaGenerator) -> Schema {
    let mut schema = SchemaObject {
        instance_type: Some(InstanceType::String.into()),
        enum_values: Some(policy_values()),
        ..Default::default()
    };
    schema
        .extensions
        .insert("nullable".into(), serde_json::Value::Bool(true));
    Schema::Object(schema)
}

fn quantum_schema(_: &mut SchemaGenerator) -> Schema {
    // The same bounds as the REST API's (`PolicySettings::validate`).
    Schema::Object(SchemaObject {
        instance_type: Some(InstanceType::Number.into()),
        number: Some(Box::new(NumberValidation {
            minimum: Some(MIN_QUANTUM_SECONDS),
            maximum: Some(MAX_QUANTUM_SECONDS),
            ..Default::default()
        })),
        metadata: Some(Box::new(Metadata {
            default: Some(serde_json::Value::from(DEFAULT_QUANTUM_SECONDS)),
            ..Default::default()
        })),
        ..Default::default()
    })
}

fn integer_schema(min: f64, max: f64, default: Option<u32>, nullable: bool) -> Schema {
    let mut schema = SchemaObject {
        instance_type: Some(InstanceType::Integer.into()),
        number: Some(Box::new(NumberValidation {
            minimum: Some(min),
            maximum: Some(max),
            ..Default::default()
        })),
        metadata: Some(Box::new(Metadata {
            default: default.map(serde_json::Value::from),
            ..Default::default()
        })),
        ..Default::default()
    };
    if nullable {
        schema
            .extensions
            .insert("nullable".into(), serde_json::Value::Bool(true));
    }
    Schema::Object(schema)
}

fn limit_schema(_: &mut SchemaGenerator) -> Schema {
    integer_schema(1.0, f64::from(MAX_CONCURRENCY_LIMIT), None, true)
}

fn weight_schema(_: &mut SchemaGenerator) -> Schema {
    integer_schema(
        f64::from(MIN_WEIGHT),
        f64::from(MAX_WEIGHT),
        Some(DEFAULT_WEIGHT),
        false,
    )
}

fn queue_name_schema(_: &mut SchemaGenerator) -> Schema {
    Schema::Object(SchemaObject {
        instance_type: Some(InstanceType::String.into()),
        string: Some(Box::new(schemars::schema::StringValidation {
            min_length: Some(1),
            max_length: Some(MAX_QUEUE_NAME_CHARS as u32),
            pattern: Some("^[a-z0-9][a-z0-9._-]*$".into()),
        })),
        ..Default::default()
    })
}

fn date_time_schema(_: &mut SchemaGenerator) -> Schema {
    Schema::Object(SchemaObject {
        instance_type: Some(InstanceType::String.into()),
        format: Some("date-time".into()),
        ..Default::default()
    })
}

/// The CEL rules the API server checks on `spec` (`x-kubernetes-validations`): what the
/// controller would otherwise reject only after the object was stored.
pub const SPEC_RULES: [(&str, &str); 1] = [(
    "!has(self.roundRobin) || self.policy == 'round_robin'",
    "spec.roundRobin only applies to policy round_robin: remove it, or set policy: round_robin",
)];

/// The CEL rule on each `spec.queues[]` entry.
pub const QUEUE_RULE: (&str, &str) = (
    "self.name != 'default'",
    "spec.queues[] cannot name the default queue: set its policy with spec.policy, \
     spec.roundRobin and spec.paused",
);

/// The CEL rule on `spec.roundRobin`: the REST API's quantum bounds.
pub const QUANTUM_RULE: (&str, &str) = (
    "!has(self.quantumSeconds) || (self.quantumSeconds >= 0.01 && self.quantumSeconds <= 86400.0)",
    "spec.roundRobin.quantumSeconds must be from 0.01 to 86400 seconds",
);

fn rule(rule: &str, message: &str, field_path: Option<&str>) -> serde_json::Value {
    let mut r =
        serde_json::json!({ "rule": rule, "message": message, "reason": "FieldValueInvalid" });
    if let Some(path) = field_path {
        r["fieldPath"] = path.into();
    }
    r
}

/// The CustomResourceDefinition of [`SchedulerConfig`] as JSON: the derived schema plus the CEL
/// rules and the `metav1.Condition` shape of `status.conditions` (a list map keyed by `type`).
pub fn crd_json() -> serde_json::Value {
    let mut crd = serde_json::to_value(SchedulerConfig::crd())
        .expect("a CustomResourceDefinition always serializes to JSON");
    for version in crd["spec"]["versions"].as_array_mut().into_iter().flatten() {
        let root = &mut version["schema"]["openAPIV3Schema"]["properties"];
        let spec = &mut root["spec"];
        spec["x-kubernetes-validations"] = SPEC_RULES
            .iter()
            .map(|(r, m)| rule(r, m, Some(".roundRobin")))
            .collect();
        spec["properties"]["roundRobin"]["x-kubernetes-validations"] = serde_json::json!([rule(
            QUANTUM_RULE.0,
            QUANTUM_RULE.1,
            Some(".quantumSeconds")
        )]);
        let queues = &mut spec["properties"]["queues"];
        queues["x-kubernetes-list-type"] = "map".into();
        queues["x-kubernetes-list-map-keys"] = serde_json::json!(["name"]);
        queues["items"]["x-kubernetes-validations"] =
            serde_json::json!([rule(QUEUE_RULE.0, QUEUE_RULE.1, Some(".name"))]);
        shape_conditions(&mut root["status"]["properties"]["conditions"]);
    }
    crd
}

/// `status.conditions` in the `metav1.Condition` shape: a list map keyed by `type`, the
/// standard required fields and bounds.
pub(crate) fn shape_conditions(conditions: &mut serde_json::Value) {
    conditions["x-kubernetes-list-type"] = "map".into();
    conditions["x-kubernetes-list-map-keys"] = serde_json::json!(["type"]);
    let item = &mut conditions["items"];
    item["required"] =
        serde_json::json!(["lastTransitionTime", "message", "reason", "status", "type"]);
    let props = &mut item["properties"];
    // The bounds of metav1.Condition.
    props["type"]["maxLength"] = 316.into();
    props["type"]["pattern"] = "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$".into();
    props["status"]["enum"] = serde_json::json!(["True", "False", "Unknown"]);
    props["reason"]["minLength"] = 1.into();
    props["reason"]["maxLength"] = 1024.into();
    props["reason"]["pattern"] = "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$".into();
    props["message"]["maxLength"] = 32768.into();
    props["observedGeneration"]["minimum"] = 0.into();
}

/// The CustomResourceDefinition of [`SchedulerConfig`] as YAML (what `jobsched crd` prints and
/// `deploy/crds/schedulerconfigs.yaml` holds).
pub fn crd_yaml() -> String {
    let crd = crd_json();
    let body =
        serde_yaml::to_string(&crd).expect("a CustomResourceDefinition always serializes to YAML");
    format!(
        "# Generated by `jobsched crd` from crates/controller/src/crd.rs; do not edit by hand.\n---\n{body}"
    )
}
