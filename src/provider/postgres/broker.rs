//! PostgreSQL as the bridge's broker: `LISTEN` / `UNLISTEN` on one connection, pipelined
//! `SELECT pg_notify($1, $2)` on another, and the optional table that carries large payloads.
//!
//! No SQL text is built from a topic or a payload: both travel as bound parameters. The
//! statements that name identifiers — `LISTEN` / `UNLISTEN` (a channel) and the large-payload
//! table's statements (its configured name) — quote them with
//! [`quote_identifier`](super::channel::quote_identifier).

use std::future::poll_fn;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{join_all, BoxFuture};
use futures_util::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification, Statement};

use super::channel::{quote_identifier, ChannelNames};
use super::config::{shown_url, LargePayloads, PostgresConfig};
use super::wire::{self, NOTIFY_PAYLOAD_LIMIT};
use crate::envelope::InstanceId;
use crate::provider::bridge::broker::{
    Answers, Broker, ConnectError, Inbound, Outgoing, PipelineLost, Reason, Refusals, Subscription,
};
use crate::provider::bridge::BrokerError;

/// Notifications the listening connection's driver hands on ahead of the listener. Past
/// this the driver stops reading the connection and PostgreSQL holds the backlog in its
/// notification queue.
const LISTEN_BACKLOG: usize = 4096;

/// The share of PostgreSQL's notification queue in use past which the health query warns.
const QUEUE_WARNING: f64 = 0.5;

/// The role of a connection, in its `application_name`.
#[derive(Clone, Copy)]
enum Role {
    Listen,
    Publish,
    /// Fetches stored payloads for the listener (large-payload mode only). Apart from the
    /// listening connection, so a fetch never waits behind notifications the listener has
    /// not taken yet.
    Fetch,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Listen => "listen",
            Role::Publish => "publish",
            Role::Fetch => "fetch",
        }
    }
}

/// The large-payload table's statements, with its name quoted once.
struct TableSql {
    /// The name, quoted.
    name: String,
    create: String,
    store: String,
    fetch: String,
    expire: String,
}

impl TableSql {
    fn new(table: &str) -> Result<Self, String> {
        let table = quote_identifier(table).map_err(|error| error.to_string())?;
        Ok(Self {
            name: table.clone(),
            create: format!(
                "CREATE UNLOGGED TABLE IF NOT EXISTS {table} \
                 (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(), body bytea NOT NULL)"
            ),
            // One statement: the row and its notification commit together, in pipeline order
            // with the inline notifications around it.
            store: format!(
                "WITH stored AS (INSERT INTO {table} (body) VALUES ($2) RETURNING id) \
                 SELECT pg_notify($1, '{}' || stored.id) FROM stored",
                wire::REFERENCE_MARK
            ),
            fetch: format!("SELECT body FROM {table} WHERE id = $1"),
            expire: format!("DELETE FROM {table} WHERE created_at < now() - make_interval(secs => $1)"),
        })
    }
}

/// A PostgreSQL database, as the bridge sees it.
pub(crate) struct PostgresBroker {
    pub(crate) config: PostgresConfig,
    connect: tokio_postgres::Config,
    names: ChannelNames,
    instance: InstanceId,
    /// The largest envelope that travels inside its notification.
    inline_limit: usize,
    table: Option<TableSql>,
}

impl PostgresBroker {
    pub(crate) fn new(
        config: PostgresConfig,
        connect: tokio_postgres::Config,
        instance: InstanceId,
    ) -> Result<Self, String> {
        let table = match config.large_payloads {
            LargePayloads::Refuse => None,
            LargePayloads::Table => Some(TableSql::new(&config.payload_table)?),
        };
        Ok(Self {
            names: config.channel_names(),
            connect,
            instance,
            inline_limit: wire::max_inline_envelope(NOTIFY_PAYLOAD_LIMIT),
            table,
            config,
        })
    }

    /// Connects, names the connection `fanout-postgres-<instance>-<role>` and drives it in its
    /// own task, which forwards notifications to `notifications` (if given).
    async fn connect(
        &self,
        role: Role,
        notifications: Option<mpsc::Sender<Notification>>,
    ) -> Result<(Client, Driver), ConnectError> {
        let mut config = self.connect.clone();
        config.application_name(format!("fanout-postgres-{}-{}", self.instance, role.name()));
        let (client, mut connection) = config.connect(NoTls).await?;
        let instance = self.instance;
        let (closing, closed) = watch::channel(());
        let task = tokio::spawn(async move {
            // Dropped when the task ends, however it ends: tells `Driver::closed`.
            let _closing = closing;
            while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notification(notification)) => {
                        if let Some(forward) = &notifications {
                            // Waits while the listener is LISTEN_BACKLOG behind. The listener
                            // has gone only when the connection is being dropped.
                            if forward.send(notification).await.is_err() {
                                break;
                            }
                        }
                    }
                    Ok(AsyncMessage::Notice(notice)) => {
                        tracing::debug!(%instance, role = role.name(), %notice, "postgres notice");
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(%instance, role = role.name(), %error, "postgres connection ended");
                        break;
                    }
                }
            }
        });
        let driver = Driver { task, closed };
        if let Some(table) = &self.table {
            create_table(&client, table).await?;
        }
        Ok((client, driver))
    }
}

