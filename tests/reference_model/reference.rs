//! The reference model: what the engine must do, written plainly with maps and queues, no
//! concurrency, no cleverness. One receiver-form session is a queue and a set of topics.
//!
//! It mirrors the engine's documented (not incidental) behaviour:
//!
//! - one mailbox per session, bounded by the capacity; a topic's rule (policy and `max_queued`)
//!   comes from the longest matching override;
//! - a session disconnected by a broadcaster is closed at once and retired (removed from its
//!   topics and the session map, its queue discarded and counted) by the next operation that
//!   reaps: `open_session`, `subscribe`, `unsubscribe_all`, or that session's own `try_recv`;
//! - `block` waits for room; with nothing else running it times out and applies its fallback.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use fanout::{CloseReason, Config, Fallback, OverflowPolicy};

/// Drop reasons, in the order of [`Stats::dropped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    DropNewest = 0,
    DropOldest = 1,
    SlowConsumer = 2,
    Unsubscribed = 3,
}

fn closed_reason(reason: CloseReason) -> Reason {
    match reason {
        CloseReason::SlowConsumer => Reason::SlowConsumer,
        _ => Reason::Unsubscribed,
    }
}

/// The counters the engine's `StatsSnapshot` must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub published: u64,
    pub recipients: u64,
    pub delivered: u64,
    pub dropped: [u64; 4],
    pub disconnects: u64,
    pub block_waits: u64,
    pub block_timeouts: u64,
    pub block_skips: u64,
    pub sessions: u64,
    pub topics: u64,
    pub subscriptions: u64,
}

/// What one broadcast did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub recipients: usize,
    pub queued: usize,
    pub dropped: usize,
}

/// What a `try_recv` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Popped {
    Message {
        topic: String,
        payload: String,
        missed_before: u64,
    },
    Empty,
    Closed(CloseReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    DropNewest,
    DropOldest,
    Disconnect,
    Block(Fallback),
    /// `BlockOnce`: as `Block`, but a stalled session is not waited for.
    BlockOnce(Fallback),
}

#[derive(Debug, Clone, Copy)]
struct Rule {
    policy: Policy,
    /// The mailbox counts as full for this topic at this many messages.
    limit: usize,
}

impl Rule {
    /// The same limit under a `block` policy's fallback.
    fn falling_back_to(self, fallback: Fallback) -> Rule {
        Rule {
            policy: policy(fallback.into()),
            limit: self.limit,
        }
    }
}

#[derive(Debug)]
struct Session {
    id: String,
    closed: Option<CloseReason>,
    retired: bool,
    topics: BTreeSet<String>,
    queue: VecDeque<(String, String)>,
    missed: u64,
    /// A `block` wait for it timed out and it has popped nothing since: `block` falls back at
    /// once.
    stalled: bool,
}

/// Sessions are numbered by instance: an id reopened after its session retired is a new one.
pub type Instance = usize;

#[derive(Debug)]
pub struct Reference {
    config: Config,
    sessions: Vec<Session>,
    /// The engine's session map: live ids (open, or closed and not yet retired).
    by_id: HashMap<String, Instance>,
    /// Topic → subscribed instances; a topic is present while it has a subscriber.
    topics: BTreeMap<String, BTreeSet<Instance>>,
    /// Sessions disconnected by broadcasters, not yet retired.
    retiring: VecDeque<Instance>,
    pub stats: Stats,
}

fn policy(policy: OverflowPolicy) -> Policy {
    match policy {
        OverflowPolicy::DropNewest => Policy::DropNewest,
        OverflowPolicy::DropOldest => Policy::DropOldest,
        OverflowPolicy::Disconnect => Policy::Disconnect,
        OverflowPolicy::Block { then, .. } => Policy::Block(then),
        OverflowPolicy::BlockOnce { then, .. } => Policy::BlockOnce(then),
        other => panic!("the reference model does not know {other:?}"),
    }
}

impl Reference {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            sessions: Vec::new(),
            by_id: HashMap::new(),
            topics: BTreeMap::new(),
            retiring: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    fn rule(&self, topic: &str) -> Rule {
        let best = self
            .config
            .overrides
            .iter()
            .filter(|o| topic.starts_with(&o.prefix))
            .max_by_key(|o| o.prefix.len());
        Rule {
            policy: policy(best.and_then(|o| o.policy).unwrap_or(self.config.policy)),
            limit: best
                .and_then(|o| o.max_queued)
                .unwrap_or(self.config.capacity)
                .min(self.config.capacity),
        }
    }

