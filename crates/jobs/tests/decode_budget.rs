//! The process-wide decode budget, through the public API. Its own test binary, so no other
//! test shares the global budget; the tests here take `LOCK` to run one at a time.

use image::{ImageBuffer, ImageFormat, Rgba};
use jobsched_jobs::thumbnail::{
    DEFAULT_DECODE_BUDGET, decode_budget, decode_budget_in_use, decode_budget_peak,
    reset_decode_budget_peak, set_decode_budget,
};
use jobsched_jobs::{DataDir, JobContext, JobError, RunOutput, ThumbnailJob};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

static LOCK: Mutex<()> = Mutex::new(());

/// A `side`×`side` RGBA PNG of noise (incompressible: decoding it takes a while).
fn noise_png(side: u32, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    let img: ImageBuffer<Rgba<u8>, _> = ImageBuffer::from_fn(side, side, |_, _| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        Rgba(x.to_le_bytes())
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

fn run(c: &JobContext, input: &str, output: &str) -> Result<RunOutput, JobError> {
    ThumbnailJob::default().run(
        &json!({"input_path": input, "width": 64, "height": 64, "output_path": output,
                "overwrite": true}),
        c,
    )
}

/// Four threads thumbnail large images at once under a budget that fits two runs: the
/// reservations in force never exceed the budget (sampled continuously and by the peak
/// counter), every run completes, and everything is given back.
#[test]
fn concurrent_runs_stay_within_the_budget() {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let t = tempfile::tempdir().unwrap();
    let dd = DataDir::new(t.path()).unwrap();
    for i in 0..4 {
        std::fs::write(dd.root().join(format!("in{i}.png")), noise_png(1024, i + 7)).unwrap();
    }
    assert_eq!(decode_budget(), DEFAULT_DECODE_BUDGET);

    // What one run reserves, measured alone.
    reset_decode_budget_peak();
    let c = JobContext::new(dd.clone());
    assert!(matches!(
        run(&c, "in0.png", "solo.png"),
        Ok(RunOutput::Done(_))
    ));
    let per_run = decode_budget_peak();
    assert!(
        per_run >= 1024 * 1024 * 4,
        "a run must reserve its decoded image: {per_run}"
    );
    assert_eq!(decode_budget_in_use(), 0);

    let budget = 2 * per_run + per_run / 2;
    assert!(4 * per_run > budget, "the test must force runs to wait");
    set_decode_budget(budget);
    reset_decode_budget_peak();

    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut max = 0;
            while !done.load(Ordering::SeqCst) {
                max = max.max(decode_budget_in_use());
                std::thread::sleep(Duration::from_micros(200));
            }
            max
        })
    };
    let start = Arc::new(Barrier::new(4));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (dd, start) = (dd.clone(), start.clone());
            std::thread::spawn(move || {
                let c = JobContext::new(dd);
                start.wait();
                for round in 0..3 {
                    let out = format!("out/{i}-{round}.png");
                    match run(&c, &format!("in{i}.png"), &out) {
                        Ok(RunOutput::Done(v)) => assert_eq!(v["width"], 64),
                        other => panic!("run {i}/{round}: {other:?}"),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let sampled = sampler.join().unwrap();
    let peak = decode_budget_peak();
    assert!(peak <= budget, "peak {peak} > budget {budget}");
    assert!(sampled <= budget, "sampled {sampled} > budget {budget}");
    assert!(peak >= per_run, "{peak}");
    assert_eq!(decode_budget_in_use(), 0);
    set_decode_budget(DEFAULT_DECODE_BUDGET);
}

#[test]
fn budget_smaller_than_an_image_refuses_it() {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let t = tempfile::tempdir().unwrap();
    let dd = DataDir::new(t.path()).unwrap();
    std::fs::write(dd.root().join("a.png"), noise_png(512, 3)).unwrap();
    let c = JobContext::new(dd);
    set_decode_budget(1024 * 1024);
    let err = run(&c, "a.png", "b.png").unwrap_err();
    set_decode_budget(DEFAULT_DECODE_BUDGET);
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("JOBSCHED_DECODE_BUDGET"), "{err}");
    assert!(matches!(run(&c, "a.png", "b.png"), Ok(RunOutput::Done(_))));
}
