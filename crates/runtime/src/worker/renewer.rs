//! What runs beside the slots: the lease renewer and the writer of running jobs' progress and
//! log lines.

use super::*;

/// Write running jobs' new progress and log lines, every [`notes::FLUSH_EVERY`].
pub(super) async fn note_writer(rt: Runtime, running: RunningSet, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(notes::FLUSH_EVERY) => {}
        }
        let dirty: Vec<Arc<RunNotes>> = running
            .lock()
            .map(|r| {
                r.values()
                    .filter(|run| run.notes.dirty())
                    .map(|run| run.notes.clone())
                    .collect()
            })
            .unwrap_or_default();
        for n in dirty {
            n.flush(rt.store.as_ref()).await;
        }
    }
}

/// Renew the leases of running jobs every third of the lease TTL.
pub(super) async fn renewer(rt: Runtime, running: RunningSet, stop: CancellationToken) {
    let me = rt.config.worker_id.clone();
    let every = rt.config.lease_ttl / 3;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let tokens: Vec<Token> = running
            .lock()
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default();
        if tokens.is_empty() {
            continue;
        }
        let until = after(rt.clock.now(), rt.config.lease_ttl);
        match rt.store.renew(&tokens, &me, until).await {
            Ok(held) if held.len() < tokens.len() => {
                // A job whose outcome was recorded meanwhile has left the running set; only
                // the ones still running really lost their lease (the rescuer took them).
                // The others are asked to stop: another worker may run them now.
                let lost = running
                    .lock()
                    .map(|r| {
                        let mut lost = 0;
                        for t in tokens.iter().filter(|t| !held.contains(t)) {
                            if let Some(run) = r.get(t) {
                                run.stop.set();
                                lost += 1;
                            }
                        }
                        lost
                    })
                    .unwrap_or(0);
                if lost > 0 {
                    tracing::warn!(
                        lost,
                        "lost the lease of some running jobs; their outcomes will be ignored"
                    );
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
        }
    }
}
