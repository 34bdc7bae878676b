//! fanout's default provider, handler form: `InMemoryPubSub::subscribe_topic` with a handler per
//! (session, topic), one task per session running them.

use std::sync::Arc;

use bytes::Bytes;
use fanout::{Config, Handler, InMemoryPubSub, PubSubProvider};

use super::{topic_name, Layout, Peer, Sink};

pub struct FanoutHandlers {
    pubsub: InMemoryPubSub,
    topics: Vec<String>,
}

impl Peer for FanoutHandlers {
    const NAME: &'static str = "fanout-handlers";

    async fn build(layout: &Layout, sink: Arc<Sink>) -> Self {
        let pubsub = InMemoryPubSub::with_config(Config::default().with_capacity(layout.capacity))
            .expect("valid config");
        pubsub.start().await.expect("start");
        let topics: Vec<String> = (0..layout.topics).map(topic_name).collect();
        for s in 0..layout.sessions {
            for t in layout.topics_of(s) {
                let sink = Arc::clone(&sink);
                let handler = Handler::new(move |_topic, _message| {
                    sink.add(s, 1);
                    std::future::ready(())
                });
                pubsub
                    .subscribe_topic(&format!("s{s}"), &topics[t], handler)
                    .await
                    .expect("subscribe");
            }
        }
        FanoutHandlers { pubsub, topics }
    }

    async fn publish(&self, topic: usize, payload: Bytes) {
        self.pubsub
            .broadcast(&self.topics[topic], payload)
            .await
            .expect("broadcast");
    }

    async fn subscriber_count(&self, name: &str) -> usize {
        self.pubsub.engine().subscriber_count(name)
    }

    async fn churn(&self, topic: usize, id: usize) {
        let session = format!("churn-{id}");
        let handler = Handler::new(|_topic, _message| std::future::ready(()));
        self.pubsub
            .subscribe_topic(&session, &self.topics[topic], handler)
            .await
            .expect("subscribe");
        self.pubsub
            .unsubscribe_topic(&session, &self.topics[topic])
            .await
            .expect("unsubscribe");
    }

    async fn shutdown(self) {
        self.pubsub.stop().await.expect("stop");
    }
}
