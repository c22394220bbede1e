//! Logging setup: `RUST_LOG`-style filter, JSON lines when `JOBSCHED_LOG_FORMAT=json`.

use tracing_subscriber::EnvFilter;

/// Install the global subscriber.
pub fn init(default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!("{default_level},sqlx=warn,h2=warn,hyper=warn"))
    });
    let json = std::env::var("JOBSCHED_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        let _ = builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init();
    } else {
        let _ = builder.compact().try_init();
    }
}
