//! What a run reports while it works: its progress and its log lines, kept per try.
//!
//! A try is one attempt of a job as its user counts them (1, then one more per retry); the
//! Round Robin slices of one try share its notes. Only the worker holding the run writes them
//! (the write is conditional on the run's token), and the store keeps each try's log bounded.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Most log lines kept per try (the oldest go first).
pub const MAX_LOG_LINES: usize = 1_000;
/// Most log bytes (message text) kept per try (the oldest lines go first).
pub const MAX_LOG_BYTES: usize = 256 * 1024;
/// Longest log line kept, bytes; a longer one is cut (at a character boundary) and marked.
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// Longest progress message kept, bytes.
pub const MAX_PROGRESS_MESSAGE: usize = 1024;

/// A run's latest progress report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// The OpenAPI schemas of this module keep the names they were first published under.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = ProgressResponse))]
pub struct Progress {
    /// Fraction done, 0 to 1.
    pub fraction: f64,
    /// What the job said it is doing.
    pub message: Option<String>,
    /// The try that reported it (1 = first, one more per retry).
    pub attempt: u32,
    /// When it was reported.
    pub updated_at: DateTime<Utc>,
}

/// One log line of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = LogLineResponse))]
pub struct LogLine {
    /// When the job logged it.
    pub at: DateTime<Utc>,
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// The text (a line longer than 8 KiB is cut and ends with `…`).
    pub message: String,
}

impl LogLine {
    /// A line, its message cut to [`MAX_LINE_BYTES`].
    pub fn new(at: DateTime<Utc>, level: &str, message: String) -> LogLine {
        LogLine {
            at,
            level: level.to_string(),
            message: cut(message, MAX_LINE_BYTES),
        }
    }
}

/// One try's kept log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = TryLogResponse))]
pub struct TryLog {
    /// The try (1 = first, one more per retry).
    pub attempt: u32,
    /// Its lines, oldest first (the newest 1,000 lines and 256 KiB are kept).
    pub lines: Vec<LogLine>,
    /// Older lines of this try that are no longer kept.
    pub dropped: u64,
}

/// `s` cut to at most `max` bytes at a character boundary, marked `…` when cut.
pub fn cut(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

/// Of `lines` (oldest first), how many of the oldest to drop so the rest fit both bounds.
pub fn overflow(lines: &[LogLine]) -> usize {
    let mut keep = 0;
    let mut bytes = 0usize;
    for l in lines.iter().rev() {
        let next = bytes.saturating_add(l.message.len());
        if keep == MAX_LOG_LINES || next > MAX_LOG_BYTES {
            break;
        }
        bytes = next;
        keep += 1;
    }
    lines.len() - keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("abc".into(), 3), "abc");
        assert_eq!(cut("abcdef".into(), 4), "a…");
        let s = cut("ééééé".into(), 6);
        assert!(s.len() <= 6 && s.ends_with('…'), "{s}");
    }

    #[test]
    fn overflow_drops_the_oldest() {
        let at = Utc::now();
        let small: Vec<LogLine> = (0..1_005)
            .map(|i| LogLine::new(at, "info", format!("{i}")))
            .collect();
        assert_eq!(overflow(&small), 5);
        let big: Vec<LogLine> = (0..40)
            .map(|_| LogLine::new(at, "info", "x".repeat(MAX_LINE_BYTES)))
            .collect();
        assert_eq!(overflow(&big), 40 - MAX_LOG_BYTES / MAX_LINE_BYTES);
        assert_eq!(overflow(&big[..3]), 0);
    }
}
