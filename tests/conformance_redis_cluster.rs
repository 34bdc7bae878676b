//! The conformance suite against `RedisPubSub` on a Redis Cluster of the test's own (three
//! primaries and three replicas on free loopback ports, `support::redis_cluster`): sharded
//! pub/sub, each instance seeded with a different primary. Every check runs on two instances,
//! and again on one, with the one relaxation the cluster makes: topics on different shards
//! travel over different connections, so one publisher's order is checked per topic (G4 as the
//! cluster keeps it). One cluster serves the whole file; its nodes end with the test process.
//! Skips with a printed reason when `redis-server` cannot be run, fails instead under
//! `FANOUT_REQUIRE_SERVICES=1`.

#![cfg(all(feature = "redis", unix))]

#[macro_use]
mod conformance;
mod support;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fanout::redis::{RedisConfig, RedisPubSub};
use fanout::PubSubProvider;
use support::redis_cluster::RedisCluster;

/// The file's cluster, started on first use on a thread of its own.
fn shared_cluster() -> Option<&'static RedisCluster> {
    static CLUSTER: OnceLock<Option<RedisCluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            std::thread::spawn(|| {
                tokio::runtime::Runtime::new()
                    .expect("a runtime")
                    .block_on(RedisCluster::start())
            })
            .join()
            .expect("the cluster's start does not panic")
        })
        .as_ref()
}

/// `n` started providers on one fresh prefix, instance `i` seeded with primary `i`.
async fn instances(n: usize, config: fanout::Config) -> Option<Vec<conformance::Instance>> {
    let urls = shared_cluster()?.primary_urls();
    let prefix = conformance::unique_prefix("cluster");
    let mut nodes = Vec::new();
    for i in 0..n {
        let redis = RedisConfig::new(urls[i % urls.len()].clone())
            .with_channel_prefix(&prefix)
            .with_health_check_interval(Duration::from_millis(250))
            .with_reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200));
        let provider = Arc::new(RedisPubSub::with_config(redis, config.clone()).expect("valid config"));
        provider.start().await.expect("start against the cluster");
        let tasks = Arc::clone(&provider);
        nodes.push(conformance::Instance {
            provider: provider as Arc<dyn PubSubProvider>,
            running_tasks: Box::new(move || tasks.running_tasks()),
        });
    }
    Some(nodes)
}

/// The cluster as a backend: on two instances, or (`distributed: false`) on one.
struct ClusterBackend {
    distributed: bool,
}

impl conformance::Backend for ClusterBackend {
    fn distributed(&self) -> bool {
        self.distributed
    }

    fn keeps_order_across_topics(&self) -> bool {
        false
    }

    fn cluster(
        &self,
        n: usize,
        config: fanout::Config,
    ) -> conformance::BoxFuture<'_, Option<Vec<conformance::Instance>>> {
        Box::pin(instances(n, config))
    }
}

conformance_suite!(ClusterBackend { distributed: true });

/// The same checks on one instance alone.
mod single_instance {
    use super::{conformance, ClusterBackend};

    conformance_suite!(ClusterBackend { distributed: false });
}
