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
//! The task ends on end of stream, a read error, a protocol error, or a reply nobody waits for;
//! then every waiting batch fails, later ones fail at once, and [`Connection::closed`]
//! resolves. Dropping the connection ends the task and closes the socket.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::wire::{self, Frame, Message, Value, WireLimits};
use crate::envelope::InstanceId;
use crate::provider::bridge::broker::{ConnectError, Reason};
use crate::provider::bridge::handoff::Handoff;
use crate::sync::{lock, Arc, Mutex};

/// The longest line accepted: a simple string or an error (an ACL refusal names the command).
const MAX_LINE: usize = 64 * 1024;

/// The most elements in one reply: `CLUSTER SLOTS` of a cluster whose slots are scattered
/// one by one has about ten per slot range.
const MAX_ELEMENTS: usize = 1 << 20;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

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

/// A batch waiting for its replies.
struct Waiting {
    /// How many replies it waits for.
    expected: usize,
    replies: Replies,
    /// The channel each reply answers, for an `UNSUBSCRIBE` batch: a push for another channel
    /// is not its reply.
    unsubscribing: Option<Vec<String>>,
    answer: oneshot::Sender<Replies>,
}

/// Who waits for which replies.
#[derive(Default)]
struct Batches {
    /// In the order their commands were written.
    waiting: VecDeque<Waiting>,
    /// Set by the reader task as it ends: why the connection is gone.
    closed: Option<String>,
}

/// What the connection's users and its reader task share.
struct Inner {
    /// Held for each whole write, so that batches do not interleave and the order of
    /// `waiting` is the order of the commands on the wire.
    writer: tokio::sync::Mutex<WriteHalf>,
    batches: Mutex<Batches>,
}

/// An open connection.
pub(crate) struct Connection {
    inner: Arc<Inner>,
    reader: JoinHandle<()>,
    /// Its sender is dropped when the reader task ends.
    closed: watch::Receiver<()>,
}

impl Drop for Connection {
    /// Ends the reader task, and fails the batches still waiting (a batch's future may outlive
    /// the connection).
    fn drop(&mut self) {
        self.reader.abort();
        close(&self.inner, "the connection was closed");
    }
}

/// Marks the connection gone: the batches waiting fail, later ones fail at once.
fn close(inner: &Inner, why: &str) {
    let mut batches = lock(&inner.batches);
    batches.closed.get_or_insert_with(|| why.to_string());
    // Dropping the senders fails the batches that wait.
    batches.waiting.clear();
}

