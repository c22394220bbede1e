//! A run's progress and log lines on their way to the store.
//!
//! The body reports through [`RunNotes`] (its [`Notes`]): the latest progress and the lines not
//! yet written wait in memory (bounded as the store bounds a try's log). The worker writes
//! them at most once per [`FLUSH_EVERY`] per run, and once more when the body returns, before
//! its outcome (the write is conditional on the run still holding the job). A job that reports
//! nothing costs no write.

use jobsched_core::notes::{
    LogLine, MAX_LOG_BYTES, MAX_LOG_LINES, MAX_PROGRESS_MESSAGE, Progress, cut,
};
use jobsched_core::ports::{Clock, Store, Token};
use jobsched_jobs::{LogLevel, Notes};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a run's new progress and lines are written, at most.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// How long the write at a run's end may hold up its outcome.
pub(crate) const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// What a run reported and has not been written yet.
#[derive(Debug, Default)]
struct Unwritten {
    progress: Option<Progress>,
    lines: VecDeque<LogLine>,
    bytes: usize,
}

/// One run's notes (see the module docs).
#[derive(Debug)]
pub(crate) struct RunNotes {
    token: Token,
    attempt: u32,
    clock: Arc<dyn Clock>,
    unwritten: Mutex<Unwritten>,
    /// Held while writing, so two writes of one run never interleave.
    writing: tokio::sync::Mutex<()>,
}

impl RunNotes {
    pub(crate) fn new(token: Token, attempt: u32, clock: Arc<dyn Clock>) -> RunNotes {
        RunNotes {
            token,
            attempt,
            clock,
            unwritten: Mutex::default(),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether anything waits to be written.
    pub(crate) fn dirty(&self) -> bool {
        self.unwritten
            .lock()
            .is_ok_and(|u| u.progress.is_some() || !u.lines.is_empty())
    }

    /// Write what waits; on a store error it waits for the next write (still bounded).
    pub(crate) async fn flush(&self, store: &dyn Store) {
        let _writing = self.writing.lock().await;
        let (progress, lines) = match self.unwritten.lock() {
            Ok(mut u) => {
                u.bytes = 0;
                (u.progress.take(), std::mem::take(&mut u.lines))
            }
            Err(_) => return,
        };
        if progress.is_none() && lines.is_empty() {
            return;
        }
        let lines: Vec<LogLine> = lines.into();
        match store
            .save_notes(self.token, self.attempt, progress.as_ref(), &lines)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::debug!("the run no longer holds its job; its notes are dropped"),
            Err(e) => {
                tracing::warn!(error = %e, "could not write the run's progress and log; will retry");
                if let Ok(mut u) = self.unwritten.lock() {
                    if u.progress.is_none() {
                        u.progress = progress;
                    }
                    let newer = std::mem::take(&mut u.lines);
                    u.bytes = 0;
                    for l in lines.into_iter().chain(newer) {
                        push(&mut u, l);
                    }
                }
            }
        }
    }
}

/// Append a line, dropping the oldest beyond the bounds.
fn push(u: &mut Unwritten, line: LogLine) {
    u.bytes = u.bytes.saturating_add(line.message.len());
    u.lines.push_back(line);
    while u.lines.len() > MAX_LOG_LINES || u.bytes > MAX_LOG_BYTES {
        match u.lines.pop_front() {
            Some(old) => u.bytes = u.bytes.saturating_sub(old.message.len()),
            None => break,
        }
    }
}

impl Notes for RunNotes {
    fn progress(&self, fraction: f64, message: Option<String>) {
        let p = Progress {
            fraction,
            message: message.map(|m| cut(m, MAX_PROGRESS_MESSAGE)),
            attempt: self.attempt,
            updated_at: self.clock.now(),
        };
        if let Ok(mut u) = self.unwritten.lock() {
            u.progress = Some(p);
        }
    }

    fn log(&self, level: LogLevel, message: String) {
        match level {
            LogLevel::Debug => tracing::debug!(target: "job", "{message}"),
            LogLevel::Info => tracing::info!(target: "job", "{message}"),
            LogLevel::Warn => tracing::warn!(target: "job", "{message}"),
            LogLevel::Error => tracing::error!(target: "job", "{message}"),
        }
        let line = LogLine::new(self.clock.now(), level.as_str(), message);
        if let Ok(mut u) = self.unwritten.lock() {
            push(&mut u, line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn unwritten_lines_stay_within_the_bounds() {
        let mut u = Unwritten::default();
        for i in 0..(MAX_LOG_LINES + 10) {
            push(
                &mut u,
                LogLine::new(Utc::now(), "info", format!("line {i}")),
            );
        }
        assert_eq!(u.lines.len(), MAX_LOG_LINES);
        assert_eq!(u.lines.front().unwrap().message, "line 10");
        let mut u = Unwritten::default();
        for _ in 0..100 {
            push(
                &mut u,
                LogLine::new(Utc::now(), "info", "x".repeat(8 * 1024)),
            );
        }
        assert!(u.bytes <= MAX_LOG_BYTES, "{}", u.bytes);
        assert_eq!(u.lines.len(), MAX_LOG_BYTES / (8 * 1024));
    }
}
