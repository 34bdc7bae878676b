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
//! The connection is a [pipeline](crate::provider::bridge::pipeline), which says how it
//! closes: a batch whose write fails or is cut short closes it, since the server would read
//! the rest of the next write as the end of a half-written command.

use bytes::BytesMut;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::config::{Credentials, Endpoint, MAX_ENVELOPE_BYTES};
use super::wire::{self, ConnectOptions, Frame, Message, ServerInfo, WireError, WireLimits};
use crate::envelope::InstanceId;
use crate::provider::bridge::broker::{ConnectError, Reason};
use crate::provider::bridge::handoff::Handoff;
use crate::provider::bridge::pipeline::{Handled, Handshake, Parsed, Pipeline, Protocol, Replied, Socket};
use crate::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use crate::sync::Arc;

/// The shortest control line the reader accepts from the server; `INFO` lines of a cluster
/// member list its peers' URLs and can be long.
const MIN_INBOUND_LINE: usize = 64 * 1024;

/// The last of a `PONG`'s errors when more `-ERR`s came than were kept.
pub(crate) const ERRORS_DROPPED: &str = "more -ERR lines than were kept";

/// The most `-ERR` texts kept for the next `PONG`'s waiter; later ones are only logged (and
/// [`ERRORS_DROPPED`] says so).
const MAX_ERRORS_KEPT: usize = 64;

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

/// The NATS side of a connection's reader: what it parses, and the errors the server sent
/// since the last `PONG`.
struct NatsProtocol {
    limits: WireLimits,
    /// `-ERR` texts since the last `PONG`, handed to its batch.
    errors: Vec<String>,
    max_payload: Arc<AtomicUsize>,
    /// The configured floor of `limits.payload`.
    max_inbound_payload: usize,
    instance: InstanceId,
    role: &'static str,
}

impl Protocol for NatsProtocol {
    type Frame = Frame;
    type Pushed = Message;
    /// The `-ERR` texts a `PONG` answers with.
    type Reply = Vec<String>;
    /// A batch waits for one `PONG`.
    type Batch = ();
    type Answer = Vec<String>;
    type WireError = WireError;

    const NAME: &'static str = "nats";

    fn parse(&mut self, buffer: &mut BytesMut) -> Result<Option<Parsed<Self>>, WireError> {
        Ok(wire::parse(buffer, &self.limits)?.map(|frame| match frame {
            Frame::Msg(message) => {
                let bytes = message.len();
                Parsed::Push(message, bytes)
            }
            other => Parsed::Frame(other),
        }))
    }

