//! A Redis Cluster of the test's own: three primaries with one replica each, six `redis-server`
//! processes on free loopback ports, started by [`RedisCluster::start`] and killed when the
//! [`RedisCluster`] is dropped, pass or fail.
//!
//! # What runs
//!
//! Each node is `redis-server` (7 or later) in cluster mode on `127.0.0.1:P`, with no persistence
//! (`--save "" --appendonly no`), `--cluster-node-timeout 1000`,
//! `--cluster-replica-validity-factor 0` (a replica may be promoted however long it has been
//! cut off) and `--repl-diskless-sync-delay 0` (a replica's first sync starts at once rather
//! than after 5 s). Every node has a directory of its own, holding its `nodes.conf`, its log
//! `redis.log` and anything it writes while syncing, under one fresh directory
//! `fanout-redis-cluster-<pid>-<n>` in [`std::env::temp_dir`]; nothing is written elsewhere.
//! `redis-cli --cluster create … --cluster-replicas 1` assigns slots 0–5460, 5461–10922 and
//! 10923–16383 and a replica to each primary. `start` returns once every node reports
//! `cluster_state:ok`, all six report the same node table (roles, replica links, slot map
//! covering the 16384 slots, no slot open for migration), and every replica's link to its
//! primary is up.
//!
//! [`primaries`](RedisCluster::primaries) are indexed by their first slot at start (index 0 owns
//! slot 0); the index stays with the shard through failovers and migrations, and is what the
//! fault helpers take. Every accessor reports the table the nodes agreed on after the last
//! change the harness made; a change it did not make (an automatic failover) is not seen.
//!
//! # Ports
//!
//! Six ports the kernel hands out for `127.0.0.1:0`, each below 55535 and with its cluster bus
//! port `P + 10000` free too, all held until the six are chosen. Should another process take one
//! before its node binds it, the cluster is started again on new ports (three attempts).
//!
//! # Lifetime
//!
//! Each server runs under a small `sh` watchdog whose standard input is a pipe from the test
//! process. When the pipe closes (the harness dropping the node, or the test process ending in
//! any way, a panic, an abort or SIGKILL included) the watchdog SIGKILLs its server, reaps it,
//! and removes the node's directory and, once empty, the cluster's. [`Drop`] closes all six
//! pipes and waits for the watchdogs, so on return no node answers and the directory is gone.
//!
//! # Timings
//!
//! Measured at `e41ee0f` on a 2-core machine under a load average of about 4, `redis-server`
//! 7.0.15, over four runs of `cargo test --test redis_cluster_harness` (two clusters at a
//! time):
//!
//! | step | time |
//! | --- | --- |
//! | [`start`](RedisCluster::start), up to every node agreeing | 2.1–2.7 s |
//! | [`failover`](RedisCluster::failover) (`CLUSTER FAILOVER`) | 0.2–0.5 s |
//! | [`kill_primary`](RedisCluster::kill_primary), to the promoted replica agreed on | 2.0–3.0 s |
//! | [`migrate_slot`](RedisCluster::migrate_slot) of an empty slot | 15–40 ms |
//!
//! `start` cannot go much below 2 s: a primary reports `cluster_state:ok` no sooner than 2 s
//! after it began (Redis's writable delay); `redis-cli --cluster create` takes 1.05 s of that.
//! `kill_primary` is the 1 s node timeout, the FAIL vote, and the replica's election delay
//! (0.5 s plus up to 0.5 s at random).
//!
//! # Observed on 7.0.15
//!
//! A replica is left out of `CLUSTER SLOTS` while its replication offset is 0, which on an empty
//! data set lasts until its primary's first replication ping, 10 s after the sync; `start`
//! has each primary replicate a `FLUSHALL` (a no-op here) so that `CLUSTER SLOTS` lists every
//! replica from the start.
//!
//! A connection that `SSUBSCRIBE`d channels on a node receives, for each channel of a slot the
//! node stops serving, `*3\r\n$12\r\nsunsubscribe\r\n$<len>\r\n<channel>\r\n:<count>\r\n`
//! (`count` being the shard channels the connection still has), and stays open. This happens
//! on the old owner and its replicas when a slot migrates away, as soon as the new owner takes
//! the slot and gossips it (before `SETSLOT … NODE` reaches the old owner), and on the old
//! primary in a failover. Subscribers on the replica being promoted keep their subscriptions
//! and receive what is published to it afterwards. A killed node's connections simply close.
//! `SSUBSCRIBE` and `SPUBLISH` on a node outside the slot's shard answer
//! `-MOVED <slot> 127.0.0.1:<port>`; a replica of the slot's shard accepts both, and an
//! `SPUBLISH` there reaches the subscribers on every node of the shard.
//!
//! Skips, with the printed reason, when `redis-server` or `redis-cli` cannot be run or the
//! cluster does not come up; fails instead under `FANOUT_REQUIRE_SERVICES=1`.

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::services::skip;

/// Hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

const NODES: usize = 6;
const SHARDS: usize = 3;
/// The lowest port whose cluster bus port (`+ 10000`) is out of range.
const PORT_LIMIT: u16 = 55535;
/// The longest the cluster is given to agree after a change (or to form).
const CONVERGE: Duration = Duration::from_secs(30);
/// The longest a started server is given to answer `PING`.
const ANSWER: Duration = Duration::from_secs(5);
/// The longest one admin command may take.
const COMMAND: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(20);

/// Runs the command in its arguments, its output to `$NODE_DIR/redis.log`, until this shell's
/// standard input closes; then SIGKILLs and reaps it, and removes `$NODE_DIR` and, once empty,
/// `$CLUSTER_DIR`.
const WATCHDOG: &str = r#"
"$@" </dev/null >"$NODE_DIR/redis.log" 2>&1 &
server=$!
while read -r line; do :; done
kill -KILL "$server" 2>/dev/null
wait "$server"
rm -rf "$NODE_DIR"
rmdir "$CLUSTER_DIR" 2>/dev/null
exit 0
"#;

/// A running 3-primary, 3-replica Redis Cluster on loopback; every node is killed and the
/// cluster's directory removed on drop.
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
    /// Per shard, in the order of its first slot at start: the node ids of its primary and
    /// replica as the cluster was created.
    shards: Vec<Vec<String>>,
    /// The node table every live node reported after the last change the harness made.
    table: Vec<NodeEntry>,
}

/// A primary, as of the last change the harness made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Primary {
    /// Its position in [`RedisCluster::primaries`]: the argument of the fault helpers.
    pub index: usize,
    pub port: u16,
    /// The cluster node id (40 hex digits).
    pub id: String,
    /// The slots it serves, ascending.
    pub slots: Vec<RangeInclusive<u16>>,
}

/// A live replica, as of the last change the harness made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    pub port: u16,
    pub id: String,
    /// The index of the primary it replicates.
    pub primary_index: usize,
}

/// One server and its watchdog.
struct Node {
    port: u16,
    /// The watchdog `sh`, its standard input our end of the pipe; `None` once killed.
    watchdog: Option<Child>,
}

/// One line of `CLUSTER NODES`, without what differs between observers (`myself`, `fail?`,
/// ping times, link state).
#[derive(Clone, Debug, PartialEq, Eq)]
struct NodeEntry {
    id: String,
    port: u16,
    primary: bool,
    replica_of: Option<String>,
    /// Flagged `fail` (agreed unreachable), not merely `fail?`.
    failed: bool,
    /// Still in the `handshake` of joining.
    handshake: bool,
    slots: Vec<RangeInclusive<u16>>,
}

impl RedisCluster {
    /// Starts six `redis-server`s on free loopback ports, joins them into a cluster of three
    /// primaries with a replica each, and returns once all agree on it; [`skip`]s when the
    /// servers cannot be run or the cluster does not come up.
    pub async fn start() -> Option<RedisCluster> {
        if let Err(why) = redis_7_runs() {
            return skip(format_args!(
                "{why}; install Redis 7 to run the Redis Cluster tests"
            ));
        }
        let began = Instant::now();
        let mut failures = Vec::new();
        for _attempt in 0..3 {
            match Self::try_start().await {
                Ok(cluster) => {
                    eprintln!(
                        "redis cluster in {} on ports {:?}: up in {:.2?}",
                        cluster.dir.display(),
                        cluster.nodes.iter().map(|node| node.port).collect::<Vec<_>>(),
                        began.elapsed()
                    );
                    return Some(cluster);
                }
                Err(why) => failures.push(why),
            }
        }
        skip(format_args!(
            "the Redis Cluster did not come up: {}",
            failures.join("; then ")
        ))
    }

