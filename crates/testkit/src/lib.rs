//! jobsched-testkit: what every test suite of the workspace needs, in one place.
//!
//! - [`poll`]: wait for a condition with a deadline (never sleep-and-hope);
//! - [`free_port`]: a TCP port nothing listens on right now;
//! - [`in_ci`]: whether `CI=true`, where a missing Postgres or Redis fails a test instead of
//!   skipping it.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Whether the tests run in CI (`CI=true`, any case).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
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
pub async fn poll<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(done) => return done,
            Err(waiting) => assert!(Instant::now() < deadline, "after {timeout:?}: {waiting}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
