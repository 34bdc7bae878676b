//! A chat server on a loopback port and websocket clients that play browser tabs.

#![allow(dead_code)] // Each test file uses its own part.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fanout_chat::{Chat, ServerEvent};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait in these tests may take before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A chat served on `127.0.0.1:0`, until dropped.
pub struct Server {
    pub chat: Arc<Chat>,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve(chat: Arc<Chat>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = chat.router();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server { chat, addr, task }
}

pub async fn in_memory() -> Server {
    serve(Chat::in_memory(fanout_chat::default_config()).await.unwrap()).await
}

/// A browser tab: one websocket, joined to one room.
pub struct Tab {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub session: String,
}

/// What a tab reads next.
#[derive(Debug)]
pub enum Received {
    Event(ServerEvent),
    Closed(Option<CloseFrame>),
}

impl Tab {
    /// Opens a tab on `server`, in `room` as `name`, and waits until its session is subscribed.
    pub async fn join(server: &Server, room: &str, name: &str) -> Tab {
        Tab::join_with_receive_buffer(server, room, name, None).await
    }

    /// As [`Tab::join`], with the socket's receive buffer set to `bytes`: a small one makes a
    /// tab that does not read hold up the server's writes soon.
    pub async fn join_with_receive_buffer(
        server: &Server,
        room: &str,
        name: &str,
        bytes: Option<u32>,
    ) -> Tab {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(bytes) = bytes {
            socket.set_recv_buffer_size(bytes).unwrap();
        }
        let stream = socket.connect(server.addr).await.unwrap();
        let url = format!("ws://{}/ws?room={room}&name={name}", server.addr);
        let (ws, _) = tokio::time::timeout(
            TIMEOUT,
            tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)),
        )
        .await
        .expect("the websocket opens in time")
        .expect("the websocket opens");
        let mut tab = Tab {
            ws,
            session: String::new(),
        };
        match tab.next_event().await {
            ServerEvent::Joined {
                room: joined,
                session,
            } => {
                assert_eq!(joined, room);
                tab.session = session;
            }
            other => panic!("expected `joined`, got {other:?}"),
        }
        tab
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next frame: an event, or the socket closing.
    pub async fn receive(&mut self) -> Received {
        loop {
            let frame = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("a frame in time");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let event = serde_json::from_str(&text).expect("events are JSON");
                    return Received::Event(event);
                }
                Some(Ok(Message::Close(frame))) => return Received::Closed(frame),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Received::Closed(None),
            }
        }
    }

    pub async fn next_event(&mut self) -> ServerEvent {
        match self.receive().await {
            Received::Event(event) => event,
            Received::Closed(frame) => panic!("the socket closed: {frame:?}"),
        }
    }

    /// The next chat message, as (name, text).
    pub async fn next_message(&mut self) -> (String, String) {
        match self.next_event().await {
            ServerEvent::Message { name, text } => (name, text),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Asserts that nothing arrives for `wait`.
    pub async fn expect_nothing(&mut self, wait: Duration) {
        if let Ok(frame) = tokio::time::timeout(wait, self.ws.next()).await {
            panic!("expected nothing, got {frame:?}");
        }
    }

    /// Closes the tab as a browser does.
    pub async fn close(mut self) {
        self.ws.close(None).await.unwrap();
        // Read to the end, so the close handshake completes.
        let _ = tokio::time::timeout(TIMEOUT, async { while self.ws.next().await.is_some() {} }).await;
    }
}

/// Waits until `done` holds, polling, and fails after [`TIMEOUT`] with `what`.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
