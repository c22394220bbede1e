//! Periodic jobs: a cron expression in a time zone, and the job each fire time enqueues.
//!
//! The engine leader fires schedules (see `jobsched_runtime`); each fire is one conditional
//! write on the schedule's `next_fire_at`, so two leaders can never fire the same time twice.

use crate::job::NewJob;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// Longest accepted schedule name, in characters.
pub const MAX_SCHEDULE_NAME_CHARS: usize = 128;

/// What a fire does while the job of the previous fire has not ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Enqueue nothing this time.
    #[default]
    Skip,
    /// Enqueue anyway.
    Allow,
}

/// A periodic job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Unique name (1 to 128 of `A-Z a-z 0-9 . _ -`).
    pub name: String,
    /// The parsed cron expression and time zone.
    pub when: Cron,
    /// The job each fire enqueues (`id`, `run_at` and `unique_key` are set per fire).
    pub job: NewJob,
    /// While the previous fire's job has not ended.
    pub overlap: Overlap,
    /// No fires while paused.
    pub paused: bool,
    /// A fire time that passed while no leader ran (more than [`CATCH_UP_GRACE_SECONDS`]
    /// late): enqueue one job for it on recovery (`true`), or skip it.
    pub catch_up: bool,
    /// The next fire time.
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The last fire time handled (enqueued or skipped).
    pub last_fire_at: Option<DateTime<Utc>>,
    /// The job the last enqueuing fire created.
    pub last_job_id: Option<crate::JobId>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change by a user.
    pub updated_at: DateTime<Utc>,
    /// The Kubernetes `JobSchedule` (`namespace/name`) that owns this schedule, if any: the
    /// REST API then refuses to change or delete it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
}

/// How late a fire may be handled and still count as on time when `catch_up` is false.
pub const CATCH_UP_GRACE_SECONDS: i64 = 60;

/// A cron expression with its time zone.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "CronText", into = "CronText")]
pub struct Cron {
    text: String,
    timezone: String,
    schedule: cron::Schedule,
    tz: chrono_tz::Tz,
}

impl PartialEq for Cron {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.timezone == other.timezone
    }
}

/// The stored form of a [`Cron`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CronText {
    /// The expression as given.
    pub cron: String,
    /// IANA time zone name.
    pub timezone: String,
}

impl TryFrom<CronText> for Cron {
    type Error = String;
    fn try_from(t: CronText) -> Result<Self, String> {
        Cron::parse(&t.cron, &t.timezone).map_err(|(_, m)| m)
    }
}

impl From<Cron> for CronText {
    fn from(c: Cron) -> Self {
        CronText {
            cron: c.text,
            timezone: c.timezone,
        }
    }
}

impl Cron {
    /// Parse `cron` (5 fields `min hour day-of-month month day-of-week`, or 6 to 7 with
    /// seconds first and an optional year) in `timezone` (an IANA name such as
    /// `Europe/Berlin`; `UTC`). The error names the field (`cron` or `timezone`).
    pub fn parse(cron: &str, timezone: &str) -> Result<Cron, (&'static str, String)> {
        let fields = cron.split_whitespace().count();
        let full = match fields {
            5 => format!("0 {cron}"),
            6 | 7 => cron.to_string(),
            n => {
                return Err((
                    "cron",
                    format!(
                        "must have 5 fields (minute hour day-of-month month day-of-week, e.g. \
                         \"*/5 * * * *\") or 6 to 7 with seconds first, got {n}: {cron:?}"
                    ),
                ));
            }
        };
        let schedule = cron::Schedule::from_str(&full).map_err(|e| {
            (
                "cron",
                format!("is not a valid cron expression ({e}): {cron:?}"),
            )
        })?;
        let tz = chrono_tz::Tz::from_str(timezone).map_err(|_| {
            (
                "timezone",
                format!("must be an IANA time zone such as UTC or Europe/Berlin, got {timezone:?}"),
            )
        })?;
        let cron = Cron {
            text: cron.to_string(),
            timezone: timezone.to_string(),
            schedule,
            tz,
        };
        if cron.next_after(Utc::now()).is_none() {
            return Err(("cron", format!("never fires again: {:?}", cron.text)));
        }
        Ok(cron)
    }

    /// The expression as given.
    pub fn expression(&self) -> &str {
        &self.text
    }

    /// The time zone name.
    pub fn timezone(&self) -> &str {
        &self.timezone
    }

    /// The last fire time at or before `t`, if any.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // The iterator's back end walks to times strictly before its start.
        let just_after = t + chrono::Duration::nanoseconds(1);
        self.schedule
            .after(&just_after.with_timezone(&self.tz))
            .next_back()
            .map(|p| p.with_timezone(&Utc))
    }

    /// The first fire time strictly after `t`, if any.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .after(&t.with_timezone(&self.tz))
            .next()
            .map(|n| n.with_timezone(&Utc))
    }
}

/// Check a schedule name: 1 to [`MAX_SCHEDULE_NAME_CHARS`] of `A-Z a-z 0-9 . _ -`.
pub fn check_schedule_name(name: &str) -> Result<(), String> {
    let n = name.chars().count();
    if n == 0
        || n > MAX_SCHEDULE_NAME_CHARS
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Err(format!(
            "must be 1 to {MAX_SCHEDULE_NAME_CHARS} characters of A-Z a-z 0-9 . _ -, got {name:?}"
        ))
    } else {
        Ok(())
    }
}

