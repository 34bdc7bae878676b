//! One distributed provider on the run's broker, whichever the broker: how every scenario
//! names its channels, and what a server process of an `--instances` run holds.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use fanout::bridge::BrokerStats;
use fanout::nats::{NatsConfig, NatsPubSub};
use fanout::postgres::{PostgresConfig, PostgresPubSub};
use fanout::redis::{RedisConfig, RedisPubSub};
use fanout::{Config, PubSubProvider};

use crate::args::{Args, ProviderArg};
use crate::cluster_nodes::node_addresses;
use crate::postgres_baseline::{channel_prefix, server_name};

/// `RedisConfig` from the environment and `--redis-url`, on the run's channels.
pub fn redis_config(args: &Args) -> RedisConfig {
    let mut redis = RedisConfig::from_env();
    if let Some(url) = &args.redis_url {
        redis.url = url.clone();
    }
    redis.with_channel_prefix(format!("fanout-sizing:{}:", args.run_id()))
}

/// `PostgresConfig` from the environment and `--database-url`, on the run's channels.
pub fn postgres_config(args: &Args) -> PostgresConfig {
    let mut postgres = PostgresConfig::from_env();
    postgres.url = args.database_url();
    postgres.with_channel_prefix(channel_prefix(args.run_id()))
}

/// `NatsConfig` from the environment and `--nats-url`, on the run's subjects.
pub fn nats_config(args: &Args) -> NatsConfig {
    let mut nats = NatsConfig::from_env();
    if let Some(url) = &args.nats_url {
        nats.url = url.clone();
    }
    nats.with_subject_prefix(format!("fanout-sizing.{}", args.run_id()))
}

/// The broker `args` name, as `host:port` (PostgreSQL's with `/database`), and its address
/// when it resolves to one.
pub fn broker_server(args: &Args) -> Result<(String, Option<SocketAddr>), Box<dyn std::error::Error>> {
    let server = match args.provider {
        ProviderArg::Redis => ::redis::Client::open(redis_config(args).url.as_str())?
            .get_connection_info()
            .addr()
            .to_string(),
        ProviderArg::Postgres => server_name(&args.database_url())?,
        ProviderArg::Nats => nats_config(args).server()?,
        ProviderArg::Memory => return Err("the memory provider has no broker".into()),
    };
    let host_port = server.split('/').next().unwrap_or(&server);
    let address = host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next());
    Ok((server, address))
}

/// The addresses of the broker's server processes, `address` being the one the URL names:
/// every node of a Redis Cluster, as `CLUSTER NODES` lists them, primaries and replicas, in
/// address order; else `address` alone.
pub fn broker_nodes(args: &Args, address: SocketAddr) -> Vec<SocketAddr> {
    let cluster = match args.provider {
        ProviderArg::Redis => redis_cluster_nodes(args, address.ip()),
        ProviderArg::Postgres | ProviderArg::Nats | ProviderArg::Memory => None,
    };
    cluster
        .filter(|nodes| !nodes.is_empty())
        .unwrap_or_else(|| vec![address])
}

/// The nodes of the Redis Cluster the URL's server belongs to, `host` standing for a node that
/// does not know its own ip; `None` when the server is not a cluster node (it answers
/// `CLUSTER NODES` with an error) or cannot be asked.
fn redis_cluster_nodes(args: &Args, host: IpAddr) -> Option<Vec<SocketAddr>> {
    let client = ::redis::Client::open(redis_config(args).url.as_str()).ok()?;
    let mut connection = client.get_connection_with_timeout(Duration::from_secs(5)).ok()?;
    let reply: String = ::redis::cmd("CLUSTER").arg("NODES").query(&mut connection).ok()?;
    let mut nodes = node_addresses(&reply, host);
    nodes.sort_unstable();
    Some(nodes)
}

/// A started provider of `--provider`, with its broker-side counters.
pub struct Instance {
    pub provider: Arc<dyn PubSubProvider>,
    broker_stats: Box<dyn Fn() -> BrokerStats + Send + Sync>,
}

impl Instance {
    /// Starts an instance of `--provider` on the run's channels.
    pub async fn start(args: &Args, config: Config) -> Result<Instance, Box<dyn std::error::Error>> {
        let instance = match args.provider {
            ProviderArg::Redis => Instance::of(
                RedisPubSub::with_config(redis_config(args), config)?,
                RedisPubSub::broker_stats,
            ),
            ProviderArg::Postgres => Instance::of(
                PostgresPubSub::with_config(postgres_config(args), config)?,
                PostgresPubSub::broker_stats,
            ),
            ProviderArg::Nats => Instance::of(
                NatsPubSub::with_config(nats_config(args), config)?,
                NatsPubSub::broker_stats,
            ),
            ProviderArg::Memory => return Err("the memory provider has no broker".into()),
        };
        let (server, _) = broker_server(args)?;
        instance
            .provider
            .start()
            .await
            .map_err(|error| format!("cannot start on {} at {server}: {error}", args.provider.name()))?;
        Ok(instance)
    }

    fn of<P: PubSubProvider + 'static>(provider: P, stats: fn(&P) -> BrokerStats) -> Instance {
        let provider = Arc::new(provider);
        let counted = Arc::clone(&provider);
        Instance {
            provider,
            broker_stats: Box::new(move || stats(&counted)),
        }
    }

    /// The broker-side counters now.
    pub fn broker_stats(&self) -> BrokerStats {
        (self.broker_stats)()
    }
}
