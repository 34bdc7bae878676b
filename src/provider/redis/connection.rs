//! One client connection to a Redis server: the handshake, a reader task, and pipelined
//! commands answered in order.
//!
//! Redis answers a connection's commands in the order they were written, one reply each (the
//! provider sends one channel per `SUBSCRIBE` / `UNSUBSCRIBE`, so that holds for those too).
//! A caller writes a batch of commands in one write, holding the connection's writer lock,
//! and queues, under the same lock, how many replies it waits for; the reader task takes the
//! replies in order and hands each batch its answers, FIFO.
//!
//! On the subscription connection the reader also takes the pushes: each `message` /
//! `smessage` goes to the listener through the bridge's bounded
//! [hand-off](crate::provider::bridge::handoff), in arrival order. Past its bounds the reader
//! stops reading, and Redis holds the backlog, up to its `client-output-buffer-limit pubsub`
//! (32 MB by default), past which it closes the connection, which the bridge takes as an
//! outage. An `unsubscribe` / `sunsubscribe` push that answers no command of ours (Redis
//! Cluster sends one when a channel's slot moves to another node) is handed on in order with
//! the messages, as [`Pushed::Unsubscribed`].
//!
//! The connection is a [pipeline](crate::provider::bridge::pipeline), which says how it
//! closes (a reply nobody waits for closes it too).

use bytes::{Buf, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::wire::{self, Frame, Message, Value, WireError, WireLimits};
use crate::envelope::InstanceId;
use crate::provider::bridge::broker::{ConnectError, Reason};
use crate::provider::bridge::handoff::Handoff;
use crate::provider::bridge::pipeline::{Handled, Handshake, Parsed, Pipeline, Protocol, Replied, Socket};

/// The longest line accepted: a simple string or an error (an ACL refusal names the command).
const MAX_LINE: usize = 64 * 1024;

/// The most elements in one reply: `CLUSTER SLOTS` of a cluster whose slots are scattered
/// one by one has about ten per slot range.
const MAX_ELEMENTS: usize = 1 << 20;

/// Where a Redis server is and who we are to it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) address: Address,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

/// A server's address.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Address {
    Tcp { host: String, port: u16 },
    Unix(std::path::PathBuf),
}

impl Endpoint {
    /// `host:port` or the socket's path, for messages.
    pub(crate) fn target(&self) -> String {
        match &self.address {
            Address::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            Address::Tcp { host, port } => format!("{host}:{port}"),
            Address::Unix(path) => path.display().to_string(),
        }
    }

    /// The host, for a cluster node named without one (a Unix socket's is the loopback).
    pub(crate) fn host(&self) -> &str {
        match &self.address {
            Address::Tcp { host, .. } => host,
            Address::Unix(_) => "127.0.0.1",
        }
    }

    /// The same credentials at another address (a cluster's other nodes).
    pub(crate) fn at(&self, host: String, port: u16) -> Endpoint {
        Endpoint {
            address: Address::Tcp { host, port },
            ..self.clone()
        }
    }
}

/// What one connection needs to know of the provider.
pub(crate) struct ConnectionSettings<'a> {
    pub(crate) endpoint: &'a Endpoint,
    pub(crate) instance: InstanceId,
    /// `publisher` or `subscriber`, in the connection's name (`CLIENT LIST`).
    pub(crate) role: &'static str,
    /// The longest bulk string accepted (a message's payload).
    pub(crate) max_bulk: usize,
}

/// What the subscription connection's reader hands to the listener, in arrival order.
#[derive(Debug)]
pub(crate) enum Pushed {
    Message(Message),
    /// An `unsubscribe` or `sunsubscribe` push no command of ours asked for: the server ended
    /// this subscription on its own.
    Unsubscribed(String),
}

/// A batch's replies, in order: each reply, or the server's error reply's text.
pub(crate) type Replies = Vec<Result<Value, String>>;

/// What a batch waits for, and the replies it has so far.
struct Expected {
    /// How many replies it waits for.
    count: usize,
    replies: Replies,
    /// The channel each reply answers, for an `UNSUBSCRIBE` batch: a push for another channel
    /// is not its reply.
    unsubscribing: Option<Vec<String>>,
}

/// The RESP side of a connection's reader: what it parses, and the rest of an oversized
/// message it is discarding.
struct RespProtocol {
    limits: WireLimits,
    /// Bytes still to discard: the rest of an oversized message.
    skipping: usize,
}

impl Protocol for RespProtocol {
    type Frame = Value;
    type Pushed = Pushed;
    type Reply = Value;
    type Batch = Expected;
    type Answer = Replies;
    type WireError = WireError;

    const NAME: &'static str = "redis";

    fn parse(&mut self, buffer: &mut BytesMut) -> Result<Option<Parsed<Self>>, WireError> {
        if self.skipping > 0 {
            let discard = self.skipping.min(buffer.len());
            buffer.advance(discard);
            self.skipping -= discard;
            if self.skipping > 0 {
                return Ok(None);
            }
        }
        Ok(wire::parse(buffer, &self.limits)?.map(|frame| match frame {
            Frame::Message(message) => {
                let bytes = message.len();
                Parsed::Push(Pushed::Message(message), bytes)
            }
            Frame::Oversized {
                channel,
                sharded,
                skip,
            } => {
                // Handed on for the listener to count and skip; its bytes are not kept.
                self.skipping = skip;
                let message = Message::oversized(channel, sharded, skip - 2);
                let bytes = message.len();
                Parsed::Push(Pushed::Message(message), bytes)
            }
            Frame::Value(value) => Parsed::Frame(value),
        }))
    }

    fn handle(&mut self, value: Value) -> Handled<Self> {
        Handled::Reply(value)
    }

