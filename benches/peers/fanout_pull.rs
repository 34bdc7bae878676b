//! fanout's engine, pull form: a `SessionReceiver` per session, read in its own task.

use std::sync::Arc;

use bytes::Bytes;
use fanout::{Config, Engine, OverflowPolicy};

use super::{topic_name, Layout, Peer, Sink};

pub struct FanoutPull {
    engine: Engine,
    topics: Vec<String>,
    consumers: Vec<tokio::task::JoinHandle<()>>,
}

impl FanoutPull {
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Builds with `config` (its capacity is replaced by the layout's).
    pub async fn build_with(layout: &Layout, sink: Arc<Sink>, config: Config) -> Self {
        let config = config.with_capacity(layout.capacity);
        let engine = Engine::new(config).expect("valid config");
        let topics: Vec<String> = (0..layout.topics).map(topic_name).collect();
        let mut consumers = Vec::with_capacity(layout.sessions);
        let batch_limit = layout.capacity;
        for s in 0..layout.sessions {
            let mut receiver = engine.open_session(&format!("s{s}")).expect("open");
            for t in layout.topics_of(s) {
                receiver.subscribe(&topics[t]).await.expect("subscribe");
            }
            let sink = Arc::clone(&sink);
            consumers.push(tokio::spawn(async move {
                // Grown by what arrives, as a user's buffer would be: a LiveView session's stays
                // a few messages long (a cache line or two), an end-to-end session's reaches its
                // backlog. Preallocated to `batch_limit` (4 KiB a session), 10,000 sessions'
                // buffers would not stay in cache, and every wake's first store into one would
                // miss.
                let mut batch = Vec::new();
                while let Ok(n) = receiver.recv_many(&mut batch, batch_limit).await {
                    batch.clear();
                    sink.add(s, n as u64);
                }
            }));
        }
        FanoutPull {
            engine,
            topics,
            consumers,
        }
    }
}

impl Peer for FanoutPull {
    const NAME: &'static str = "fanout";

    async fn build(layout: &Layout, sink: Arc<Sink>) -> Self {
        Self::build_with(
            layout,
            sink,
            Config::default().with_policy(OverflowPolicy::DropOldest),
        )
        .await
    }

    async fn publish(&self, topic: usize, payload: Bytes) {
        self.engine
            .broadcast(&self.topics[topic], payload)
            .await
            .expect("broadcast");
    }

    async fn subscriber_count(&self, name: &str) -> usize {
        self.engine.subscriber_count(name)
    }

    async fn churn(&self, topic: usize, id: usize) {
        let receiver = self.engine.open_session(&format!("churn-{id}")).expect("open");
        receiver.subscribe(&self.topics[topic]).await.expect("subscribe");
        receiver.close();
    }

    async fn shutdown(self) {
        self.engine.stop();
        for c in self.consumers {
            let _ = c.await;
        }
    }
}
