//! A small LiveView-style chat server on fanout and axum.
//!
//! - Every browser tab's websocket is one fanout session, with an id of its own.
//! - Rooms are topics, `room:<name>`.
//! - A tab's message goes out with `broadcast_from`, so the sender gets no echo (the page shows
//!   its own message at once).
//! - A slow tab meets the configured overflow policy: with `drop_oldest` (the default here) it
//!   is told how many messages it missed; with `disconnect` its socket is closed with the reason.
//! - A closed tab calls `unsubscribe_all`, so no session outlives its socket.
//!
//! [`Chat`] holds the provider and the open sockets; [`Chat::router`] is the axum app. The
//! binary (`src/main.rs`) only parses flags and serves it.
//!
//! # Why the handler writes to the socket
//!
//! Each tab's handler sends the message to the tab's websocket itself, instead of handing it
//! to a queue that a writer task drains. So a tab that reads slowly holds up its own handler,
//! its fanout mailbox fills, and the overflow policy decides what happens, with every drop
//! counted: there is no second, unaccounted buffer between the mailbox and the socket. The
//! handler form also works with every provider behind `Arc<dyn PubSubProvider>`, the Redis one
//! included.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fanout::{Bytes, CloseReason, Config, Handler, InMemoryPubSub, Notice, PubSubProvider, StatsSnapshot};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

/// Longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 64;
/// Longest user name, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// Longest chat message, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;

/// How long closing a socket may wait on a tab that does not read.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Any error a constructor may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The chat config when none is given: a modest mailbox per tab, and a tab that falls behind
/// loses its oldest messages (and is told how many) rather than slowing anyone else.
pub fn default_config() -> Config {
    Config::default()
        .with_capacity(64)
        .with_policy(fanout::OverflowPolicy::DropOldest)
}

/// The topic of a room.
pub fn room_topic(room: &str) -> String {
    format!("room:{room}")
}

/// What the server sends to a tab, as a JSON text frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ServerEvent {
    /// The tab's session is subscribed to the room: messages sent from now on reach it.
    Joined {
        /// The room.
        room: String,
        /// The tab's session id.
        session: String,
    },
    /// A message from another tab in the room.
    Message {
        /// Who sent it.
        name: String,
        /// What they wrote.
        text: String,
    },
    /// The overflow policy evicted this many messages before the tab could take them.
    Missed {
        /// How many.
        count: u64,
    },
    /// A message from this tab could not be sent.
    Error {
        /// Why.
        reason: String,
    },
}

impl ServerEvent {
    fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a server event encodes as JSON"))
    }

    fn to_ws(&self) -> WsMessage {
        WsMessage::Text(Utf8Bytes::try_from(self.to_bytes()).expect("JSON is UTF-8"))
    }
}

/// What the notice hook needs to reach one open socket.
struct Socket {
    /// Messages `drop_oldest` evicted since the handler last wrote. Added to by the notice
    /// hook, taken by the handler; the session's task runs both, the hook first, so `Relaxed`.
    missed: Arc<AtomicU64>,
    /// Tells the connection that the provider disconnected the session.
    disconnected: mpsc::Sender<CloseReason>,
}

/// The chat server: a provider, and what the notice hook needs of each open socket.
pub struct Chat {
    provider: Arc<dyn PubSubProvider>,
    /// Session id → its socket. Written by the connection (insert on open, remove on close);
    /// read by the notice hook.
    sockets: Mutex<HashMap<String, Socket>>,
    /// Makes session ids unique across server processes: `broadcast_from` over Redis excludes
    /// the sender by id on every instance.
    instance: String,
    next_session: AtomicU64,
}

impl Chat {
    /// A chat over `provider`, which the caller has started. Without [`Chat::notice`] wired to
    /// the provider's notice hook, tabs are not told about missed messages or disconnects;
    /// [`Chat::in_memory`] and `Chat::over_redis` wire it.
    pub fn new(provider: Arc<dyn PubSubProvider>) -> Arc<Chat> {
        let mut random = RandomState::new().build_hasher();
        random.write_u32(std::process::id());
        Arc::new(Chat {
            provider,
            sockets: Mutex::new(HashMap::new()),
            instance: format!("{:08x}", random.finish() as u32),
            next_session: AtomicU64::new(1),
        })
    }

    /// A started in-memory chat (one process).
    pub async fn in_memory(config: Config) -> Result<Arc<Chat>, BoxError> {
        let provider = Arc::new(InMemoryPubSub::with_config(config)?);
        let chat = Chat::new(provider.clone());
        provider.on_notice(notice_hook(&chat));
        provider.start().await?;
        Ok(chat)
    }

