//! The publishing connection's task: sends queued envelopes as pipelined `PUBLISH` commands.
//!
//! Broadcasting callers encode their envelope and push it on a bounded queue (they wait for
//! room when it is full: backpressure, never unbounded buffering). The one task drains the
//! queue — everything waiting, up to `max_pipeline` messages — into a single pipeline, sends it
//! and reads the answers, then takes the next batch. Under load the batches grow on their own,
//! so many publishers share one round trip; at rest a lone message goes out at once.
//!
//! One queue, one task, one connection: messages reach Redis in the order they were queued, and
//! Redis delivers one connection's messages to each subscriber in that order, so one
//! publisher's messages arrive on every instance in publish order (G4).
//!
//! # Connection loss
//!
//! A failed or unanswered pipeline, or an idle `PING` left unanswered, marks the connection down:
//! the messages in flight and those still queued are lost and counted (`publish_errors`), and
//! broadcasts refuse their remote part with
//! [`PublishUnavailable`](super::RedisPubSubError::PublishUnavailable) until the task has
//! reconnected (capped exponential backoff).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, watch};

use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{lock, Mutex};

use super::connection::{open_publisher, Backoff};
use super::stats::RedisCounters;
use super::Shared;

/// One message for Redis: its channel and its encoded envelope.
pub(crate) struct Outbound {
    pub(crate) channel: String,
    pub(crate) envelope: Vec<u8>,
}

/// Whether the publishing connection is up, read by every broadcast.
pub(crate) struct PublisherState {
    /// Written by the publisher task; read by broadcasts without ordering anything else (a
    /// broadcast that reads a stale `true` queues a message the task then counts as lost).
    up: AtomicBool,
    /// When the connection went down; meaningful while `up` is false.
    down_since: Mutex<Instant>,
}

