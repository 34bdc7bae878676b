//! # fanout
//!
//! The pub/sub layer of a LiveView-style web server, in Rust. Every browser tab is a *session*;
//! sessions subscribe to *topics*; a *broadcast* runs every subscribed session's handler, one
//! message at a time, in publish order, from a bounded mailbox with a policy for sessions that
//! fall behind. For web frameworks that embed a default provider (it implements PyView's
//! pluggable pub/sub interface), the applications that tune it, and the operators who size them.
//!
//! - **One task and one bounded mailbox per session:** renders never interleave; memory is
//!   bounded.
//! - **A policy for slow sessions per topic prefix** ([`OverflowPolicy`], [`Config`]), every
//!   drop counted by reason ([`StatsSnapshot`]).
//! - **Lock-free broadcast:** one shared message per broadcast, one push per recipient.
//! - **Pluggable:** `Arc<dyn` [`PubSubProvider`]`>`, one conformance suite for every provider,
//!   and [`RecordingPubSub`] to test your own code.
//!
//! ```
//! use fanout::{Handler, InMemoryPubSub, PubSubProvider};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), fanout::PubSubError> {
//!     let pubsub = InMemoryPubSub::new();
//!     pubsub.start().await?;
//!
//!     // A tab's session subscribes; its "render" goes to a channel here.
//!     let (rendered, mut renders) = tokio::sync::mpsc::unbounded_channel();
//!     let handler = Handler::new(move |topic, message| {
//!         let rendered = rendered.clone();
//!         async move {
//!             let _ = rendered.send(format!("{topic}: {}", String::from_utf8_lossy(&message)));
//!         }
//!     });
//!     pubsub.subscribe_topic("tab-1", "room:lobby", handler).await?;
//!
//!     pubsub.broadcast("room:lobby", "hello".into()).await?;
//!     assert_eq!(renders.recv().await.as_deref(), Some("room:lobby: hello"));
//!
//!     pubsub.unsubscribe_all("tab-1").await?; // the tab closed
//!     pubsub.stop().await?;
//!     Ok(())
//! }
//! ```
//!
//! # The contract
//!
//! Every provider keeps the guarantees G1–G9 of the behaviour contract: delivery exactly once
//! to sessions subscribed before the broadcast began ([G1]), nothing after unsubscribe ([G2]),
//! idempotent subscribe/unsubscribe ([G3]), per-session one-at-a-time handling in each publisher's
//! order ([G4]), isolation of panicking or stalled handlers ([G5]), literal topics ([G6]), bounded
//! memory ([G7]), an idempotent `stop` that ends every task ([G8]), and typed errors for bad input
//! ([G9]). The [`docs`] pages hold the [contract](docs::contract) in full, the
//! [design](docs::design) and a [performance guide](docs::performance).
//!
//! # Forms of a session
//!
//! - **Handler form** ([`PubSubProvider::subscribe_topic`]): a task per session drains its
//!   mailbox and runs the handler registered for each message's topic.
//! - **Pull form** ([`InMemoryPubSub::open_session`], [`Engine::open_session`]): a
//!   [`SessionReceiver`] read with `recv().await`, in bursts with
//!   [`recv_many`](SessionReceiver::recv_many), or as a `futures::Stream`; its cloneable
//!   [`SessionHandle`] changes the session's topics from other tasks meanwhile.
//!
//! [G1]: crate::docs::contract#g1-delivery
//! [G2]: crate::docs::contract#g2-no-delivery-after-unsubscribe
//! [G3]: crate::docs::contract#g3-idempotence
//! [G4]: crate::docs::contract#g4-per-session-order-one-at-a-time
//! [G5]: crate::docs::contract#g5-isolation
//! [G6]: crate::docs::contract#g6-topic-isolation
//! [G7]: crate::docs::contract#g7-bounded-memory
//! [G8]: crate::docs::contract#g8-lifecycle
//! [G9]: crate::docs::contract#g9-errors-are-values

#![warn(missing_docs)]

mod close_reason;
mod concurrent;
mod config;
pub mod docs;
pub mod engine;
pub mod envelope;
mod error;
mod handler;
mod message;
mod provider;
mod session_form;
mod stats;
mod sync;
mod topic;

#[cfg(any(feature = "redis", feature = "postgres", feature = "nats"))]
pub use provider::bridge;
#[cfg(feature = "nats")]
pub use provider::nats;
#[cfg(feature = "nats")]
pub use provider::nats::{NatsConfig, NatsPubSub};
#[cfg(feature = "postgres")]
pub use provider::postgres;
#[cfg(feature = "postgres")]
pub use provider::postgres::{PostgresConfig, PostgresPubSub};
#[cfg(feature = "redis")]
pub use provider::redis;
#[cfg(feature = "redis")]
pub use provider::redis::{RedisConfig, RedisPubSub};

/// Internals the loom models exercise on their own; only in builds with `--cfg fanout_loom`.
#[cfg(fanout_loom)]
#[doc(hidden)]
pub mod loom_internals {
    pub use crate::concurrent::{BoundedQueue, Claimed, PointerItem, StartGate};
}
pub use config::{
    Config, ConfigError, Fallback, Limits, OverflowPolicy, TopicOverride, MAX_BLOCK_TIMEOUT, MAX_CAPACITY,
    MAX_CLOSE_GRACE, MAX_STOP_GRACE,
};
pub use engine::{
    CloseReason, Closed, Engine, Fanout, Notice, SessionHandle, SessionReceiver, TopicObserver, TryRecvError,
};
pub use error::{PubSubError, Result};
pub use handler::{Handler, HandlerError, HandlerResult, IntoHandlerResult};
pub use message::Message;
pub use provider::memory::InMemoryPubSub;
pub use provider::recording::{Call, RecordingPubSub};
pub use provider::session_pubsub::SessionPubSub;
#[cfg(feature = "json")]
pub use provider::PubSubJsonExt;
pub use provider::PubSubProvider;
pub use session_form::SessionForm;
pub use stats::{DropCounts, DropReason, SessionStats, StatsSnapshot};
pub use topic::Topic;

pub use bytes::Bytes;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
