//! One client connection to the NATS server: the handshake, a reader task, and round trips.
//!
//! Commands are written by whoever holds the connection's writer lock, each batch in one
//! write ending in `PING`; the server processes a connection's commands in order and answers
//! each `PING` with a `PONG` in order, so the `PONG` that answers a batch tells that the
//! server has processed every command in it. The reader task takes the `PONG`s in order and
//! tells the waiting batches, FIFO.
//!
//! The reader task also answers the server's `PING`s, records `INFO` updates of
//! `max_payload`, logs `-ERR`s and hands them to the next batch answered (so a publish can
//! attribute a refusal), and, on the subscription connection, hands messages to the listener
//! through the bridge's bounded [hand-off](crate::provider::bridge::handoff), in arrival order,
//! always those before any other frame before that frame is handled. Past the hand-off's bounds
//! it stops reading: the server then holds the backlog, up to its per-client limit
//! (`max_pending`, 64 MB by default), past which it closes the connection as a slow consumer,
//! which the bridge takes as an outage.
//!
//! The task ends on end of stream, a read error or a protocol error; then every waiting batch
//! fails, later ones fail at once, and [`Connection::closed`] resolves. Dropping the
//! connection ends the task and closes the socket.

use std::collections::VecDeque;

use bytes::BytesMut;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::config::{Credentials, Endpoint, MAX_ENVELOPE_BYTES};
use super::wire::{self, ConnectOptions, Frame, Message, ServerInfo, WireLimits};
use crate::envelope::InstanceId;
use crate::provider::bridge::broker::{ConnectError, Reason};
use crate::provider::bridge::handoff::Handoff;
use crate::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use crate::sync::{lock, Arc, Mutex};

/// The shortest control line the reader accepts from the server; `INFO` lines of a cluster
/// member list its peers' URLs and can be long.
const MIN_INBOUND_LINE: usize = 64 * 1024;

/// The last of a `PONG`'s errors when more `-ERR`s came than were kept.
pub(crate) const ERRORS_DROPPED: &str = "more -ERR lines than were kept";

/// The most `-ERR` texts kept for the next `PONG`'s waiter; later ones are only logged (and
/// [`ERRORS_DROPPED`] says so).
const MAX_ERRORS_KEPT: usize = 64;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// What one connection needs to know of the provider.
pub(crate) struct ConnectionSettings<'a> {
    pub(crate) endpoint: &'a Endpoint,
    pub(crate) instance: InstanceId,
    /// `publish` or `subscribe`, in the connection's name.
    pub(crate) role: &'static str,
    /// The configured control-line limit; the reader accepts lines of twice as long (a foreign
    /// publisher's long reply subject in a `MSG`), and at least [`MIN_INBOUND_LINE`].
    pub(crate) max_control_line: usize,
    /// The largest payload accepted in a `MSG`, with headers, unless the server's
    /// `max_payload` is larger: then that, so that a foreign publisher's large message on one
    /// of our subjects is read and skipped, not taken for a broken stream.
    pub(crate) max_inbound_payload: usize,
    /// Where the server's `max_payload` is kept: written at connect and on each `INFO`.
    pub(crate) max_payload: Arc<AtomicUsize>,
}

/// Who waits for which `PONG`, and the errors the server sent since the last one.
#[derive(Default)]
struct Pongs {
    /// In the order their `PING`s were written.
    waiting: VecDeque<oneshot::Sender<Vec<String>>>,
    /// `-ERR` texts since the last `PONG`, handed to its waiter.
    errors: Vec<String>,
    /// Set by the reader task as it ends: why the connection is gone.
    closed: Option<String>,
}

/// What the connection's users and its reader task share.
struct Inner {
    /// Held for each whole write, so that batches do not interleave and the order of
    /// `waiting` is the order of the `PING`s on the wire.
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    /// Pushed to under `writer`; popped by the reader task.
    pongs: Mutex<Pongs>,
}

