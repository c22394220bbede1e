//! jobsched-testkit: what every test suite of the workspace needs, in one place.
//!
//! - [`poll`], [`eventually`]: wait for a condition with a deadline (never sleep-and-hope);
//! - [`free_port`]: a TCP port nothing listens on right now;
//! - [`in_ci`]: whether `CI=true`, where a missing Postgres or Redis fails a test instead of
//!   skipping it;
//! - [`with_database`]: a database URL pointed at another database (a test's own);
//! - [`required`]: a service a test needs, or a skip (a failure under CI);
//! - [`Killed`], [`Children`]: spawned processes that never outlive their test;
//!   [`private_redis`], [`signal`], [`wait_exit`] for tests that stop or kill them;
//! - [`kube::KubeStandIn`]: a stand-in for the Kubernetes API server, which the controller
//!   suites run against (no API server exists here).

pub mod kube;

use std::fmt::Display;
use std::process::Child;
use std::time::Duration;
use tokio::time::Instant;

/// Whether the tests run in CI (`CI=true`, any case).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// What connecting to a service a test needs gave: `Some(service)`; or, when it is missing,
/// `None` after saying that the test is skipped and how to run it. Under CI a missing service
/// fails the test instead.
pub fn required<T, E: Display>(what: &str, connected: Result<T, E>) -> Option<T> {
    match connected {
        Ok(service) => Some(service),
        Err(e) if in_ci() => panic!("{what} is required when CI=true: {e}"),
        Err(e) => {
            eprintln!("skipping: {what} is unreachable ({e}); start it to run this test");
            None
        }
    }
}

/// A spawned process, killed and reaped when dropped (also when a test panics).
#[derive(Debug)]
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawned processes, each killed and reaped when dropped (also when a test panics).
#[derive(Debug, Default)]
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl std::ops::Index<usize> for Children {
    type Output = Child;
    fn index(&self, i: usize) -> &Child {
        &self.0[i]
    }
}

impl std::ops::IndexMut<usize> for Children {
    fn index_mut(&mut self, i: usize) -> &mut Child {
        &mut self.0[i]
    }
}

/// A `redis-server` of the test's own on a free port, without persistence (for tests that kill
/// or cut Redis), answering `PING`: `Some((process, port))`, or `None` (a skip; a failure under
/// CI) when `redis-server` cannot be started.
///
/// # Panics
/// When the server does not answer within 10 s.
pub fn private_redis() -> Option<(Killed, u16)> {
    let port = free_port();
    let started = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn();
    let child = Killed(required("redis-server", started)?);
    let pong = || -> std::io::Result<bool> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.write_all(b"PING\r\n")?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply)?;
        Ok(&reply == b"+PONG\r\n")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !pong().unwrap_or(false) {
        assert!(
            std::time::Instant::now() < deadline,
            "private redis-server on port {port} did not answer PING within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((child, port))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Call `check` every 5 ms until it returns `Ok`, and return that; panic with the last `Err`
/// (what was still awaited) once `timeout` has passed.
pub async fn poll<T>(timeout: Duration, check: impl AsyncFnMut() -> Result<T, String>) -> T {
    poll_every(Duration::from_millis(5), timeout, check).await
}

/// [`poll`] with a pause of `every` between calls, for a check that costs something (a
/// request to send, a process to start).
pub async fn poll_every<T>(
    every: Duration,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(done) => return done,
            Err(waiting) => assert!(Instant::now() < deadline, "after {timeout:?}: {waiting}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Send `child` the signal `name` (`TERM`, `INT`, `KILL`, …) with kill(1).
pub fn signal(child: &Child, name: &str) {
    let sent = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent, "kill -{name} {} failed", child.id());
}

/// Wait (blocking) until `child` exits, and return how; panic naming `what` after `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("the child's status") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: still running after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`poll`] for a check that answers `Option`: the panic names `what` was awaited.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    poll(timeout, async || {
        check().await.ok_or_else(|| format!("waiting for: {what}"))
    })
    .await
}

/// `url` with its database (the path) replaced by `name`, the query string kept:
/// `postgres://u@h:5432/postgres?sslmode=disable` → `postgres://u@h:5432/<name>?sslmode=disable`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{name}", &base[..path]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn with_database_replaces_only_the_path() {
        use super::with_database as w;
        assert_eq!(
            w("postgres://u@h:5432/postgres", "t1"),
            "postgres://u@h:5432/t1"
        );
        assert_eq!(
            w("postgres://u@h:5432/postgres?sslmode=disable", "t1"),
            "postgres://u@h:5432/t1?sslmode=disable"
        );
        assert_eq!(w("postgres://u@h:5432", "t1"), "postgres://u@h:5432/t1");
    }
}