/// Closes the connection if dropped armed: a write that failed or was cut short (its future
/// dropped) may have left part of a command on the wire, after which no reply can be trusted
/// to answer the batch it would be given to.
struct WriteGuard<'a>(Option<&'a Inner>);

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if let Some(inner) = self.0 {
            close(inner, "a write to the server failed or was cut short");
        }
    }
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
        let (mut read, mut write) = connect(&endpoint.address).await?;
        let limits = WireLimits {
            line: MAX_LINE,
            bulk: settings.max_bulk,
            elements: MAX_ELEMENTS,
        };
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
        write.write_all(&hello).await?;
        let mut buffer = BytesMut::with_capacity(READ_CHUNK);
        for step in steps {
            match next_frame(&mut read, &mut buffer, &limits).await? {
                Frame::Value(Value::Error(text)) => {
                    let advice = if text.starts_with("NOAUTH") {
                        " (the server requires a password: put it in the URL)"
                    } else {
                        ""
                    };
                    return Err(format!("the server refused {step}: {text}{advice}").into());
                }
                Frame::Value(_) => {}
                Frame::Message(_) | Frame::Oversized { .. } => {
                    return Err(format!("the server sent a message before answering {step}").into())
                }
            }
        }
        tracing::debug!(instance = %settings.instance, role = settings.role, server = endpoint.target(), "redis connection open");
        let inner = Arc::new(Inner {
            writer: tokio::sync::Mutex::new(write),
            batches: Mutex::new(Batches::default()),
        });
        let (closing, closed) = watch::channel(());
        let reader = Reader {
            read,
            buffer,
            limits,
            inner: Arc::clone(&inner),
            pushed,
            skipping: 0,
            instance: settings.instance,
            role: settings.role,
        };
        let reader = tokio::spawn(async move {
            // Dropped when the task ends, however it ends: tells `closed`.
            let _closing = closing;
            reader.run().await;
        });
        Ok(Self {
            inner,
            reader,
            closed,
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
        expected: usize,
        unsubscribing: Option<Vec<String>>,
    ) -> BoxFuture<'static, Result<Replies, Reason>> {
        let inner = Arc::clone(&self.inner);
        async move {
            if expected == 0 {
                return Ok(Replies::new());
            }
            let answered = {
                let mut writer = inner.writer.lock().await;
                let (answer, answered) = oneshot::channel();
                {
                    let mut batches = lock(&inner.batches);
                    if let Some(why) = &batches.closed {
                        return Err(why.clone());
                    }
                    batches.waiting.push_back(Waiting {
                        expected,
                        replies: Replies::with_capacity(expected),
                        unsubscribing,
                        answer,
                    });
                }
                let mut guard = WriteGuard(Some(&inner));
                writer
                    .write_all(&commands)
                    .await
                    .map_err(|error| format!("writing to the server failed: {error}"))?;
                guard.0 = None;
                answered
            };
            answered.await.map_err(|_| {
                lock(&inner.batches)
                    .closed
                    .clone()
                    .unwrap_or_else(|| "the connection closed".to_string())
            })
        }
        .boxed()
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
        let mut closed = self.closed.clone();
        async move { while closed.changed().await.is_ok() {} }.boxed()
    }
}

/// Reads until `buffer` holds a whole frame, during the handshake.
async fn next_frame(
    read: &mut ReadHalf,
    buffer: &mut BytesMut,
    limits: &WireLimits,
) -> Result<Frame, ConnectError> {
    loop {
        if let Some(frame) = wire::parse(buffer, limits)? {
            return Ok(frame);
        }
        buffer.reserve(READ_CHUNK);
        if read.read_buf(buffer).await? == 0 {
            return Err("the server closed the connection during the handshake".into());
        }
    }
}

/// The reader task of one connection.
struct Reader {
    read: ReadHalf,
    buffer: BytesMut,
    limits: WireLimits,
    inner: Arc<Inner>,
    /// The subscription connection's: where its pushes go.
    pushed: Option<Handoff<Pushed>>,
    /// Bytes still to discard: the rest of an oversized message.
    skipping: usize,
    instance: InstanceId,
    role: &'static str,
}

impl Reader {
    async fn run(mut self) {
        let why = self.read_all().await;
        tracing::debug!(instance = %self.instance, role = self.role, reason = why, "redis connection ended");
        close(&self.inner, &why);
    }

    /// Reads and handles frames until the connection ends; returns why it did.
    async fn read_all(&mut self) -> String {
        loop {
            loop {
                if self.skipping > 0 {
                    let discard = self.skipping.min(self.buffer.len());
                    self.buffer.advance(discard);
                    self.skipping -= discard;
                    if self.skipping > 0 {
                        break;
                    }
                }
                let handled = match wire::parse(&mut self.buffer, &self.limits) {
                    Ok(Some(Frame::Message(message))) => self.hold(Pushed::Message(message)).await,
                    Ok(Some(Frame::Oversized {
                        channel,
                        sharded,
                        skip,
                    })) => {
                        // Handed on for the listener to count and skip; its bytes are not kept.
                        self.skipping = skip;
                        self.hold(Pushed::Message(Message::oversized(channel, sharded, skip - 2)))
                            .await
                    }
                    Ok(Some(Frame::Value(value))) => self.reply(value).await,
                    Ok(None) => break,
                    Err(error) => return error.to_string(),
                };
                if let Err(why) = handled {
                    return why;
                }
            }
            // Nothing waits for more bytes: what was parsed goes on now.
            if let Err(why) = self.hand_on().await {
                return why;
            }
            self.buffer.reserve(READ_CHUNK);
            match self.read.read_buf(&mut self.buffer).await {
                Ok(0) => return "the server closed the connection".into(),
                Ok(_) => {}
                Err(error) => return format!("reading from the server failed: {error}"),
            }
        }
    }

