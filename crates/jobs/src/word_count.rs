//! `word_count`: count words, lines, characters and bytes of a UTF-8 text file.
//!
//! Payload: `{"file_path": path inside the data dir}`. Result:
//! `{"word_count", "line_count", "char_count", "byte_count"}` with `wc` semantics:
//! - lines = number of `'\n'` bytes (a last line without a newline is not counted, as `wc -l`);
//! - words = maximal runs of non-whitespace characters, whitespace being Unicode `White_Space`
//!   ([`char::is_whitespace`]); this matches `wc -w` for ASCII and common Unicode spaces (exotic
//!   spaces such as U+00A0 may be classified differently by some libc versions);
//! - chars = Unicode scalar values, i.e. `wc -m` in a UTF-8 locale;
//! - bytes = file size read, i.e. `wc -c`.
//!
//! The file is streamed in [`BUF_SIZE`] chunks (constant memory); UTF-8 sequences split across
//! chunk boundaries are carried over. Invalid UTF-8 is a fatal error naming the file and byte
//! offset. Not preemptible: the stop flag is checked before every chunk, and a stopped run
//! fails with [`JobError::Stopped`]. Default timeout: [`DEFAULT_TIMEOUT`].

use crate::payload::{self, invalid};
use crate::sdk::{Ctx, Handler, into_result, run_blocking};
use crate::{DataDir, FieldError, JobContext, JobError, RunOutput};
use serde::Serialize;
use serde_json::{Value, json};
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Read chunk size.
pub const BUF_SIZE: usize = 8 * 1024;

/// Run time limit when the job sets no `timeout_seconds`.
pub const DEFAULT_TIMEOUT: Duration = crate::sdk::DEFAULT_TIMEOUT;

/// The `word_count` job type.
#[derive(Debug, Clone, Copy, Default)]
pub struct WordCountJob;

/// Counts as returned in the job result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Maximal runs of non-whitespace.
    pub word_count: u64,
    /// `'\n'` count.
    pub line_count: u64,
    /// Unicode scalar values.
    pub char_count: u64,
    /// Bytes.
    pub byte_count: u64,
}

/// Streaming counter fed with valid UTF-8 text pieces.
#[derive(Debug, Default)]
struct Counter {
    counts: Counts,
    in_word: bool,
}

impl Counter {
    fn feed(&mut self, text: &str) {
        let c = &mut self.counts;
        c.byte_count += text.len() as u64;
        for ch in text.chars() {
            c.char_count += 1;
            if ch == '\n' {
                c.line_count += 1;
            }
            if ch.is_whitespace() {
                self.in_word = false;
            } else if !self.in_word {
                self.in_word = true;
                c.word_count += 1;
            }
        }
    }
}

/// Count a UTF-8 stream. `name` is used in error messages. Fails with [`JobError::Stopped`]
/// as soon as `stop` is seen set (checked before every chunk).
pub fn count_reader(
    mut reader: impl Read,
    name: &str,
    stop: &AtomicBool,
) -> Result<Counts, JobError> {
    let mut counter = Counter::default();
    // `buf[..carry]` holds the incomplete UTF-8 sequence left from the previous chunk (≤ 3 bytes).
    let mut buf = vec![0u8; BUF_SIZE + 4];
    let mut carry = 0usize;
    let mut offset: u64 = 0; // file offset of buf[0]
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(JobError::Stopped);
        }
        let n = match reader.read(&mut buf[carry..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(JobError::io(format!("reading `{name}`"), e)),
        };
        let filled = carry + n;
        let valid = match std::str::from_utf8(&buf[..filled]) {
            Ok(text) => {
                counter.feed(text);
                filled
            }
            // An incomplete sequence at the end: count the valid prefix, carry the rest.
            Err(e) if e.error_len().is_none() => {
                let valid = e.valid_up_to();
                let text = std::str::from_utf8(&buf[..valid])
                    .map_err(|e| invalid_utf8(name, offset + e.valid_up_to() as u64))?;
                counter.feed(text);
                valid
            }
            Err(e) => return Err(invalid_utf8(name, offset + e.valid_up_to() as u64)),
        };
        buf.copy_within(valid..filled, 0);
        carry = filled - valid;
        offset += valid as u64;
    }
    if carry > 0 {
        return Err(invalid_utf8(name, offset));
    }
    Ok(counter.counts)
}

fn invalid_utf8(name: &str, at: u64) -> JobError {
    JobError::Fatal(format!(
        "`{name}` is not valid UTF-8 text (invalid byte sequence at byte offset {at}); \
         word_count only counts UTF-8 text files"
    ))
}

fn parse(payload: &Value, data_dir: &DataDir) -> Result<String, Vec<FieldError>> {
    let obj = payload::object(payload)?;
    let mut errors = Vec::new();
    match payload::path(obj, "file_path", true, data_dir, &mut errors) {
        Some(p) if errors.is_empty() => Ok(p),
        _ => Err(errors),
    }
}