/// An open connection.
pub(crate) struct Connection {
    inner: Arc<Inner>,
    reader: JoinHandle<()>,
    /// Its sender is dropped when the reader task ends.
    closed: watch::Receiver<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Connection {
    /// Connects, reads `INFO`, sends `CONNECT` and waits for the `PONG` to the `PING` after it
    /// (an `-ERR` before it, such as an authorization violation, fails the connection). Then
    /// `messages` (if given) receives the `MSG`s.
    pub(crate) async fn open(
        settings: ConnectionSettings<'_>,
        messages: Option<Handoff<Message>>,
    ) -> Result<Self, ConnectError> {
        let endpoint = settings.endpoint;
        let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
        stream.set_nodelay(true)?;
        let (mut read, mut write) = stream.into_split();
        let mut limits = WireLimits {
            line: MIN_INBOUND_LINE.max(settings.max_control_line.saturating_mul(2)),
            payload: settings.max_inbound_payload,
        };
        let mut buffer = BytesMut::with_capacity(READ_CHUNK);
        let info = match next_frame(&mut read, &mut buffer, &limits).await? {
            Frame::Info(json) => ServerInfo::parse(&json)?,
            other => return Err(format!("the server sent {other:?} before INFO").into()),
        };
        if info.tls_required {
            return Err("the server requires TLS, which this provider does not support".into());
        }
        if info.proto.is_some_and(|proto| proto < 1) {
            return Err(format!(
                "the server speaks protocol {:?}; this provider needs 1 (NATS 2.2 or later)",
                info.proto
            )
            .into());
        }
        if let Some(max_payload) = info.max_payload {
            set_max_payload(&settings.max_payload, max_payload);
        }
        let name = format!("fanout-{}-{}", settings.instance, settings.role);
        let (user, pass, auth_token) = match &endpoint.credentials {
            Credentials::None => (None, None, None),
            Credentials::UserPassword { user, password } => {
                (Some(user.as_str()), Some(password.as_str()), None)
            }
            Credentials::Token(token) => (None, None, Some(token.as_str())),
        };
        let mut hello = Vec::new();
        wire::put_connect(
            &mut hello,
            &ConnectOptions {
                verbose: false,
                pedantic: false,
                tls_required: false,
                lang: "rust",
                version: env!("CARGO_PKG_VERSION"),
                protocol: 1,
                echo: true,
                name: &name,
                headers: false,
                user,
                pass,
                auth_token,
            },
        );
        hello.extend_from_slice(wire::PING);
        write.write_all(&hello).await?;
        loop {
            match next_frame(&mut read, &mut buffer, &limits).await? {
                Frame::Pong => break,
                Frame::Ping => write.write_all(wire::PONG).await?,
                Frame::Err(text) => {
                    let advice = if info.auth_required && endpoint.credentials == Credentials::None {
                        " (the server requires credentials: put them in the URL)"
                    } else {
                        ""
                    };
                    return Err(format!("the server refused the connection: {text}{advice}").into());
                }
                Frame::Info(json) => {
                    if let Some(max_payload) = ServerInfo::parse(&json)?.max_payload {
                        set_max_payload(&settings.max_payload, max_payload);
                    }
                }
                Frame::Ok | Frame::Msg(_) => {}
            }
        }
        tracing::debug!(
            instance = %settings.instance,
            role = settings.role,
            server = endpoint.target(),
            version = info.version,
            max_payload = info.max_payload,
            headers = info.headers,
            "nats connection open"
        );
        limits.payload = inbound_payload(settings.max_inbound_payload, &settings.max_payload);
        let inner = Arc::new(Inner {
            writer: tokio::sync::Mutex::new(write),
            pongs: Mutex::new(Pongs::default()),
        });
        let (closing, closed) = watch::channel(());
        let reader = Reader {
            read,
            buffer,
            limits,
            inner: Arc::clone(&inner),
            messages,
            max_payload: settings.max_payload,
            max_inbound_payload: settings.max_inbound_payload,
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

    /// Writes `commands` followed by `PING`, and resolves on the matching `PONG`, with the
    /// server's `-ERR` texts that arrived since the previous `PONG`: by then the server has
    /// processed every command written before the `PING`.
    pub(crate) fn round_trip(&self, commands: Vec<u8>) -> BoxFuture<'static, Result<Vec<String>, Reason>> {
        let inner = Arc::clone(&self.inner);
        async move {
            let mut commands = commands;
            commands.extend_from_slice(wire::PING);
            let answered = {
                let mut writer = inner.writer.lock().await;
                let (answer, answered) = oneshot::channel();
                {
                    let mut pongs = lock(&inner.pongs);
                    if let Some(why) = &pongs.closed {
                        return Err(why.clone());
                    }
                    pongs.waiting.push_back(answer);
                }
                writer
                    .write_all(&commands)
                    .await
                    .map_err(|error| format!("writing to the server failed: {error}"))?;
                answered
            };
            answered.await.map_err(|_| {
                lock(&inner.pongs)
                    .closed
                    .clone()
                    .unwrap_or_else(|| "the connection closed".to_string())
            })
        }
        .boxed()
    }

    /// Resolves once the reader task has ended (the connection is gone).
    pub(crate) fn closed(&self) -> BoxFuture<'static, ()> {
        let mut closed = self.closed.clone();
        async move { while closed.changed().await.is_ok() {} }.boxed()
    }
}

/// Stores the server's `max_payload`, saturated to `usize`.
fn set_max_payload(max_payload: &AtomicUsize, announced: u64) {
    // At most the server's own hard maximum: a larger announcement is not believed, so it
    // cannot raise what the reader accepts beyond what any real server sends.
    let announced = usize::try_from(announced)
        .unwrap_or(usize::MAX)
        .min(MAX_ENVELOPE_BYTES);
    // Relaxed: a lone value read by `check_envelope` and `publish`, which order nothing by it.
    max_payload.store(announced, Relaxed);
}

/// The largest `MSG` payload the reader accepts: `floor`, or the server's `max_payload` if
/// larger.
fn inbound_payload(floor: usize, max_payload: &AtomicUsize) -> usize {
    floor.max(max_payload.load(Relaxed))
}

/// Reads until `buffer` holds a whole frame, during the handshake.
async fn next_frame(
    read: &mut OwnedReadHalf,
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
    read: OwnedReadHalf,
    buffer: BytesMut,
    limits: WireLimits,
    inner: Arc<Inner>,
    /// The subscription connection's: where its messages go.
    messages: Option<Handoff<Message>>,
    max_payload: Arc<AtomicUsize>,
    /// The configured floor of `limits.payload`.
    max_inbound_payload: usize,
    instance: InstanceId,
    role: &'static str,
}

impl Reader {
    async fn run(mut self) {
        let why = self.read_all().await;
        tracing::debug!(instance = %self.instance, role = self.role, reason = why, "nats connection ended");
        let mut pongs = lock(&self.inner.pongs);
        pongs.closed = Some(why);
        // Dropping the senders fails the round trips that wait.
        pongs.waiting.clear();
    }

