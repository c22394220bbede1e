//! The `SchedulerConfig` custom resource (`jobsched.io/v1alpha1`), generated from these types.

use jobsched_core::policy::{DEFAULT_QUANTUM_SECONDS, MAX_QUANTUM_SECONDS, MIN_QUANTUM_SECONDS};
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_robin: Option<RoundRobinSpec>,
    /// When true the scheduler dispatches nothing; running jobs finish.
    #[serde(default)]
    pub paused: bool,
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerConfigStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The policy the controller last applied from this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_policy_schema")]
    pub active_policy: Option<PolicyKind>,
    /// When the controller last changed the scheduler's settings from this object (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time_schema")]
    pub last_applied_time: Option<String>,
    /// Standard conditions; `Ready` tells whether the spec is in effect.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A status condition in the standard Kubernetes shape.
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

fn date_time_schema(_: &mut SchemaGenerator) -> Schema {
    Schema::Object(SchemaObject {
        instance_type: Some(InstanceType::String.into()),
        format: Some("date-time".into()),
        ..Default::default()
    })
}

/// The CustomResourceDefinition of [`SchedulerConfig`] as YAML (what `jobsched crd` prints and
/// `deploy/crds/schedulerconfigs.yaml` holds).
pub fn crd_yaml() -> String {
    let crd = SchedulerConfig::crd();
    let body =
        serde_yaml::to_string(&crd).expect("a CustomResourceDefinition always serializes to YAML");
    format!(
        "# Generated by `jobsched crd` from crates/controller/src/crd.rs; do not edit by hand.\n---\n{body}"
    )
}