impl WordCountJob {
    /// Every problem with `payload`. Empty = valid.
    pub fn validate(&self, payload: &Value, data_dir: &DataDir) -> Vec<FieldError> {
        parse(payload, data_dir).err().unwrap_or_default()
    }

    /// The run, on the calling thread (it reads the file: the worker calls it on a blocking
    /// thread).
    pub fn run(&self, payload: &Value, ctx: &JobContext) -> Result<RunOutput, JobError> {
        let user_path = parse(payload, &ctx.data_dir).map_err(invalid)?;
        let input = ctx.data_dir.open_input(&user_path)?;
        let counts = count_reader(input.file, &user_path, &ctx.stop)?;
        let value = serde_json::to_value(counts)
            .map_err(|e| JobError::Fatal(format!("serializing the result: {e}")))?;
        Ok(RunOutput::Done(value))
    }
}

/// `word_count` on the job-type API every user type is written on: the payload is taken as
/// JSON (checked by [`WordCountJob::validate`]); the file is read on a blocking thread.
impl Handler for WordCountJob {
    type Payload = Value;
    const NAME: &'static str = "word_count";

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["file_path"],
            "properties": {
                "file_path": {
                    "description": "A text file inside the data dir (JOBSCHED_DATA_DIR).",
                    "type": "string", "minLength": 1
                }
            }
        })
    }

    fn check_json(&self, payload: &Value, data_dir: &DataDir) -> Option<Vec<FieldError>> {
        Some(self.validate(payload, data_dir))
    }

    async fn run(&self, ctx: Ctx, payload: Value) -> Result<Value, JobError> {
        let job = *self;
        into_result(run_blocking(move || job.run(&payload, ctx.context())).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;
    use std::process::Command;
    use std::time::Instant;

    const SAMPLE: &str = "/work/shared/seed/sample_data/sample.txt";

    fn setup() -> (tempfile::TempDir, JobContext) {
        let t = tempfile::tempdir().unwrap();
        let c = JobContext::new(DataDir::new(t.path()).unwrap());
        (t, c)
    }

    /// `wc -l -w -m -c` in a UTF-8 locale, if `wc` is available.
    fn real_wc(path: &Path) -> Option<Counts> {
        let out = Command::new("wc")
            .args(["-l", "-w", "-m", "-c"])
            .arg(path)
            .env("LC_ALL", "C.UTF-8")
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8(out.stdout).ok()?;
        let n: Vec<u64> = text
            .split_whitespace()
            .take(4)
            .map(|s| s.parse().ok())
            .collect::<Option<_>>()?;
        // wc prints in the fixed order lines, words, chars, bytes.
        Some(Counts {
            line_count: n[0],
            word_count: n[1],
            char_count: n[2],
            byte_count: n[3],
        })
    }

    /// Independent in-memory reference.
    fn reference(text: &str) -> Counts {
        Counts {
            word_count: text.split_whitespace().count() as u64,
            line_count: text.matches('\n').count() as u64,
            char_count: text.chars().count() as u64,
            byte_count: text.len() as u64,
        }
    }

    fn run(c: &JobContext, path: &str) -> Result<Value, JobError> {
        match WordCountJob.run(&json!({ "file_path": path }), c)? {
            RunOutput::Done(v) => Ok(v),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn sample_matches_expected_and_wc() {
        let (_t, c) = setup();
        std::fs::copy(SAMPLE, c.data_dir.root().join("sample.txt")).unwrap();
        let v = run(&c, "sample.txt").unwrap();
        assert_eq!(
            v,
            json!({"word_count": 189, "line_count": 26, "char_count": 1250, "byte_count": 1250})
        );
        match real_wc(Path::new(SAMPLE)) {
            Some(wc) => assert_eq!(v, serde_json::to_value(wc).unwrap()),
            None => eprintln!("skipping comparison with `wc`: not available"),
        }
    }

    #[test]
    fn tricky_file_matches_wc() {
        let (_t, c) = setup();
        // Multi-byte characters straddling every 8 KiB boundary (2-, 3- and 4-byte sequences),
        // tabs, CRLF, vertical tab / form feed, runs of spaces, no trailing newline.
        let mut text = String::new();
        let pieces = ["é", "漢", "🦀"];
        let mut i = 0;
        for boundary in 1..=6 {
            let piece = pieces[boundary % 3];
            let target = boundary * BUF_SIZE - 1;
            while text.len() < target {
                let filler = match i % 5 {
                    0 => "word\t",
                    1 => "two  words\r\n",
                    2 => "x\u{0B}y\u{0C}",
                    3 => "naïve ",
                    _ => "a",
                };
                i += 1;
                if text.len() + filler.len() > target {
                    text.push_str(&"b".repeat(target - text.len()));
                } else {
                    text.push_str(filler);
                }
            }
            assert_eq!(text.len(), target);
            text.push_str(piece); // starts 1 byte before the boundary
        }
        text.push_str(" end without newline");
        let path = c.data_dir.root().join("tricky.txt");
        std::fs::write(&path, &text).unwrap();
        let v = run(&c, "tricky.txt").unwrap();
        assert_eq!(v, serde_json::to_value(reference(&text)).unwrap());
        match real_wc(&path) {
            Some(wc) => assert_eq!(v, serde_json::to_value(wc).unwrap(), "vs wc"),
            None => eprintln!("skipping comparison with `wc`: not available"),
        }
        // Also through a 1-byte-at-a-time reader: every sequence is split.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let Some((first, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                buf[0] = *first;
                self.0 = rest;
                Ok(1)
            }
        }
        let counts = count_reader(
            Trickle("a é🦀\tb\r\n c".as_bytes()),
            "t",
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!(counts, reference("a é🦀\tb\r\n c"));
    }

    #[test]
    fn empty_file() {
        let (_t, c) = setup();
        std::fs::write(c.data_dir.root().join("e.txt"), "").unwrap();
        let v = run(&c, "e.txt").unwrap();
        assert_eq!(
            v,
            json!({"word_count": 0, "line_count": 0, "char_count": 0, "byte_count": 0})
        );
    }

    #[test]
    fn invalid_utf8_is_fatal_and_names_the_file() {
        let (_t, c) = setup();
        let mut bytes = b"hello ".to_vec();
        bytes.push(0xFF);
        std::fs::write(c.data_dir.root().join("bad.txt"), &bytes).unwrap();
        let err = run(&c, "bad.txt").unwrap_err();
        assert!(!err.is_retryable());
        let msg = err.to_string();
        assert!(msg.contains("bad.txt") && msg.contains("offset 6"), "{msg}");
        // Truncated multi-byte sequence at end of file.
        std::fs::write(c.data_dir.root().join("trunc.txt"), [b'a', 0xE6, 0xBC]).unwrap();
        let err = run(&c, "trunc.txt").unwrap_err();
        assert!(!err.is_retryable() && err.to_string().contains("trunc.txt"));
    }

    #[test]
    fn sandbox_and_missing_file_are_fatal() {
        let (_t, c) = setup();
        for p in ["/etc/passwd", "../etc/passwd", "missing.txt"] {
            let err = run(&c, p).unwrap_err();
            assert!(!err.is_retryable(), "{p}: {err}");
        }
        std::os::unix::fs::symlink("/etc/passwd", c.data_dir.root().join("pw")).unwrap();
        let err = run(&c, "pw").unwrap_err();
        assert!(matches!(err, JobError::OutsideDataDir { .. }), "{err:?}");
    }

    /// A 2 GB sparse file would take many seconds (far more in a debug build); setting the stop
    /// flag ends the run within one 8 KiB chunk (microseconds). The bound below is the promise:
    /// 100 ms after the flag; a run that ignores the flag misses it by seconds.
    #[test]
    fn stop_flag_ends_a_long_read() {
        let (_t, c) = setup();
        let f = std::fs::File::create(c.data_dir.root().join("big.txt")).unwrap();
        f.set_len(2_000_000_000).unwrap();
        drop(f);
        let stop = c.stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let job = std::thread::spawn(move || {
            let r = WordCountJob.run(&json!({"file_path": "big.txt"}), &c);
            tx.send(Instant::now()).unwrap();
            r
        });
        // Let it get well into the file (not needed for correctness: a flag set earlier just
        // stops it earlier).
        std::thread::sleep(Duration::from_millis(100));
        let flagged = Instant::now();
        stop.store(true, Ordering::SeqCst);
        let ended = rx
            .recv_timeout(Duration::from_secs(1))
            .expect("word_count did not stop within 1 s of the stop flag");
        let latency = ended.saturating_duration_since(flagged);
        assert!(latency < Duration::from_millis(100), "{latency:?}");
        let err = job.join().unwrap().unwrap_err();
        assert!(matches!(err, JobError::Stopped), "{err:?}");
        assert!(err.is_retryable());
        assert!(err.to_string().contains("stopped"), "{err}");
    }

    #[test]
    fn stop_flag_set_before_the_run() {
        let (_t, c) = setup();
        std::fs::write(c.data_dir.root().join("a.txt"), "a b c").unwrap();
        c.stop.store(true, Ordering::SeqCst);
        assert!(matches!(run(&c, "a.txt"), Err(JobError::Stopped)));
    }

    #[test]
    fn hard_linked_and_symlinked_inputs_are_refused() {
        let (t, c) = setup();
        let outside = t.path().join("secret.txt");
        std::fs::write(&outside, "top secret").unwrap();
        std::fs::hard_link(&outside, c.data_dir.root().join("hl.txt")).unwrap();
        let err = run(&c, "hl.txt").unwrap_err();
        assert!(err.to_string().contains("hard links are refused"), "{err}");
        std::fs::create_dir(c.data_dir.root().join("d")).unwrap();
        std::fs::write(c.data_dir.root().join("d/x.txt"), "x").unwrap();
        std::os::unix::fs::symlink("d", c.data_dir.root().join("dl")).unwrap();
        let err = run(&c, "dl/x.txt").unwrap_err();
        assert!(matches!(err, JobError::OutsideDataDir { .. }), "{err:?}");
        assert_eq!(run(&c, "d/x.txt").unwrap()["word_count"], 1);
    }
}
