//! The Redis transport.

use crate::error::{TransportError, redact_url};
use crate::{event_from_name, event_name};
use async_trait::async_trait;
use futures::StreamExt;
use jobsched_core::ports::{
    Event, EventBus, Settings, Subscription, Transport, WorkerRegistry, WorkerSlots,
};
use jobsched_core::{PolicySettings, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubStream};
use redis::{AsyncCommands, Client, Script};
use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Key prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "jobsched";

/// Time allowed to establish a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for one command's reply.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between reconnection attempts, in milliseconds.
const RECONNECT_MAX_DELAY_MS: u64 = 1000;
/// Longest liveness ttl stored (ten years); longer ones are clamped.
const MAX_TTL_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// A script from `lua/`, after the prologue that sets `now` (the server clock, in ms).
macro_rules! lua {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("../lua/prologue.lua"),
                include_str!(concat!("../lua/", $file))
            ))
        })
    };
}

/// Record a worker's slots and liveness deadline (`lua/report.lua`).
static REPORT: LazyLock<Script> = lua!("report.lua");
/// The live workers and their slots (`lua/workers.lua`).
static WORKERS: LazyLock<Script> = lua!("workers.lua");
/// Forget the workers whose deadline passed (`lua/reap.lua`).
static REAP: LazyLock<Script> = lua!("reap.lua");

/// The Redis key names under one prefix.
#[derive(Debug)]
struct Keys {
    prefix: String,
    in_flight_prefix: String,
    idle: String,
    total: String,
    alive: String,
    types: String,
    policy: String,
    queues: String,
    events: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
            in_flight_prefix: format!("{prefix}:inflight:"),
            idle: format!("{prefix}:idle"),
            total: format!("{prefix}:total"),
            alive: format!("{prefix}:alive"),
            types: format!("{prefix}:types"),
            policy: format!("{prefix}:policy"),
            queues: format!("{prefix}:queues"),
            events: format!("{prefix}:events"),
        }
    }

    /// SCAN pattern matching exactly the keys under the prefix (glob characters escaped).
    fn scan_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + 2);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str(":*");
        pattern
    }
}

/// [`Transport`] on Redis. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct RedisTransport {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    conn: ConnectionManager,
    /// The URL with any password redacted.
    url: String,
    keys: Keys,
}

impl fmt::Debug for RedisTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTransport")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.keys.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisTransport {
    /// Connect to Redis at `url` (`redis://` or `rediss://`) and use keys under `prefix`.
    ///
    /// Fails when the URL or prefix is invalid or Redis cannot be reached. After connecting,
    /// lost connections are re-established automatically on the next command.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisTransport, TransportError> {
        let shown = redact_url(url);
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("redis" | "rediss")) {
            return Err(TransportError::InvalidUrl {
                url: shown,
                reason: "the scheme must be redis:// or rediss://".into(),
            });
        }
        if prefix.is_empty() {
            return Err(TransportError::InvalidPrefix {
                prefix: prefix.into(),
                reason: "it is empty",
            });
        }
        if prefix.chars().any(char::is_whitespace) {
            return Err(TransportError::InvalidPrefix {
                prefix: prefix.into(),
                reason: "it contains whitespace",
            });
        }
        let client = Client::open(url).map_err(|e| TransportError::InvalidUrl {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
        // redis 0.32 hands `factor` to its backoff as the growth multiplier (from a 1 s
        // minimum); the default of 100 would wait a minute between attempts. Retry a couple of
        // times about a second apart; every later command triggers a fresh reconnect anyway.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            .set_factor(2)
            .set_max_delay(RECONNECT_MAX_DELAY_MS)
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|source| TransportError::Redis {
                url: shown.clone(),
                op: "connect",
                source,
            })?;
        Ok(RedisTransport {
            inner: Arc::new(Inner {
                client,
                conn,
                url: shown,
                keys: Keys::new(prefix),
            }),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.keys.prefix
    }

    /// Delete every key under the prefix (using SCAN, never FLUSHALL); returns how many were
    /// deleted. For tests and operations: Redis is rebuilt from Postgres afterwards.
    pub async fn delete_all_keys(&self) -> Result<u64, TransportError> {
        let pattern = self.inner.keys.scan_pattern();
        let mut conn = self.conn();
        let mut cursor: u64 = 0;
        let mut deleted = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.err("delete_all_keys", e))?;
            if !keys.is_empty() {
                let n: u64 = conn
                    .del(&keys)
                    .await
                    .map_err(|e| self.err("delete_all_keys", e))?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// [`RedisTransport::delete_all_keys`] on a blocking connection of its own, for code that
    /// cannot rely on an async runtime: a test's guard deleting its keys on drop, also while
    /// the test panics and its runtime goes down.
    pub fn delete_all_keys_blocking(url: &str, prefix: &str) -> Result<u64, TransportError> {
        let fail = |source| TransportError::Redis {
            url: redact_url(url),
            op: "delete_all_keys",
            source,
        };
        let client = Client::open(url).map_err(fail)?;
        let mut conn = client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(fail)?;
        let pattern = Keys::new(prefix).scan_pattern();
        let keys: Vec<String> = redis::Commands::scan_match::<_, String>(&mut conn, &pattern)
            .map_err(fail)?
            .collect();
        if keys.is_empty() {
            return Ok(0);
        }
        redis::Commands::del(&mut conn, &keys).map_err(fail)
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// `write` (one command) and a [`Event::PolicyChanged`] announcement, in one MULTI;
    /// `what` names the operation in errors.
    async fn write_and_announce(
        &self,
        what: &'static str,
        write: impl for<'p> FnOnce(&'p mut redis::Pipeline, &Keys) -> &'p mut redis::Pipeline,
    ) -> Result<()> {
        let keys = self.keys();
        let mut pipe = redis::pipe();
        write(pipe.atomic(), keys)
            .ignore()
            .publish(&keys.events, event_name(Event::PolicyChanged))
            .ignore();
        let written: redis::RedisResult<()> = pipe.exec_async(&mut self.conn()).await;
        Ok(written.map_err(|e| self.err(what, e))?)
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// Run `script` (as `op`) with the worker registry's keys as its KEYS (idle, total, alive,
    /// types) and `args` as its ARGV.
    async fn registry<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        script: &Script,
        args: impl redis::ToRedisArgs,
    ) -> std::result::Result<T, TransportError> {
        let keys = self.keys();
        script
            .key(&keys.idle)
            .key(&keys.total)
            .key(&keys.alive)
            .key(&keys.types)
            .arg(args)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(op, e))
    }

    fn err(&self, op: &'static str, source: redis::RedisError) -> TransportError {
        TransportError::Redis {
            url: self.inner.url.clone(),
            op,
            source,
        }
    }
}

/// What a JSON error on `key` is, as a `map_err` argument.
fn json_at(key: &str) -> impl FnOnce(serde_json::Error) -> TransportError + '_ {
    move |source| TransportError::Json {
        key: key.to_owned(),
        source,
    }
}