    fn handle(&mut self, frame: Frame) -> Handled<Self> {
        match frame {
            Frame::Ping => return Handled::Respond(wire::PONG),
            Frame::Pong => return Handled::Reply(std::mem::take(&mut self.errors)),
            Frame::Err(text) => {
                tracing::warn!(instance = %self.instance, role = self.role, error = text, "nats server error");
                if self.errors.len() < MAX_ERRORS_KEPT {
                    self.errors.push(text);
                } else if self.errors.len() == MAX_ERRORS_KEPT {
                    // The batch learns that errors were dropped, so it confirms nothing it
                    // cannot tell apart from what they named.
                    self.errors.push(ERRORS_DROPPED.to_string());
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
            // `parse` hands messages on as pushes; none comes here.
            Frame::Msg(_) | Frame::Ok => {}
        }
        Handled::Done
    }

    fn reply(&mut self, oldest: Option<&mut ()>, errors: Vec<String>) -> Replied<Self> {
        match oldest {
            Some(()) => Replied::Complete(errors),
            None => Replied::Unexpected("the server sent a PONG nobody waited for".into()),
        }
    }
}

/// An open connection.
pub(crate) struct Connection {
    pipeline: Pipeline<NatsProtocol>,
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
        let socket = Socket::tcp(&endpoint.host, endpoint.port).await?;
        let mut handshake = Handshake::new(
            socket,
            NatsProtocol {
                limits: WireLimits {
                    line: MIN_INBOUND_LINE.max(settings.max_control_line.saturating_mul(2)),
                    payload: settings.max_inbound_payload,
                },
                errors: Vec::new(),
                max_payload: Arc::clone(&settings.max_payload),
                max_inbound_payload: settings.max_inbound_payload,
                instance: settings.instance,
                role: settings.role,
            },
        );
        let info = match handshake.next_frame().await? {
            Parsed::Frame(Frame::Info(json)) => ServerInfo::parse(&json)?,
            Parsed::Frame(other) => return Err(format!("the server sent {other:?} before INFO").into()),
            Parsed::Push(message, _) => {
                return Err(format!("the server sent {:?} before INFO", Frame::Msg(message)).into())
            }
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
        handshake.write(&hello).await?;
        loop {
            match handshake.next_frame().await? {
                Parsed::Frame(Frame::Pong) => break,
                Parsed::Frame(Frame::Ping) => handshake.write(wire::PONG).await?,
                Parsed::Frame(Frame::Err(text)) => {
                    let advice = if info.auth_required && endpoint.credentials == Credentials::None {
                        " (the server requires credentials: put them in the URL)"
                    } else {
                        ""
                    };
                    return Err(format!("the server refused the connection: {text}{advice}").into());
                }
                Parsed::Frame(Frame::Info(json)) => {
                    if let Some(max_payload) = ServerInfo::parse(&json)?.max_payload {
                        set_max_payload(&settings.max_payload, max_payload);
                    }
                }
                Parsed::Frame(Frame::Ok | Frame::Msg(_)) | Parsed::Push(..) => {}
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
        handshake.protocol().limits.payload =
            inbound_payload(settings.max_inbound_payload, &settings.max_payload);
        Ok(Self {
            pipeline: handshake.start(messages, settings.instance, settings.role),
        })
    }

    /// Writes `commands` followed by `PING`, and resolves on the matching `PONG`, with the
    /// server's `-ERR` texts that arrived since the previous `PONG`: by then the server has
    /// processed every command written before the `PING`.
    pub(crate) fn round_trip(&self, commands: Vec<u8>) -> BoxFuture<'static, Result<Vec<String>, Reason>> {
        let mut commands = commands;
        commands.extend_from_slice(wire::PING);
        self.pipeline.round_trip(commands, ()).boxed()
    }

    /// Resolves once the reader task has ended (the connection is gone).
    pub(crate) fn closed(&self) -> BoxFuture<'static, ()> {
        self.pipeline.closed().boxed()
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::time::timeout;

    use super::*;

    /// A server that answers the handshake and then reads nothing more, so that a large
    /// write fills the socket's buffers and waits.
    async fn deaf_server(listener: TcpListener) -> TcpStream {
        let (mut socket, _) = listener.accept().await.unwrap();
        socket
            .write_all(b"INFO {\"proto\":1,\"max_payload\":1048576}\r\n")
            .await
            .unwrap();
        let mut hello = Vec::new();
        while !hello.ends_with(wire::PING) {
            let mut chunk = [0; 4096];
            let read = socket.read(&mut chunk).await.unwrap();
            assert!(read > 0, "the client closed during the handshake");
            hello.extend_from_slice(&chunk[..read]);
        }
        socket.write_all(wire::PONG).await.unwrap();
        socket
    }

    #[tokio::test]
    async fn a_write_cut_short_fails_the_batches_waiting_and_closes_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(deaf_server(listener));
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port,
            credentials: Credentials::None,
        };
        let settings = ConnectionSettings {
            endpoint: &endpoint,
            instance: InstanceId::random(),
            role: "publish",
            max_control_line: 4096,
            max_inbound_payload: 1 << 20,
            max_payload: Arc::new(AtomicUsize::new(1 << 20)),
        };
        let connection = Connection::open(settings, None).await.unwrap();
        // Held open to the end: nothing but the cut-short write closes the connection.
        let _server = server.await.unwrap();

        // Written whole on its first poll; no `PONG` ever answers it.
        let mut waiting = connection.round_trip(b"PUB a 1\r\nx\r\n".to_vec());
        assert!((&mut waiting).now_or_never().is_none());

        // Far more than the socket's buffers hold: its write cannot finish, and the timeout
        // drops it midway.
        let mut large = b"PUB a 33554432\r\n".to_vec();
        large.resize(large.len() + (32 << 20), b'x');
        large.extend_from_slice(b"\r\n");
        let cut = timeout(Duration::from_millis(200), connection.round_trip(large)).await;
        assert!(cut.is_err(), "the large write finished: {cut:?}");

        let failed = timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the batch waiting was not failed");
        assert_eq!(
            failed,
            Err("a write to the server failed or was cut short".to_string())
        );
        let later = timeout(Duration::from_secs(5), connection.round_trip(Vec::new()))
            .await
            .expect("a later round trip was not failed at once");
        assert_eq!(
            later,
            Err("a write to the server failed or was cut short".to_string())
        );
        timeout(Duration::from_secs(5), connection.closed())
            .await
            .expect("the connection did not close");
    }
}
