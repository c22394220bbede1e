//! jobsched-transport: adapters for the [`Transport`](jobsched_core::ports::Transport) port.
//!
//! The transport carries the small shared runtime state (worker slots and liveness, the policy
//! settings) and the broadcast events that wake workers. Postgres stays
//! the source of truth; everything here can be rebuilt.
//!
//! - [`RedisTransport`]: the multi-process transport on Redis. Every multi-key change (reaping
//!   dead workers, reporting slots) is a single Lua script, so it is atomic, and liveness
//!   deadlines use the Redis server clock.
//! - [`MemoryTransport`]: the same observable semantics in one process, for the single-process
//!   dev mode and for tests.

mod error;
mod memory;
mod redis_transport;

pub use error::TransportError;
pub use memory::MemoryTransport;
pub use redis_transport::{DEFAULT_PREFIX, DropKeys, RedisTransport};

use jobsched_core::ports::Event;

/// Name of an event as sent on the events channel.
pub(crate) fn event_name(event: Event) -> String {
    match event {
        Event::JobsAvailable => "JobsAvailable".into(),
        Event::PolicyChanged => "PolicyChanged".into(),
        // Serialising plain numbers, strings and a timestamp cannot fail.
        Event::Submitted(job) => format!(
            "Submitted:{}",
            serde_json::to_string(&job).unwrap_or_default()
        ),
        Event::Cancelled(id) => format!("Cancelled:{id}"),
    }
}

/// Inverse of [`event_name`].
pub(crate) fn event_from_name(name: &str) -> Option<Event> {
    Some(match name {
        "JobsAvailable" => Event::JobsAvailable,
        "PolicyChanged" => Event::PolicyChanged,
        _ if name.starts_with("Cancelled:") => {
            Event::Cancelled(name.strip_prefix("Cancelled:")?.parse().ok()?)
        }
        _ => Event::Submitted(serde_json::from_str(name.strip_prefix("Submitted:")?).ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip() {
        for e in [
            Event::JobsAvailable,
            Event::PolicyChanged,
            Event::Cancelled(uuid::Uuid::now_v7()),
            Event::Submitted(jobsched_core::PendingJob {
                queued: jobsched_core::QueuedJob {
                    id: uuid::Uuid::now_v7(),
                    seq: 42,
                    priority: 3,
                    estimated_duration: 0.125,
                    attempt: 2,
                },
                run_at: chrono::Utc::now(),
            }),
        ] {
            assert_eq!(event_from_name(&event_name(e)), Some(e));
        }
        assert_eq!(event_from_name("nope"), None);
        assert_eq!(event_from_name("Submitted:"), None);
        assert_eq!(event_from_name("Submitted:{}"), None);
    }
}
