//! `async-broadcast`: one channel per topic (overflow mode, so a full channel drops the oldest
//! like fanout's default instead of blocking the publisher); multi-topic sessions merge their
//! receivers with `select_all`.

use std::collections::HashMap;
use std::sync::Arc;

use async_broadcast::{broadcast, InactiveReceiver, Receiver, Sender, TryRecvError};
use bytes::Bytes;
use futures_util::stream::{select_all, StreamExt};

use super::{topic_name, Layout, Peer, Sink};

pub struct AsyncBroadcastPeer {
    senders: Vec<Sender<Bytes>>,
    /// Topic name to channel, built once and read without a lock (as for the tokio peer).
    by_name: HashMap<String, usize>,
    keep_open: Vec<InactiveReceiver<Bytes>>,
    consumers: Vec<tokio::task::JoinHandle<()>>,
}

impl Peer for AsyncBroadcastPeer {
    const NAME: &'static str = "async-broadcast";

    async fn build(layout: &Layout, sink: Arc<Sink>) -> Self {
        let mut senders = Vec::with_capacity(layout.topics);
        let mut receivers: Vec<Receiver<Bytes>> = Vec::with_capacity(layout.topics);
        let mut keep_open = Vec::with_capacity(layout.topics);
        for _ in 0..layout.topics {
            let (mut tx, rx) = broadcast(layout.capacity);
            tx.set_overflow(true);
            tx.set_await_active(false);
            keep_open.push(rx.clone().deactivate());
            senders.push(tx);
            receivers.push(rx);
        }
        let mut consumers = Vec::with_capacity(layout.sessions);
        for s in 0..layout.sessions {
            let topics = layout.topics_of(s);
            let sink = Arc::clone(&sink);
            if let [only] = topics[..] {
                let mut rx = receivers[only].clone();
                consumers.push(tokio::spawn(async move {
                    while rx.recv().await.is_ok() {
                        let mut n = 1;
                        loop {
                            match rx.try_recv() {
                                Ok(_) => n += 1,
                                Err(TryRecvError::Overflowed(_)) => {}
                                Err(_) => break,
                            }
                        }
                        sink.add(s, n);
                    }
                }));
            } else {
                let mut merged = select_all(topics.into_iter().map(|t| receivers[t].clone()));
                consumers.push(tokio::spawn(async move {
                    while merged.next().await.is_some() {
                        sink.add(s, 1);
                    }
                }));
            }
        }
        drop(receivers);
        AsyncBroadcastPeer {
            by_name: (0..senders.len()).map(|t| (topic_name(t), t)).collect(),
            senders,
            keep_open,
            consumers,
        }
    }

    async fn publish(&self, topic: usize, payload: Bytes) {
        let _ = self.senders[topic].broadcast_direct(payload).await;
    }

    async fn subscriber_count(&self, name: &str) -> usize {
        self.by_name
            .get(name)
            .map_or(0, |&t| self.senders[t].receiver_count())
    }

    async fn churn(&self, topic: usize, _id: usize) {
        let rx = self.keep_open[topic].activate_cloned();
        drop(rx);
    }

    async fn shutdown(self) {
        for tx in &self.senders {
            tx.close();
        }
        drop(self.keep_open);
        for c in self.consumers {
            let _ = c.await;
        }
    }
}