impl PublisherState {
    pub(crate) fn new() -> Self {
        Self {
            up: AtomicBool::new(false),
            down_since: Mutex::new(Instant::now()),
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub(crate) fn down_for(&self) -> Duration {
        lock(&self.down_since).elapsed()
    }

    fn set_up(&self) {
        self.up.store(true, Ordering::Relaxed);
    }

    fn set_down(&self) {
        *lock(&self.down_since) = Instant::now();
        self.up.store(false, Ordering::Relaxed);
    }
}

pub(crate) struct Publisher {
    shared: Arc<Shared>,
    queue: mpsc::Receiver<Outbound>,
    shutdown: watch::Receiver<bool>,
}

impl Publisher {
    pub(crate) fn new(
        shared: Arc<Shared>,
        queue: mpsc::Receiver<Outbound>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            shared,
            queue,
            shutdown,
        }
    }

    pub(crate) async fn run(mut self, first: MultiplexedConnection) {
        self.shared.publisher.set_up();
        let max = self.shared.config.max_pipeline;
        let idle = self.shared.config.health_check_interval;
        let mut batch = Vec::with_capacity(max);
        let mut connection = Some(first);
        loop {
            let Some(conn) = connection.as_mut() else {
                connection = self.reconnect().await;
                if connection.is_none() {
                    break;
                }
                continue;
            };
            if *self.shutdown.borrow() {
                self.flush(conn, &mut batch).await;
                break;
            }
            tokio::select! {
                _ = self.shutdown.changed() => {
                    self.flush(conn, &mut batch).await;
                    break;
                }
                received = self.queue.recv_many(&mut batch, max) => {
                    if received == 0 {
                        break;
                    }
                    if let Err(reason) = self.send(conn, &batch).await {
                        self.lost(&reason, batch.len());
                        connection = None;
                    }
                    batch.clear();
                }
                () = tokio::time::sleep(idle) => {
                    let timeout = self.shared.config.response_timeout;
                    let answered = tokio::time::timeout(timeout, redis::cmd("PING").exec_async(conn)).await;
                    let failure = match answered {
                        Ok(Ok(())) => None,
                        Ok(Err(error)) => Some(format!("PING failed: {error}")),
                        Err(_) => Some(format!("no answer to PING within {} ms", timeout.as_millis())),
                    };
                    if let Some(reason) = failure {
                        self.lost(&reason, 0);
                        connection = None;
                    }
                }
            }
        }
        self.shared.publisher.set_down();
        tracing::debug!(instance = %self.shared.instance, "redis publisher stopped");
    }

    async fn send(&self, conn: &mut MultiplexedConnection, batch: &[Outbound]) -> Result<(), String> {
        let mut pipe = redis::pipe();
        for message in batch {
            pipe.cmd("PUBLISH")
                .arg(message.channel.as_bytes())
                .arg(&message.envelope[..])
                .ignore();
        }
        let timeout = self.shared.config.response_timeout;
        match tokio::time::timeout(timeout, pipe.exec_async(conn)).await {
            Ok(Ok(())) => {
                RedisCounters::add(&self.shared.counters.published, batch.len() as u64);
                Ok(())
            }
            Ok(Err(error)) => Err(format!("PUBLISH failed: {error}")),
            Err(_) => Err(format!(
                "no answer to {} PUBLISH within {} ms",
                batch.len(),
                timeout.as_millis()
            )),
        }
    }

    /// On stop: sends what broadcasts queued before it, once, then gives up.
    async fn flush(&mut self, conn: &mut MultiplexedConnection, batch: &mut Vec<Outbound>) {
        while let Ok(message) = self.queue.try_recv() {
            batch.push(message);
        }
        for chunk in batch.chunks(self.shared.config.max_pipeline) {
            if self.send(conn, chunk).await.is_err() {
                RedisCounters::add(&self.shared.counters.publish_errors, chunk.len() as u64);
            }
        }
        batch.clear();
    }

    fn lost(&mut self, reason: &str, in_flight: usize) {
        self.shared.publisher.set_down();
        let queued = self.discard_queued();
        let counters = &self.shared.counters;
        RedisCounters::add(&counters.publisher_outages, 1);
        RedisCounters::add(&counters.publish_errors, (in_flight + queued) as u64);
        tracing::warn!(
            instance = %self.shared.instance,
            reason,
            lost = in_flight + queued,
            "lost the redis publishing connection; reconnecting (broadcasts reach local sessions only meanwhile)"
        );
    }

    fn discard_queued(&mut self) -> usize {
        let mut discarded = 0;
        while self.queue.try_recv().is_ok() {
            discarded += 1;
        }
        discarded
    }

    async fn reconnect(&mut self) -> Option<MultiplexedConnection> {
        let shared = Arc::clone(&self.shared);
        let mut backoff = Backoff::new(
            shared.config.reconnect_backoff_min,
            shared.config.reconnect_backoff_max,
        );
        loop {
            let delay = backoff.next_delay();
            let attempt = async {
                tokio::time::sleep(delay).await;
                open_publisher(&shared).await
            };
            tokio::select! {
                _ = self.shutdown.changed() => return None,
                result = attempt => match result {
                    Ok(connection) => {
                        // Raced in before broadcasts saw the connection down: too late to send.
                        let stale = self.discard_queued();
                        RedisCounters::add(&shared.counters.publish_errors, stale as u64);
                        let down_for = shared.publisher.down_for();
                        shared.publisher.set_up();
                        RedisCounters::add(&shared.counters.publisher_reconnects, 1);
                        tracing::info!(
                            instance = %shared.instance,
                            outage_ms = down_for.as_millis() as u64,
                            attempts = backoff.attempts(),
                            "redis publishing connection is back"
                        );
                        return Some(connection);
                    }
                    Err(error) => tracing::debug!(
                        instance = %shared.instance,
                        attempt = backoff.attempts(),
                        %error,
                        "reconnecting the redis publishing connection failed"
                    ),
                },
            }
            if *self.shutdown.borrow() {
                return None;
            }
        }
    }
}
