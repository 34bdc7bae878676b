//! The conformance suite against `RecordingPubSub`: recording must not change delivery.

#[macro_use]
mod conformance;

use std::sync::Arc;

use conformance::{Backend, BoxFuture, Instance};
use fanout::{Config, PubSubProvider, RecordingPubSub};

struct Recording;

impl Backend for Recording {
    fn distributed(&self) -> bool {
        false
    }

    fn cluster(&self, n: usize, config: Config) -> BoxFuture<'_, Option<Vec<Instance>>> {
        assert_eq!(n, 1, "the recording provider is one process");
        Box::pin(async move {
            let provider = Arc::new(RecordingPubSub::with_config(config).unwrap());
            provider.start().await.unwrap();
            let tasks = Arc::clone(&provider);
            Some(vec![Instance {
                provider,
                running_tasks: Box::new(move || tasks.inner().running_tasks()),
            }])
        })
    }
}

conformance_suite!(Recording);