    async fn try_start() -> Result<RedisCluster, String> {
        let ports = free_ports().map_err(|error| format!("no free ports ({error})"))?;
        let dir = fresh_dir().map_err(|error| format!("no temporary directory ({error})"))?;
        let mut cluster = RedisCluster {
            dir,
            nodes: Vec::with_capacity(NODES),
            shards: Vec::new(),
            table: Vec::new(),
        };
        for &port in &ports {
            let node = Node::spawn(&cluster.dir, port)
                .map_err(|error| format!("cannot run redis-server ({error})"))?;
            cluster.nodes.push(node);
        }
        for &port in &ports {
            cluster.answering(port).await?;
        }
        let mut create = tokio::process::Command::new("redis-cli");
        create
            .args(["--cluster", "create"])
            .args(ports.iter().map(|port| format!("127.0.0.1:{port}")))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = match tokio::time::timeout(CONVERGE, create.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(error)) => return Err(format!("cannot run redis-cli ({error})")),
            Err(_) => return Err(format!("redis-cli --cluster create took over {CONVERGE:?}")),
        };
        if !output.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stdout).trim()
            ));
        }
        cluster.replicas_offset().await?;
        cluster.table = cluster.converge(|_| Ok(())).await?;
        cluster.shards = shards_of(&cluster.table)?;
        Ok(cluster)
    }

    /// Waits until the server on `port` answers `PING`.
    async fn answering(&self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + ANSWER;
        loop {
            match command(port, ["PING"]).await {
                Ok(Reply::Status(pong)) if pong == "PONG" => return Ok(()),
                _ if Instant::now() < deadline => tokio::time::sleep(POLL).await,
                reply => {
                    let log = std::fs::read_to_string(self.dir.join(port.to_string()).join("redis.log"))
                        .unwrap_or_default();
                    return Err(format!(
                        "redis-server on port {port} did not answer PING within {ANSWER:?} \
                         ({reply:?}); its log ends: {}",
                        log.lines().rev().take(3).collect::<Vec<_>>().join(" / ")
                    ));
                }
            }
        }
    }

    /// Waits until three nodes are replicas with their link to a primary up, then has each
    /// primary replicate a `FLUSHALL` (a no-op on the empty data set). A replica whose
    /// replication offset is still 0 is left out of `CLUSTER SLOTS`, and without a write it
    /// stays 0 until its primary's first replication ping, 10 s after the sync.
    async fn replicas_offset(&self) -> Result<(), String> {
        let deadline = Instant::now() + CONVERGE;
        let primaries = loop {
            let mut primaries = Vec::new();
            let mut linked = 0;
            for node in &self.nodes {
                let info = text_reply(node.port, &["INFO", "replication"]).await?;
                match field(&info, "role") {
                    Some("master") => primaries.push(node.port),
                    _ if field(&info, "master_link_status") == Some("up") => linked += 1,
                    _ => {}
                }
            }
            if linked == NODES - SHARDS {
                break primaries;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{linked} replicas linked to their primary after {CONVERGE:?}"
                ));
            }
            tokio::time::sleep(POLL).await;
        };
        for port in primaries {
            match command(port, ["FLUSHALL"]).await {
                Ok(Reply::Status(ok)) if ok == "OK" => {}
                reply => return Err(format!("FLUSHALL on {port}: {reply:?}")),
            }
        }
        Ok(())
    }

    /// The cluster's temporary directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `redis://127.0.0.1:P` of every live node, primaries first (in index order).
    pub fn urls(&self) -> Vec<String> {
        let primaries = self.primaries().into_iter().map(|primary| primary.port);
        let replicas = self.replicas().into_iter().map(|replica| replica.port);
        primaries.chain(replicas).map(url).collect()
    }

    /// `redis://127.0.0.1:P` of every primary, in index order.
    pub fn primary_urls(&self) -> Vec<String> {
        self.primaries()
            .into_iter()
            .map(|primary| url(primary.port))
            .collect()
    }

    /// The three primaries, in index order.
    pub fn primaries(&self) -> Vec<Primary> {
        (0..self.shards.len()).map(|index| self.primary(index)).collect()
    }

    /// The live replicas, in the order of the primary they replicate.
    pub fn replicas(&self) -> Vec<Replica> {
        let mut replicas: Vec<Replica> = self
            .table
            .iter()
            .filter(|entry| !entry.primary && !entry.failed && self.is_live(entry.port))
            .map(|entry| Replica {
                port: entry.port,
                id: entry.id.clone(),
                primary_index: self.shard_of(&entry.id),
            })
            .collect();
        replicas.sort_by_key(|replica| (replica.primary_index, replica.port));
        replicas
    }

    /// The slot Redis assigns `channel` to: CRC16-XMODEM of the channel, or of its hash tag
    /// (what lies between the first `{` and the first `}` after it, when that is not empty),
    /// modulo 16384.
    pub fn slot_of(channel: &[u8]) -> u16 {
        let tagged = channel.iter().position(|&byte| byte == b'{').and_then(|open| {
            let rest = &channel[open + 1..];
            match rest.iter().position(|&byte| byte == b'}') {
                Some(0) | None => None,
                Some(close) => Some(&rest[..close]),
            }
        });
        crc16_xmodem(tagged.unwrap_or(channel)) % SLOTS
    }

    /// The primary serving `slot`.
    pub fn primary_for_slot(&self, slot: u16) -> Primary {
        assert!(slot < SLOTS, "slot {slot} is out of range");
        self.primaries()
            .into_iter()
            .find(|primary| primary.slots.iter().any(|range| range.contains(&slot)))
            .expect("every slot has a primary")
    }

    /// Makes the replica of primary `primary_index` its primary with `CLUSTER FAILOVER`, and
    /// waits until every node agrees: the replica serving the slots, the old primary its
    /// replica with its link up, `cluster_state:ok` everywhere. Panics if that primary has no
    /// live replica or the cluster does not agree within 30 s.
    pub async fn failover(&mut self, primary_index: usize) {
        let began = Instant::now();
        let primary = self.primary(primary_index);
        let replica = self.replica_of(&primary);
        let reply = command(replica.port, ["CLUSTER", "FAILOVER"]).await;
        assert!(
            matches!(&reply, Ok(Reply::Status(ok)) if ok == "OK"),
            "CLUSTER FAILOVER on {}: {reply:?}",
            replica.port
        );
        self.table = self
            .converge(|table| {
                serves(table, &replica.id, &primary.slots)?;
                replicates(table, &primary.id, &replica.id)
            })
            .await
            .unwrap_or_else(|why| panic!("failover of primary {primary_index}: {why}"));
        eprintln!(
            "redis cluster: primary {primary_index} failed over from {} to {} in {:.2?}",
            primary.port,
            replica.port,
            began.elapsed()
        );
    }

    /// SIGKILLs primary `primary_index`, and waits until the surviving nodes agree that it has
    /// failed and its replica serves its slots, with `cluster_state:ok` on each. Panics if that
    /// primary has no live replica (its slots would stay uncovered) or the survivors do not
    /// agree within 30 s.
    pub async fn kill_primary(&mut self, primary_index: usize) {
        let began = Instant::now();
        let primary = self.primary(primary_index);
        let replica = self.replica_of(&primary);
        self.node(primary.port).kill();
        self.table = self
            .converge(|table| {
                serves(table, &replica.id, &primary.slots)?;
                match table.iter().find(|entry| entry.id == primary.id) {
                    Some(entry) if entry.failed => Ok(()),
                    _ => Err(format!("{} is not yet flagged fail", primary.port)),
                }
            })
            .await
            .unwrap_or_else(|why| panic!("killing primary {primary_index}: {why}"));
        eprintln!(
            "redis cluster: primary {primary_index} on {} killed, {} promoted in {:.2?}",
            primary.port,
            replica.port,
            began.elapsed()
        );
    }

    /// Moves `slot`, which must hold no keys, to primary `to_primary_index` the way
    /// `redis-cli --cluster reshard` does: `CLUSTER SETSLOT <slot> IMPORTING` on the target,
    /// `MIGRATING` on the source, then `SETSLOT <slot> NODE <target>` on the target, the source
    /// and the other primaries; and waits until every node agrees on the new owner. Does
    /// nothing when the target already serves the slot.
    pub async fn migrate_slot(&mut self, slot: u16, to_primary_index: usize) {
        let began = Instant::now();
        let source = self.primary_for_slot(slot);
        let target = self.primary(to_primary_index);
        if source.id == target.id {
            return;
        }
        let slot_text = slot.to_string();
        let keys = command(source.port, ["CLUSTER", "COUNTKEYSINSLOT", slot_text.as_str()]).await;
        assert!(
            matches!(keys, Ok(Reply::Integer(0))),
            "slot {slot} must be empty to be migrated: {keys:?}"
        );
        let mut steps = vec![
            (target.port, "IMPORTING", &source.id),
            (source.port, "MIGRATING", &target.id),
            (target.port, "NODE", &target.id),
            (source.port, "NODE", &target.id),
        ];
        let others = self.primaries();
        let others = others
            .iter()
            .filter(|other| other.id != source.id && other.id != target.id);
        steps.extend(others.map(|other| (other.port, "NODE", &target.id)));
        for (port, state, node) in steps {
            let reply = command(
                port,
                ["CLUSTER", "SETSLOT", slot_text.as_str(), state, node.as_str()],
            )
            .await;
            assert!(
                matches!(&reply, Ok(Reply::Status(ok)) if ok == "OK"),
                "CLUSTER SETSLOT {slot} {state} {node} on {port}: {reply:?}"
            );
        }
        self.table = self
            .converge(|table| serves(table, &target.id, &[slot..=slot]))
            .await
            .unwrap_or_else(|why| panic!("migrating slot {slot} to primary {to_primary_index}: {why}"));
        eprintln!(
            "redis cluster: slot {slot} moved from {} to {} in {:.2?}",
            source.port,
            target.port,
            began.elapsed()
        );
    }

    fn primary(&self, index: usize) -> Primary {
        let members = self
            .shards
            .get(index)
            .unwrap_or_else(|| panic!("there is no primary {index}; there are {SHARDS}"));
        let entry = self
            .table
            .iter()
            .find(|entry| entry.primary && !entry.failed && members.contains(&entry.id))
            .unwrap_or_else(|| panic!("shard {index} has no live primary"));
        Primary {
            index,
            port: entry.port,
            id: entry.id.clone(),
            slots: entry.slots.clone(),
        }
    }

    fn replica_of(&self, primary: &Primary) -> Replica {
        self.replicas()
            .into_iter()
            .find(|replica| replica.primary_index == primary.index)
            .unwrap_or_else(|| {
                panic!(
                    "primary {} (port {}) has no live replica",
                    primary.index, primary.port
                )
            })
    }

    fn shard_of(&self, id: &str) -> usize {
        let shard = self
            .shards
            .iter()
            .position(|members| members.iter().any(|member| member == id));
        shard.unwrap_or_else(|| panic!("node {id} belongs to no shard"))
    }

    fn node(&mut self, port: u16) -> &mut Node {
        let node = self.nodes.iter_mut().find(|node| node.port == port);
        node.unwrap_or_else(|| panic!("no node on port {port}"))
    }

    fn is_live(&self, port: u16) -> bool {
        self.nodes
            .iter()
            .any(|node| node.port == port && node.watchdog.is_some())
    }

    /// Waits until the live nodes agree on one node table satisfying `condition` (see
    /// [`agreed`](Self::agreed)), and returns it; or why they did not within [`CONVERGE`].
    async fn converge(
        &self,
        condition: impl Fn(&[NodeEntry]) -> Result<(), String>,
    ) -> Result<Vec<NodeEntry>, String> {
        let deadline = Instant::now() + CONVERGE;
        loop {
            match self.agreed(&condition).await {
                Ok(table) => return Ok(table),
                Err(why) if Instant::now() >= deadline => {
                    return Err(format!("no agreement within {CONVERGE:?}: {why}"))
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// The node table, if every live node reports `cluster_state:ok` and the same table, with
    /// all six nodes known, every slot served by a primary not failed, no slot open for
    /// migration, every live replica's link to a primary not failed up, `CLUSTER SLOTS`
    /// everywhere listing exactly the table's primaries and their replicas, and `condition` met.
    async fn agreed(
        &self,
        condition: &impl Fn(&[NodeEntry]) -> Result<(), String>,
    ) -> Result<Vec<NodeEntry>, String> {
        let mut agreed: Option<Vec<NodeEntry>> = None;
        for node in self.nodes.iter().filter(|node| node.watchdog.is_some()) {
            let port = node.port;
            let info = text_reply(port, &["CLUSTER", "INFO"]).await?;
            match field(&info, "cluster_state") {
                Some("ok") => {}
                state => return Err(format!("{port} has cluster_state {state:?}")),
            }
            let (table, open) = parse_cluster_nodes(&text_reply(port, &["CLUSTER", "NODES"]).await?)?;
            if open {
                return Err(format!("{port} still has a slot open for migration"));
            }
            match &agreed {
                None => agreed = Some(table),
                Some(first) if *first != table => {
                    return Err(format!("{port} disagrees: {table:?}, not {first:?}"));
                }
                Some(_) => {}
            }
        }
        let table = agreed.ok_or("no node is live")?;
        if table.len() != NODES || table.iter().any(|entry| entry.handshake) {
            return Err(format!("not all {NODES} nodes have joined: {table:?}"));
        }
        let mut served = vec![false; usize::from(SLOTS)];
        for entry in table.iter().filter(|entry| entry.primary && !entry.failed) {
            for slot in entry.slots.iter().flat_map(|range| range.clone()) {
                served[usize::from(slot)] = true;
            }
        }
        if let Some(slot) = served.iter().position(|&served| !served) {
            return Err(format!("slot {slot} has no live primary"));
        }
        for entry in table
            .iter()
            .filter(|entry| !entry.primary && self.is_live(entry.port))
        {
            let primary = table
                .iter()
                .find(|other| Some(&other.id) == entry.replica_of.as_ref());
            if primary.is_some_and(|primary| !primary.failed) {
                let info = text_reply(entry.port, &["INFO", "replication"]).await?;
                if field(&info, "master_link_status") != Some("up") {
                    return Err(format!("replica {}'s link to its primary is not up", entry.port));
                }
            }
        }
        let expected = slot_ranges(&table);
        for node in self.nodes.iter().filter(|node| node.watchdog.is_some()) {
            let listed = cluster_slots(node.port).await?;
            if listed != expected {
                return Err(format!(
                    "CLUSTER SLOTS on {} lists {listed:?}, not {expected:?}",
                    node.port
                ));
            }
        }
        condition(&table)?;
        Ok(table)
    }
}

/// A contiguous run of slots: first, last, the primary's port, its replicas' ports (sorted).
type SlotRange = (u16, u16, u16, Vec<u16>);

/// What `CLUSTER SLOTS` lists for `table`, sorted.
fn slot_ranges(table: &[NodeEntry]) -> Vec<SlotRange> {
    let mut ranges = Vec::new();
    for primary in table.iter().filter(|entry| entry.primary && !entry.failed) {
        let replicas = table
            .iter()
            .filter(|entry| !entry.failed && entry.replica_of.as_deref() == Some(primary.id.as_str()));
        let mut replicas: Vec<u16> = replicas.map(|replica| replica.port).collect();
        replicas.sort_unstable();
        for range in &primary.slots {
            ranges.push((*range.start(), *range.end(), primary.port, replicas.clone()));
        }
    }
    ranges.sort_unstable();
    ranges
}

/// `CLUSTER SLOTS` on `port`, sorted.
async fn cluster_slots(port: u16) -> Result<Vec<SlotRange>, String> {
    let reply = command(port, ["CLUSTER", "SLOTS"])
        .await
        .map_err(|error| format!("CLUSTER SLOTS on {port}: {error}"))?;
    let malformed = || format!("CLUSTER SLOTS on {port} answered {reply:?}");
    let number = |reply: &Reply| match reply {
        Reply::Integer(value) => u16::try_from(*value).ok(),
        _ => None,
    };
    let node_port = |reply: &Reply| match reply {
        Reply::Array(node) => node.get(1).and_then(number),
        _ => None,
    };
    let Reply::Array(listed) = &reply else {
        return Err(malformed());
    };
    let mut ranges = Vec::with_capacity(listed.len());
    for range in listed {
        let Reply::Array(fields) = range else {
            return Err(malformed());
        };
        let replicas: Option<Vec<u16>> = fields.iter().skip(3).map(node_port).collect();
        let (Some(first), Some(last), Some(primary), Some(mut replicas)) = (
            fields.first().and_then(number),
            fields.get(1).and_then(number),
            fields.get(2).and_then(node_port),
            replicas,
        ) else {
            return Err(malformed());
        };
        replicas.sort_unstable();
        ranges.push((first, last, primary, replicas));
    }
    ranges.sort_unstable();
    Ok(ranges)
}

impl Drop for RedisCluster {
    /// Closes every watchdog's pipe (so all servers are SIGKILLed at once), reaps the
    /// watchdogs, and removes the directory.
    fn drop(&mut self) {
        let watchdogs: Vec<Child> = self
            .nodes
            .iter_mut()
            .filter_map(|node| node.watchdog.take())
            .map(|mut watchdog| {
                drop(watchdog.stdin.take());
                watchdog
            })
            .collect();
        for mut watchdog in watchdogs {
            let _ = watchdog.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Node {
    /// Starts `redis-server` on `port` under a watchdog, in `<cluster_dir>/<port>/`.
    fn spawn(cluster_dir: &Path, port: u16) -> io::Result<Node> {
        let dir = cluster_dir.join(port.to_string());
        std::fs::create_dir(&dir)?;
        let port_text = port.to_string();
        let watchdog = Command::new("sh")
            .args(["-c", WATCHDOG, "sh", "redis-server"])
            .args(["--port", &port_text, "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file"])
            .arg(dir.join("nodes.conf"))
            .args(["--cluster-node-timeout", "1000"])
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .env("NODE_DIR", &dir)
            .env("CLUSTER_DIR", cluster_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Node {
            port,
            watchdog: Some(watchdog),
        })
    }

    /// SIGKILLs the server (through its watchdog) and waits until it is reaped.
    fn kill(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}

/// Whether `redis-server` and `redis-cli` run, and the server is Redis 7 or later (sharded
/// pub/sub); or why not.
fn redis_7_runs() -> Result<(), String> {
    let version = |program: &str| {
        let output = Command::new(program)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("cannot run {program} ({error})"))?;
        Ok::<_, String>(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    version("redis-cli")?;
    let server = version("redis-server")?;
    let major = server
        .split_whitespace()
        .find_map(|word| word.strip_prefix("v="))
        .and_then(|version| version.split('.').next()?.parse::<u32>().ok());
    match major {
        Some(major) if major >= 7 => Ok(()),
        _ => Err(format!(
            "redis-server is not Redis 7 or later ({})",
            server.trim()
        )),
    }
}

/// Six loopback ports below [`PORT_LIMIT`], each with `port + 10000` free as well.
fn free_ports() -> io::Result<Vec<u16>> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..1000 {
        if ports.len() == NODES {
            return Ok(ports);
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        if port >= PORT_LIMIT {
            continue;
        }
        if let Ok(bus) = TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10000)) {
            ports.push(port);
            held.extend([listener, bus]);
        }
    }
    Err(io::Error::other(format!(
        "found {} of {NODES} ports below {PORT_LIMIT} with their bus port free",
        ports.len()
    )))
}

/// A new, empty directory of this cluster's own under the system's temporary directory.
fn fresh_dir() -> io::Result<PathBuf> {
    static CLUSTERS: AtomicUsize = AtomicUsize::new(0);
    loop {
        let n = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fanout-redis-cluster-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            created => return created.map(|()| dir),
        }
    }
}

fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// The shards of a newly created cluster: each primary, by first slot, with its replicas.
fn shards_of(table: &[NodeEntry]) -> Result<Vec<Vec<String>>, String> {
    let mut primaries: Vec<&NodeEntry> = table.iter().filter(|entry| entry.primary).collect();
    primaries.sort_by_key(|primary| primary.slots.first().map(|range| *range.start()));
    let shards: Vec<Vec<String>> = primaries
        .iter()
        .map(|primary| {
            let replicas = table
                .iter()
                .filter(|entry| entry.replica_of.as_ref() == Some(&primary.id));
            std::iter::once(*primary)
                .chain(replicas)
                .map(|entry| entry.id.clone())
                .collect()
        })
        .collect();
    if shards.len() != SHARDS || shards.iter().any(|members| members.len() != 2) {
        return Err(format!(
            "redis-cli made shards of {:?} nodes, not {SHARDS} of a primary and a replica",
            shards.iter().map(Vec::len).collect::<Vec<_>>()
        ));
    }
    Ok(shards)
}

/// Whether node `id` is a primary serving every slot of `slots`.
fn serves(table: &[NodeEntry], id: &str, slots: &[RangeInclusive<u16>]) -> Result<(), String> {
    let entry = table.iter().find(|entry| entry.id == id).ok_or("unknown node")?;
    let serves = |slot: u16| entry.slots.iter().any(|range| range.contains(&slot));
    let missing = slots
        .iter()
        .flat_map(|range| range.clone())
        .find(|&slot| !serves(slot));
    match (entry.primary, missing) {
        (true, None) => Ok(()),
        (false, _) => Err(format!("{} is not yet a primary", entry.port)),
        (true, Some(slot)) => Err(format!("{} does not yet serve slot {slot}", entry.port)),
    }
}

/// Whether node `id` is a replica of `primary`.
fn replicates(table: &[NodeEntry], id: &str, primary: &str) -> Result<(), String> {
    match table.iter().find(|entry| entry.id == id) {
        Some(entry) if entry.replica_of.as_deref() == Some(primary) => Ok(()),
        Some(entry) => Err(format!("{} does not yet replicate {primary}", entry.port)),
        None => Err(format!("unknown node {id}")),
    }
}

/// `CLUSTER NODES` output as entries sorted by id, and whether the observer has a slot open
/// for migration (`[slot->-id]` or `[slot-<-id]`).
fn parse_cluster_nodes(text: &str) -> Result<(Vec<NodeEntry>, bool), String> {
    let mut entries = Vec::new();
    let mut open = false;
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let malformed = || format!("malformed CLUSTER NODES line {line:?}");
        if fields.len() < 8 {
            return Err(malformed());
        }
        let address = fields[1].split([',', '@']).next().ok_or_else(malformed)?;
        let port = address.rsplit(':').next().and_then(|port| port.parse().ok());
        let flags: Vec<&str> = fields[2].split(',').collect();
        let mut slots = Vec::new();
        for slot in &fields[8..] {
            if slot.starts_with('[') {
                open = true;
                continue;
            }
            let (start, end) = slot.split_once('-').unwrap_or((slot, slot));
            match (start.parse(), end.parse()) {
                (Ok(start), Ok(end)) => slots.push(start..=end),
                _ => return Err(malformed()),
            }
        }
        slots.sort_by_key(|range| *range.start());
        entries.push(NodeEntry {
            id: fields[0].to_string(),
            port: port.ok_or_else(malformed)?,
            primary: flags.contains(&"master"),
            replica_of: (fields[3] != "-").then(|| fields[3].to_string()),
            failed: flags.contains(&"fail"),
            handshake: flags.contains(&"handshake"),
            slots,
        });
    }
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    Ok((entries, open))
}

/// The value of `name` in `INFO`-style `name:value` lines.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// CRC16 with polynomial 0x1021 and initial value 0 (XMODEM), as Redis Cluster hashes keys.
fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

// ----- a minimal RESP2 client -----

/// A RESP2 reply, or a message pushed to a subscribed connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `-MOVED 42 127.0.0.1:7000`
    Error(String),
    /// `:1`
    Integer(i64),
    /// `$5\r\nhello`
    Bulk(Vec<u8>),
    /// `*2\r\n…`
    Array(Vec<Reply>),
    /// A null bulk string or array.
    Nil,
}

impl Reply {
    /// A bulk string holding `bytes`.
    pub fn bulk(bytes: impl AsRef<[u8]>) -> Reply {
        Reply::Bulk(bytes.as_ref().to_vec())
    }

    /// A status or bulk string as text (lossy); `None` for anything else.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Status(text) => Some(text.clone()),
            Reply::Bulk(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }
}

/// Runs one command on a fresh connection to the node on `port`; an error if the node does not
/// answer within 2 s.
pub async fn command<A: AsRef<[u8]>>(port: u16, args: impl IntoIterator<Item = A>) -> io::Result<Reply> {
    let request = encode(args);
    let exchange = async {
        let mut connection = RespConnection::connect(port).await?;
        connection.stream.write_all(&request).await?;
        connection.reply().await
    };
    tokio::time::timeout(COMMAND, exchange)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no reply within 2 s")))
}

/// A command's reply as text, or why there is none.
async fn text_reply(port: u16, args: &[&str]) -> Result<String, String> {
    match command(port, args).await {
        Ok(reply) => reply
            .text()
            .ok_or_else(|| format!("{args:?} on {port} answered {reply:?}")),
        Err(error) => Err(format!("{args:?} on {port}: {error}")),
    }
}

/// One RESP2 connection to a node, for commands and for subscriptions (whose pushed messages
/// [`reply`](Self::reply) returns one at a time).
pub struct RespConnection {
    stream: TcpStream,
    /// Bytes read but not yet parsed into a reply.
    received: Vec<u8>,
}

impl RespConnection {
    /// Connects to the node on `127.0.0.1:port`.
    pub async fn connect(port: u16) -> io::Result<RespConnection> {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        stream.set_nodelay(true)?;
        Ok(RespConnection {
            stream,
            received: Vec::new(),
        })
    }

    /// Sends one command without waiting for its reply.
    pub async fn send<A: AsRef<[u8]>>(&mut self, args: impl IntoIterator<Item = A>) -> io::Result<()> {
        self.stream.write_all(&encode(args)).await
    }

    /// Sends one command and returns the next reply.
    pub async fn command<A: AsRef<[u8]>>(&mut self, args: impl IntoIterator<Item = A>) -> io::Result<Reply> {
        self.send(args).await?;
        self.reply().await
    }

    /// The next reply or pushed message; `UnexpectedEof` once the server has closed the
    /// connection.
    pub async fn reply(&mut self) -> io::Result<Reply> {
        loop {
            if let Some((reply, used)) = parse(&self.received)? {
                self.received.drain(..used);
                return Ok(reply);
            }
            let mut chunk = [0u8; 4096];
            let read = self.stream.read(&mut chunk).await?;
            if read == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.received.extend_from_slice(&chunk[..read]);
        }
    }
}

/// A command as a RESP array of bulk strings.
fn encode<A: AsRef<[u8]>>(args: impl IntoIterator<Item = A>) -> Vec<u8> {
    let args: Vec<A> = args.into_iter().collect();
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in &args {
        let arg = arg.as_ref();
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    request
}

/// The first RESP2 value in `bytes` and how many bytes it took, or `None` if it is incomplete.
fn parse(bytes: &[u8]) -> io::Result<Option<(Reply, usize)>> {
    let Some(line_end) = bytes.windows(2).position(|pair| pair == b"\r\n") else {
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&bytes[1..line_end]).into_owned();
    let mut used = line_end + 2;
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, format!("not RESP2: {line:?}"));
    let length = || line.parse::<i64>().map_err(|_| invalid());
    let reply = match bytes[0] {
        b'+' => Reply::Status(line.clone()),
        b'-' => Reply::Error(line.clone()),
        b':' => Reply::Integer(length()?),
        b'$' => match usize::try_from(length()?) {
            Err(_) => Reply::Nil,
            Ok(len) if bytes.len() < used + len + 2 => return Ok(None),
            Ok(len) => {
                let bulk = bytes[used..used + len].to_vec();
                used += len + 2;
                Reply::Bulk(bulk)
            }
        },
        b'*' => match usize::try_from(length()?) {
            Err(_) => Reply::Nil,
            Ok(count) => {
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    let Some((item, item_len)) = parse(&bytes[used..])? else {
                        return Ok(None);
                    };
                    items.push(item);
                    used += item_len;
                }
                Reply::Array(items)
            }
        },
        _ => return Err(invalid()),
    };
    Ok(Some((reply, used)))
}
