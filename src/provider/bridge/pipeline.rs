//! A pipelined client connection, for the brokers whose client is the provider's own (NATS,
//! Redis): the socket, a reader task, and round trips answered in order. What is a protocol's
//! own (its parser, its handshake, which frames answer a command and which are pushed) comes
//! from a [`Protocol`]; everything here is the same for every broker.
//!
//! # Round trips
//!
//! A caller's [`round_trip`](Pipeline::round_trip) writes its batch of commands in one write,
//! holding the connection's writer lock, and queues, under the same lock, the batch's
//! [`Protocol::Batch`]: so batches never interleave on the wire, and the queue is in the order
//! the batches were written. The server answers a connection's commands in the order they
//! were written, so the reader task gives each reply to the oldest batch waiting
//! ([`Protocol::reply`]), which resolves once the protocol says it has all of its replies.
//! A batch whose future is dropped after its write keeps its place: its replies are read
//! and discarded.
//!
//! # Pushes
//!
//! Frames the server sends unasked ([`Parsed::Push`]) go to the listener through the bridge's
//! bounded [hand-off](super::handoff), in arrival order; a connection without a listener (a
//! publishing connection) drops them. The pushes before any other frame are handed on before
//! that frame is handled, so a round trip never resolves ahead of a message the server sent
//! before its reply. Past the hand-off's bounds the reader stops reading, and the server holds
//! the backlog, up to its own per-client limit, past which it closes the connection: an
//! outage for the bridge.
//!
//! # Closing
//!
//! The connection closes when the reader meets the end of the stream, a read error, a protocol
//! error, or a reply no batch waits for ([`Replied::Unexpected`]); when the listener has gone;
//! when a write fails or is cut short (its future dropped midway, as by a timeout: part of a
//! command may be on the wire, after which no reply can be trusted to answer the batch it
//! would be given to); and when the [`Pipeline`] is dropped. Then, whichever came first:
//! every batch waiting fails with the reason, later round trips fail at once without writing,
//! the reader task ends, and [`closed`](Pipeline::closed) resolves. The socket closes once the
//! [`Pipeline`] is dropped.
//!
//! # Bounds
//!
//! The read buffer holds at most the largest frame the protocol's parser accepts (its limits
//! refuse a larger one as soon as it is announced, before it is buffered) and one read beyond
//! it. Messages ahead of the listener are bounded by the hand-off. Batches waiting are those
//! written and not yet answered, one per round trip in flight: callers bound them.
//!
//! # Cost
//!
//! The reader is generic over the protocol: no dynamic dispatch, and nothing allocated per
//! message beyond what the parser makes of it. A reply takes the batches' lock once.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;

use super::broker::{ConnectError, Reason};
use super::handoff::Handoff;
use crate::envelope::InstanceId;
use crate::sync::{lock, Arc, Mutex};

/// Bytes read from the socket at a time.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// What one broker's protocol tells the connection: how to parse what the server sends, and
/// what each frame means.
pub(crate) trait Protocol: Send + Sized + 'static {
    /// A frame that is not a push.
    type Frame: Send;
    /// What the subscription connection's reader hands to the listener.
    type Pushed: Send + 'static;
    /// What a frame that answers a command gives the batch waiting for it.
    type Reply: Send;
    /// What a batch waiting for its replies keeps: what it expects, and what it has so far.
    type Batch: Send + 'static;
    /// What a batch resolves with once it has all its replies.
    type Answer: Send + 'static;
    /// Why the server's byte stream cannot be read on.
    type WireError: std::error::Error + Send + Sync + 'static;

    /// The broker's name, for logs: `nats`, `redis`.
    const NAME: &'static str;

    /// Takes the next complete frame off the front of `buffer`: `Ok(None)` if more bytes are
    /// needed.
    fn parse(&mut self, buffer: &mut BytesMut) -> Result<Option<Parsed<Self>>, Self::WireError>;

    /// What to do with a frame that is not a push, once the pushes before it are handed on.
    fn handle(&mut self, frame: Self::Frame) -> Handled<Self>;

    /// Gives `reply` to `oldest`, the batch that has waited longest (`None` if none waits).
    fn reply(&mut self, oldest: Option<&mut Self::Batch>, reply: Self::Reply) -> Replied<Self>;
}