/// `value` as the JSON stored under `key`.
fn to_json<T: serde::Serialize + ?Sized>(
    key: &str,
    value: &T,
) -> std::result::Result<String, TransportError> {
    serde_json::to_string(value).map_err(json_at(key))
}

/// The JSON `raw` read from `key`.
fn from_json<T: serde::de::DeserializeOwned>(
    key: &str,
    raw: &str,
) -> std::result::Result<T, TransportError> {
    serde_json::from_str(raw).map_err(json_at(key))
}

#[async_trait]
impl WorkerRegistry for RedisTransport {
    async fn report_slots(&self, worker: &str, idle: u32, total: u32, ttl: Duration) -> Result<()> {
        let ttl_ms = u64::try_from(ttl.as_millis())
            .unwrap_or(u64::MAX)
            .min(MAX_TTL_MS);
        let args = (worker, idle, total, ttl_ms);
        let _: i64 = self.registry("report_slots", &REPORT, args).await?;
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerSlots>> {
        let flat: Vec<String> = self.registry("workers", &WORKERS, None::<&str>).await?;
        let mut workers: Vec<WorkerSlots> = flat
            .chunks_exact(4)
            .map(|c| WorkerSlots {
                worker: c[0].clone(),
                idle: c[1].parse().unwrap_or(0),
                total: c[2].parse().unwrap_or(0),
                job_types: serde_json::from_str(&c[3]).unwrap_or_default(),
            })
            .collect();
        workers.sort_by(|a, b| a.worker.cmp(&b.worker));
        Ok(workers)
    }

    async fn report_types(&self, worker: &str, job_types: &[String]) -> Result<()> {
        let keys = self.keys();
        let json = to_json(&keys.types, job_types)?;
        let _: i64 = self
            .conn()
            .hset(&keys.types, worker, json)
            .await
            .map_err(|e| self.err("report_types", e))?;
        Ok(())
    }

    async fn reap_dead_workers(&self) -> Result<Vec<String>> {
        let prefix = &self.keys().in_flight_prefix;
        Ok(self.registry("reap_dead_workers", &REAP, prefix).await?)
    }
}

#[async_trait]
impl Settings for RedisTransport {
    async fn policy(&self) -> Result<Option<PolicySettings>> {
        let key = &self.keys().policy;
        let raw: Option<String> = self
            .conn()
            .get(key)
            .await
            .map_err(|e| self.err("policy", e))?;
        let Some(raw) = raw else { return Ok(None) };
        let settings = from_json(key, &raw)?;
        Ok(Some(settings))
    }

    async fn set_policy(&self, settings: &PolicySettings) -> Result<()> {
        let json = to_json(&self.keys().policy, settings)?;
        self.write_and_announce("set_policy", |pipe, keys| pipe.set(&keys.policy, json))
            .await
    }