/// The task that drives one connection; aborted when dropped, which closes the connection.
struct Driver {
    task: JoinHandle<()>,
    /// Its sender is dropped when the task ends.
    closed: watch::Receiver<()>,
}

impl Driver {
    /// Resolves once the connection has ended.
    fn closed(&self) -> BoxFuture<'static, ()> {
        let mut closed = self.closed.clone();
        async move { while closed.changed().await.is_ok() {} }.boxed()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Creates the large-payload table if it is missing. A table that exists is used as it is,
/// so a role with only `SELECT`, `INSERT` and `DELETE` on a table an administrator created
/// needs no `CREATE` on its schema. Two instances starting at once may race to create it; the
/// loser's error says the table (or its type) exists, which is what it wanted.
async fn create_table(client: &Client, table: &TableSql) -> Result<(), tokio_postgres::Error> {
    use tokio_postgres::error::SqlState;
    let exists = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table.name])
        .await?;
    if exists.get::<_, bool>(0) {
        return Ok(());
    }
    match client.batch_execute(&table.create).await {
        Err(error) if matches!(error.code(), Some(code) if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::DUPLICATE_TABLE) => {
            Ok(())
        }
        other => other,
    }
}

impl Broker for PostgresBroker {
    type Subscription = PostgresSubscription;
    type Publisher = PostgresPublisher;

    const NAME: &'static str = "postgres";

    fn target(&self) -> String {
        shown_url(&self.config.url)
    }

    fn channel(&self, topic: &str) -> String {
        self.names.channel(topic)
    }

    fn carries(&self, channel: &str, topic: &str) -> bool {
        self.names.carries(channel, topic)
    }

    fn check_envelope(&self, envelope_len: usize) -> Result<(), BrokerError> {
        if envelope_len <= self.inline_limit {
            return Ok(());
        }
        if self.table.is_none() {
            return Err(BrokerError::NotificationTooLarge {
                len: wire::encoded_len(envelope_len),
                limit: NOTIFY_PAYLOAD_LIMIT,
            });
        }
        BrokerError::check_envelope_len(envelope_len, self.config.max_envelope_bytes)
    }

    async fn open_subscription(&self) -> Result<PostgresSubscription, ConnectError> {
        let (forward, notifications) = mpsc::channel(LISTEN_BACKLOG);
        let (client, driver) = self.connect(Role::Listen, Some(forward)).await?;
        let fetch = match &self.table {
            Some(table) => {
                let (client, driver) = self.connect(Role::Fetch, None).await?;
                let statement = client.prepare(&table.fetch).await?;
                Some(Fetcher {
                    client,
                    statement,
                    _driver: driver,
                })
            }
            None => None,
        };
        Ok(PostgresSubscription {
            client: Arc::new(client),
            notifications,
            fetch,
            response_timeout: self.config.response_timeout,
            _driver: driver,
        })
    }

    async fn open_publisher(&self) -> Result<PostgresPublisher, ConnectError> {
        let (client, driver) = self.connect(Role::Publish, None).await?;
        let notify = client.prepare("SELECT pg_notify($1, $2)").await?;
        let (store, expire) = match &self.table {
            Some(table) => (
                Some(client.prepare(&table.store).await?),
                Some(client.prepare(&table.expire).await?),
            ),
            None => (None, None),
        };
        Ok(PostgresPublisher {
            client,
            notify,
            store,
            expire,
            expired_at: Instant::now(),
            queue_filling: false,
            driver,
        })
    }