/// A frame, as [`Protocol::parse`] sorts it.
pub(crate) enum Parsed<P: Protocol> {
    /// Pushed by the server for the listener, with the bytes it holds (its share of the
    /// hand-off's budget).
    Push(P::Pushed, usize),
    /// Any other frame: for [`Protocol::handle`].
    Frame(P::Frame),
}

/// What [`Protocol::handle`] makes of a frame.
pub(crate) enum Handled<P: Protocol> {
    /// A reply, for [`Protocol::reply`] to give to the oldest batch waiting.
    Reply(P::Reply),
    /// Bytes to write to the server at once (the answer to its keep-alive).
    Respond(&'static [u8]),
    /// Nothing more to do.
    Done,
}

/// What [`Protocol::reply`] did with a reply.
pub(crate) enum Replied<P: Protocol> {
    /// The oldest batch took it, and waits for more.
    Kept,
    /// The oldest batch took its last reply: it resolves with this answer.
    Complete(P::Answer),
    /// It answers no batch: a push for the listener, in order with the others, with its bytes.
    Push(P::Pushed, usize),
    /// It answers nothing: the stream is out of step, and the connection closes, for this
    /// reason.
    Unexpected(String),
}

/// A batch waiting for its replies.
struct Waiting<P: Protocol> {
    batch: P::Batch,
    answer: oneshot::Sender<P::Answer>,
}

/// Who waits for which replies.
struct Batches<P: Protocol> {
    /// In the order their commands were written.
    waiting: VecDeque<Waiting<P>>,
    /// Why the connection closed, once it has: set by the first [`Shared::close`].
    closed: Option<String>,
    /// The reader task, until the connection closes: set once it is spawned.
    reader: Option<AbortHandle>,
}

/// What the connection's users and its reader task share.
struct Shared<P: Protocol> {
    /// Held for each whole write, so that batches do not interleave and the order of
    /// `batches.waiting` is the order of the commands on the wire.
    writer: tokio::sync::Mutex<WriteHalf>,
    /// Pushed to under `writer` by round trips; popped by the reader task; cleared by `close`.
    batches: Mutex<Batches<P>>,
    /// The connection's name in logs; set once.
    instance: InstanceId,
    role: &'static str,
}

impl<P: Protocol> Shared<P> {
    /// Marks the connection gone, for `why` unless it already is: the batches waiting fail,
    /// later ones fail at once, and the reader task ends.
    fn close(&self, why: &str) {
        let reader = {
            let mut batches = lock(&self.batches);
            if batches.closed.is_none() {
                tracing::debug!(broker = P::NAME, instance = %self.instance, role = self.role, reason = why, "connection closed");
                batches.closed = Some(why.to_string());
            }
            // Dropping the senders fails the batches that wait.
            batches.waiting.clear();
            batches.reader.take()
        };
        // Called by the reader task itself as it ends, this aborts a task about to complete.
        if let Some(reader) = reader {
            reader.abort();
        }
    }

    /// Why the connection closed.
    fn closed_reason(&self) -> Reason {
        lock(&self.batches)
            .closed
            .clone()
            .unwrap_or_else(|| "the connection closed".to_string())
    }
}

/// Closes the connection if dropped armed: a write that failed or was cut short (its future
/// dropped) may have left part of a command on the wire, after which no reply can be trusted
/// to answer the batch it would be given to.
struct WriteGuard<'a, P: Protocol>(Option<&'a Shared<P>>);

impl<P: Protocol> Drop for WriteGuard<'_, P> {
    fn drop(&mut self) {
        if let Some(shared) = self.0 {
            shared.close("a write to the server failed or was cut short");
        }
    }
}

/// An open connection, past its handshake. Dropping it closes the connection.
pub(crate) struct Pipeline<P: Protocol> {
    shared: Arc<Shared<P>>,
    /// Its sender is dropped when the reader task ends.
    closed: watch::Receiver<()>,
}

impl<P: Protocol> Drop for Pipeline<P> {
    /// Ends the reader task, and fails the batches still waiting (a round trip's future may
    /// outlive the connection).
    fn drop(&mut self) {
        self.shared.close("the connection was closed");
    }
}