    /// Keeps `pushed` for the listener (a connection without one drops it).
    async fn hold(&mut self, pushed: Pushed) -> Result<(), String> {
        let Some(handoff) = &mut self.pushed else {
            return Ok(());
        };
        let bytes = match &pushed {
            Pushed::Message(message) => message.len(),
            Pushed::Unsubscribed(channel) => channel.len(),
        };
        handoff.hold(pushed, bytes).await
    }

    /// Hands the held pushes to the listener.
    async fn hand_on(&mut self) -> Result<(), String> {
        match &mut self.pushed {
            Some(handoff) => handoff.hand_on().await,
            None => Ok(()),
        }
    }

    /// Gives `value` to the batch it answers, or hands it on as an unsolicited unsubscribe.
    async fn reply(&mut self, value: Value) -> Result<(), String> {
        let unsubscribed = unsubscribed_channel(&value);
        let unanswered = {
            let mut batches = lock(&self.inner.batches);
            let front = batches.waiting.front_mut();
            match front {
                Some(front)
                    if match (&unsubscribed, &front.unsubscribing) {
                        (Some(channel), Some(channels)) => channels.get(front.replies.len()) == Some(channel),
                        // Only an unsubscribe batch asks for unsubscribe pushes.
                        (Some(_), None) => false,
                        (None, _) => true,
                    } =>
                {
                    front.replies.push(match value {
                        Value::Error(text) => Err(text),
                        other => Ok(other),
                    });
                    if front.replies.len() == front.expected {
                        if let Some(done) = batches.waiting.pop_front() {
                            let _ = done.answer.send(done.replies);
                        }
                    }
                    None
                }
                _ => Some(value),
            }
        };
        let Some(value) = unanswered else {
            return Ok(());
        };
        match unsubscribed {
            // In order with the messages: those before it came on the subscription it ends.
            Some(channel) => self.hold(Pushed::Unsubscribed(channel)).await,
            None => Err(format!("the server sent a reply nobody waited for: {value:?}")),
        }
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

/// The two halves of a TCP or Unix socket.
enum ReadHalf {
    Tcp(tokio::net::tcp::OwnedReadHalf),
    #[cfg(unix)]
    Unix(tokio::net::unix::OwnedReadHalf),
}

enum WriteHalf {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    #[cfg(unix)]
    Unix(tokio::net::unix::OwnedWriteHalf),
}

async fn connect(address: &Address) -> std::io::Result<(ReadHalf, WriteHalf)> {
    match address {
        Address::Tcp { host, port } => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            stream.set_nodelay(true)?;
            let (read, write) = stream.into_split();
            Ok((ReadHalf::Tcp(read), WriteHalf::Tcp(write)))
        }
        #[cfg(unix)]
        Address::Unix(path) => {
            let (read, write) = tokio::net::UnixStream::connect(path).await?.into_split();
            Ok((ReadHalf::Unix(read), WriteHalf::Unix(write)))
        }
        #[cfg(not(unix))]
        Address::Unix(_) => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "Unix sockets are not available on this platform",
        )),
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(read) => Pin::new(read).poll_read(cx, buf),
            #[cfg(unix)]
            ReadHalf::Unix(read) => Pin::new(read).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(write) => Pin::new(write).poll_write(cx, buf),
            #[cfg(unix)]
            WriteHalf::Unix(write) => Pin::new(write).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(write) => Pin::new(write).poll_flush(cx),
            #[cfg(unix)]
            WriteHalf::Unix(write) => Pin::new(write).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(write) => Pin::new(write).poll_shutdown(cx),
            #[cfg(unix)]
            WriteHalf::Unix(write) => Pin::new(write).poll_shutdown(cx),
        }
    }
}
