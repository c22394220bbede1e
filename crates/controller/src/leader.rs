//! Leader election on a `coordination.k8s.io/v1` Lease, so only one of several replicas writes.
//!
//! The protocol follows client-go's lease lock: a lease held by someone else counts as expired
//! only after this process has seen its record unchanged for `leaseDurationSeconds` of *local*
//! time (so clocks need not agree); every write is a `replace` carrying the `resourceVersion`
//! that was read, so two candidates racing for the same lease cannot both win (the loser gets
//! 409 Conflict).

use crate::error::ControllerError;
use chrono::Utc;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use std::time::{Duration, Instant};

/// What identifies a version of somebody else's lease record.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    resource_version: Option<String>,
}

/// A lease lock held (or wanted) by `identity`.
#[derive(Debug)]
pub(crate) struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    ttl: Duration,
    observed: Option<(Record, Instant)>,
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(r) if r.code == 409)
}

impl LeaseLock {
    /// A lock on lease `name` (in the namespace of `api`) for `identity`, held for `ttl`.
    pub(crate) fn new(api: Api<Lease>, name: &str, identity: &str, ttl: Duration) -> LeaseLock {
        LeaseLock {
            api,
            name: name.to_string(),
            identity: identity.to_string(),
            ttl,
            observed: None,
        }
    }

    fn ttl_seconds(&self) -> i32 {
        i32::try_from(self.ttl.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// The Lease as the API server has it now, if it exists.
    async fn current(&self) -> Result<Option<Lease>, ControllerError> {
        self.api
            .get_opt(&self.name)
            .await
            .map_err(ControllerError::kube("get Lease"))
    }

    /// Acquire the lease if it is free or expired, or renew it if we hold it. `Ok(true)` while
    /// we are the holder.
    pub(crate) async fn try_acquire_or_renew(&mut self) -> Result<bool, ControllerError> {
        let now = MicroTime(Utc::now());
        let existing = self.current().await?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.ttl_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if conflict(&e) => Ok(false),
                Err(e) => Err(ControllerError::kube("create Lease")(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.identity.as_str());
        if !mine && holder.is_some() {
            let record = Record {
                holder: holder.clone(),
                renew_time: spec.renew_time.clone(),
                resource_version: lease.metadata.resource_version.clone(),
            };
            let seen_since = match &self.observed {
                Some((r, at)) if *r == record => *at,
                _ => {
                    let at = Instant::now();
                    self.observed = Some((record, at));
                    at
                }
            };
            let duration = spec.lease_duration_seconds.map_or(self.ttl, |s| {
                Duration::from_secs(u64::try_from(s).unwrap_or(0))
            });
            if seen_since.elapsed() < duration {
                return Ok(false);
            }
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.ttl_seconds()),
            acquire_time: if mine {
                spec.acquire_time.clone()
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..spec
        });
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(ControllerError::kube("update Lease")(e)),
        }
    }

    /// Give the lease up (if we hold it) so another replica takes over at once.
    pub(crate) async fn release(&mut self) -> Result<(), ControllerError> {
        let existing = self.current().await?;
        let Some(mut lease) = existing else {
            return Ok(());
        };
        let Some(mut spec) = lease.spec.take() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Utc::now()));
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if conflict(&e) => Ok(()),
            Err(e) => Err(ControllerError::kube("release Lease")(e)),
        }
    }
}