impl<P: Protocol> Pipeline<P> {
    /// Writes `commands`, whose replies `batch` expects, and resolves with the batch's
    /// answer. Fails at once if the connection is closed; dropped midway through its write,
    /// it closes the connection.
    pub(crate) fn round_trip(
        &self,
        commands: Vec<u8>,
        batch: P::Batch,
    ) -> impl Future<Output = Result<P::Answer, Reason>> + Send + 'static {
        let shared = Arc::clone(&self.shared);
        async move {
            let answered = {
                let mut writer = shared.writer.lock().await;
                let (answer, answered) = oneshot::channel();
                {
                    let mut batches = lock(&shared.batches);
                    if let Some(why) = &batches.closed {
                        return Err(why.clone());
                    }
                    batches.waiting.push_back(Waiting { batch, answer });
                }
                // Armed from the moment the batch is queued: a batch queued and not wholly
                // written would take replies that are not its own.
                let mut guard = WriteGuard(Some(&*shared));
                writer
                    .write_all(&commands)
                    .await
                    .map_err(|error| format!("writing to the server failed: {error}"))?;
                guard.0 = None;
                answered
            };
            answered.await.map_err(|_| shared.closed_reason())
        }
    }

    /// Resolves once the connection has closed and its reader task has ended.
    pub(crate) fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut closed = self.closed.clone();
        async move { while closed.changed().await.is_ok() {} }
    }
}

/// A connection during its handshake: the protocol's own exchange, before the reader task
/// starts.
pub(crate) struct Handshake<P: Protocol> {
    read: ReadHalf,
    write: WriteHalf,
    buffer: BytesMut,
    protocol: P,
}

impl<P: Protocol> Handshake<P> {
    /// Starts the handshake on `socket`, which speaks `protocol`.
    pub(crate) fn new(socket: Socket, protocol: P) -> Self {
        Self {
            read: socket.read,
            write: socket.write,
            buffer: BytesMut::with_capacity(READ_CHUNK),
            protocol,
        }
    }

    /// The protocol's state, to adjust as the handshake learns about the server.
    pub(crate) fn protocol(&mut self) -> &mut P {
        &mut self.protocol
    }

    /// Writes `bytes` whole.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write.write_all(bytes).await
    }

    /// Reads until a whole frame has come, and takes it.
    pub(crate) async fn next_frame(&mut self) -> Result<Parsed<P>, ConnectError> {
        loop {
            if let Some(frame) = self.protocol.parse(&mut self.buffer)? {
                return Ok(frame);
            }
            self.buffer.reserve(READ_CHUNK);
            if self.read.read_buf(&mut self.buffer).await? == 0 {
                return Err("the server closed the connection during the handshake".into());
            }
        }
    }

    /// Starts the reader task: the connection is open. `pushed` (if given) receives the
    /// pushes; `instance` and `role` name the connection in logs.
    pub(crate) fn start(
        self,
        pushed: Option<Handoff<P::Pushed>>,
        instance: InstanceId,
        role: &'static str,
    ) -> Pipeline<P> {
        let shared = Arc::new(Shared {
            writer: tokio::sync::Mutex::new(self.write),
            batches: Mutex::new(Batches {
                waiting: VecDeque::new(),
                closed: None,
                reader: None,
            }),
            instance,
            role,
        });
        let (closing, closed) = watch::channel(());
        let reader = Reader {
            read: self.read,
            buffer: self.buffer,
            shared: Arc::clone(&shared),
            pushed,
            protocol: self.protocol,
        };
        let task = tokio::spawn(async move {
            // Dropped when the task ends, however it ends (aborted too): tells `closed`.
            let _closing = closing;
            reader.run().await;
        });
        {
            let mut batches = lock(&shared.batches);
            // A reader that has already ended has closed the connection.
            if batches.closed.is_none() {
                batches.reader = Some(task.abort_handle());
            }
        }
        Pipeline { shared, closed }
    }
}

/// The reader task of one connection.
struct Reader<P: Protocol> {
    read: ReadHalf,
    buffer: BytesMut,
    shared: Arc<Shared<P>>,
    /// The subscription connection's: where its pushes go.
    pushed: Option<Handoff<P::Pushed>>,
    protocol: P,
}

impl<P: Protocol> Reader<P> {
    async fn run(mut self) {
        let why = self.read_all().await;
        self.shared.close(&why);
    }

