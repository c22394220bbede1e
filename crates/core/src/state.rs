//! Job states and the one table of allowed transitions.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The lifecycle state of a job. Each variant documents who moves a job *out* of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(description = "Lifecycle state of a job.")
)]
pub enum JobStatus {
    /// Waiting to be claimed (new, retrying after backoff, or between Round Robin slices).
    /// Moved out by a worker's claim (to RUNNING, in the active policy's order), by a user
    /// cancel (to CANCELLED), or by a dispatcher that hands it on without starting it (to
    /// SCHEDULED; the store still offers this step, the runtime no longer takes it).
    Pending,
    /// Handed on without a recorded start (the store's `mark_scheduled`; the runtime's workers
    /// claim PENDING → RUNNING directly, so only an older version leaves jobs here). Moved out
    /// by a worker recording its start (to RUNNING), by a user cancel (to CANCELLED), or by the
    /// rescuer when its dispatch lease expires (back to PENDING, no attempt burned).
    Scheduled,
    /// Executing on a worker under a lease. Moved out by that worker (to COMPLETED, FAILED, or
    /// PENDING for a retry, a slice end or a shutdown hand-back), by the rescuer when the
    /// lease expires (to PENDING or FAILED), or by a user cancel (to CANCELLED; the worker is
    /// told to stop the body).
    Running,
    /// Finished successfully. Terminal.
    Completed,
    /// Failed for good and recorded in the dead-letter queue. An operator may re-run it
    /// (to PENDING with fresh retries).
    Failed,
    /// Cancelled by a user. Terminal. (A worker that had already begun the body is asked to
    /// stop it; its outcome is not recorded.)
    Cancelled,
}

impl JobStatus {
    /// Every state, in lifecycle order.
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Pending,
        JobStatus::Scheduled,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// The stored / wire name (`PENDING`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "PENDING",
            JobStatus::Scheduled => "SCHEDULED",
            JobStatus::Running => "RUNNING",
            JobStatus::Completed => "COMPLETED",
            JobStatus::Failed => "FAILED",
            JobStatus::Cancelled => "CANCELLED",
        }
    }

    /// True for states no worker or engine will move a job out of.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// Whether `self -> to` is an allowed transition. This is the single source of truth;
    /// every store method performs only transitions this function allows.
    pub fn can_transition_to(self, to: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, to),
            (Pending, Scheduled)
                | (Pending, Running)
                | (Pending, Cancelled)
                | (Scheduled, Running)
                | (Scheduled, Pending)
                | (Scheduled, Cancelled)
                | (Running, Completed)
                | (Running, Failed)
                | (Running, Pending)
                | (Running, Cancelled)
                | (Failed, Pending)
        )
    }

    /// Returns `Ok(())` if the transition is allowed, else [`crate::Error::IllegalTransition`].
    pub fn check_transition(self, to: JobStatus) -> crate::Result<()> {
        if self.can_transition_to(to) {
            Ok(())
        } else {
            Err(crate::Error::IllegalTransition { from: self, to })
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                crate::Error::invalid(
                    "status",
                    format!(
                        "unknown status `{s}`; expected one of PENDING, SCHEDULED, RUNNING, \
                         COMPLETED, FAILED, CANCELLED"
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;

    /// Every ordered pair of states, checked against the expected table.
    #[test]
    fn transition_table_is_exactly_the_documented_one() {
        let allowed = [
            (Pending, Scheduled),
            (Pending, Running),
            (Pending, Cancelled),
            (Scheduled, Running),
            (Scheduled, Pending),
            (Scheduled, Cancelled),
            (Running, Completed),
            (Running, Failed),
            (Running, Pending),
            (Running, Cancelled),
            (Failed, Pending),
        ];
        let mut checked = 0;
        for from in JobStatus::ALL {
            for to in JobStatus::ALL {
                let expected = allowed.contains(&(from, to));
                assert_eq!(from.can_transition_to(to), expected, "{from} -> {to}");
                assert_eq!(
                    from.check_transition(to).is_ok(),
                    expected,
                    "{from} -> {to}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 36);
    }

    #[test]
    fn terminal_states_only_leave_by_operator_rerun() {
        for from in JobStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            let exits: Vec<_> = JobStatus::ALL
                .into_iter()
                .filter(|to| from.can_transition_to(*to))
                .collect();
            if from == Failed {
                assert_eq!(exits, vec![Pending]);
            } else {
                assert!(exits.is_empty(), "{from} has exits {exits:?}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for st in JobStatus::ALL {
            assert_eq!(st.as_str().parse::<JobStatus>().unwrap(), st);
            assert_eq!(
                serde_json::to_string(&st).unwrap(),
                format!("\"{}\"", st.as_str())
            );
        }
        assert!("DONE".parse::<JobStatus>().is_err());
    }
}