    async fn queues(&self) -> Result<Vec<(String, PolicySettings)>> {
        let key = &self.keys().queues;
        let raw: Vec<(String, String)> = self
            .conn()
            .hgetall(key)
            .await
            .map_err(|e| self.err("queues", e))?;
        let mut queues = raw
            .into_iter()
            .map(|(name, json)| from_json(key, &json).map(|s| (name, s)))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        queues.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(queues)
    }

    async fn set_queue(&self, name: &str, settings: &PolicySettings) -> Result<()> {
        if name == jobsched_core::queue::DEFAULT_QUEUE {
            return self.set_policy(settings).await;
        }
        let json = to_json(&self.keys().queues, settings)?;
        self.write_and_announce("set_queue", |pipe, keys| {
            pipe.hset(&keys.queues, name, json)
        })
        .await
    }

    async fn add_queue(&self, name: &str, settings: &PolicySettings) -> Result<bool> {
        let keys = self.keys();
        let default = name == jobsched_core::queue::DEFAULT_QUEUE;
        let key = if default { &keys.policy } else { &keys.queues };
        let json = to_json(key, settings)?;
        let mut conn = self.conn();
        let added: bool = if default {
            redis::cmd("SET")
                .arg(key)
                .arg(json)
                .arg("NX")
                .query_async::<Option<String>>(&mut conn)
                .await
                .map_err(|e| self.err("add_queue", e))?
                .is_some()
        } else {
            conn.hset_nx(key, name, json)
                .await
                .map_err(|e| self.err("add_queue", e))?
        };
        if added {
            self.publish(Event::PolicyChanged).await?;
        }
        Ok(added)
    }
}

#[async_trait]
impl EventBus for RedisTransport {
    async fn publish(&self, event: Event) -> Result<()> {
        let _: i64 = self
            .conn()
            .publish(&self.keys().events, event_name(event))
            .await
            .map_err(|e| self.err("publish", e))?;
        Ok(())
    }

    async fn subscribe(&self) -> Result<Box<dyn Subscription>> {
        let open = async {
            let mut pubsub = self.inner.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.keys().events).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
            Ok(result) => result.map_err(|e| self.err("subscribe", e))?,
            Err(_) => {
                let timeout = redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no reply within {CONNECT_TIMEOUT:?}"),
                ));
                return Err(self.err("subscribe", timeout).into());
            }
        };
        Ok(Box::new(RedisSubscription {
            stream: pubsub.into_on_message(),
        }))
    }
}

#[async_trait]
impl Transport for RedisTransport {
    async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.err("ping", e))?;
        Ok(())
    }
}

/// A subscription on a dedicated Redis pub/sub connection.
struct RedisSubscription {
    stream: PubSubStream,
}

#[async_trait]
impl Subscription for RedisSubscription {
    async fn recv(&mut self) -> Option<Event> {
        loop {
            let msg = self.stream.next().await?;
            match msg.get_payload::<String>() {
                Ok(name) => match event_from_name(&name) {
                    Some(event) => return Some(event),
                    None => tracing::warn!(event = %name, "ignoring an unknown event"),
                },
                Err(e) => tracing::warn!(error = %e, "ignoring an undecodable event message"),
            }
        }
    }
}

/// Deletes every key under a prefix when dropped, with
/// [`RedisTransport::delete_all_keys_blocking`]: a test's cleanup that also runs while the
/// test panics.
#[derive(Debug)]
pub struct DropKeys {
    /// Redis URL.
    pub url: String,
    /// The key prefix whose keys go.
    pub prefix: String,
}

impl DropKeys {
    /// A guard for `prefix` on `url`.
    pub fn new(url: &str, prefix: &str) -> DropKeys {
        DropKeys {
            url: url.to_string(),
            prefix: prefix.to_string(),
        }
    }
}

impl Drop for DropKeys {
    fn drop(&mut self) {
        let _ = RedisTransport::delete_all_keys_blocking(&self.url, &self.prefix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_pattern_escapes_glob_characters() {
        assert_eq!(Keys::new("jobsched").scan_pattern(), "jobsched:*");
        assert_eq!(Keys::new("a*b?[c]").scan_pattern(), r"a\*b\?\[c\]:*");
    }

    #[tokio::test]
    async fn connect_rejects_bad_input() {
        for (url, prefix) in [
            ("http://localhost", "p"),
            ("localhost:6379", "p"),
            ("redis://127.0.0.1:6379", ""),
            ("redis://127.0.0.1:6379", "a b"),
        ] {
            let err = RedisTransport::connect(url, prefix).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    TransportError::InvalidUrl { .. } | TransportError::InvalidPrefix { .. }
                ),
                "{url} {prefix}: {err}"
            );
        }
        let err = RedisTransport::connect("http://:pw@host", "p")
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("JOBSCHED_REDIS_URL") && !msg.contains("pw"),
            "{msg}"
        );
    }
}
