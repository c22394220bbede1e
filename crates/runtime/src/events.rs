//! Fan-out of transport events to the components of one process, with resubscription.

use jobsched_core::ports::{Event, Transport};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// A process-local hub: one transport subscription, many local receivers.
#[derive(Debug, Clone)]
pub struct EventPump {
    tx: broadcast::Sender<Event>,
}

impl EventPump {
    /// Subscribe to the transport and forward every event locally until `shutdown`.
    pub fn start(transport: Arc<dyn Transport>, shutdown: CancellationToken) -> EventPump {
        let (tx, _) = broadcast::channel(1024);
        let pump = EventPump { tx: tx.clone() };
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                let sub = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    s = transport.subscribe() => s,
                };
                match sub {
                    Ok(mut sub) => {
                        delay = Duration::from_millis(100);
                        // Anything may have been missed while (re)connecting: wake everyone.
                        let _ = tx.send(Event::JobsAvailable);
                        let _ = tx.send(Event::PolicyChanged);
                        loop {
                            let ev = tokio::select! {
                                _ = shutdown.cancelled() => return,
                                ev = sub.recv() => ev,
                            };
                            match ev {
                                Some(ev) => {
                                    let _ = tx.send(ev);
                                }
                                None => break,
                            }
                        }
                        tracing::warn!("event subscription ended; resubscribing");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot subscribe to events; retrying in {delay:?}");
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        });
        pump
    }

    /// A new local receiver.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Deliver an event locally only (used when this process caused it).
    pub fn local(&self, event: Event) {
        let _ = self.tx.send(event);
    }
}