    /// Live session ids, sorted.
    pub fn session_ids(&self) -> BTreeSet<String> {
        self.by_id.keys().cloned().collect()
    }

    pub fn topic_names(&self) -> BTreeSet<String> {
        self.topics.keys().cloned().collect()
    }

    /// Topics of the live session `id`, sorted.
    pub fn session_topics(&self, id: &str) -> Vec<String> {
        self.by_id
            .get(id)
            .map(|&s| self.sessions[s].topics.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn queued(&self, session: Instance) -> usize {
        self.sessions[session].queue.len()
    }

    pub fn live_instance(&self, id: &str) -> Option<Instance> {
        self.by_id.get(id).copied()
    }

    pub fn queued_total(&self) -> u64 {
        self.by_id
            .values()
            .map(|&s| self.sessions[s].queue.len() as u64)
            .sum()
    }

    fn reap(&mut self) {
        while let Some(session) = self.retiring.pop_front() {
            self.retire(session);
        }
    }

    fn close(&mut self, session: Instance, reason: CloseReason) -> bool {
        let s = &mut self.sessions[session];
        if s.closed.is_some() {
            return false;
        }
        s.closed = Some(reason);
        true
    }

    fn retire(&mut self, session: Instance) {
        let s = &mut self.sessions[session];
        if s.retired {
            return;
        }
        s.retired = true;
        let topics = std::mem::take(&mut s.topics);
        let discarded = s.queue.len() as u64;
        s.queue.clear();
        let reason = closed_reason(s.closed.unwrap_or(CloseReason::Unsubscribed));
        let id = s.id.clone();
        for topic in topics {
            self.leave(session, &topic);
        }
        if self.by_id.get(&id) == Some(&session) {
            self.by_id.remove(&id);
        }
        self.stats.dropped[reason as usize] += discarded;
        self.stats.sessions -= 1;
    }

    fn leave(&mut self, session: Instance, topic: &str) {
        let members = self.topics.get_mut(topic).expect("a subscribed topic exists");
        assert!(members.remove(&session));
        self.stats.subscriptions -= 1;
        if members.is_empty() {
            self.topics.remove(topic);
            self.stats.topics -= 1;
        }
    }

    /// `Engine::open_session` for an id with no live session.
    pub fn open(&mut self, id: &str) -> Instance {
        self.reap();
        assert!(!self.by_id.contains_key(id), "the harness opens only free ids");
        let session = self.sessions.len();
        self.sessions.push(Session {
            id: id.to_string(),
            closed: None,
            retired: false,
            topics: BTreeSet::new(),
            queue: VecDeque::new(),
            missed: 0,
            stalled: false,
        });
        self.by_id.insert(id.to_string(), session);
        self.stats.sessions += 1;
        session
    }

    /// `SessionReceiver::subscribe`: `Err(reason)` if the session is closed.
    pub fn subscribe(&mut self, session: Instance, topic: &str) -> Result<(), CloseReason> {
        self.reap();
        let s = &mut self.sessions[session];
        if s.retired || s.closed.is_some() {
            return Err(s.closed.unwrap_or(CloseReason::Unsubscribed));
        }
        if s.topics.insert(topic.to_string()) {
            let members = self.topics.entry(topic.to_string()).or_default();
            if members.is_empty() {
                self.stats.topics += 1;
            }
            members.insert(session);
            self.stats.subscriptions += 1;
        }
        Ok(())
    }

    /// `SessionReceiver::unsubscribe` (it does not reap).
    pub fn unsubscribe(&mut self, session: Instance, topic: &str) {
        let s = &mut self.sessions[session];
        if s.retired || !s.topics.remove(topic) {
            return;
        }
        self.leave(session, topic);
    }

    /// `Engine::unsubscribe_all`.
    pub fn unsubscribe_all(&mut self, id: &str) {
        self.reap();
        if let Some(&session) = self.by_id.get(id) {
            self.close(session, CloseReason::Unsubscribed);
            self.retire(session);
        }
    }

    /// Dropping the receiver.
    pub fn drop_receiver(&mut self, session: Instance) {
        self.close(session, CloseReason::Unsubscribed);
        self.retire(session);
    }

    /// `SessionReceiver::try_recv`.
    pub fn pop(&mut self, session: Instance) -> Popped {
        if let Some(reason) = self.sessions[session].closed {
            self.retire(session);
            return Popped::Closed(reason);
        }
        let s = &mut self.sessions[session];
        match s.queue.pop_front() {
            None => Popped::Empty,
            Some((topic, payload)) => {
                self.stats.delivered += 1;
                s.stalled = false;
                Popped::Message {
                    topic,
                    payload,
                    missed_before: std::mem::take(&mut s.missed),
                }
            }
        }
    }

    /// `Engine::broadcast` (`sender: None`) or `broadcast_from`.
    pub fn broadcast(&mut self, sender: Option<&str>, topic: &str, payload: &str) -> Tally {
        self.stats.published += 1;
        let mut tally = Tally::default();
        let Some(members) = self.topics.get(topic) else {
            return tally;
        };
        let excluded = sender.and_then(|id| self.by_id.get(id).copied());
        let recipients: Vec<Instance> = members.iter().copied().filter(|&s| Some(s) != excluded).collect();
        let rule = self.rule(topic);
        let mut blocked = Vec::new();
        for session in recipients {
            tally.recipients += 1;
            self.stats.recipients += 1;
            if let Policy::Block(fallback) | Policy::BlockOnce(fallback) = rule.policy {
                if !self.offer(session, topic, payload, rule, &mut tally) {
                    blocked.push((session, fallback));
                }
            } else {
                assert!(self.offer(session, topic, payload, rule, &mut tally));
            }
        }
        // Nothing runs while the broadcaster waits, so every wait times out and falls back.
        for (session, fallback) in blocked {
            self.stats.block_waits += 1;
            if let Some(reason) = self.sessions[session].closed {
                self.count_drop(closed_reason(reason), &mut tally);
                continue;
            }
            self.stats.block_timeouts += 1;
            if let Policy::BlockOnce(_) = rule.policy {
                self.sessions[session].stalled = true;
            }
            assert!(self.offer(
                session,
                topic,
                payload,
                rule.falling_back_to(fallback),
                &mut tally
            ));
        }
        tally
    }

    fn count_drop(&mut self, reason: Reason, tally: &mut Tally) {
        self.stats.dropped[reason as usize] += 1;
        tally.dropped += 1;
    }

    /// One push under `rule`; `false` if the policy is `block` and the mailbox is full.
    fn offer(
        &mut self,
        session: Instance,
        topic: &str,
        payload: &str,
        rule: Rule,
        tally: &mut Tally,
    ) -> bool {
        if let Some(reason) = self.sessions[session].closed {
            self.count_drop(closed_reason(reason), tally);
            return true;
        }
        let message = (topic.to_string(), payload.to_string());
        let s = &mut self.sessions[session];
        if s.queue.len() < rule.limit {
            s.queue.push_back(message);
            tally.queued += 1;
            return true;
        }
        match rule.policy {
            Policy::DropNewest => self.count_drop(Reason::DropNewest, tally),
            Policy::DropOldest => {
                let mut evicted = 0;
                while s.queue.len() >= rule.limit {
                    s.queue.pop_front();
                    evicted += 1;
                }
                s.queue.push_back(message);
                s.missed += evicted;
                tally.queued += 1;
                for _ in 0..evicted {
                    self.count_drop(Reason::DropOldest, tally);
                }
            }
            Policy::Disconnect => {
                self.count_drop(Reason::SlowConsumer, tally);
                if self.close(session, CloseReason::SlowConsumer) {
                    self.stats.disconnects += 1;
                    // The disconnecting broadcast discards what the session held, at once.
                    let discarded = std::mem::take(&mut self.sessions[session].queue).len() as u64;
                    self.stats.dropped[Reason::SlowConsumer as usize] += discarded;
                    self.retiring.push_back(session);
                }
            }
            Policy::BlockOnce(fallback) if s.stalled => {
                self.stats.block_skips += 1;
                return self.offer(session, topic, payload, rule.falling_back_to(fallback), tally);
            }
            Policy::Block(_) | Policy::BlockOnce(_) => return false,
        }
        true
    }
}