    /// One `pg_notify` per envelope, all in flight at once (tokio-postgres pipelines them).
    /// Each is its own implicit transaction, so PostgreSQL never collapses two identical
    /// notifications into one.
    async fn publish(
        &self,
        publisher: &mut PostgresPublisher,
        envelopes: &[Outgoing<'_>],
    ) -> Result<Answers, PipelineLost> {
        let expiry_due = self.expiry_due(publisher);
        let publisher = &*publisher;
        let (client, notify) = (&publisher.client, &publisher.notify);
        let mut sends = Vec::with_capacity(envelopes.len());
        for outgoing in envelopes {
            let channel = self.names.channel(outgoing.topic);
            let send = match &publisher.store {
                Some(store) if outgoing.envelope.len() > self.inline_limit => {
                    let body: &[u8] = outgoing.envelope;
                    async move { client.execute(store, &[&channel, &body]).await }.boxed()
                }
                _ => {
                    let text = wire::encode_inline(outgoing.envelope);
                    async move { client.execute(notify, &[&channel, &text]).await }.boxed()
                }
            };
            sends.push(send);
        }
        let expired = self.expire(publisher, expiry_due);
        let (sent, expired) = futures_util::future::join(join_all(sends), expired).await;
        let mut answers = Vec::with_capacity(sent.len());
        for result in sent {
            match result {
                Ok(_) => answers.push(Ok(())),
                // Each statement is its own transaction: the server's refusal of one leaves
                // the others and the connection as they are.
                Err(error) if refused_on_a_working_connection(&error) => {
                    answers.push(Err(format!("pg_notify refused: {error}")));
                }
                Err(error) => {
                    return Err(PipelineLost {
                        answered: answers,
                        reason: format!("pg_notify failed: {error}"),
                    })
                }
            }
        }
        if let Err(reason) = expired {
            // The notifications went out; the rows are deleted at the next chance.
            tracing::warn!(instance = %self.instance, reason, "deleting expired payloads failed");
        }
        Ok(answers)
    }

    /// The health query also reads how full PostgreSQL's notification queue is: shared by
    /// every listener on the server, it fills when one falls behind, and when it is full every
    /// `NOTIFY` on the server fails. Past half full this is logged as a warning.
    async fn ping_publisher(&self, publisher: &mut PostgresPublisher) -> Result<(), Reason> {
        let usage: f64 = publisher
            .client
            .query_one("SELECT pg_notification_queue_usage()", &[])
            .await
            .map_err(|error| format!("health query failed: {error}"))?
            .get(0);
        let filling = usage >= QUEUE_WARNING;
        if filling != publisher.queue_filling {
            publisher.queue_filling = filling;
            if filling {
                tracing::warn!(
                    instance = %self.instance,
                    percent = usage * 100.0,
                    "PostgreSQL's notification queue is filling: a listener on the server is falling behind"
                );
            } else {
                tracing::info!(instance = %self.instance, percent = usage * 100.0, "PostgreSQL's notification queue has drained");
            }
        }
        let expiry_due = self.expiry_due(publisher);
        self.expire(publisher, expiry_due).await
    }

    fn publisher_closed(&self, publisher: &PostgresPublisher) -> BoxFuture<'static, ()> {
        publisher.driver.closed()
    }
}

/// Whether `error` is the server refusing one statement on a connection that goes on (an
/// `ERROR`: a full notification queue, a missing table), rather than the connection ending
/// (closed, an I/O error, or a `FATAL` / `PANIC` such as `admin_shutdown`).
fn refused_on_a_working_connection(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::Severity;
    match error.as_db_error() {
        Some(db) if !error.is_closed() => {
            !matches!(db.parsed_severity(), Some(Severity::Fatal | Severity::Panic))
                && !db.code().code().starts_with("08")
                && !db.code().code().starts_with("57P")
        }
        _ => false,
    }
}

impl PostgresBroker {
    /// Whether stored payloads are due to be expired: at most every half of `payload_ttl`.
    /// Counts this one as done.
    fn expiry_due(&self, publisher: &mut PostgresPublisher) -> bool {
        if publisher.expire.is_none() || publisher.expired_at.elapsed() < self.config.payload_ttl / 2 {
            return false;
        }
        publisher.expired_at = Instant::now();
        true
    }

    /// Deletes stored payloads older than `payload_ttl`, if `due`.
    fn expire<'a>(
        &'a self,
        publisher: &'a PostgresPublisher,
        due: bool,
    ) -> BoxFuture<'a, Result<(), Reason>> {
        let (Some(expire), true) = (&publisher.expire, due) else {
            return futures_util::future::ready(Ok(())).boxed();
        };
        let ttl = self.config.payload_ttl;
        async move {
            publisher
                .client
                .execute(expire, &[&ttl.as_secs_f64()])
                .await
                .map(drop)
                .map_err(|error| format!("deleting expired payloads failed: {error}"))
        }
        .boxed()
    }
}

