//! The conformance suite against `RedisPubSub`, on the real Redis (`REDIS_URL`, default
//! `127.0.0.1:6379`): every check runs on two instances sharing one channel prefix. Skips with
//! a printed reason when Redis is unreachable, fails instead under `FANOUT_REQUIRE_SERVICES=1`.

#![cfg(feature = "redis")]

#[macro_use]
mod conformance;

use std::sync::Arc;

use conformance::{Backend, BoxFuture, Instance};
use fanout::{Config, PubSubProvider};

struct Redis;

impl Backend for Redis {
    fn distributed(&self) -> bool {
        true
    }

    fn cluster(&self, n: usize, config: Config) -> BoxFuture<'_, Option<Vec<Instance>>> {
        Box::pin(async move {
            let nodes = conformance::redis::cluster("conformance", n, config).await?;
            Some(
                nodes
                    .into_iter()
                    .map(|provider| {
                        let tasks = Arc::clone(&provider);
                        Instance {
                            provider: provider as Arc<dyn PubSubProvider>,
                            running_tasks: Box::new(move || tasks.running_tasks()),
                        }
                    })
                    .collect(),
            )
        })
    }
}

conformance_suite!(Redis);
