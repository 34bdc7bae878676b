//! A faithful Rust port of the reference design's in-memory provider (PyView's
//! `InMemoryPubSub`): one async lock around `topic -> {session -> handler}` and
//! `session -> {topic -> handler}` maps, and one spawned task per delivery.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Mutex;

use super::{topic_name, Layout, Peer, Sink};

type Handler = Arc<dyn Fn(String, Bytes) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

#[derive(Default)]
struct Maps {
    topic_subscribers: HashMap<String, HashMap<String, Handler>>,
    session_topics: HashMap<String, HashMap<String, Handler>>,
}

pub struct SeedPort {
    maps: Mutex<Maps>,
    topics: Vec<String>,
}

impl SeedPort {
    async fn subscribe_topic(&self, session_id: &str, topic: &str, handler: Handler) {
        let mut maps = self.maps.lock().await;
        maps.topic_subscribers
            .entry(topic.to_string())
            .or_default()
            .insert(session_id.to_string(), Arc::clone(&handler));
        maps.session_topics
            .entry(session_id.to_string())
            .or_default()
            .insert(topic.to_string(), handler);
    }

    async fn unsubscribe_topic(&self, session_id: &str, topic: &str) {
        let mut maps = self.maps.lock().await;
        if let Some(subscribers) = maps.topic_subscribers.get_mut(topic) {
            subscribers.remove(session_id);
            if subscribers.is_empty() {
                maps.topic_subscribers.remove(topic);
            }
        }
        if let Some(topics) = maps.session_topics.get_mut(session_id) {
            topics.remove(topic);
            if topics.is_empty() {
                maps.session_topics.remove(session_id);
            }
        }
    }

    async fn broadcast(&self, topic: &str, message: Bytes) {
        let handlers: Vec<Handler> = {
            let maps = self.maps.lock().await;
            maps.topic_subscribers
                .get(topic)
                .map(|s| s.values().cloned().collect())
                .unwrap_or_default()
        };
        for handler in handlers {
            tokio::spawn(handler(topic.to_string(), message.clone()));
        }
    }
}

impl Peer for SeedPort {
    const NAME: &'static str = "seed-port";

    async fn build(layout: &Layout, sink: Arc<Sink>) -> Self {
        let port = SeedPort {
            maps: Mutex::new(Maps::default()),
            topics: (0..layout.topics).map(topic_name).collect(),
        };
        for s in 0..layout.sessions {
            for t in layout.topics_of(s) {
                let sink = Arc::clone(&sink);
                let handler: Handler = Arc::new(move |_topic, _message| {
                    let sink = Arc::clone(&sink);
                    Box::pin(async move { sink.add(s, 1) })
                });
                port.subscribe_topic(&format!("s{s}"), &port.topics[t], handler)
                    .await;
            }
        }
        port
    }

    async fn publish(&self, topic: usize, payload: Bytes) {
        self.broadcast(&self.topics[topic], payload).await;
    }

    async fn subscriber_count(&self, name: &str) -> usize {
        let maps = self.maps.lock().await;
        maps.topic_subscribers.get(name).map_or(0, HashMap::len)
    }

    async fn churn(&self, topic: usize, id: usize) {
        let session = format!("churn-{id}");
        let handler: Handler = Arc::new(|_topic, _message| Box::pin(async {}));
        self.subscribe_topic(&session, &self.topics[topic], handler).await;
        self.unsubscribe_topic(&session, &self.topics[topic]).await;
    }

    async fn shutdown(self) {}
}
