//! Decodes bytes into a scenario (a config and a sequence of operations), runs it on the engine
//! and on the reference model side by side, and compares them after every step.

use std::fmt::Write as _;
use std::time::Duration;

use fanout::{
    Bytes, Config, Engine, Fallback, OverflowPolicy, PubSubError, SessionReceiver, TopicOverride,
    TryRecvError,
};

use super::reference::{Instance, Popped, Reference, Stats, Tally};

/// Session ids the operations pick from.
pub const SESSIONS: [&str; 3] = ["s0", "s1", "s2"];
/// Topics the operations pick from; `p:` topics may have their own rule.
pub const TOPICS: [&str; 4] = ["a", "b", "p:x", "p:y"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Subscribe(usize, usize),
    Unsubscribe(usize, usize),
    UnsubscribeAll(usize),
    Broadcast(usize),
    BroadcastFrom(usize, usize),
    Pop(usize),
    DropReceiver(usize),
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub config: Config,
    pub ops: Vec<Op>,
}

/// Reads bytes; past the end it reads zeros, so every input decodes.
struct Bytes8<'a>(&'a [u8]);

impl Bytes8<'_> {
    fn next(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn below(&mut self, n: usize) -> usize {
        self.next() as usize % n
    }
}

fn decode_policy(kind: u8) -> OverflowPolicy {
    let fallback = match (kind / 5) % 3 {
        0 => Fallback::DropNewest,
        1 => Fallback::DropOldest,
        _ => Fallback::Disconnect,
    };
    match kind % 5 {
        0 => OverflowPolicy::DropNewest,
        1 => OverflowPolicy::DropOldest,
        2 => OverflowPolicy::Disconnect,
        3 => OverflowPolicy::Block {
            timeout: Duration::from_millis(10),
            then: fallback,
        },
        _ => OverflowPolicy::BlockOnce {
            timeout: Duration::from_millis(10),
            then: fallback,
        },
    }
}

impl Scenario {
    /// Three header bytes choose the capacity (1–4), the provider-wide policy and an optional
    /// override for `p:` topics (policy and `max_queued`); every following three bytes are one
    /// operation (kind, session, topic).
    pub fn decode(data: &[u8]) -> Scenario {
        let mut input = Bytes8(data);
        let capacity = 1 + input.below(4);
        let mut config = Config::default()
            .with_capacity(capacity)
            .with_policy(decode_policy(input.next()));
        let prefix = input.next();
        if prefix % 3 != 0 {
            config.overrides.push(TopicOverride {
                prefix: "p:".into(),
                policy: (prefix % 3 == 1).then(|| decode_policy(prefix / 3)),
                max_queued: (prefix & 0x80 != 0).then(|| 1 + (prefix as usize / 3) % capacity),
            });
        }
        let mut ops = Vec::new();
        while !input.0.is_empty() {
            let kind = input.next();
            let session = input.below(SESSIONS.len());
            let topic = input.below(TOPICS.len());
            ops.push(match kind % 10 {
                0 | 1 => Op::Subscribe(session, topic),
                2 => Op::Unsubscribe(session, topic),
                3 => Op::UnsubscribeAll(session),
                4 | 5 => Op::Broadcast(topic),
                6 => Op::BroadcastFrom(session, topic),
                7 | 8 => Op::Pop(session),
                _ => Op::DropReceiver(session),
            });
        }
        Scenario { config, ops }
    }
}

/// The engine side: the engine and the receivers the harness holds, with the reference
/// instance each stands for.
struct Live {
    engine: Engine,
    receivers: [Option<(SessionReceiver, Instance)>; 3],
}

fn popped(result: Result<fanout::Message, TryRecvError>) -> Popped {
    match result {
        Ok(message) => Popped::Message {
            topic: message.topic().to_string(),
            payload: String::from_utf8(message.payload().to_vec()).unwrap(),
            missed_before: message.missed_before(),
        },
        Err(TryRecvError::Empty) => Popped::Empty,
        Err(TryRecvError::Closed(closed)) => Popped::Closed(closed.reason),
        Err(other) => panic!("unexpected {other:?}"),
    }
}

/// Runs `scenario` on the engine and the reference model; returns a description of the first
/// difference, with the steps that led to it.
pub fn run(scenario: &Scenario) -> Result<Stats, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let mut live = Live {
        engine: Engine::new(scenario.config.clone()).map_err(|e| format!("config: {e}"))?,
        receivers: Default::default(),
    };
    let mut reference = Reference::new(scenario.config.clone());
    let mut trace = format!("{:?}\n", scenario.config);
    for (step, op) in scenario.ops.iter().enumerate() {
        let _ = writeln!(trace, "{step}: {op:?}");
        let outcome = runtime.block_on(apply(&mut live, &mut reference, op, step));
        if let Err(difference) = outcome.and_then(|()| compare(&live, &reference)) {
            return Err(format!("{trace}-> {difference}"));
        }
    }
    for slot in &mut live.receivers {
        if let Some((receiver, instance)) = slot.take() {
            drop(receiver);
            reference.drop_receiver(instance);
        }
    }
    compare(&live, &reference).map_err(|d| format!("{trace}after dropping every receiver -> {d}"))?;
    if live.engine.topic_count() != 0 || live.engine.session_count() != 0 {
        return Err(format!("{trace}G7: entries left after every session is gone"));
    }
    Ok(reference.stats)
}

fn expect<T: PartialEq + std::fmt::Debug>(what: &str, engine: T, reference: T) -> Result<(), String> {
    if engine == reference {
        Ok(())
    } else {
        Err(format!("{what}: engine {engine:?}, reference {reference:?}"))
    }
}