    /// Gives `value` to the oldest batch if it answers it, or else takes it for an
    /// unsolicited unsubscribe.
    fn reply(&mut self, oldest: Option<&mut Expected>, value: Value) -> Replied<Self> {
        let unsubscribed = unsubscribed_channel(&value);
        match oldest {
            Some(oldest)
                if match (&unsubscribed, &oldest.unsubscribing) {
                    (Some(channel), Some(channels)) => channels.get(oldest.replies.len()) == Some(channel),
                    // Only an unsubscribe batch asks for unsubscribe pushes.
                    (Some(_), None) => false,
                    (None, _) => true,
                } =>
            {
                oldest.replies.push(match value {
                    Value::Error(text) => Err(text),
                    other => Ok(other),
                });
                if oldest.replies.len() == oldest.count {
                    Replied::Complete(std::mem::take(&mut oldest.replies))
                } else {
                    Replied::Kept
                }
            }
            _ => match unsubscribed {
                // In order with the messages: those before it came on the subscription it ends.
                Some(channel) => {
                    let bytes = channel.len();
                    Replied::Push(Pushed::Unsubscribed(channel), bytes)
                }
                None => Replied::Unexpected(format!("the server sent a reply nobody waited for: {value:?}")),
            },
        }
    }
}

/// An open connection.
pub(crate) struct Connection {
    pipeline: Pipeline<RespProtocol>,
}

impl Connection {
    /// Connects, authenticates if the endpoint has a password, names the connection
    /// `fanout-<instance>-<role>`, and waits for the server's answers (a refusal fails the
    /// connection). Then `pushed` (if given) receives the pub/sub pushes.
    pub(crate) async fn open(
        settings: ConnectionSettings<'_>,
        pushed: Option<Handoff<Pushed>>,
    ) -> Result<Self, ConnectError> {
        let endpoint = settings.endpoint;
        let socket = match &endpoint.address {
            Address::Tcp { host, port } => Socket::tcp(host, *port).await?,
            Address::Unix(path) => Socket::unix(path).await?,
        };
        let mut handshake = Handshake::new(
            socket,
            RespProtocol {
                limits: WireLimits {
                    line: MAX_LINE,
                    bulk: settings.max_bulk,
                    elements: MAX_ELEMENTS,
                },
                skipping: 0,
            },
        );
        let mut hello = Vec::new();
        let mut steps = Vec::new();
        if let Some(password) = &endpoint.password {
            match &endpoint.username {
                Some(user) => wire::put_command(&mut hello, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => wire::put_command(&mut hello, &[b"AUTH", password.as_bytes()]),
            }
            steps.push("AUTH");
        }
        let name = format!("fanout-{}-{}", settings.instance, settings.role);
        wire::put_command(&mut hello, &[b"CLIENT", b"SETNAME", name.as_bytes()]);
        steps.push("CLIENT SETNAME");
        handshake.write(&hello).await?;
        for step in steps {
            match handshake.next_frame().await? {
                Parsed::Frame(Value::Error(text)) => {
                    let advice = if text.starts_with("NOAUTH") {
                        " (the server requires a password: put it in the URL)"
                    } else {
                        ""
                    };
                    return Err(format!("the server refused {step}: {text}{advice}").into());
                }
                Parsed::Frame(_) => {}
                Parsed::Push(..) => {
                    return Err(format!("the server sent a message before answering {step}").into())
                }
            }
        }
        tracing::debug!(instance = %settings.instance, role = settings.role, server = endpoint.target(), "redis connection open");
        Ok(Self {
            pipeline: handshake.start(pushed, settings.instance, settings.role),
        })
    }

    /// Writes `commands`, which draw `expected` replies, and resolves with them, in order.
    pub(crate) fn round_trip(
        &self,
        commands: Vec<u8>,
        expected: usize,
    ) -> BoxFuture<'static, Result<Replies, Reason>> {
        self.batch(commands, expected, None)
    }

    /// Writes `UNSUBSCRIBE`-like `commands`, one per channel of `channels`, and resolves with
    /// their replies.
    pub(crate) fn unsubscribe(
        &self,
        commands: Vec<u8>,
        channels: Vec<String>,
    ) -> BoxFuture<'static, Result<Replies, Reason>> {
        self.batch(commands, channels.len(), Some(channels))
    }

    fn batch(
        &self,
        commands: Vec<u8>,
        count: usize,
        unsubscribing: Option<Vec<String>>,
    ) -> BoxFuture<'static, Result<Replies, Reason>> {
        if count == 0 {
            return futures_util::future::ready(Ok(Replies::new())).boxed();
        }
        let expected = Expected {
            count,
            replies: Replies::with_capacity(count),
            unsubscribing,
        };
        self.pipeline.round_trip(commands, expected).boxed()
    }

    /// One command, and its reply.
    pub(crate) async fn query(&self, args: &[&[u8]]) -> Result<Value, Reason> {
        let mut command = Vec::new();
        wire::put_command(&mut command, args);
        let mut replies = self.round_trip(command, 1).await?;
        match replies.pop() {
            Some(Ok(value)) => Ok(value),
            Some(Err(text)) => Err(text),
            None => Err("no reply".into()),
        }
    }

    /// Resolves once the reader task has ended (the connection is gone).
    pub(crate) fn closed(&self) -> BoxFuture<'static, ()> {
        self.pipeline.closed().boxed()
    }
}

/// The channel of an `unsubscribe` or `sunsubscribe` push.
fn unsubscribed_channel(value: &Value) -> Option<String> {
    let [kind, channel, _count] = value.as_array()? else {
        return None;
    };
    let kind = kind.as_bytes()?;
    if kind != b"unsubscribe" && kind != b"sunsubscribe" {
        return None;
    }
    String::from_utf8(channel.as_bytes()?.to_vec()).ok()
}