    /// A started chat whose rooms are shared through Redis with every server on the same Redis
    /// and channel prefix.
    #[cfg(feature = "redis")]
    pub async fn over_redis(redis: fanout::RedisConfig, config: Config) -> Result<Arc<Chat>, BoxError> {
        let provider = Arc::new(fanout::RedisPubSub::with_config(redis, config)?);
        let chat = Chat::new(provider.clone());
        provider.on_notice(notice_hook(&chat));
        provider.start().await?;
        Ok(chat)
    }

    /// The provider's counters: live sessions, subscriptions, drops by reason…
    pub fn stats(&self) -> StatsSnapshot {
        self.provider.stats()
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<dyn PubSubProvider> {
        &self.provider
    }

    /// Passes a provider notice to the tab it concerns; short and non-blocking, as a notice
    /// hook must be. A missed count is written to the tab just before the next message, the
    /// one after the gap; a disconnect closes the tab's socket with the reason.
    pub fn notice(&self, notice: &Notice) {
        let sockets = self.sockets.lock().expect("no panic holds the sockets lock");
        match notice {
            Notice::Missed { session_id, count } => {
                if let Some(socket) = sockets.get(session_id) {
                    socket.missed.fetch_add(*count, Ordering::Relaxed);
                }
            }
            Notice::Disconnected { session_id, reason } => {
                if let Some(socket) = sockets.get(session_id) {
                    // The channel holds one; a session is disconnected once.
                    let _ = socket.disconnected.try_send(*reason);
                }
            }
            _ => {}
        }
    }

    /// The app: the page at `/`, the websocket at `/ws?room=…&name=…`, counters at `/stats`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", get(page))
            .route("/ws", get(websocket))
            .route("/stats", get(stats))
            .with_state(Arc::clone(self))
    }

    fn new_session_id(&self) -> String {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        format!("tab-{}-{n}", self.instance)
    }

    /// One tab, from its websocket's opening to its close.
    async fn serve(self: Arc<Self>, socket: WebSocket, join: Join) {
        let session_id = self.new_session_id();
        let topic = room_topic(&join.room);
        let (sink, mut incoming) = socket.split();
        let sink = Arc::new(tokio::sync::Mutex::new(sink));
        let missed = Arc::new(AtomicU64::new(0));
        let (disconnected_tx, mut disconnected) = mpsc::channel(1);
        let socket = Socket {
            missed: Arc::clone(&missed),
            disconnected: disconnected_tx,
        };
        self.sockets
            .lock()
            .expect("no panic holds the sockets lock")
            .insert(session_id.clone(), socket);
        // Set when the connection ends, so a handler stalled on the socket gives up.
        let (closed_tx, closed) = watch::channel(false);

        let handler = socket_writer(Arc::clone(&sink), missed, closed);
        // The socket stays locked from the subscription until `joined` is sent, so the tab
        // reads `joined` before any message of the room.
        let joined = {
            let mut writer = sink.lock().await;
            match self.provider.subscribe_topic(&session_id, &topic, handler).await {
                Err(error) => Err(Some(close_frame(1011, &format!("cannot join the room: {error}")))),
                Ok(()) => {
                    let joined = ServerEvent::Joined {
                        room: join.room.clone(),
                        session: session_id.clone(),
                    };
                    writer.send(joined.to_ws()).await.map_err(|_| None)
                }
            }
        };
        let close = match joined {
            Err(close) => close,
            Ok(()) => {
                tracing::info!(session = %session_id, room = %join.room, "tab joined");
                self.run(
                    &session_id,
                    &topic,
                    &join.name,
                    &sink,
                    &mut incoming,
                    &mut disconnected,
                )
                .await
            }
        };

        // Once this returns, no handler of the session starts again (G2).
        if let Err(error) = self.provider.unsubscribe_all(&session_id).await {
            tracing::warn!(session = %session_id, %error, "unsubscribe_all failed");
        }
        let _ = closed_tx.send(true);
        self.sockets
            .lock()
            .expect("no panic holds the sockets lock")
            .remove(&session_id);
        if let Some(frame) = close {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                sink.lock().await.send(WsMessage::Close(Some(frame))).await
            })
            .await;
        }
        tracing::info!(session = %session_id, "tab left");
    }

    /// Reads the tab's messages until the tab closes (`None`) or the provider disconnects the
    /// session (the close frame to send).
    async fn run(
        &self,
        session_id: &str,
        topic: &str,
        name: &str,
        sink: &SharedSink,
        incoming: &mut futures_util::stream::SplitStream<WebSocket>,
        disconnected: &mut mpsc::Receiver<CloseReason>,
    ) -> Option<CloseFrame> {
        loop {
            tokio::select! {
                frame = incoming.next() => match frame {
                    Some(Ok(WsMessage::Text(text))) => {
                        let event = match validate_text(&text) {
                            Ok(()) => {
                                let message = ServerEvent::Message { name: name.to_owned(), text: text.to_string() };
                                match self.provider.broadcast_from(session_id, topic, message.to_bytes()).await {
                                    Ok(()) => continue,
                                    Err(error) => ServerEvent::Error { reason: error.to_string() },
                                }
                            }
                            Err(reason) => ServerEvent::Error { reason },
                        };
                        if send_event(sink, &event).await.is_err() {
                            return None;
                        }
                    }
                    Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => return None,
                    Some(Ok(_)) => {}
                },
                Some(reason) = disconnected.recv() => {
                    tracing::info!(session = %session_id, %reason, "tab disconnected by policy");
                    let code = match reason {
                        CloseReason::SlowConsumer => 1013, // try again later
                        _ => 1001,                         // going away
                    };
                    return Some(close_frame(code, &reason.to_string()));
                },
            }
        }
    }
}

