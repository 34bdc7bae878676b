//! The Redis Cluster harness (`support::redis_cluster`) against real `redis-server` processes:
//! the cluster it starts, `slot_of` against the server's own `CLUSTER KEYSLOT`, each fault
//! helper checked against `CLUSTER SLOTS`, `CLUSTER NODES` and `ROLE` on every node, and that
//! nothing is left once the harness is dropped, a panicking test included. Where a fault moves a
//! channel's slot, the tests also check what sharded pub/sub clients see: the `sunsubscribe` the
//! old node pushes, and `SSUBSCRIBE`/`SPUBLISH` on the new one.
//!
//! Each test starts a cluster of its own (about 2 s; two run at a time). Skips with a printed
//! reason when `redis-server` or `redis-cli` cannot be run, fails instead under
//! `FANOUT_REQUIRE_SERVICES=1`.

#![cfg(unix)]

mod support;

use std::io;

use support::redis_cluster::{command, Primary, RedisCluster, Replica, Reply, RespConnection, SLOTS};
use support::{Rng, WAIT};

#[tokio::test]
async fn starts_three_primaries_covering_every_slot_each_with_a_replica() {
    let Some(cluster) = RedisCluster::start().await else {
        return;
    };
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    let mut owners = vec![None; usize::from(SLOTS)];
    for primary in &primaries {
        for slot in primary.slots.iter().flat_map(|range| range.clone()) {
            let earlier = owners[usize::from(slot)].replace(primary.index);
            assert_eq!(earlier, None, "slot {slot} has two primaries");
        }
    }
    assert!(owners.iter().all(Option::is_some), "some slot has no primary");
    for (position, primary) in primaries.iter().enumerate() {
        assert_eq!(primary.index, position);
        assert_eq!(primary.id.len(), 40, "{primary:?}");
        assert_eq!(role(primary.port).await, "master");
    }
    assert_eq!(
        *primaries[0].slots[0].start(),
        0,
        "primaries are ordered by first slot"
    );

    let replicas = cluster.replicas();
    let replicated: Vec<usize> = replicas.iter().map(|replica| replica.primary_index).collect();
    assert_eq!(replicated, [0, 1, 2]);
    for replica in &replicas {
        assert_eq!(role(replica.port).await, "slave");
        let primary = &primaries[replica.primary_index];
        let line = node_line(replica.port, &replica.id).await;
        assert_eq!(line[3], primary.id, "{replica:?} replicates {line:?}");
    }

    let url = |port: u16| format!("redis://127.0.0.1:{port}");
    let primary_urls: Vec<String> = primaries.iter().map(|primary| url(primary.port)).collect();
    assert_eq!(cluster.primary_urls(), primary_urls);
    let replica_urls = replicas.iter().map(|replica| url(replica.port));
    let urls: Vec<String> = primary_urls.iter().cloned().chain(replica_urls).collect();
    assert_eq!(cluster.urls(), urls);
    assert!(cluster.dir().is_dir());

    assert_every_node_agrees(&cluster).await;
}

