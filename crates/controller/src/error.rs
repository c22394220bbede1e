//! The crate's error type.

/// Errors of the controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A [`ControllerConfig`](crate::ControllerConfig) field is unusable.
    #[error("invalid controller setting `{field}`: {message}")]
    Config {
        /// The setting (as its environment/flag name where there is one).
        field: &'static str,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// No Kubernetes client could be built from the environment.
    #[error(
        "cannot configure a Kubernetes client: {source}; run inside a pod with a service account, or set KUBECONFIG to a kubeconfig file"
    )]
    KubeClient {
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A Kubernetes API request failed.
    #[error(
        "Kubernetes API request `{op}` failed: {source}; check that the API server is reachable, that the SchedulerConfig CRD is installed (`jobsched crd | kubectl apply -f -`) and that the controller's RBAC (deploy/rbac-controller.yaml) is applied"
    )]
    Kube {
        /// What was being done.
        op: &'static str,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// Redis could not be reached or rejected a command.
    #[error("{source}")]
    Redis {
        /// The transport's error (it names the URL and how to fix it).
        #[source]
        source: jobsched_core::Error,
    },
    /// The durable copy of the policy could not be read or saved.
    #[error(
        "{source}; the durable policy copy is saved to the database named by JOBSCHED_DATABASE_URL"
    )]
    Store {
        /// The store's error.
        #[source]
        source: jobsched_core::Error,
    },
    /// The object's spec is invalid (only possible when the CRD schema was not installed from
    /// `jobsched crd`).
    #[error(
        "SchedulerConfig {object} has an invalid spec: {message}; fix the object (and re-apply the CRD from `jobsched crd` so the API server rejects such specs)"
    )]
    InvalidSpec {
        /// `namespace/name`.
        object: String,
        /// What is wrong.
        message: String,
    },
    /// A `JobSchedule`'s spec is invalid (a bad cron expression or time zone, a job template
    /// field out of range).
    #[error("JobSchedule {object} has an invalid spec: {message}; fix the object")]
    InvalidSchedule {
        /// `namespace/name`.
        object: String,
        /// What is wrong, naming the field.
        message: String,
    },
}

impl ControllerError {
    /// A short `PascalCase` reason for metrics labels and status conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            ControllerError::Config { .. } => "InvalidConfig",
            ControllerError::KubeClient { .. } | ControllerError::Kube { .. } => {
                "KubernetesApiError"
            }
            ControllerError::Redis { .. } => "RedisUnavailable",
            ControllerError::Store { .. } => "StoreUnavailable",
            ControllerError::InvalidSpec { .. } | ControllerError::InvalidSchedule { .. } => {
                "InvalidSpec"
            }
        }
    }

    pub(crate) fn kube(op: &'static str) -> impl FnOnce(kube::Error) -> ControllerError {
        move |source| ControllerError::Kube { op, source }
    }
}
