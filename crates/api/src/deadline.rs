//! A store and a transport whose every call gives up after a deadline: what the API's routes
//! talk to.
//!
//! A database (or Redis) that stops answering (a network cut, a hung server) would otherwise
//! hold each request until TCP gives up, minutes later. With the deadline the request is
//! answered 503 in bounded time. Since a statement sent to the database may still commit, its
//! error is [`Error::Interrupted`]: the client is told the change may or may not have been
//! applied. Redis holds nothing that is not rebuilt from the database, so its timeouts are plain
//! [`Error::Backend`] errors.
//!
//! After a call ran out of time the backend is presumed unreachable for [`COOL_DOWN`]: calls
//! then fail at once with [`Error::Backend`] (nothing was sent, so nothing is in doubt), and
//! after it one call at a time tries again while the others keep failing at once, until one
//! gets an answer in time.

use jobsched_core::layer::{Layer, Layered, LayeredTransport};
use jobsched_core::ports::{Store, Transport};
use jobsched_core::{Error, Result};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The store calls of an API request get at most this long each.
pub const STORE_DEADLINE: Duration = Duration::from_secs(5);

/// The transport calls of an API request get at most this long each. Redis carries only what
/// can be rebuilt (the policy cache, the slot registry, wake-ups), so a request does not wait
/// long for it.
pub const TRANSPORT_DEADLINE: Duration = Duration::from_secs(1);

/// How long a backend is presumed unreachable after a call ran out of time.
pub const COOL_DOWN: Duration = Duration::from_secs(1);

/// A store with every call bounded by a deadline (see the module docs).
pub type DeadlineStore = Layered<Deadline>;

/// `inner`, with every call bounded by `limit` (see the module docs).
pub fn with_deadline(inner: Arc<dyn Store>, limit: Duration) -> DeadlineStore {
    Layered::new(inner, Deadline::new("database", limit, true))
}

/// A transport with every call bounded by a deadline (see the module docs).
pub type DeadlineTransport = LayeredTransport<Deadline>;

/// `inner`, with every call bounded by `limit` (see the module docs) except `subscribe` (it may
/// open a connection, which has its own timeout) and `publish` (announcements are sent beside
/// the reply, with their own timeout). A call that runs out of time is not in doubt: Redis only
/// holds what is rebuilt from the durable copy.
pub fn transport_with_deadline(inner: Arc<dyn Transport>, limit: Duration) -> DeadlineTransport {
    LayeredTransport::new(
        inner,
        Deadline::new("redis", limit, false).exempt(&["subscribe", "publish"]),
    )
}

/// The deadline layer: each call gets `limit`, then fails fast for a while.
pub struct Deadline {
    /// What is behind the calls (`database`, `redis`), as errors name it.
    component: &'static str,
    limit: Duration,
    /// Whether a call that ran out of time may still have applied its change (then the error
    /// is [`Error::Interrupted`], else [`Error::Backend`]).
    in_doubt: bool,
    /// Calls (by method name) left unbounded.
    exempt: &'static [&'static str],
    /// Until when calls fail at once, set when a call ran out of time; `None` while the
    /// backend answers.
    unreachable_until: Mutex<Option<Instant>>,
    /// Whether a call is trying the presumed-unreachable backend (one at a time).
    probing: AtomicBool,
}

/// Clears [`Deadline::probing`] when the probing call ends, however it ends (a request
/// dropped mid-call included).
struct Probe<'a>(&'a AtomicBool);

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Deadline {
    /// Each call to `component` fails after `limit`: with [`Error::Interrupted`] when
    /// `in_doubt` (its change may have been applied), else with [`Error::Backend`].
    pub fn new(component: &'static str, limit: Duration, in_doubt: bool) -> Deadline {
        Deadline {
            component,
            in_doubt,
            exempt: &[],
            limit,
            unreachable_until: Mutex::new(None),
            probing: AtomicBool::new(false),
        }
    }

    fn unreachable_until(&self) -> Option<Instant> {
        *self
            .unreachable_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_unreachable_until(&self, until: Option<Instant>) {
        *self
            .unreachable_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = until;
    }
}

impl Deadline {
    /// Leave the calls named in `ops` unbounded.
    pub fn exempt(mut self, ops: &'static [&'static str]) -> Deadline {
        self.exempt = ops;
        self
    }
}

impl Layer for Deadline {
    async fn around<T: Send>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T>> + Send,
    ) -> Result<T> {
        if self.exempt.contains(&op) {
            return call.await;
        }
        let _probe = match self.unreachable_until() {
            None => None,
            Some(until) => {
                if Instant::now() < until || self.probing.swap(true, Ordering::SeqCst) {
                    return Err(Error::backend(
                        self.component,
                        format!(
                            "it did not answer within {} s a moment ago; this request was not \
                             sent",
                            self.limit.as_secs_f64()
                        ),
                    ));
                }
                Some(Probe(&self.probing))
            }
        };
        match tokio::time::timeout(self.limit, call).await {
            Ok(result) => {
                self.set_unreachable_until(None);
                result
            }
            Err(_) => {
                self.set_unreachable_until(Instant::now().checked_add(COOL_DOWN));
                let why = format!(
                    "no answer within {} s (is the {} reachable?)",
                    self.limit.as_secs_f64(),
                    self.component
                );
                Err(if self.in_doubt {
                    Error::Interrupted {
                        component: self.component,
                        source: why.into(),
                    }
                } else {
                    Error::backend(self.component, why)
                })
            }
        }
    }
}

impl std::fmt::Debug for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadline")
            .field("component", &self.component)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}