#[tokio::test]
async fn slot_of_agrees_with_cluster_keyslot() {
    let Some(cluster) = RedisCluster::start().await else {
        return;
    };
    let rooms: Vec<Vec<u8>> = (0..100)
        .map(|room| format!("fanout:room:{room}").into_bytes())
        .collect();
    let fixed: &[&[u8]] = &[
        b"",
        b"{",
        b"}",
        b"{}",
        b"}{",
        b"{}{}",
        b"{{}}",
        b"{a}",
        b"{a}{b}",
        b"a{b}c",
        b"a{}b{c}",
        b"{}{c}",
        b"foo{}{bar}",
        b"foo{{bar}}zap",
        b"foo{bar}{zap}",
        b"{user1000}.following",
        b"{user1000}.followers",
        b"fanout:{room}:1",
        b"fanout:{room}:2",
        b"123456789",
        b"{ }",
        b"\0{\0}",
        b"\xff\xfe{\x80}",
        "é".as_bytes(),
        "频道:{房间}".as_bytes(),
        "🎉{🎉}🎊".as_bytes(),
        "salle:{é}:{è}".as_bytes(),
    ];
    let mut rng = Rng(0x5eed_c1a5);
    let alphabet = b"ab:{}\0\xff\xc3\xa9";
    let random = (0..200).map(|_| {
        let len = rng.below(12);
        (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect::<Vec<u8>>()
    });
    let names: Vec<Vec<u8>> = rooms
        .iter()
        .cloned()
        .chain(fixed.iter().map(|name| name.to_vec()))
        .chain(random)
        .collect();

    let port = cluster.primaries()[0].port;
    let mut connection = RespConnection::connect(port).await.unwrap();
    for name in &names {
        let reply = connection
            .command([b"CLUSTER".as_slice(), b"KEYSLOT".as_slice(), name.as_slice()])
            .await
            .unwrap();
        let slot = RedisCluster::slot_of(name);
        assert_eq!(
            reply,
            Reply::Integer(slot.into()),
            "slot of {:?}",
            String::from_utf8_lossy(name)
        );
    }

    let mut per_primary = [0; 3];
    for room in &rooms {
        per_primary[cluster.primary_for_slot(RedisCluster::slot_of(room)).index] += 1;
    }
    assert!(
        per_primary.iter().all(|&count| count > 0),
        "fanout:room:0..99 over the primaries: {per_primary:?}"
    );
}

/// The replica takes over the slots; the old primary becomes its replica. A subscriber on the
/// old primary is told its channel is gone; one on the promoted replica keeps receiving.
#[tokio::test]
async fn failover_swaps_a_primary_and_its_replica() {
    let Some(mut cluster) = RedisCluster::start().await else {
        return;
    };
    let mut shard = Takeover::watch(&cluster, 1).await;
    let before = shard.before.clone();

    cluster.failover(1).await;

    let after = shard.assert_replica_promoted(&cluster).await;
    assert_eq!(role(before.port).await, "slave");
    assert_eq!(replica_of(&cluster, 1).port, before.port);
    assert_eq!(cluster.replicas().len(), 3);
    assert_eq!(node_line(before.port, &before.id).await[3], after.id);
    assert_every_node_agrees(&cluster).await;

    assert_eq!(
        next(&mut shard.on_primary).await.unwrap(),
        push("sunsubscribe", &shard.channel, Reply::Integer(0))
    );
    shard.assert_replica_receives(&after).await;
}

/// The killed primary's port stops answering and every survivor flags it `fail`; its replica
/// serves its slots, and a subscriber on that replica keeps receiving.
#[tokio::test]
async fn kill_primary_promotes_its_replica() {
    let Some(mut cluster) = RedisCluster::start().await else {
        return;
    };
    let mut shard = Takeover::watch(&cluster, 2).await;
    let before = shard.before.clone();

    cluster.kill_primary(2).await;

    let after = shard.assert_replica_promoted(&cluster).await;
    let replicated: Vec<usize> = cluster
        .replicas()
        .iter()
        .map(|replica| replica.primary_index)
        .collect();
    assert_eq!(replicated, [0, 1]);
    assert!(RespConnection::connect(before.port).await.is_err());
    assert!(!cluster
        .urls()
        .contains(&format!("redis://127.0.0.1:{}", before.port)));
    for port in live_ports(&cluster) {
        let flags = node_line(port, &before.id).await[2].clone();
        assert!(flags.split(',').any(|flag| flag == "fail"), "{port} sees {flags}");
    }
    assert_every_node_agrees(&cluster).await;

    let closed = next(&mut shard.on_primary).await.unwrap_err();
    assert!(
        matches!(
            closed.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
        ),
        "{closed:?}"
    );
    shard.assert_replica_receives(&after).await;
}

/// One slot, and only it, changes primary on every node. Subscribers to a channel of it on the
/// old primary and its replica are told the channel is gone; the old primary redirects
/// `SPUBLISH` to the new one, where `SSUBSCRIBE` and `SPUBLISH` work.
#[tokio::test]
async fn migrate_slot_moves_one_slot_to_another_primary() {
    let Some(mut cluster) = RedisCluster::start().await else {
        return;
    };
    let source = cluster.primaries()[0].clone();
    let channel = channel_on(&cluster, 0);
    let slot = RedisCluster::slot_of(channel.as_bytes());
    let mut on_source = ssubscribed(source.port, &channel).await;
    let mut on_source_replica = ssubscribed(replica_of(&cluster, 0).port, &channel).await;

    cluster.migrate_slot(slot, 2).await;

    let target = cluster.primaries()[2].clone();
    assert_eq!(cluster.primary_for_slot(slot), target);
    assert!(!serves(&cluster.primaries()[0], slot));
    for neighbour in [slot.checked_sub(1), slot.checked_add(1)].into_iter().flatten() {
        if serves(&source, neighbour) {
            assert_eq!(cluster.primary_for_slot(neighbour).index, 0);
        }
    }
    let served: usize = cluster
        .primaries()
        .iter()
        .flat_map(|primary| primary.slots.clone())
        .map(|range| range.len())
        .sum();
    assert_eq!(served, usize::from(SLOTS));
    assert_every_node_agrees(&cluster).await;

    let gone = push("sunsubscribe", &channel, Reply::Integer(0));
    assert_eq!(next(&mut on_source).await.unwrap(), gone);
    assert_eq!(next(&mut on_source_replica).await.unwrap(), gone);
    let redirected = command(source.port, ["SPUBLISH", channel.as_str(), "to the old owner"]).await;
    assert_eq!(
        redirected.unwrap(),
        Reply::Error(format!("MOVED {slot} 127.0.0.1:{}", target.port))
    );
    let mut on_target = ssubscribed(target.port, &channel).await;
    let published = command(target.port, ["SPUBLISH", channel.as_str(), "moved"]).await;
    assert_eq!(published.unwrap(), Reply::Integer(1));
    assert_eq!(
        next(&mut on_target).await.unwrap(),
        push("smessage", &channel, Reply::bulk("moved"))
    );
}

/// A test that panics while holding the cluster still leaves no node answering (on its port or
/// its cluster bus port) and no directory.
#[tokio::test]
async fn a_panicking_test_leaves_no_node_and_no_directory() {
    let (started, cluster) = tokio::sync::oneshot::channel();
    let test = tokio::spawn(async move {
        let Some(cluster) = RedisCluster::start().await else {
            return;
        };
        let ports: Vec<u16> = live_ports(&cluster);
        started.send((ports, cluster.dir().to_path_buf())).unwrap();
        panic!("a failing test");
    });
    let outcome = test.await;
    let Ok((ports, dir)) = cluster.await else {
        // Skipped; or, under FANOUT_REQUIRE_SERVICES=1, failed before the cluster was up.
        if let Err(failure) = outcome {
            std::panic::resume_unwind(failure.into_panic());
        }
        return;
    };
    assert!(outcome.unwrap_err().is_panic());
    assert_eq!(ports.len(), 6);
    for port in ports.iter().flat_map(|&port| [port, port + 10000]) {
        let connected = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        assert!(connected.is_err(), "port {port} still answers");
    }
    assert!(!dir.exists(), "{} is left", dir.display());
}

// ----- helpers -----

/// The ports of the live nodes.
/// A shard whose replica is about to take over: its primary and replica as they were, a
/// channel of its slots, and a subscriber to that channel on each.
struct Takeover {
    index: usize,
    before: Primary,
    replica: Replica,
    channel: String,
    on_primary: RespConnection,
    on_replica: RespConnection,
}

impl Takeover {
    async fn watch(cluster: &RedisCluster, index: usize) -> Takeover {
        let before = cluster.primaries()[index].clone();
        let replica = replica_of(cluster, index);
        let channel = channel_on(cluster, index);
        let on_primary = ssubscribed(before.port, &channel).await;
        let on_replica = ssubscribed(replica.port, &channel).await;
        Takeover {
            index,
            before,
            replica,
            channel,
            on_primary,
            on_replica,
        }
    }

    /// The shard's primary is now the replica, with the old primary's slots, and says so.
    async fn assert_replica_promoted(&self, cluster: &RedisCluster) -> Primary {
        let after = cluster.primaries()[self.index].clone();
        assert_eq!(
            (after.port, &after.id, &after.slots),
            (self.replica.port, &self.replica.id, &self.before.slots)
        );
        assert_eq!(role(after.port).await, "master");
        after
    }

    /// A message published on the new primary `after` reaches the subscriber on it.
    async fn assert_replica_receives(&mut self, after: &Primary) {
        let published = command(after.port, ["SPUBLISH", self.channel.as_str(), "after"]).await;
        assert_eq!(published.unwrap(), Reply::Integer(1));
        assert_eq!(
            next(&mut self.on_replica).await.unwrap(),
            push("smessage", &self.channel, Reply::bulk("after"))
        );
    }
}

fn live_ports(cluster: &RedisCluster) -> Vec<u16> {
    let primaries = cluster.primaries().into_iter().map(|primary| primary.port);
    primaries
        .chain(cluster.replicas().into_iter().map(|replica| replica.port))
        .collect()
}

fn replica_of(cluster: &RedisCluster, primary_index: usize) -> Replica {
    let mut replicas = cluster.replicas().into_iter();
    replicas
        .find(|replica| replica.primary_index == primary_index)
        .expect("a replica")
}

fn serves(primary: &Primary, slot: u16) -> bool {
    primary.slots.iter().any(|range| range.contains(&slot))
}

/// The first `fanout:room:<n>` that primary `index` serves.
fn channel_on(cluster: &RedisCluster, index: usize) -> String {
    let primary = &cluster.primaries()[index];
    (0..)
        .map(|room| format!("fanout:room:{room}"))
        .find(|channel| serves(primary, RedisCluster::slot_of(channel.as_bytes())))
        .unwrap()
}

/// A connection to `port` that has `SSUBSCRIBE`d `channel`.
async fn ssubscribed(port: u16, channel: &str) -> RespConnection {
    let mut connection = RespConnection::connect(port).await.unwrap();
    let reply = connection.command(["SSUBSCRIBE", channel]).await.unwrap();
    assert_eq!(
        reply,
        push("ssubscribe", channel, Reply::Integer(1)),
        "SSUBSCRIBE on {port}"
    );
    connection
}

/// A pushed message: `[kind, channel, last]`.
fn push(kind: &str, channel: &str, last: Reply) -> Reply {
    Reply::Array(vec![Reply::bulk(kind), Reply::bulk(channel), last])
}

/// The next reply or push on `connection`; fails the test after [`WAIT`].
async fn next(connection: &mut RespConnection) -> io::Result<Reply> {
    tokio::time::timeout(WAIT, connection.reply())
        .await
        .expect("a push within the wait")
}

/// What `ROLE` on `port` says the node is: `master` or `slave`.
async fn role(port: u16) -> String {
    match command(port, ["ROLE"]).await.unwrap() {
        Reply::Array(items) => items[0].text().unwrap(),
        other => panic!("ROLE on {port}: {other:?}"),
    }
}

/// The fields of node `id`'s line in `CLUSTER NODES` on `port`.
async fn node_line(port: u16, id: &str) -> Vec<String> {
    let nodes = command(port, ["CLUSTER", "NODES"]).await.unwrap().text().unwrap();
    let line = nodes.lines().find(|line| line.starts_with(id));
    let line = line.unwrap_or_else(|| panic!("{port} does not know {id}: {nodes}"));
    line.split_whitespace().map(str::to_string).collect()
}

/// Every live node reports `cluster_state:ok` and, in `CLUSTER SLOTS`, exactly the primaries
/// (with their replicas) and slot ranges the harness reports.
async fn assert_every_node_agrees(cluster: &RedisCluster) {
    let mut expected = Vec::new();
    for primary in cluster.primaries() {
        let replicas = cluster.replicas().into_iter();
        let replicas = replicas.filter(|replica| replica.primary_index == primary.index);
        let mut replicas: Vec<u16> = replicas.map(|replica| replica.port).collect();
        replicas.sort_unstable();
        for range in &primary.slots {
            expected.push((*range.start(), *range.end(), primary.port, replicas.clone()));
        }
    }
    expected.sort_unstable();
    for port in live_ports(cluster) {
        let info = command(port, ["CLUSTER", "INFO"]).await.unwrap().text().unwrap();
        assert!(info.contains("cluster_state:ok"), "{port}: {info}");
        assert_eq!(cluster_slots(port).await, expected, "CLUSTER SLOTS on {port}");
    }
}

/// `CLUSTER SLOTS` on `port`: (first slot, last slot, primary port, replica ports), sorted.
async fn cluster_slots(port: u16) -> Vec<(u16, u16, u16, Vec<u16>)> {
    let Reply::Array(ranges) = command(port, ["CLUSTER", "SLOTS"]).await.unwrap() else {
        panic!("CLUSTER SLOTS on {port} is not an array");
    };
    let integer = |reply: &Reply| match reply {
        Reply::Integer(value) => u16::try_from(*value).unwrap(),
        other => panic!("not an integer: {other:?}"),
    };
    let node_port = |reply: &Reply| match reply {
        Reply::Array(node) => integer(&node[1]),
        other => panic!("not a node: {other:?}"),
    };
    let mut slots: Vec<(u16, u16, u16, Vec<u16>)> = ranges
        .iter()
        .map(|range| {
            let Reply::Array(fields) = range else {
                panic!("not a slot range: {range:?}");
            };
            let mut replicas: Vec<u16> = fields[3..].iter().map(node_port).collect();
            replicas.sort_unstable();
            (
                integer(&fields[0]),
                integer(&fields[1]),
                node_port(&fields[2]),
                replicas,
            )
        })
        .collect();
    slots.sort_unstable();
    slots
}
