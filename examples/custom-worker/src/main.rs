//! A jobsched worker with job types of its own, built on `jobsched-worker`.
//!
//! - `checksum`: the SHA-256 of a file in the data dir (`JOBSCHED_DATA_DIR`), reporting its
//!   progress by bytes read and stopping when cancelled.
//! - `primes`: counts the primes below `below`, in slices: under Round Robin it yields at the
//!   end of each quantum with a checkpoint and resumes from it.
//!
//! It takes the same flags and `JOBSCHED_*` variables as `jobsched worker`:
//!
//! ```sh
//! JOBSCHED_DATABASE_URL=postgres://postgres@127.0.0.1/jobsched \
//!   cargo run -p custom-worker -- --concurrency 4
//! jobsched submit checksum file_path=report.pdf --wait
//! ```

use jobsched_worker::{Ctx, DataDir, FieldError, Handler, JobError, Worker};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::time::Duration;

/// Payload of `checksum`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ChecksumPayload {
    /// The file, relative to the data dir.
    #[schemars(length(min = 1, max = 4096))]
    file_path: String,
}

/// `checksum`: the SHA-256 of a file in the data dir.
struct Checksum;

/// Bytes hashed between progress reports and cancel checks.
const CHUNK: usize = 1 << 20;

impl Handler for Checksum {
    type Payload = ChecksumPayload;
    const NAME: &'static str = "checksum";
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3_600);

    /// The path must stay inside the data dir (checked again when the file is opened).
    fn check(&self, p: &ChecksumPayload, data_dir: &DataDir) -> Vec<FieldError> {
        match data_dir.check(&p.file_path) {
            Ok(()) => Vec::new(),
            Err(why) => vec![FieldError::new("payload.file_path", why)],
        }
    }

    async fn run(&self, ctx: Ctx, p: ChecksumPayload) -> Result<Value, JobError> {
        let input = ctx.data_dir().open_input(&p.file_path)?;
        let total = input.file.metadata().map(|m| m.len()).unwrap_or(0);
        ctx.info(format!("hashing {} ({total} bytes)", p.file_path));
        let mut file = input.file;
        let mut hasher = Sha256::new();
        let mut done: u64 = 0;
        loop {
            if ctx.is_cancelled() {
                ctx.warn(format!("stopped after {done} bytes"));
                return Err(ctx.stopped());
            }
            // File reads block: each chunk is read on a blocking thread.
            let (f, chunk) = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; CHUNK];
                let n = file.read(&mut buf);
                (
                    file,
                    n.map(|n| {
                        buf.truncate(n);
                        buf
                    }),
                )
            })
            .await
            .map_err(|e| JobError::Retryable(format!("the read task failed: {e}")))?;
            file = f;
            let chunk = chunk.map_err(|e| JobError::io(format!("reading {}", p.file_path), e))?;
            if chunk.is_empty() {
                break;
            }
            hasher.update(&chunk);
            done = done.saturating_add(chunk.len() as u64);
            let fraction = if total == 0 {
                1.0
            } else {
                done as f64 / total as f64
            };
            ctx.progress(fraction, format!("{done} of {total} bytes"));
        }
        let digest: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        ctx.info(format!("sha256 {digest}"));
        Ok(json!({"sha256": digest, "bytes": done}))
    }
}

/// Payload of `primes`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct PrimesPayload {
    /// Count the primes below this number.
    #[schemars(range(min = 2, max = 1_000_000_000))]
    below: u64,
}

/// Where a `primes` run got to: saved at the end of a Round Robin slice.
#[derive(Debug, Serialize, Deserialize)]
struct PrimesCheckpoint {
    next: u64,
    found: u64,
}

/// `primes`: counts primes by trial division, in steps, yielding at a slice's end.
struct Primes;

/// Numbers tested between checks of the slice, the cancel signal and progress.
const STEP: u64 = 20_000;

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d.saturating_mul(d) <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

impl Handler for Primes {
    type Payload = PrimesPayload;
    const NAME: &'static str = "primes";
    const PREEMPTIBLE: bool = true;

    async fn run(&self, ctx: Ctx, p: PrimesPayload) -> Result<Value, JobError> {
        let mut at = ctx
            .checkpoint::<PrimesCheckpoint>()
            .unwrap_or(PrimesCheckpoint { next: 2, found: 0 });
        ctx.info(format!(
            "counting primes below {} from {}",
            p.below, at.next
        ));
        while at.next < p.below {
            if ctx.is_cancelled() {
                return Err(ctx.stopped());
            }
            if ctx.slice_over() {
                ctx.info(format!(
                    "slice over at {}; {} found so far",
                    at.next, at.found
                ));
                return Err(ctx.preempt(&at));
            }
            // CPU work goes to a blocking thread, one step at a time.
            let (from, to) = (at.next, at.next.saturating_add(STEP).min(p.below));
            let found =
                tokio::task::spawn_blocking(move || (from..to).filter(|n| is_prime(*n)).count())
                    .await
                    .map_err(|e| JobError::Retryable(format!("the step failed: {e}")))?;
            at.found += found as u64;
            at.next = to;
            ctx.progress(
                at.next as f64 / p.below as f64,
                format!("{} primes so far", at.found),
            );
        }
        Ok(json!({"below": p.below, "primes": at.found}))
    }
}

fn main() -> std::process::ExitCode {
    Worker::new().handler(Checksum).handler(Primes).main()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes_below_100() {
        assert_eq!((0..100).filter(|n| is_prime(*n)).count(), 25);
    }
}