type SharedSink = Arc<tokio::sync::Mutex<SplitSink<WebSocket, WsMessage>>>;

/// A notice hook that reaches `chat` while it lives (a weak reference: the provider holds the
/// hook, and the chat holds the provider).
fn notice_hook(chat: &Arc<Chat>) -> impl Fn(&Notice) + Send + Sync + 'static {
    let chat: Weak<Chat> = Arc::downgrade(chat);
    move |notice| {
        if let Some(chat) = chat.upgrade() {
            chat.notice(notice);
        }
    }
}

/// The session's handler: writes each message to the tab's socket as it is (the payload is
/// already a JSON event), preceded by a `missed` event after a gap, until the connection ends.
fn socket_writer(sink: SharedSink, missed: Arc<AtomicU64>, closed: watch::Receiver<bool>) -> Handler {
    Handler::new(move |_topic, message: Bytes| {
        let sink = Arc::clone(&sink);
        let missed = Arc::clone(&missed);
        let mut closed = closed.clone();
        async move {
            let text = Utf8Bytes::try_from(message)?;
            let write = async {
                let mut writer = sink.lock().await;
                let count = missed.swap(0, Ordering::Relaxed);
                if count > 0 {
                    writer.feed(ServerEvent::Missed { count }.to_ws()).await?;
                }
                writer.send(WsMessage::Text(text)).await
            };
            tokio::select! {
                sent = write => sent.map_err(Into::into),
                _ = closed.wait_for(|&closed| closed) => Err(fanout::HandlerError::from("the tab closed")),
            }
        }
    })
}

async fn send_event(sink: &SharedSink, event: &ServerEvent) -> Result<(), axum::Error> {
    sink.lock().await.send(event.to_ws()).await
}

fn close_frame(code: u16, reason: &str) -> CloseFrame {
    // A close frame's reason holds at most 123 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code,
        reason: Utf8Bytes::from(&reason[..end]),
    }
}

/// The websocket's query: which room, under which name.
#[derive(Debug, Deserialize)]
struct Join {
    room: String,
    name: String,
}

fn validate_join(join: &Join) -> Result<(), String> {
    let room = join.room.chars().count();
    let name = join.name.chars().count();
    if room == 0 || room > MAX_ROOM_CHARS {
        return Err(format!("a room name has 1 to {MAX_ROOM_CHARS} characters"));
    }
    if name == 0 || name > MAX_NAME_CHARS {
        return Err(format!("a name has 1 to {MAX_NAME_CHARS} characters"));
    }
    Ok(())
}

fn validate_text(text: &str) -> Result<(), String> {
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_TEXT_CHARS {
        return Err(format!(
            "a message has 1 to {MAX_TEXT_CHARS} characters; this one has {chars}"
        ));
    }
    Ok(())
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn websocket(
    State(chat): State<Arc<Chat>>,
    Query(join): Query<Join>,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(reason) = validate_join(&join) {
        return (StatusCode::BAD_REQUEST, reason).into_response();
    }
    ws.on_upgrade(move |socket| chat.serve(socket, join))
}

async fn stats(State(chat): State<Arc<Chat>>) -> Json<serde_json::Value> {
    let s = chat.stats();
    Json(serde_json::json!({
        "sessions": s.sessions,
        "topics": s.topics,
        "subscriptions": s.subscriptions,
        "published": s.published,
        "delivered": s.delivered,
        "dropped": {
            "drop_newest": s.dropped.drop_newest,
            "drop_oldest": s.dropped.drop_oldest,
            "slow_consumer": s.dropped.slow_consumer,
            "unsubscribed": s.dropped.unsubscribed,
        },
        "disconnects": s.disconnects,
    }))
}
