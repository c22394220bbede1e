//! Named queues: each job belongs to one; each queue has its own [`PolicySettings`] (order,
//! quantum, paused, cluster-wide concurrency limit, weight).
//!
//! A queue exists once it has settings: the `default` queue always does, and any other is
//! created by its first `PUT /queues/{name}` or its first job (with the default settings).
//! A worker that serves several queues shares its free slots among those with work in
//! proportion to their weights ([`SlotShare`]).

use crate::Result;
use crate::policy::PolicySettings;
use crate::ports::{ControlStore, Settings};
use serde::{Deserialize, Serialize};

/// The queue of a job submitted without one, whose settings `PUT /scheduler/policy` sets.
pub const DEFAULT_QUEUE: &str = "default";
/// Longest queue name, in characters.
pub const MAX_QUEUE_NAME_CHARS: usize = 64;

/// Check a queue name: 1 to [`MAX_QUEUE_NAME_CHARS`] characters of `a-z`, `0-9`, `-`, `_`
/// and `.`, starting with a letter or digit (so it fits a URL path, a Redis key and a
/// Kubernetes object's field unescaped). The error says what is wrong.
pub fn check_queue_name(name: &str) -> std::result::Result<(), String> {
    let len = name.chars().count();
    if len == 0 || len > MAX_QUEUE_NAME_CHARS {
        return Err(format!(
            "must be 1 to {MAX_QUEUE_NAME_CHARS} characters, got {len}"
        ));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
    if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        return Err(format!(
            "may only hold lowercase letters, digits, `-`, `_` and `.`; `{}` is not allowed",
            bad.escape_default()
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("must start with a lowercase letter or a digit".into());
    }
    Ok(())
}

/// A queue's settings and how many of its jobs wait and run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueInfo {
    /// Name.
    pub name: String,
    /// Settings.
    pub settings: PolicySettings,
    /// PENDING jobs (including delayed ones).
    pub pending: i64,
    /// PENDING jobs whose `run_at` has not come yet.
    pub delayed: i64,
    /// SCHEDULED and RUNNING jobs.
    pub running: i64,
}

/// How many jobs of each queue wait and run (a store's kept counts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// PENDING jobs (including delayed ones).
    pub pending: i64,
    /// PENDING jobs whose `run_at` has not come yet.
    pub delayed: i64,
    /// SCHEDULED and RUNNING jobs.
    pub running: i64,
}

/// Shares a worker's free slots among the queues it serves, by weight (stride scheduling):
/// each queue has a pass that grows by `claimed / weight` with every claim; the next claim goes
/// to the queue with work whose pass is lowest. A queue that comes back to work starts at the
/// lowest pass of the others, so an idle spell earns it no burst later.
#[derive(Debug, Clone, Default)]
pub struct SlotShare {
    /// Pass per queue, by name.
    passes: std::collections::HashMap<String, f64>,
}

impl SlotShare {
    /// The queue to claim for next among `candidates` (name, weight) with work, and how many
    /// of `free` slots to ask for: its weighted share of them (at least one). `None` when
    /// there is no candidate or no free slot.
    pub fn pick<'a>(&mut self, candidates: &[(&'a str, u32)], free: u32) -> Option<(&'a str, u32)> {
        if free == 0 || candidates.is_empty() {
            return None;
        }
        let floor = candidates
            .iter()
            .filter_map(|(name, _)| self.passes.get(*name).copied())
            .fold(f64::INFINITY, f64::min);
        let floor = if floor.is_finite() { floor } else { 0.0 };
        let mut best: Option<(&'a str, u32, f64)> = None;
        for &(name, weight) in candidates {
            let pass = self.passes.entry(name.to_owned()).or_insert(floor);
            if *pass < floor {
                *pass = floor;
            }
            if best.is_none_or(|(_, _, p)| *pass < p) {
                best = Some((name, weight, *pass));
            }
        }
        let (name, weight, _) = best?;
        let total: u64 = candidates.iter().map(|(_, w)| u64::from((*w).max(1))).sum();
        let share = (u64::from(free) * u64::from(weight.max(1))).div_ceil(total.max(1));
        let ask = u32::try_from(share).unwrap_or(free).clamp(1, free);
        Some((name, ask))
    }

    /// Record that `claimed` jobs of `queue` (weight `weight`) were claimed.
    pub fn claimed(&mut self, queue: &str, weight: u32, claimed: usize) {
        let step = claimed as f64 / f64::from(weight.max(1));
        *self.passes.entry(queue.to_owned()).or_insert(0.0) += step;
    }

    /// Forget the queues not in `keep` (deleted or no longer served).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.passes.retain(|name, _| keep(name));
    }
}