fn fanout_tally(fanout: fanout::Fanout) -> Tally {
    Tally {
        recipients: fanout.recipients,
        queued: fanout.queued,
        dropped: fanout.dropped,
    }
}

async fn apply(live: &mut Live, reference: &mut Reference, op: &Op, step: usize) -> Result<(), String> {
    let engine = live.engine.clone();
    let payload = format!("m{step}");
    match *op {
        Op::Subscribe(s, t) => {
            if live.receivers[s].is_none() {
                let receiver = engine
                    .open_session(SESSIONS[s])
                    .map_err(|e| format!("open_session: {e}"))?;
                live.receivers[s] = Some((receiver, reference.open(SESSIONS[s])));
            }
            let (receiver, instance) = live.receivers[s].as_ref().unwrap();
            let got = match receiver.subscribe(TOPICS[t]).await {
                Ok(()) => Ok(()),
                Err(PubSubError::SessionClosed { reason, .. }) => Err(reason),
                Err(other) => return Err(format!("subscribe: {other}")),
            };
            expect("subscribe", got, reference.subscribe(*instance, TOPICS[t]))
        }
        Op::Unsubscribe(s, t) => {
            if let Some((receiver, instance)) = &live.receivers[s] {
                receiver
                    .unsubscribe(TOPICS[t])
                    .map_err(|e| format!("unsubscribe: {e}"))?;
                reference.unsubscribe(*instance, TOPICS[t]);
            }
            Ok(())
        }
        Op::UnsubscribeAll(s) => {
            engine
                .unsubscribe_all(SESSIONS[s])
                .await
                .map_err(|e| format!("unsubscribe_all: {e}"))?;
            reference.unsubscribe_all(SESSIONS[s]);
            Ok(())
        }
        Op::Broadcast(t) => {
            let fanout = engine
                .broadcast(TOPICS[t], Bytes::from(payload.clone()))
                .await
                .map_err(|e| format!("broadcast: {e}"))?;
            expect(
                "broadcast",
                fanout_tally(fanout),
                reference.broadcast(None, TOPICS[t], &payload),
            )
        }
        Op::BroadcastFrom(s, t) => {
            let fanout = engine
                .broadcast_from(SESSIONS[s], TOPICS[t], Bytes::from(payload.clone()))
                .await
                .map_err(|e| format!("broadcast_from: {e}"))?;
            expect(
                "broadcast_from",
                fanout_tally(fanout),
                reference.broadcast(Some(SESSIONS[s]), TOPICS[t], &payload),
            )
        }
        Op::Pop(s) => match &mut live.receivers[s] {
            Some((receiver, instance)) => {
                expect("try_recv", popped(receiver.try_recv()), reference.pop(*instance))
            }
            None => Ok(()),
        },
        Op::DropReceiver(s) => {
            if let Some((receiver, instance)) = live.receivers[s].take() {
                drop(receiver);
                reference.drop_receiver(instance);
            }
            Ok(())
        }
    }
}

/// Stats, registry contents and queues must match exactly.
fn compare(live: &Live, reference: &Reference) -> Result<(), String> {
    let engine = &live.engine;
    let stats = engine.stats();
    let expected = &reference.stats;
    let got = Stats {
        published: stats.published,
        recipients: stats.recipients,
        delivered: stats.delivered,
        dropped: [
            stats.dropped.drop_newest,
            stats.dropped.drop_oldest,
            stats.dropped.slow_consumer,
            stats.dropped.unsubscribed,
        ],
        disconnects: stats.disconnects,
        block_waits: stats.block_waits,
        block_timeouts: stats.block_timeouts,
        block_skips: stats.block_skips,
        sessions: stats.sessions,
        topics: stats.topics,
        subscriptions: stats.subscriptions,
    };
    expect("stats", &got, expected)?;
    expect("stopped drops", stats.dropped.stopped, 0)?;
    expect(
        "handler counters",
        (stats.handler_panics, stats.handler_errors),
        (0, 0),
    )?;
    expect(
        "topic entries",
        engine.topic_count(),
        reference.topic_names().len(),
    )?;
    expect(
        "session entries",
        engine.session_count(),
        reference.session_ids().len(),
    )?;
    for topic in TOPICS {
        let subscribed = reference.topic_names().contains(topic);
        let mut found = false;
        for id in SESSIONS {
            found |= engine.session_topics(id).iter().any(|t| t == topic);
        }
        expect(&format!("topic {topic:?} in some session"), found, subscribed)?;
    }
    let mut queued = 0;
    for id in SESSIONS {
        let mut topics: Vec<String> = engine.session_topics(id).iter().map(|t| t.to_string()).collect();
        topics.sort();
        expect(&format!("topics of {id}"), topics, reference.session_topics(id))?;
        let engine_queued = engine.session_stats(id).map(|s| s.queued);
        let reference_queued = reference.live_instance(id).map(|s| reference.queued(s));
        expect(&format!("queued for {id}"), engine_queued, reference_queued)?;
        queued += engine_queued.unwrap_or(0) as u64;
    }
    for (receiver, instance) in live.receivers.iter().flatten() {
        expect(
            &format!("receiver {} queued", receiver.id()),
            receiver.queued(),
            reference.queued(*instance),
        )?;
    }
    expect("queued total", queued, reference.queued_total())?;
    expect(
        "accounting: recipients == delivered + dropped + queued",
        stats.recipients,
        stats.delivered + stats.dropped.total() + queued,
    )
}
