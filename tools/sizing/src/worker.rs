//! `--worker K`: instance K of an `--instances` run, a server process of its own.
//!
//! It starts one provider on the run's broker, subscribes its share of the sessions, and talks
//! to the parent in JSON lines, one [`WorkerMessage`] or [`ParentMessage`] a line: it says
//! [`Ready`](WorkerMessage::Ready), publishes its share from [`Go`](ParentMessage::Go) for the
//! duration, and once its broker has taken every broadcast it sends how many it made on each
//! topic. The parent answers with the sums over every instance
//! ([`Totals`](ParentMessage::Totals)), from which the worker knows how many messages from the
//! others its sessions' topics carried: it is drained when its broker has handed over that
//! many and its sessions have taken (or dropped) each. It then sends its
//! [`Tally`](WorkerMessage::Done), and stops when told ([`Stop`](ParentMessage::Stop)). It exits as soon as its standard input closes, so
//! a parent that dies takes its workers with it.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fanout::Config;
use serde::{Deserialize, Serialize};

use crate::args::Args;
use crate::instance::Instance;
use crate::report::BrokerFigures;
use crate::run::{measure, policy_name, topic_of, Drain, Placement, Sides};
use crate::tally::Tally;

/// A line from a worker to the parent.
#[derive(Debug, Serialize, Deserialize)]
pub enum WorkerMessage {
    /// Its sessions are subscribed; it waits for [`ParentMessage::Go`].
    Ready,
    /// Its broadcasts on each topic (by index), every one taken by the broker.
    Published(Vec<u64>),
    /// Drained: what it measured, and its broker's side.
    Done {
        tally: Box<Tally>,
        broker: BrokerFigures,
    },
}

/// A line from the parent to a worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ParentMessage {
    /// Publish now.
    Go,
    /// Every instance's broadcasts on each topic, summed.
    Totals(Vec<u64>),
    /// Stop the provider and exit.
    Stop,
}

/// Runs instance `index` of the `--instances` run `args` describe.
pub async fn run(args: &Args, config: Config, index: usize) -> Result<(), Box<dyn std::error::Error>> {
    let instances = args.instances.ok_or("--worker needs --instances")?;
    let inbox = parent_messages();
    let clock = run_clock(args.epoch_us.ok_or("--worker needs --epoch-us")?);
    let capacity = config.capacity;
    let policy = policy_name(&config);
    let instance = Instance::start(args, config).await?;
    let sides = Sides {
        name: args.provider.name(),
        publish: Arc::clone(&instance.provider),
        receive: Arc::clone(&instance.provider),
        capacity,
        policy,
    };
    let topics: BTreeSet<usize> = (index..args.sessions)
        .step_by(instances)
        .flat_map(|s| (0..args.topics_per_session).map(move |k| topic_of(s, k, args.topics)))
        .collect();
    let placement = Placement {
        publisher: index,
        receiver: index,
        instances,
        clock,
        ready: Box::new(|| {
            send(&WorkerMessage::Ready);
            // Blocks the thread that drives `measure`, before any traffic: the runtime's
            // workers, which run the sessions, go on.
            while !matches!(inbox.recv(), Ok(ParentMessage::Go) | Err(_)) {}
        }),
    };
    let mut expected = None;
    let mut published_sent = false;
    let drained = |per_topic: &[u64]| {
        if !published_sent {
            // The engine's `published` counts the other instances' messages too: count ours.
            let sent = instance.broker_stats();
            let broadcasts: u64 = per_topic.iter().sum();
            if sent.published + sent.publish_errors + sent.unavailable < broadcasts {
                return Drain::Pending;
            }
            send(&WorkerMessage::Published(per_topic.to_vec()));
            published_sent = true;
        }
        if expected.is_none() {
            let Ok(ParentMessage::Totals(totals)) = inbox.try_recv() else {
                return Drain::Pending;
            };
            let others = |t: usize| totals.get(t).copied().unwrap_or(0).saturating_sub(per_topic[t]);
            expected = Some(topics.iter().map(|&t| others(t)).sum::<u64>());
        }
        let Some(expected) = expected else {
            return Drain::Pending;
        };
        let got = instance.broker_stats();
        Drain::of(got.received + got.malformed, expected, &got)
    };
    let tally = measure(args, &sides, placement, drained).await?;
    let stats = instance.broker_stats();
    send(&WorkerMessage::Done {
        tally: Box::new(tally),
        broker: BrokerFigures {
            sent: stats.published,
            received: stats.received,
            lost: stats.publish_errors + stats.unavailable,
            malformed: stats.malformed,
            outages: stats.outages + stats.publisher_outages,
        },
    });
    // Connected until the parent has read the broker's CPU: PostgreSQL's backends end with
    // their connections, and their CPU with them.
    while !matches!(inbox.recv(), Ok(ParentMessage::Stop) | Err(_)) {}
    instance.provider.stop().await?;
    Ok(())
}

/// The parent's messages, read on a thread of their own; the process exits when they end.
fn parent_messages() -> mpsc::Receiver<ParentMessage> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str(&line) {
                Ok(message) => {
                    let _ = sender.send(message);
                }
                Err(error) => eprintln!("fanout-sizing worker: bad line from the parent: {error}"),
            }
        }
        // The parent is done with this worker, or gone: end with it.
        std::process::exit(0);
    });
    receiver
}

/// The run's clock: `epoch_us` (microseconds since the Unix epoch, the parent's reading) as an
/// `Instant` of this process, so that every instance's stamps count from the same moment.
fn run_clock(epoch_us: u64) -> Instant {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let since = now.saturating_sub(Duration::from_micros(epoch_us));
    Instant::now().checked_sub(since).unwrap_or_else(Instant::now)
}

fn send(message: &WorkerMessage) {
    let line = serde_json::to_string(message).expect("serialisable message");
    let mut stdout = std::io::stdout().lock();
    // A parent that stopped reading has gone; the closing standard input ends this process.
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}
