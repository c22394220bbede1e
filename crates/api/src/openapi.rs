//! The OpenAPI document, generated from the handlers' annotations.

use crate::dto;
use crate::routes::{health, job_types, jobs, queues, scheduler, schedules, ui};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "jobsched",
        description = "Distributed job scheduler with runtime-switchable policies (fcfs, sjf, \
                       priority, round_robin). Every path also answers with a trailing slash \
                       (or without one, for `/jobs/`). When the server has an API token, send \
                       `Authorization: Bearer <token>` on every route except /health, /livez, \
                       /readyz, /docs and /api-docs/openapi.json; policy changes and dead-letter \
                       retry/purge need the admin token when one is configured.",
        license(name = "Apache-2.0"),
    ),
    paths(
        jobs::submit,
        jobs::submit_batch,
        jobs::list,
        jobs::stats,
        jobs::get,
        jobs::logs,
        job_types::list,
        jobs::cancel,
        schedules::create,
        schedules::list,
        schedules::get,
        schedules::put,
        schedules::delete,
        queues::list,
        queues::get,
        queues::put,
        scheduler::set_policy,
        scheduler::release_policy_owner,
        scheduler::status,
        scheduler::workers,
        scheduler::dead_letters,
        scheduler::retry_dead_letter,
        scheduler::purge_dead_letters,
        health::health,
        health::livez,
        health::readyz,
        ui::whoami,
        ui::overview,
    ),
    components(schemas(
        dto::JobStatus,
        dto::PolicyKind,
        dto::JobCreate,
        dto::BatchCreate,
        dto::BatchCreated,
        dto::Job,
        dto::JobResponse,
        dto::Progress,
        dto::LogLine,
        dto::TryLog,
        dto::JobLogsResponse,
        dto::JobTypeResponse,
        dto::JobTypesResponse,
        dto::UnservedType,
        dto::JobListResponse,
        dto::JobStatsResponse,
        dto::RetryBackoff,
        dto::ScheduleBody,
        dto::ScheduleJob,
        dto::ScheduleResponse,
        dto::QueueUpdate,
        dto::QueueResponse,
        dto::PolicyUpdate,
        dto::SchedulerStatus,
        dto::DeadLetterResponse,
        dto::WorkerResponse,
        ui::WhoAmI,
        ui::Overview,
        crate::activity::Sample,
        dto::PurgeResponse,
        dto::HealthResponse,
        dto::ProbeResponse,
        dto::ErrorBody,
        dto::ValidationIssue,
        dto::ValidationErrorBody,
    )),
    modifiers(&BearerAuth),
    // The token is required only when the server has one (JOBSCHED_API_TOKEN /
    // JOBSCHED_ADMIN_TOKEN); a server without one (e.g. `jobsched dev`) takes requests without.
    security(("bearer" = []), ()),
    tags(
        (name = "jobs", description = "Submit, list, inspect and cancel jobs"),
        (name = "schedules", description = "Periodic jobs: a cron expression, a time zone and the job each fire enqueues"),
        (name = "queues", description = "Named queues, each with its own policy, pause, concurrency limit and weight"),
        (name = "scheduler", description = "Scheduling policy, status and the dead-letter queue"),
        (name = "health", description = "Health and Kubernetes probes (no token needed)"),
        (name = "console", description = "What the web console at /ui reads"),
    )
)]
struct ApiDoc;

/// Adds the bearer-token security scheme.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.description = Some(
            "`Authorization: Bearer <token>`: required when the server was started with an API \
             token (JOBSCHED_API_TOKEN, or JOBSCHED_ADMIN_TOKEN for the admin routes); a server \
             without one accepts requests without it."
                .into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
    }
}

/// The OpenAPI 3.1 document of the API (also committed as `docs/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

/// The failure responses most routes share, declared once and named in each route's
/// `responses(...)` beside its own (e.g. `responses((status = 200, ...), failures::Store)`).
pub(crate) mod failures {
    use std::collections::BTreeMap;
    use utoipa::IntoResponses;
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

    /// A response whose body is the named schema.
    fn error(schema: &str, description: &str) -> RefOr<Response> {
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(schema)))
            .build();
        ResponseBuilder::new()
            .description(description)
            .content("application/json", content)
            .build()
            .into()
    }

    /// A set of failure responses: `name: (status, description[, body schema])...`; the body is
    /// an `ErrorBody` unless the entry names another schema.
    macro_rules! failure_set {
        ($($(#[$doc:meta])* $name:ident:
            $(($status:literal, $description:literal $(, $schema:ident)?)),+;)+) => {$(
            $(#[$doc])*
            pub(crate) struct $name;

            impl IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    BTreeMap::from([$((
                        $status.to_string(),
                        error([$(stringify!($schema),)? "ErrorBody"][0], $description),
                    )),+])
                }
            }
        )+};
    }

    failure_set! {
        /// A route that reads or writes the store: a wrong token, the store unavailable.
        Store: ("401", "Missing or wrong API token"), ("503", "Store unavailable");
        /// A route that needs the store and Redis.
        Both: ("401", "Missing or wrong API token"), ("503", "Store or transport unavailable");
        /// An admin route on the store.
        AdminStore: ("401", "Missing or wrong token"), ("403", "Needs the admin token"),
            ("503", "Store unavailable");
        /// An admin route on the store and Redis.
        AdminBoth: ("401", "Missing or wrong token"), ("403", "Needs the admin token"),
            ("503", "Store or transport unavailable");
        /// A route on one job (`/jobs/{id}`), beside [`Store`]: an unknown or malformed id.
        Job: ("404", "No such job"), ("422", "Malformed id", ValidationErrorBody);
        /// A route on one queue (`/queues/{name}`), beside [`Store`]: an unknown or malformed
        /// name.
        Queue: ("404", "No such queue"), ("422", "Malformed queue name", ValidationErrorBody);
        /// A route on one schedule (`/schedules/{name}`), beside [`Store`]: an unknown name.
        Schedule: ("404", "No such schedule");
        /// A route that reads a JSON body: it came too slowly or too large.
        Body: ("408", "The body did not arrive in time"), ("413", "Body over its limit");
        /// A route that reads a JSON body with job payloads: [`Body`], or a payload too large.
        Payload: ("408", "The body did not arrive in time"),
            ("413", "Body or a payload over its limit");
        /// A route that changes settings a Kubernetes SchedulerConfig may own.
        ConfigOwned: ("409", "Owned by a Kubernetes SchedulerConfig");
        /// A route that changes a schedule a Kubernetes JobSchedule may own.
        ScheduleOwned: ("409", "Owned by a Kubernetes JobSchedule");
    }
}
