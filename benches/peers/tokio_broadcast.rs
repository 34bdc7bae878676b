//! `tokio::sync::broadcast`: one channel per topic. A session on one topic reads its receiver
//! directly; a session on several merges its receivers with `tokio_stream::StreamMap`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{broadcast, Mutex};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{StreamExt, StreamMap};

use super::{topic_name, Layout, Peer, Sink};

pub struct TokioBroadcast {
    senders: Vec<broadcast::Sender<Bytes>>,
    /// Topic name to channel, as an application would keep it: built once, then read without a
    /// lock (the cheapest registry such an application could have).
    by_name: HashMap<String, usize>,
    consumers: Vec<tokio::task::JoinHandle<()>>,
    churned: Mutex<Vec<broadcast::Receiver<Bytes>>>,
}

impl Peer for TokioBroadcast {
    const NAME: &'static str = "tokio-broadcast";

    async fn build(layout: &Layout, sink: Arc<Sink>) -> Self {
        let senders: Vec<_> = (0..layout.topics)
            .map(|_| broadcast::channel(layout.capacity).0)
            .collect();
        let mut consumers = Vec::with_capacity(layout.sessions);
        for s in 0..layout.sessions {
            let topics = layout.topics_of(s);
            let sink = Arc::clone(&sink);
            if let [only] = topics[..] {
                let mut rx = senders[only].subscribe();
                consumers.push(tokio::spawn(async move {
                    loop {
                        match rx.recv().await {
                            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                            Err(broadcast::error::RecvError::Closed) => return,
                        }
                        let mut n = 1;
                        loop {
                            match rx.try_recv() {
                                Ok(_) => n += 1,
                                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                                Err(_) => break,
                            }
                        }
                        sink.add(s, n);
                    }
                }));
            } else {
                let mut merged = StreamMap::new();
                for t in topics {
                    merged.insert(t, BroadcastStream::new(senders[t].subscribe()));
                }
                consumers.push(tokio::spawn(async move {
                    while let Some((_, item)) = merged.next().await {
                        if item.is_ok() {
                            sink.add(s, 1);
                        }
                    }
                }));
            }
        }
        TokioBroadcast {
            by_name: (0..senders.len()).map(|t| (topic_name(t), t)).collect(),
            senders,
            consumers,
            churned: Mutex::new(Vec::new()),
        }
    }

    async fn publish(&self, topic: usize, payload: Bytes) {
        let _ = self.senders[topic].send(payload);
    }

    async fn subscriber_count(&self, name: &str) -> usize {
        self.by_name
            .get(name)
            .map_or(0, |&t| self.senders[t].receiver_count())
    }

    async fn churn(&self, topic: usize, _id: usize) {
        let rx = self.senders[topic].subscribe();
        let mut held = self.churned.lock().await;
        held.push(rx);
        held.clear();
    }

    async fn shutdown(self) {
        drop(self.senders);
        for c in self.consumers {
            let _ = c.await;
        }
    }
}