/// The live settings of queue `name`: the transport's copy, else (missing, or the transport
/// not answering) the store's durable copy, else `None` (no such queue; `default` always
/// exists, with the default settings).
pub async fn current(
    store: &dyn ControlStore,
    transport: &dyn Settings,
    name: &str,
) -> Result<Option<PolicySettings>> {
    match cached_copy(transport, name).await {
        Ok(Some(settings)) => return Ok(Some(settings)),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "the queue settings cache is unreadable; answering from the durable copy");
        }
    }
    let durable = durable_copy(store, name).await?;
    Ok(durable.or_else(|| (name == DEFAULT_QUEUE).then(PolicySettings::default)))
}

/// Every queue's live settings, `default` first and the rest by name (the transport's copy
/// where it has one, else the durable copy).
pub async fn all(
    store: &dyn ControlStore,
    transport: &dyn Settings,
) -> Result<Vec<(String, PolicySettings)>> {
    let default = current(store, transport, DEFAULT_QUEUE)
        .await?
        .unwrap_or_default();
    let mut named: std::collections::BTreeMap<String, PolicySettings> =
        store.queues().await?.into_iter().collect();
    match transport.queues().await {
        Ok(cached) => named.extend(cached),
        Err(e) => {
            tracing::warn!(error = %e, "the queue settings cache is unreadable; answering from the durable copy");
        }
    }
    let mut out = vec![(DEFAULT_QUEUE.to_owned(), default)];
    out.extend(named.into_iter().filter(|(n, _)| n != DEFAULT_QUEUE));
    Ok(out)
}

/// Which copy of a queue's settings an operation failed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The store's (durable) copy.
    Durable,
    /// The transport's copy, which the workers read.
    Cache,
}

/// A settings operation that failed, with the copy it failed on.
#[derive(Debug)]
pub struct SideError {
    /// Where it failed.
    pub side: Side,
    /// Why.
    pub error: crate::Error,
}

impl From<SideError> for crate::Error {
    fn from(e: SideError) -> Self {
        e.error
    }
}

fn on(side: Side) -> impl FnOnce(crate::Error) -> SideError {
    move |error| SideError { side, error }
}

/// What [`sync`] found and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Synced {
    /// The transport's settings before, when it wrote there (`Some(None)`: there were none).
    pub cache_was: Option<Option<PolicySettings>>,
    /// Whether either copy was written.
    pub wrote: bool,
}

/// Queue `name`'s settings among `queues` (one copy's list of the named queues).
fn named(queues: Vec<(String, PolicySettings)>, name: &str) -> Option<PolicySettings> {
    queues.into_iter().find(|(n, _)| n == name).map(|(_, s)| s)
}

async fn durable_copy(store: &dyn ControlStore, name: &str) -> Result<Option<PolicySettings>> {
    if name == DEFAULT_QUEUE {
        return store.policy().await;
    }
    Ok(named(store.queues().await?, name))
}

async fn cached_copy(transport: &dyn Settings, name: &str) -> Result<Option<PolicySettings>> {
    if name == DEFAULT_QUEUE {
        return transport.policy().await;
    }
    Ok(named(transport.queues().await?, name))
}

/// Make queue `name`'s settings `desired` in both copies, each written only where it differs:
/// the durable copy first (so a transport rebuild never resurrects the old settings), then
/// the transport's (which tells every worker). `store` is `None` for a writer without a
/// database (a controller configured without one). The one way the REST API and the
/// Kubernetes controller change settings.
pub async fn sync(
    store: Option<&dyn ControlStore>,
    transport: &dyn Settings,
    name: &str,
    desired: &PolicySettings,
) -> std::result::Result<Synced, SideError> {
    let mut synced = Synced::default();
    if let Some(store) = store
        && durable_copy(store, name)
            .await
            .map_err(on(Side::Durable))?
            .as_ref()
            != Some(desired)
    {
        store
            .set_queue(name, desired)
            .await
            .map_err(on(Side::Durable))?;
        synced.wrote = true;
    }
    let cached = cached_copy(transport, name)
        .await
        .map_err(on(Side::Cache))?;
    if cached.as_ref() != Some(desired) {
        transport
            .set_queue(name, desired)
            .await
            .map_err(on(Side::Cache))?;
        synced.cache_was = Some(cached);
        synced.wrote = true;
    }
    Ok(synced)
}

/// Write queue `name`'s settings in both copies, durable first ([`sync`]).
pub async fn apply(
    store: &dyn ControlStore,
    transport: &dyn Settings,
    name: &str,
    settings: &PolicySettings,
) -> Result<()> {
    sync(Some(store), transport, name, settings).await?;
    Ok(())
}

