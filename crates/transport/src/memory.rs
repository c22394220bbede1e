//! The in-process transport for the single-process dev mode.

use async_trait::async_trait;
use jobsched_core::ports::{Dispatched, Event, Subscription, Token, Transport, WorkerSlots};
use jobsched_core::{DeadLetter, JobId, PolicySettings, Result};
use std::collections::{BTreeMap, HashMap, VecDeque};
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
    ready: VecDeque<Token>,
    /// Jobs kept for their tokens' takers (see [`Transport::push_dispatched`]).
    dispatched: HashMap<Token, Dispatched>,
    in_flight: HashMap<String, Vec<Token>>,
    idle: HashMap<String, u32>,
    total: HashMap<String, u32>,
    /// Liveness deadline per worker.
    alive: HashMap<String, Instant>,
    policy: Option<PolicySettings>,
    dead_letters: Vec<DeadLetter>,
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

    /// The dead-letter mirror, in stored order.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        Ok(self.lock().dead_letters.clone())
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
impl Transport for MemoryTransport {
    async fn push_dispatched(&self, tokens: &[Token], jobs: &[Dispatched]) -> Result<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        {
            let mut state = self.lock();
            state.ready.extend(tokens.iter().copied());
            for d in jobs {
                state.dispatched.insert(d.job.token(), d.clone());
            }
        }
        self.emit(Event::ReadyPushed);
        Ok(())
    }

    async fn take_dispatched(
        &self,
        worker: &str,
        max: u32,
    ) -> Result<Vec<(Token, Option<Dispatched>)>> {
        let mut state = self.lock();
        let n = state.ready.len().min(max as usize);
        let taken: Vec<Token> = state.ready.drain(..n).collect();
        if !taken.is_empty() {
            state
                .in_flight
                .entry(worker.to_string())
                .or_default()
                .extend(taken.iter().copied());
        }
        let taken = taken
            .into_iter()
            .map(|t| (t, state.dispatched.remove(&t)))
            .collect();
        // `n <= max`, so this fits in u32.
        let left = max - n as u32;
        let before = state.idle.insert(worker.to_string(), left);
        drop(state);
        if left > 0 && before != Some(left) {
            self.emit(Event::SlotsFree);
        }
        Ok(taken)
    }

    async fn ack(&self, worker: &str, tokens: &[Token]) -> Result<()> {
        let mut state = self.lock();
        if let Some(list) = state.in_flight.get_mut(worker) {
            list.retain(|t| !tokens.contains(t));
            if list.is_empty() {
                state.in_flight.remove(worker);
            }
        }
        Ok(())
    }

    async fn release(&self, worker: &str, tokens: &[Token]) -> Result<()> {
        let mut released = Vec::new();
        {
            let mut state = self.lock();
            if let Some(list) = state.in_flight.get_mut(worker) {
                for t in tokens {
                    if let Some(i) = list.iter().position(|x| x == t) {
                        list.remove(i);
                        released.push(*t);
                    }
                }
                if list.is_empty() {
                    state.in_flight.remove(worker);
                }
            }
            for t in released.iter().rev() {
                state.ready.push_front(*t);
            }
        }
        if !released.is_empty() {
            self.emit(Event::ReadyPushed);
        }
        Ok(())
    }

    async fn in_flight(&self, worker: &str) -> Result<Vec<Token>> {
        Ok(self
            .lock()
            .in_flight
            .get(worker)
            .cloned()
            .unwrap_or_default())
    }

    async fn ready_len(&self) -> Result<u64> {
        Ok(self.lock().ready.len() as u64)
    }

    async fn contains(&self, token: Token) -> Result<bool> {
        let state = self.lock();
        Ok(state.ready.contains(&token) || state.in_flight.values().any(|l| l.contains(&token)))
    }

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
                };
                (w, slots)
            })
            .collect();
        Ok(live.into_values().collect())
    }

    async fn reap_dead_workers(&self) -> Result<Vec<(String, Vec<Token>)>> {
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
            let tokens = state.in_flight.remove(&worker).unwrap_or_default();
            reaped.push((worker, tokens));
        }
        // The first reaped worker's tokens end up at the very front, each list in its order.
        for (_, tokens) in reaped.iter().rev() {
            for token in tokens.iter().rev() {
                state.ready.push_front(*token);
            }
        }
        Ok(reaped)
    }

    async fn policy(&self) -> Result<Option<PolicySettings>> {
        Ok(self.lock().policy.clone())
    }

    async fn set_policy(&self, settings: &PolicySettings) -> Result<()> {
        self.lock().policy = Some(settings.clone());
        self.emit(Event::PolicyChanged);
        Ok(())
    }

    async fn set_dead_letters(&self, entries: &[DeadLetter]) -> Result<()> {
        self.lock().dead_letters = entries.to_vec();
        Ok(())
    }

    async fn push_dead_letters(&self, entries: &[DeadLetter]) -> Result<()> {
        self.lock().dead_letters.extend_from_slice(entries);
        Ok(())
    }

    async fn remove_dead_letter(&self, id: JobId) -> Result<()> {
        self.lock().dead_letters.retain(|d| d.job_id != id);
        Ok(())
    }

    async fn publish(&self, event: Event) -> Result<()> {
        self.emit(event);
        Ok(())
    }

    async fn subscribe(&self) -> Result<Box<dyn Subscription>> {
        Ok(Box::new(MemorySubscription {
            rx: self.events.subscribe(),
        }))
    }

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
