//! The conformance suite against `InMemoryPubSub`.

#[macro_use]
mod conformance;

use std::sync::Arc;

use conformance::{Backend, BoxFuture, Instance};
use fanout::{Config, InMemoryPubSub, PubSubProvider};

struct Memory;

impl Backend for Memory {
    fn distributed(&self) -> bool {
        false
    }

    fn cluster(&self, n: usize, config: Config) -> BoxFuture<'_, Option<Vec<Instance>>> {
        assert_eq!(n, 1, "the in-memory provider is one process");
        Box::pin(async move {
            let provider = Arc::new(InMemoryPubSub::with_config(config).unwrap());
            provider.start().await.unwrap();
            let tasks = Arc::clone(&provider);
            Some(vec![Instance {
                provider,
                running_tasks: Box::new(move || tasks.running_tasks()),
            }])
        })
    }
}

conformance_suite!(Memory);