/// A handled fire of a schedule, as the leader records it
/// ([`crate::ports::ScheduleStore::advance_schedule`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fired {
    /// The `next_fire_at` the leader read; the write applies only while it still is.
    pub expected: DateTime<Utc>,
    /// The fire time handled (the new `last_fire_at`).
    pub fire: DateTime<Utc>,
    /// The next fire time (`None`: never again).
    pub next: Option<DateTime<Utc>>,
    /// The job the fire enqueued (`None`: skipped; `last_job_id` is kept).
    pub job: Option<crate::JobId>,
}

/// What to do at a due fire time, given the schedule and the state of its last job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireDecision {
    /// Enqueue one job for this fire time.
    Enqueue,
    /// Enqueue nothing (overlap, or a missed fire without catch-up).
    Skip,
}

impl Schedule {
    /// The fire due at `now`, if any: the fire time handled and the next one after it. Fire
    /// times missed together (a leader was down) are one fire: the latest of them.
    pub fn due(&self, now: DateTime<Utc>) -> Option<(DateTime<Utc>, Option<DateTime<Utc>>)> {
        let first = self.next_fire_at.filter(|at| *at <= now)?;
        let fire = self
            .when
            .last_at_or_before(now)
            .filter(|latest| *latest >= first)
            .unwrap_or(first);
        Some((fire, self.when.next_after(fire.max(now))))
    }

    /// Enqueue or skip the fire at `fire` (handled at `now`), given whether the previous
    /// fire's job is still open.
    pub fn decide(&self, fire: DateTime<Utc>, now: DateTime<Utc>, last_open: bool) -> FireDecision {
        let late = (now - fire).num_seconds() > CATCH_UP_GRACE_SECONDS;
        if (late && !self.catch_up) || (last_open && self.overlap == Overlap::Skip) {
            FireDecision::Skip
        } else {
            FireDecision::Enqueue
        }
    }

    /// The job of the fire at `fire`: a fresh id, and an idempotency key naming the schedule
    /// and the fire time, so one fire time can never create two jobs.
    pub fn job_for(&self, fire: DateTime<Utc>) -> NewJob {
        let mut job = self.job.clone();
        job.id = uuid::Uuid::now_v7();
        job.run_at = None;
        job.unique_key = Some(crate::UniqueKey {
            key: format!("schedule:{}:{}", self.name, fire.timestamp_millis()),
            fingerprint: "schedule".into(),
        });
        job
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobSpec;
    use chrono::TimeZone;

    #[test]
    fn five_fields_fire_on_the_minute_in_the_time_zone() {
        let c = Cron::parse("30 9 * * *", "Europe/Berlin").unwrap();
        // 2030-01-01 09:30 in Berlin (UTC+1) is 08:30 UTC; in July (UTC+2) 07:30 UTC.
        let jan = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            c.next_after(jan),
            Some(Utc.with_ymd_and_hms(2030, 1, 1, 8, 30, 0).unwrap())
        );
        let jul = Utc.with_ymd_and_hms(2030, 7, 1, 0, 0, 0).unwrap();
        assert_eq!(
            c.next_after(jul),
            Some(Utc.with_ymd_and_hms(2030, 7, 1, 7, 30, 0).unwrap())
        );
    }

    #[test]
    fn bad_input_names_the_field() {
        assert_eq!(Cron::parse("* * *", "UTC").unwrap_err().0, "cron");
        assert_eq!(Cron::parse("61 * * * *", "UTC").unwrap_err().0, "cron");
        assert_eq!(
            Cron::parse("* * * * *", "Mars/Olympus").unwrap_err().0,
            "timezone"
        );
        assert_eq!(
            Cron::parse("0 0 0 1 1 * 2001", "UTC").unwrap_err().0,
            "cron"
        );
        assert!(check_schedule_name("nightly-report_1.v2").is_ok());
        assert!(check_schedule_name("").is_err());
        assert!(check_schedule_name("a b").is_err());
    }

    #[test]
    fn missed_fires_coalesce_into_the_latest() {
        let t0 = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        let s = Schedule {
            name: "m".into(),
            when: Cron::parse("* * * * *", "UTC").unwrap(),
            job: NewJob::new(JobSpec {
                name: "j".into(),
                job_type: "sleep".into(),
                ..JobSpec::default()
            })
            .unwrap(),
            overlap: Overlap::Allow,
            paused: false,
            catch_up: true,
            next_fire_at: Some(t0),
            last_fire_at: None,
            last_job_id: None,
            created_at: t0,
            updated_at: t0,
            managed_by: None,
        };
        assert_eq!(s.due(t0 - chrono::Duration::seconds(1)), None);
        let (fire, _) = s.due(t0).unwrap();
        assert_eq!(fire, t0, "on time: the fire time itself");
        let now = t0 + chrono::Duration::seconds(150);
        let (fire, next) = s.due(now).unwrap();
        assert_eq!(fire, t0 + chrono::Duration::seconds(120));
        assert_eq!(next, Some(t0 + chrono::Duration::seconds(180)));
        assert_eq!(s.decide(fire, now, false), FireDecision::Enqueue);
        assert_eq!(s.decide(fire, now, true), FireDecision::Enqueue);
        let strict = Schedule {
            catch_up: false,
            overlap: Overlap::Skip,
            ..s.clone()
        };
        assert_eq!(
            strict.decide(fire, now, false),
            FireDecision::Enqueue,
            "30 s late"
        );
        assert_eq!(
            strict.decide(t0, now, false),
            FireDecision::Skip,
            "150 s late"
        );
        assert_eq!(
            strict.decide(fire, now, true),
            FireDecision::Skip,
            "overlap"
        );
        let a = s.job_for(fire);
        let b = s.job_for(fire);
        assert_ne!(a.id, b.id);
        assert_eq!(a.unique_key, b.unique_key, "one key per fire time");
    }
}
