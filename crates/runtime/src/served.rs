//! The queues a worker serves: their settings (read from the transport), which of them may
//! have work, and whose turn it is to fill free slots.

use crate::Runtime;
use jobsched_core::PolicySettings;
use jobsched_core::queue::{DEFAULT_QUEUE, SlotShare};
use std::collections::{BTreeMap, HashSet};

/// What the next claim asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// The queue.
    pub queue: String,
    /// Slots to fill.
    pub ask: u32,
    /// The queue's settings (order, concurrency limit).
    pub settings: PolicySettings,
}

/// The served queues.
#[derive(Debug)]
pub(crate) struct Served {
    /// Only these queues (`None`: every queue).
    only: Option<HashSet<String>>,
    /// Settings of the served queues known so far, by name. Queues are never forgotten: a
    /// transport that lost its keys (a flush) is refilled by the leader.
    settings: BTreeMap<String, PolicySettings>,
    /// Queues whose last claim came back short: nothing is claimed from them until news.
    dry: HashSet<String>,
    share: SlotShare,
}

impl Served {
    /// Serve `only` (`None` or empty: every queue).
    pub fn new(only: Option<&[String]>) -> Served {
        let only: Option<HashSet<String>> = only
            .filter(|o| !o.is_empty())
            .map(|o| o.iter().cloned().collect());
        let mut settings = BTreeMap::new();
        // The queues named are served from the start, with the default settings until
        // their own are read.
        match &only {
            Some(names) => {
                for n in names {
                    settings.insert(n.clone(), PolicySettings::default());
                }
            }
            None => {
                settings.insert(DEFAULT_QUEUE.to_owned(), PolicySettings::default());
            }
        }
        Served {
            only,
            settings,
            dry: HashSet::new(),
            share: SlotShare::default(),
        }
    }

    /// Read the settings from the transport (the `default` queue's key and the others'); on
    /// an error or no answer the known settings stay.
    pub async fn refresh(&mut self, rt: &Runtime) {
        let (default, others) = tokio::join!(
            crate::worker::within(rt.transport.policy()),
            crate::worker::within(rt.transport.queues())
        );
        if let Ok(Some(s)) = default {
            self.set(DEFAULT_QUEUE, s);
        }
        if let Ok(others) = others {
            for (name, s) in others {
                self.set(&name, s);
            }
        }
    }

    fn set(&mut self, name: &str, settings: PolicySettings) {
        if self.only.as_ref().is_some_and(|o| !o.contains(name)) {
            return;
        }
        if let Some(old) = self.settings.get(name)
            && old.policy != settings.policy
        {
            tracing::debug!(queue = name, from = %old.policy, to = %settings.policy, "policy changed");
        }
        self.settings.insert(name.to_owned(), settings);
    }

    /// News of work (a submission, a requeue, a policy change, the poll): claim from every
    /// queue again.
    pub fn wake(&mut self) {
        self.dry.clear();
    }

    /// A slot here freed up: the queues with a concurrency limit may have room again.
    pub fn slot_freed(&mut self) {
        let settings = &self.settings;
        self.dry.retain(|q| {
            settings
                .get(q)
                .is_none_or(|s| s.concurrency_limit.is_none())
        });
    }

    /// The next claim for `idle` free slots: the queue whose turn it is among those not
    /// paused and not dry, and its weighted share of the slots.
    pub fn next(&mut self, idle: u32) -> Option<Plan> {
        let candidates: Vec<(&str, u32)> = self
            .settings
            .iter()
            .filter(|(n, s)| !s.paused && !self.dry.contains(*n))
            .map(|(n, s)| (n.as_str(), s.weight))
            .collect();
        let (queue, ask) = self.share.pick(&candidates, idle)?;
        let queue = queue.to_owned();
        let settings = self.settings.get(&queue)?.clone();
        Some(Plan {
            queue,
            ask,
            settings,
        })
    }

    /// An exchange for `plan` claimed `claimed` jobs.
    pub fn claimed(&mut self, plan: &Plan, claimed: usize) {
        self.share
            .claimed(&plan.queue, plan.settings.weight, claimed);
        if claimed < plan.ask as usize {
            // Short: this queue has nothing more due for now.
            self.dry.insert(plan.queue.clone());
        }
    }

    /// The settings a job of `queue` runs under (Round Robin's quantum).
    pub fn settings(&self, queue: &str) -> PolicySettings {
        self.settings.get(queue).cloned().unwrap_or_default()
    }

    /// Whether any served queue may have work.
    #[cfg(test)]
    pub fn any_awake(&self) -> bool {
        self.settings
            .iter()
            .any(|(n, s)| !s.paused && !self.dry.contains(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paused_and_dry_queues_are_skipped_until_news() {
        let mut s = Served::new(None);
        s.set("b", PolicySettings::default());
        s.set(
            "c",
            PolicySettings {
                paused: true,
                ..Default::default()
            },
        );
        let first = s.next(4).unwrap();
        s.claimed(&first, 0);
        let second = s.next(4).unwrap();
        assert_ne!(first.queue, second.queue);
        assert_ne!(second.queue, "c");
        s.claimed(&second, 1);
        assert!(!s.any_awake());
        assert_eq!(s.next(4), None);
        s.wake();
        assert!(s.any_awake());
    }

    #[test]
    fn only_the_named_queues_are_served() {
        let mut s = Served::new(Some(&["b".to_owned()]));
        s.set(DEFAULT_QUEUE, PolicySettings::default());
        s.set("c", PolicySettings::default());
        let plan = s.next(2).unwrap();
        assert_eq!(plan.queue, "b");
        assert_eq!(plan.ask, 2);
        s.claimed(&plan, 0);
        assert_eq!(s.next(2), None);
    }

    #[test]
    fn a_freed_slot_wakes_limited_queues_only() {
        let mut s = Served::new(None);
        s.set(
            "lim",
            PolicySettings {
                concurrency_limit: Some(1),
                ..Default::default()
            },
        );
        while let Some(plan) = s.next(1) {
            s.claimed(&plan, 0);
        }
        s.slot_freed();
        assert_eq!(s.next(1).map(|p| p.queue), Some("lim".to_owned()));
    }
}