    /// Reads and handles frames until the connection ends; returns why it did.
    async fn read_all(&mut self) -> String {
        loop {
            loop {
                let handled = match self.protocol.parse(&mut self.buffer) {
                    Ok(Some(Parsed::Push(pushed, bytes))) => self.hold(pushed, bytes).await,
                    Ok(Some(Parsed::Frame(frame))) => self.handle(frame).await,
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

    /// Keeps `pushed`, of `bytes`, for the listener (a connection without one drops it).
    async fn hold(&mut self, pushed: P::Pushed, bytes: usize) -> Result<(), String> {
        match &mut self.pushed {
            Some(handoff) => handoff.hold(pushed, bytes).await,
            None => Ok(()),
        }
    }

    /// Hands the held pushes to the listener.
    async fn hand_on(&mut self) -> Result<(), String> {
        match &mut self.pushed {
            Some(handoff) => handoff.hand_on().await,
            None => Ok(()),
        }
    }

    async fn handle(&mut self, frame: P::Frame) -> Result<(), String> {
        // The pushes before any other frame are handed on before it is handled.
        self.hand_on().await?;
        match self.protocol.handle(frame) {
            Handled::Reply(reply) => self.reply(reply).await,
            Handled::Respond(bytes) => {
                // Not guarded: this task is cut short only by `close`.
                let mut writer = self.shared.writer.lock().await;
                writer
                    .write_all(bytes)
                    .await
                    .map_err(|error| format!("writing to the server failed: {error}"))
            }
            Handled::Done => Ok(()),
        }
    }

    /// Gives `reply` to the batch it answers, or holds it as a push.
    async fn reply(&mut self, reply: P::Reply) -> Result<(), String> {
        let (pushed, bytes) = {
            let mut batches = lock(&self.shared.batches);
            let oldest = batches.waiting.front_mut().map(|waiting| &mut waiting.batch);
            match self.protocol.reply(oldest, reply) {
                Replied::Kept => return Ok(()),
                Replied::Complete(answer) => {
                    if let Some(done) = batches.waiting.pop_front() {
                        // A batch whose future was dropped is answered to no one.
                        let _ = done.answer.send(answer);
                    }
                    return Ok(());
                }
                Replied::Push(pushed, bytes) => (pushed, bytes),
                Replied::Unexpected(why) => return Err(why),
            }
        };
        self.hold(pushed, bytes).await
    }
}

/// A connected socket, TCP or Unix, split in halves.
pub(crate) struct Socket {
    read: ReadHalf,
    write: WriteHalf,
}

impl Socket {
    /// Connects to `host:port`, with Nagle's algorithm off (each batch is one write).
    pub(crate) async fn tcp(host: &str, port: u16) -> std::io::Result<Socket> {
        let stream = tokio::net::TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(Socket {
            read: ReadHalf::Tcp(read),
            write: WriteHalf::Tcp(write),
        })
    }

    /// Connects to the Unix socket at `path`.
    #[cfg(unix)]
    pub(crate) async fn unix(path: &std::path::Path) -> std::io::Result<Socket> {
        let (read, write) = tokio::net::UnixStream::connect(path).await?.into_split();
        Ok(Socket {
            read: ReadHalf::Unix(read),
            write: WriteHalf::Unix(write),
        })
    }

    /// Unix sockets are not available on this platform.
    #[cfg(not(unix))]
    pub(crate) async fn unix(_path: &std::path::Path) -> std::io::Result<Socket> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "Unix sockets are not available on this platform",
        ))
    }
}

/// The reading half of a TCP or Unix socket.
enum ReadHalf {
    Tcp(tokio::net::tcp::OwnedReadHalf),
    #[cfg(unix)]
    Unix(tokio::net::unix::OwnedReadHalf),
}

/// The writing half of a TCP or Unix socket.
enum WriteHalf {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    #[cfg(unix)]
    Unix(tokio::net::unix::OwnedWriteHalf),
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

/// A non-empty run of ASCII digits as a number, as the text protocols write lengths and ids
/// in their control lines; `None` for any other byte or a number past `u64`.
pub(crate) fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |number, &byte| {
        let digit = byte.checked_sub(b'0').filter(|digit| *digit <= 9)?;
        number.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn decimal_reads_digits_up_to_u64_and_nothing_else() {
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b"1048576"), Some(1_048_576));
        assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"-1",
            b"+1",
            b"1 ",
            b"1a",
            b"\xff",
        ] {
            assert_eq!(decimal(bad), None, "{bad:?}");
        }
    }
}