    /// Reads and handles frames until the connection ends; returns why it did.
    async fn read_all(&mut self) -> String {
        loop {
            loop {
                let handled = match wire::parse(&mut self.buffer, &self.limits) {
                    Ok(Some(Frame::Msg(message))) => self.hold(message).await,
                    // The messages before any other frame are handed on before it is handled.
                    Ok(Some(frame)) => match self.hand_on().await {
                        Ok(()) => self.handle(frame).await,
                        Err(why) => Err(why),
                    },
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

    /// Keeps `message` for the listener (the publishing connection drops it).
    async fn hold(&mut self, message: Message) -> Result<(), String> {
        match &mut self.messages {
            Some(messages) => {
                let bytes = message.len();
                messages.hold(message, bytes).await
            }
            None => Ok(()),
        }
    }

    /// Hands the held messages to the listener.
    async fn hand_on(&mut self) -> Result<(), String> {
        match &mut self.messages {
            Some(messages) => messages.hand_on().await,
            None => Ok(()),
        }
    }

    async fn handle(&mut self, frame: Frame) -> Result<(), String> {
        match frame {
            // `read_all` holds messages for the listener; none comes here.
            Frame::Msg(_) => {}
            Frame::Ping => {
                let mut writer = self.inner.writer.lock().await;
                writer
                    .write_all(wire::PONG)
                    .await
                    .map_err(|error| format!("writing to the server failed: {error}"))?;
            }
            Frame::Pong => {
                let mut pongs = lock(&self.inner.pongs);
                let errors = std::mem::take(&mut pongs.errors);
                match pongs.waiting.pop_front() {
                    Some(waiter) => {
                        let _ = waiter.send(errors);
                    }
                    None => return Err("the server sent a PONG nobody waited for".into()),
                }
            }
            Frame::Err(text) => {
                tracing::warn!(instance = %self.instance, role = self.role, error = text, "nats server error");
                let mut pongs = lock(&self.inner.pongs);
                if pongs.errors.len() < MAX_ERRORS_KEPT {
                    pongs.errors.push(text);
                } else if pongs.errors.len() == MAX_ERRORS_KEPT {
                    // The waiter learns that errors were dropped, so it confirms nothing it
                    // cannot tell apart from what they named.
                    pongs.errors.push(ERRORS_DROPPED.to_string());
                }
            }
            Frame::Info(json) => match ServerInfo::parse(&json) {
                Ok(info) => {
                    if let Some(max_payload) = info.max_payload {
                        set_max_payload(&self.max_payload, max_payload);
                        self.limits.payload = inbound_payload(self.max_inbound_payload, &self.max_payload);
                    }
                }
                Err(why) => {
                    tracing::warn!(instance = %self.instance, role = self.role, reason = why, "ignored an unreadable INFO");
                }
            },
            Frame::Ok => {}
        }
        Ok(())
    }
}