/// The publishing connection and its prepared statements.
pub(crate) struct PostgresPublisher {
    client: Client,
    notify: Statement,
    store: Option<Statement>,
    expire: Option<Statement>,
    expired_at: Instant,
    /// Whether the health query last found the notification queue past [`QUEUE_WARNING`].
    queue_filling: bool,
    driver: Driver,
}

/// The listening connection: its client for `LISTEN` / `UNLISTEN` and health queries, the
/// notifications its driver task forwards, and in large-payload mode the connection that
/// fetches stored payloads.
///
/// The driver reads notifications as they arrive, up to [`LISTEN_BACKLOG`] ahead of the
/// listener, which never waits on a handler (only, under a `block` policy, up to its timeout
/// for room in a mailbox), so one slow session does not hold back PostgreSQL's shared
/// notification queue.
pub(crate) struct PostgresSubscription {
    client: Arc<Client>,
    notifications: mpsc::Receiver<Notification>,
    fetch: Option<Fetcher>,
    /// Bounds fetching a stored payload; past it the connection is taken as lost.
    response_timeout: Duration,
    /// Kept for its drop, which closes the connection.
    _driver: Driver,
}

/// The connection that fetches stored payloads, and its prepared `SELECT`.
struct Fetcher {
    client: Client,
    statement: Statement,
    /// Kept for its drop, which closes the connection.
    _driver: Driver,
}

impl PostgresSubscription {
    fn command(&self, verb: &'static str, channels: Vec<String>) -> BoxFuture<'static, Result<(), Reason>> {
        let client = Arc::clone(&self.client);
        async move {
            let mut sql = String::new();
            for channel in &channels {
                let quoted = quote_identifier(channel).map_err(|error| error.to_string())?;
                sql.push_str(verb);
                sql.push(' ');
                sql.push_str(&quoted);
                sql.push(';');
            }
            client
                .batch_execute(&sql)
                .await
                .map_err(|error| format!("{verb} failed: {error}"))
        }
        .boxed()
    }
}

impl Subscription for PostgresSubscription {
    type Message = Notification;

    fn subscribe(&self, channels: Vec<String>) -> BoxFuture<'static, Result<Refusals, Reason>> {
        self.command("LISTEN", channels)
            .map(|done| done.map(|()| Refusals::new()))
            .boxed()
    }

    fn unsubscribe(&self, channels: Vec<String>) -> BoxFuture<'static, Result<(), Reason>> {
        self.command("UNLISTEN", channels)
    }

    fn ping(&self) -> BoxFuture<'static, Result<(), Reason>> {
        let client = Arc::clone(&self.client);
        async move {
            client
                .simple_query("SELECT 1")
                .await
                .map(drop)
                .map_err(|error| format!("health query failed: {error}"))
        }
        .boxed()
    }

    async fn next(&mut self) -> Option<Notification> {
        self.notifications.recv().await
    }

    fn channel(message: &Notification) -> &str {
        message.channel()
    }

    async fn envelope<'a>(&'a self, message: &'a Notification) -> Result<Bytes, Inbound> {
        match wire::decode(message.payload()) {
            Ok(wire::Notification::Inline(envelope)) => Ok(envelope.into()),
            Ok(wire::Notification::Stored(id)) => {
                let Some(fetcher) = &self.fetch else {
                    return Err(Inbound::Malformed(
                        "a stored payload, but large_payloads is not \"table\" on this instance".into(),
                    ));
                };
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
                let fetched = fetcher.client.query_opt(&fetcher.statement, &params);
                let fetched = tokio::time::timeout(self.response_timeout, fetched).await;
                let Ok(fetched) = fetched else {
                    return Err(Inbound::Lost(format!(
                        "no answer to fetching stored payload {id} within {} ms",
                        self.response_timeout.as_millis()
                    )));
                };
                match fetched {
                    Ok(Some(row)) => row
                        .try_get::<_, Vec<u8>>(0)
                        .map(Bytes::from)
                        .map_err(|error| Inbound::Malformed(format!("stored payload {id}: {error}"))),
                    Ok(None) => Err(Inbound::Malformed(format!(
                        "stored payload {id} is gone (deleted after payload_ttl)"
                    ))),
                    // Closed, or being closed by the server (class 57P: terminated by an
                    // administrator, shutting down): the fetch connection is gone.
                    Err(error)
                        if error.is_closed()
                            || error.code().is_some_and(|code| code.code().starts_with("57P")) =>
                    {
                        Err(Inbound::Lost(format!("fetching a stored payload: {error}")))
                    }
                    Err(error) => Err(Inbound::Malformed(format!(
                        "fetching stored payload {id}: {error}"
                    ))),
                }
            }
            Err(error) => Err(Inbound::Malformed(error.to_string())),
        }
    }
}
