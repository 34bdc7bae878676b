//! # fanout
//!
//! The pub/sub layer of a LiveView-style web server. Every connected browser tab is a
//! *session*; sessions subscribe to *topics*; the server *broadcasts* a message on a topic and
//! every subscribed session's handler runs, one message at a time, in publish order.
//!
//! - **Lock-free fanout.** A broadcast takes no lock: each topic's subscriber set is a table of
//!   immutable chunks read through `arc_swap`, and each session has one bounded lock-free
//!   mailbox.
//! - **Safe under slow consumers.** A full mailbox is handled by a policy you choose per topic
//!   prefix: drop the newest, drop the oldest, disconnect the slow session, or block the
//!   broadcaster for a bounded time. Every drop is counted.
//! - **Pluggable.** [`PubSubProvider`] is PyView's pluggable pub/sub interface in Rust; the
//!   in-memory engine is the default provider, distributed ones plug in behind the same trait.
//!
//! ```
//! use fanout::{Handler, InMemoryPubSub, PubSubProvider};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), fanout::PubSubError> {
//!     let pubsub = InMemoryPubSub::new();
//!     pubsub.start().await?;
//!
//!     // A LiveView socket subscribes its session to a topic with a handler
//!     // (here the "render" goes to a channel so we can watch it happen).
//!     let (rendered, mut renders) = tokio::sync::mpsc::unbounded_channel();
//!     let handler = Handler::new(move |topic, message| {
//!         let rendered = rendered.clone();
//!         async move {
//!             let _ = rendered.send(format!("{topic}: {}", String::from_utf8_lossy(&message)));
//!         }
//!     });
//!     pubsub.subscribe_topic("tab-1", "room:lobby", handler).await?;
//!
//!     // Anyone broadcasts; every subscribed session's handler runs, one message at a time.
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
//! ([G9]). See the README for each in full.
//!
//! # Forms of a session
//!
//! - **Handler form** ([`PubSubProvider::subscribe_topic`]): a task per session drains its
//!   mailbox and runs the handler registered for each message's topic.
//! - **Pull form** ([`Engine::open_session`]): a [`SessionReceiver`] read with `recv().await` or
//!   as a `futures::Stream`.
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
};
pub use engine::{CloseReason, Closed, Engine, Fanout, Notice, SessionReceiver, TopicObserver, TryRecvError};
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
