//! The in-process transport for the single-process dev mode.

use async_trait::async_trait;
use jobsched_core::ports::{
    Event, EventBus, Settings, Subscription, Transport, WorkerRegistry, WorkerSlots,
};
use jobsched_core::{PolicySettings, Result};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Events kept for a slow subscriber before it starts missing some.
const EVENT_CAPACITY: usize = 1024;

/// In-memory [`Transport`] with the same observable semantics as
/// [`RedisTransport`](crate::RedisTransport). Clones share the same state.
#[derive(Debug, Clone)]
pub struct MemoryTransport {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Event>,
}

#[derive(Debug, Default)]
struct State {
    idle: HashMap<String, u32>,
    total: HashMap<String, u32>,
    /// Liveness deadline per worker.
    alive: HashMap<String, Instant>,
    /// Job types per worker.
    types: HashMap<String, Vec<String>>,
    policy: Option<PolicySettings>,
    /// Settings of the named queues but `default`, by name.
    queues: std::collections::BTreeMap<String, PolicySettings>,
}

impl Default for MemoryTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryTransport {
    /// An empty transport.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        MemoryTransport {
            state: Arc::new(Mutex::new(State::default())),
            events,
        }
    }

    /// Forget every worker, policy and queue entry, as a Redis `FLUSHALL` does to the Redis
    /// transport (subscribers stay subscribed); returns how many entries there were.
    pub fn clear(&self) -> usize {
        let mut state = self.lock();
        let entries = state.alive.len()
            + state.types.len()
            + usize::from(state.policy.is_some())
            + state.queues.len();
        *state = State::default();
        entries
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock; recover the data if one ever does.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn emit(&self, event: Event) {
        // An error only means nobody is subscribed.
        let _ = self.events.send(event);
    }
}

#[async_trait]
impl WorkerRegistry for MemoryTransport {
    async fn report_slots(&self, worker: &str, idle: u32, total: u32, ttl: Duration) -> Result<()> {
        let now = Instant::now();
        // A ttl too large to represent means "practically forever".
        let deadline = now
            .checked_add(ttl)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        let mut state = self.lock();
        state.idle.insert(worker.to_string(), idle);
        state.total.insert(worker.to_string(), total);
        state.alive.insert(worker.to_string(), deadline);
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerSlots>> {
        let now = Instant::now();
        let state = self.lock();
        let live: BTreeMap<&String, WorkerSlots> = state
            .alive
            .iter()
            .filter(|(_, deadline)| **deadline > now)
            .map(|(w, _)| {
                let slots = WorkerSlots {
                    worker: w.clone(),
                    idle: state.idle.get(w).copied().unwrap_or(0),
                    total: state.total.get(w).copied().unwrap_or(0),
                    job_types: state.types.get(w).cloned().unwrap_or_default(),
                };
                (w, slots)
            })
            .collect();
        Ok(live.into_values().collect())
    }

    async fn report_types(&self, worker: &str, job_types: &[String]) -> Result<()> {
        self.lock()
            .types
            .insert(worker.to_string(), job_types.to_vec());
        Ok(())
    }

    async fn reap_dead_workers(&self) -> Result<Vec<String>> {
        let now = Instant::now();
        let mut state = self.lock();
        let mut dead: Vec<(Instant, String)> = state
            .alive
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(w, d)| (*d, w.clone()))
            .collect();
        // Earliest deadline first, like the Redis sorted set.
        dead.sort();
        let mut reaped = Vec::with_capacity(dead.len());
        for (_, worker) in dead {
            state.alive.remove(&worker);
            state.idle.remove(&worker);
            state.total.remove(&worker);
            state.types.remove(&worker);
            reaped.push(worker);
        }
        Ok(reaped)
    }
}

#[async_trait]
impl Settings for MemoryTransport {
    async fn policy(&self) -> Result<Option<PolicySettings>> {
        Ok(self.lock().policy.clone())
    }

    async fn set_policy(&self, settings: &PolicySettings) -> Result<()> {
        self.lock().policy = Some(settings.clone());
        self.emit(Event::PolicyChanged);
        Ok(())
    }

    async fn queues(&self) -> Result<Vec<(String, PolicySettings)>> {
        Ok(self
            .lock()
            .queues
            .iter()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect())
    }

    async fn set_queue(&self, name: &str, settings: &PolicySettings) -> Result<()> {
        if name == jobsched_core::queue::DEFAULT_QUEUE {
            return self.set_policy(settings).await;
        }
        self.lock().queues.insert(name.to_owned(), settings.clone());
        self.emit(Event::PolicyChanged);
        Ok(())
    }

    async fn add_queue(&self, name: &str, settings: &PolicySettings) -> Result<bool> {
        let added = {
            let mut state = self.lock();
            if name == jobsched_core::queue::DEFAULT_QUEUE {
                let added = state.policy.is_none();
                if added {
                    state.policy = Some(settings.clone());
                }
                added
            } else if state.queues.contains_key(name) {
                false
            } else {
                state.queues.insert(name.to_owned(), settings.clone());
                true
            }
        };
        if added {
            self.emit(Event::PolicyChanged);
        }
        Ok(added)
    }
}

#[async_trait]
impl EventBus for MemoryTransport {
    async fn publish(&self, event: Event) -> Result<()> {
        self.emit(event);
        Ok(())
    }

    async fn subscribe(&self) -> Result<Box<dyn Subscription>> {
        Ok(Box::new(MemorySubscription {
            rx: self.events.subscribe(),
        }))
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

/// A subscription to a [`MemoryTransport`]'s events.
#[derive(Debug)]
struct MemorySubscription {
    rx: broadcast::Receiver<Event>,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn recv(&mut self) -> Option<Event> {
        loop {
            match self.rx.recv().await {
                Ok(event) => return Some(event),
                // Events are wake-up hints; a subscriber that fell behind just continues.
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "event subscriber fell behind; events were dropped");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
