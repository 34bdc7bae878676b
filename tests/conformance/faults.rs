//! What the fault tests of every distributed provider share: a flow of numbered broadcasts to
//! watch across an outage, a TCP proxy that can cut the path to the server, and hostile
//! envelopes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fanout::bridge::BrokerError;
use fanout::envelope::{EnvelopeWriter, InstanceId, HEADER_BYTES};
use fanout::{PubSubError, PubSubProvider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::Inbox;

// ----- a flow of numbered broadcasts -----

/// Broadcasts `1, 2, 3, …` on a topic, one a millisecond, until stopped. A broadcast whose
/// remote part is refused (`PublishUnavailable`, during a publisher outage) is counted; any
/// other error fails the test when the flow is stopped.
pub struct Flow {
    /// The number of the latest broadcast that has returned.
    last: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    stopping: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// How the broadcasts of a stopped [`Flow`] returned.
#[derive(Debug)]
pub struct FlowOutcome {
    pub sent: u64,
    pub refused: u64,
}

impl Flow {
    pub fn start(provider: Arc<impl PubSubProvider + 'static>, topic: &'static str) -> Flow {
        let last = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let (sent, refusals, stop) = (Arc::clone(&last), Arc::clone(&refused), Arc::clone(&stopping));
        let task = tokio::spawn(async move {
            for seq in 1.. {
                if stop.load(SeqCst) {
                    return;
                }
                match provider.broadcast(topic, Bytes::from(seq.to_string())).await {
                    Ok(()) => {}
                    Err(error) if is_unavailable(&error) => {
                        refusals.fetch_add(1, SeqCst);
                    }
                    Err(error) => panic!("broadcast {seq} failed: {error:?}"),
                }
                sent.store(seq, SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        Flow {
            last,
            refused,
            stopping,
            task,
        }
    }

    pub fn last(&self) -> u64 {
        self.last.load(SeqCst)
    }

    /// Stops after the broadcast in progress has returned.
    pub async fn stop(mut self) -> FlowOutcome {
        self.stopping.store(true, SeqCst);
        (&mut self.task).await.expect("the flow's broadcasts");
        FlowOutcome {
            sent: self.last(),
            refused: self.refused.load(SeqCst),
        }
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether `error` is a broadcast's remote part refused while the publisher is down.
pub fn is_unavailable(error: &PubSubError) -> bool {
    matches!(
        BrokerError::of(error),
        Some(BrokerError::PublishUnavailable { .. })
    )
}

/// A [`Flow`] from the first of `nodes` on the topic `flow` to the session `s` on the second;
/// returns once messages arrive.
pub async fn flow_between<P: PubSubProvider + 'static>(nodes: &[Arc<P>]) -> (Inbox, Flow) {
    let inbox = Inbox::default();
    nodes[1]
        .subscribe_topic("s", "flow", inbox.handler("s"))
        .await
        .unwrap();
    let flow = Flow::start(Arc::clone(&nodes[0]), "flow");
    inbox.until("messages to flow", |i| i.of("s").len() >= 20).await;
    (inbox, flow)
}

/// Waits until `s` has received a number the flow broadcast after this call.
pub async fn until_flowing_again(inbox: &Inbox, flow: &Flow) {
    let published_after = flow.last();
    inbox
        .until("a message published after the reconnect", |i| {
            seqs(i, "s").last().is_some_and(|&s| s > published_after + 5)
        })
        .await;
}

/// The numbers `session` received, in order.
pub fn seqs(inbox: &Inbox, session: &str) -> Vec<u64> {
    inbox.of(session).iter().map(|m| m.parse().unwrap()).collect()
}

pub fn assert_increasing(seqs: &[u64]) {
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "duplicated or out of order: {seqs:?}"
    );
}

/// Every operation of a provider that is not started is refused with `NotStarted`.
pub async fn assert_not_started(provider: &impl PubSubProvider) {
    let refusals = [
        provider
            .subscribe_topic("s", "t", Inbox::default().handler("s"))
            .await,
        provider.broadcast("t", Bytes::from("x")).await,
        provider.broadcast_from("s", "t", Bytes::from("x")).await,
        provider.unsubscribe_topic("s", "t").await,
        provider.unsubscribe_all("s").await,
    ];
    for refusal in refusals {
        let error = refusal.expect_err("not started");
        assert!(
            matches!(BrokerError::of(&error), Some(BrokerError::NotStarted)),
            "{error:?}"
        );
    }
}

/// While `provider`'s broker is out of reach: a broadcast of `during` on `topic` returns
/// within 2 s, refused with `PublishUnavailable` (saying it reached local sessions only), and
/// the local session `local` receives it; subscribing a new session, `late`, to `late_topic`
/// is refused with `SubscribeUnconfirmed` (the session stays subscribed on this instance).
pub async fn assert_local_only_while_down(
    provider: &impl PubSubProvider,
    inbox: &Inbox,
    (topic, local): (&str, &str),
    late_topic: &str,
) {
    let began = std::time::Instant::now();
    let refused = provider
        .broadcast(topic, Bytes::from("during"))
        .await
        .expect_err("the remote part is refused");
    assert!(began.elapsed() < Duration::from_secs(2), "{:?}", began.elapsed());
    let Some(BrokerError::PublishUnavailable { .. }) = BrokerError::of(&refused) else {
        panic!("not PublishUnavailable: {refused:?}");
    };
    assert!(
        refused.to_string().contains("reached local sessions only"),
        "{refused}"
    );
    inbox
        .until("local delivery while the broker is away", |i| {
            i.has(local, "during")
        })
        .await;
    let unconfirmed = provider
        .subscribe_topic("late", late_topic, inbox.handler("late"))
        .await
        .expect_err("the broker cannot confirm while it is away");
    let Some(BrokerError::SubscribeUnconfirmed) = BrokerError::of(&unconfirmed) else {
        panic!("not SubscribeUnconfirmed: {unconfirmed:?}");
    };
}

// ----- a path to the server we can cut -----

/// A TCP proxy to `upstream` that can fall silent (every connection stays open, but no byte
/// passes either way: a dead network path) or be taken down (every connection closed, new
/// ones refused: the server is gone), until it is opened again.
pub struct Proxy {
    pub addr: SocketAddr,
    path: watch::Sender<Path>,
    accept: tokio::task::JoinHandle<()>,
}

/// What a [`Proxy`] lets through.
#[derive(Clone, Copy)]
struct Path {
    /// Bytes pass both ways; when false, connections stay open and carry nothing.
    passing: bool,
    /// New connections are closed as soon as they are accepted.
    refusing: bool,
    /// How many times the proxy was taken down: a connection accepted before the latest time
    /// is closed.
    downs: u64,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (path, watching) = watch::channel(Path {
            passing: true,
            refusing: false,
            downs: 0,
        });
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let accepted = *watching.borrow();
                if accepted.refusing {
                    continue;
                }
                if let Ok(server) = TcpStream::connect(upstream).await {
                    tokio::spawn(relay(client, server, accepted.downs, watching.clone()));
                }
            }
        });
        Proxy { addr, path, accept }
    }

    /// Holds every byte, on the open connections and on new ones.
    pub fn silence(&self) {
        self.path.send_modify(|path| path.passing = false);
    }

    /// Closes every connection and refuses new ones.
    pub fn take_down(&self) {
        self.path.send_modify(|path| {
            path.refusing = true;
            path.downs += 1;
        });
    }

    /// Accepts connections and passes bytes again.
    pub fn open(&self) {
        self.path.send_modify(|path| {
            path.passing = true;
            path.refusing = false;
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The relays end when the sender (with the proxy) is gone.
        self.accept.abort();
    }
}

/// Copies bytes both ways while the path is passing; holds them (reads nothing) while not.
/// Ends, closing both connections, once the proxy has been taken down since `downs`.
async fn relay(client: TcpStream, server: TcpStream, downs: u64, mut path: watch::Receiver<Path>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        let now = *path.borrow_and_update();
        if now.downs != downs {
            return;
        }
        tokio::select! {
            changed = path.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            read = client_read.read(&mut up), if now.passing => match read {
                Ok(n) if n > 0 => {
                    if server_write.write_all(&up[..n]).await.is_err() {
                        return;
                    }
                }
                _ => return,
            },
            read = server_read.read(&mut down), if now.passing => match read {
                Ok(n) if n > 0 => {
                    if client_write.write_all(&down[..n]).await.is_err() {
                        return;
                    }
                }
                _ => return,
            },
        }
    }
}

/// A [`Proxy`] to the server at `upstream`, and two started instances built by `build` for
/// `url`: A connects through the proxy, B directly.
pub async fn proxied_pair<P: PubSubProvider>(
    upstream: SocketAddr,
    url: &str,
    build: impl Fn(String) -> P,
) -> (Proxy, P, P) {
    let proxy = Proxy::start(upstream).await;
    let (a, b) = (build(through(url, proxy.addr)), build(url.to_string()));
    a.start().await.unwrap();
    b.start().await.unwrap();
    (proxy, a, b)
}

/// `url` with its host and port replaced by `addr`.
pub fn through(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let user = authority.rfind('@').map_or("", |at| &authority[..=at]);
    format!("{scheme}://{user}{addr}{path}")
}

/// A loopback port nothing listens on.
pub fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

// ----- hostile envelopes -----

/// An envelope of one message, `payload` on `topic`, from an instance no test runs.
pub fn stranger_envelope(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut writer = EnvelopeWriter::new(InstanceId(7), topic);
    writer.push(None, payload);
    writer.finish()
}

/// Messages a provider must skip and count on topic `topic`'s channel, for an instance whose
/// `max_envelope_bytes` is under 10,000: empty, garbage, foreign JSON, a valid envelope cut
/// short, with bytes after it, of a version we do not speak, with a record length that lies,
/// with a bad last record (whose earlier records must not be delivered either), for another
/// topic, over the envelope limit, and 100,000 bytes of 0xFF. Payloads that could be
/// delivered start with `sneaky`.
pub fn hostile_envelopes(topic: &str) -> Vec<Vec<u8>> {
    let valid = |payload: &str| stranger_envelope(topic, payload.as_bytes());
    let good = valid("hello");
    let mut wrong_version = good.clone();
    wrong_version[4] = 99;
    let mut lying_length = good.clone();
    // The record's payload length, after the header, the topic and the sender length.
    let payload_length_at = HEADER_BYTES + topic.len() + 4;
    lying_length[payload_length_at..payload_length_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    let other_topic = stranger_envelope(&format!("not-{topic}"), b"sneaky");
    // Two good records, then one whose sender is not UTF-8: refused whole, nothing delivered.
    let bad_last_record = {
        let mut writer = EnvelopeWriter::new(InstanceId(7), topic);
        writer.push(None, b"sneaky-1");
        writer.push(Some("tab"), b"sneaky-2");
        writer.push(Some("\u{1}"), b"sneaky-3");
        let mut bytes = writer.finish();
        let sender_at = bytes.len() - b"sneaky-3".len() - 1;
        bytes[sender_at] = 0xFF;
        bytes
    };
    vec![
        b"".to_vec(),
        b"garbage".to_vec(),
        br#"{"event":"foreign json"}"#.to_vec(),
        good[..good.len() - 1].to_vec(),
        good[..10].to_vec(),
        [good.clone(), b"trailing".to_vec()].concat(),
        wrong_version,
        lying_length,
        bad_last_record,
        other_topic,
        valid(&"x".repeat(10_000)),
        vec![0xFF; 100_000],
    ]
}

/// `count` seeded mutations of `valid` (xorshift64): in each, 1 to 4 bytes are replaced, each
/// by `byte` of a random number, and one in three is then cut short.
pub fn mutations<'a>(
    valid: &'a [u8],
    count: usize,
    byte: impl Fn(u64) -> u8 + 'a,
) -> impl Iterator<Item = Vec<u8>> + 'a {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count).map(move |_| {
        let mut message = valid.to_vec();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % message.len();
            message[at] = byte(next());
        }
        if next() % 3 == 0 {
            message.truncate((next() as usize) % message.len());
        }
        message
    })
}