/// Hand queue `name`'s settings back to the REST API: clear `managed_by` (keeping the
/// settings) in each copy where it names `owner` (any owner when `None`), durable first.
/// Returns the owner released, if anything was.
pub async fn release(
    store: Option<&dyn ControlStore>,
    transport: &dyn Settings,
    name: &str,
    owner: Option<&str>,
) -> std::result::Result<Option<String>, SideError> {
    let owned = |s: &PolicySettings| {
        s.managed_by
            .as_deref()
            .is_some_and(|m| owner.is_none_or(|o| o == m))
    };
    let mut released = None;
    if let Some(store) = store
        && let Some(mut settings) = durable_copy(store, name).await.map_err(on(Side::Durable))?
        && owned(&settings)
    {
        let owner = settings.managed_by.take();
        store
            .set_queue(name, &settings)
            .await
            .map_err(on(Side::Durable))?;
        released = Some((owner, settings));
    }
    match cached_copy(transport, name)
        .await
        .map_err(on(Side::Cache))?
    {
        Some(mut settings) if owned(&settings) => {
            let owner = settings.managed_by.take();
            transport
                .set_queue(name, &settings)
                .await
                .map_err(on(Side::Cache))?;
            Ok(owner)
        }
        // A missing key (a flushed Redis) gets the released durable copy now rather than at
        // the leader's next rebuild.
        None => match released {
            Some((owner, settings)) => {
                transport
                    .add_queue(name, &settings)
                    .await
                    .map_err(on(Side::Cache))?;
                Ok(owner)
            }
            None => Ok(None),
        },
        Some(_) => Ok(released.and_then(|(owner, _)| owner)),
    }
}

/// Rebuild the transport's copies that are missing (after a Redis flush) from the durable
/// ones, never overwriting one that is there (a newer write). Returns the queues restored.
pub async fn restore(store: &dyn ControlStore, transport: &dyn Settings) -> Result<Vec<String>> {
    let mut restored = Vec::new();
    if transport.policy().await?.is_none() {
        let durable = store.policy().await?.unwrap_or_default();
        if transport.add_queue(DEFAULT_QUEUE, &durable).await? {
            restored.push(DEFAULT_QUEUE.to_owned());
        }
    }
    let cached: std::collections::HashSet<String> = transport
        .queues()
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    for (name, durable) in store.queues().await? {
        if !cached.contains(&name) && transport.add_queue(&name, &durable).await? {
            restored.push(name);
        }
    }
    Ok(restored)
}

/// Make sure queue `name` exists (a job is about to be put in it): created with the default
/// settings, durable copy first, if it did not. `default` always exists.
pub async fn ensure(store: &dyn ControlStore, transport: &dyn Settings, name: &str) -> Result<()> {
    if name == DEFAULT_QUEUE {
        return Ok(());
    }
    let settings = PolicySettings::default();
    if store.add_queue(name, &settings).await? {
        tracing::info!(queue = name, "queue created with the default settings");
        // Only if absent: a `PUT /queues/{name}` may have come in between.
        transport.add_queue(name, &settings).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["default", "emails", "a", "q-1.high_prio", &"x".repeat(64)] {
            assert!(check_queue_name(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("", "1 to 64"),
            (&"x".repeat(65) as &str, "1 to 64"),
            ("Emails", "`E`"),
            ("a b", "` `"),
            ("a/b", "`/`"),
            ("-a", "start"),
        ] {
            let err = check_queue_name(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    /// Claims follow the weights while every queue has work.
    #[test]
    fn shares_follow_weights() {
        let mut share = SlotShare::default();
        let queues = [("a", 3), ("b", 1)];
        let mut got = std::collections::HashMap::<&str, usize>::new();
        for _ in 0..400 {
            let (q, ask) = share.pick(&queues, 1).unwrap();
            assert_eq!(ask, 1);
            let w = queues.iter().find(|(n, _)| *n == q).unwrap().1;
            share.claimed(q, w, 1);
            *got.entry(q).or_default() += 1;
        }
        assert_eq!(got["a"], 300, "{got:?}");
        assert_eq!(got["b"], 100, "{got:?}");
        // A share of several free slots is the weighted part, rounded up.
        assert_eq!(share.pick(&queues, 8), Some(("a", 6)));
    }

    /// A queue that had no work does not get a burst when it comes back.
    #[test]
    fn a_returning_queue_starts_level() {
        let mut share = SlotShare::default();
        for _ in 0..100 {
            share.claimed("a", 1, 1);
        }
        let queues = [("a", 1), ("b", 1)];
        let mut b_first = 0;
        for _ in 0..10 {
            let (q, _) = share.pick(&queues, 1).unwrap();
            share.claimed(q, 1, 1);
            b_first += usize::from(q == "b");
        }
        assert_eq!(b_first, 5);
        assert_eq!(share.pick(&[], 4), None);
        assert_eq!(share.pick(&queues, 0), None);
    }
}
