//! `fanout-chat`: serves the chat on one address until Ctrl-C.
//!
//! ```text
//! cargo run -p fanout-chat -- --listen 127.0.0.1:3000 [--config examples/fanout.toml]
//! cargo run -p fanout-chat --features redis -- --redis redis://127.0.0.1:6379
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use fanout::Config;
use fanout_chat::{BoxError, Chat};

/// A LiveView-style chat on fanout: rooms are topics, every browser tab is a session.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to serve the page and the websockets on.
    #[arg(long, env = "FANOUT_CHAT_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,

    /// A fanout TOML config (mailbox capacity, overflow policies, limits); default: a mailbox
    /// of 64 messages per tab under `drop_oldest`.
    #[arg(long, env = "FANOUT_CHAT_CONFIG")]
    config: Option<PathBuf>,

    /// Share rooms with every server on this Redis (and channel prefix).
    #[cfg(feature = "redis")]
    #[arg(long, env = "REDIS_URL")]
    redis: Option<String>,

    /// The Redis channel prefix; servers share rooms only under the same prefix.
    #[cfg(feature = "redis")]
    #[arg(long, default_value = "fanout-chat:")]
    channel_prefix: String,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = match &args.config {
        Some(path) => Config::from_toml_file(path)?,
        None => fanout_chat::default_config(),
    };
    let chat = start(&args, config).await?;

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "serving the chat");
    tokio::select! {
        served = axum::serve(listener, chat.router()) => served?,
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
    }
    chat.provider().stop().await?;
    Ok(())
}

#[cfg(feature = "redis")]
async fn start(args: &Args, config: Config) -> Result<std::sync::Arc<Chat>, BoxError> {
    match &args.redis {
        Some(url) => {
            let redis =
                fanout::RedisConfig::new(url.as_str()).with_channel_prefix(args.channel_prefix.as_str());
            tracing::info!(redis = %url, prefix = %args.channel_prefix, "rooms shared through redis");
            Chat::over_redis(redis, config).await
        }
        None => Chat::in_memory(config).await,
    }
}

#[cfg(not(feature = "redis"))]
async fn start(_args: &Args, config: Config) -> Result<std::sync::Arc<Chat>, BoxError> {
    Chat::in_memory(config).await
}
