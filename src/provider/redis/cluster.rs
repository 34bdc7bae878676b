//! Redis Cluster: which primary owns each slot, and the provider's connections to all of them.
//!
//! Against a cluster the provider uses sharded pub/sub: a topic's channel is published with
//! `SPUBLISH` to, and subscribed with `SSUBSCRIBE` on, the primary that owns the channel's
//! [slot](super::slot), so a message travels only within that shard. Each side keeps one
//! connection per primary, opened with the slot map ([`Topology`], from `CLUSTER SLOTS`).
//!
//! # When the map changes
//!
//! - **Publishing.** A primary that no longer owns a slot answers `-MOVED`. The publisher then
//!   reads the map again, opens connections to primaries it did not know, and sends the moved
//!   envelopes again, in their order, to the new owners (Redis did not take them, so nothing is
//!   duplicated); one still refused then is counted lost.
//! - **Subscribing.** When a channel's slot moves (a migration, or a failover that demotes the
//!   primary) the server ends the subscription with a `sunsubscribe` push nobody asked for. The
//!   subscription then ends as a whole, and the bridge reconnects it at once, reading the map
//!   again and subscribing every channel on its current owner. A `-MOVED` answer to a
//!   `SSUBSCRIBE` does the same. Messages published in between are lost (pub/sub is
//!   at-most-once).
//! - **A primary that fails.** Its connections close; the publisher and the subscription are
//!   reconnected as after any outage, and reach the promoted replica once the cluster has
//!   agreed on it (`CLUSTER SLOTS` still names the failed primary until then, so the
//!   attempts fail and back off).
//!
//! # Order
//!
//! Topics on different shards travel over different connections, so one publisher's messages
//! keep their order per topic (and among topics of one shard), not across shards.

use std::collections::HashMap;

use super::connection::Endpoint;
use super::slot::{slot, SLOTS};
use super::wire::Value;
use crate::provider::bridge::broker::Reason;

/// Which primary owns each slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Topology {
    /// The primaries, as `(host, port)`.
    primaries: Vec<(String, u16)>,
    /// Every node `CLUSTER SLOTS` named, replicas included: where to ask for the map next.
    nodes: Vec<(String, u16)>,
    /// For each slot, its primary's index in `primaries`, or `u16::MAX` if none owns it.
    owners: Vec<u16>,
}

/// A slot nobody owns.
const UNOWNED: u16 = u16::MAX;

impl Topology {
    /// The map in a `CLUSTER SLOTS` reply. A node whose host is empty is on `asked_host`, the
    /// host the reply came from.
    pub(crate) fn parse(reply: &Value, asked_host: &str) -> Result<Topology, Reason> {
        let bad = |why: &str| format!("an unreadable CLUSTER SLOTS reply: {why}");
        let ranges = reply.as_array().ok_or_else(|| bad("not an array"))?;
        let mut topology = Topology {
            primaries: Vec::new(),
            nodes: Vec::new(),
            owners: vec![UNOWNED; usize::from(SLOTS)],
        };
        let mut index: HashMap<(String, u16), u16> = HashMap::new();
        for range in ranges {
            let fields = range.as_array().ok_or_else(|| bad("a range is not an array"))?;
            let [start, end, primary, replicas @ ..] = fields else {
                return Err(bad("a range has fewer than three fields"));
            };
            let (Value::Integer(start), Value::Integer(end)) = (start, end) else {
                return Err(bad("a range's bounds are not integers"));
            };
            let (start, end) = (slot_number(*start), slot_number(*end));
            let (Some(start), Some(end)) = (start, end) else {
                return Err(bad("a slot out of range"));
            };
            if start > end {
                return Err(bad("a range that ends before it starts"));
            }
            let primary = match node(primary, asked_host) {
                Node::At(primary) => primary,
                // Its address is not known yet: the range stays unowned for now.
                Node::Unknown => continue,
                Node::Unreadable => return Err(bad("a node without host and port")),
            };
            let next = u16::try_from(topology.primaries.len()).map_err(|_| bad("too many primaries"))?;
            let owner = *index.entry(primary.clone()).or_insert_with(|| {
                topology.primaries.push(primary.clone());
                next
            });
            topology.owners[usize::from(start)..=usize::from(end)].fill(owner);
            let replicas = replicas
                .iter()
                .filter_map(|replica| match node(replica, asked_host) {
                    Node::At(replica) => Some(replica),
                    Node::Unknown | Node::Unreadable => None,
                });
            let members = std::iter::once(primary).chain(replicas);
            for member in members {
                if !topology.nodes.contains(&member) {
                    topology.nodes.push(member);
                }
            }
        }
        if topology.primaries.is_empty() {
            return Err(bad("no slot is served"));
        }
        Ok(topology)
    }

    /// The primaries, by index.
    #[cfg(test)]
    pub(crate) fn primaries(&self) -> &[(String, u16)] {
        &self.primaries
    }

    /// Every node the map names.
    pub(crate) fn nodes(&self) -> &[(String, u16)] {
        &self.nodes
    }

    /// The index of the primary that owns `channel`'s slot, or why none does.
    pub(crate) fn owner(&self, channel: &[u8]) -> Result<usize, Reason> {
        let slot = slot(channel);
        match self.owners[usize::from(slot)] {
            UNOWNED => Err(format!("slot {slot} has no primary in the cluster's map")),
            owner => Ok(usize::from(owner)),
        }
    }

    /// The endpoints of the primaries, with `seed`'s credentials.
    pub(crate) fn endpoints(&self, seed: &Endpoint) -> Vec<Endpoint> {
        self.primaries
            .iter()
            .map(|(host, port)| seed.at(host.clone(), *port))
            .collect()
    }
}

fn slot_number(n: i64) -> Option<u16> {
    u16::try_from(n).ok().filter(|&slot| slot < SLOTS)
}

/// A node as `CLUSTER SLOTS` names it.
enum Node {
    At((String, u16)),
    /// `?`: a node whose address is not known yet.
    Unknown,
    Unreadable,
}

/// `[host, port, …]` of a node in `CLUSTER SLOTS`. An empty or null host is the one asked
/// (`cluster-preferred-endpoint-type unknown-endpoint` sends null).
fn node(value: &Value, asked_host: &str) -> Node {
    let Some([host, Value::Integer(port), ..]) = value.as_array() else {
        return Node::Unreadable;
    };
    let Some(port) = u16::try_from(*port).ok().filter(|&port| port != 0) else {
        return Node::Unreadable;
    };
    let host = match host {
        Value::Bulk(None) => "",
        other => match other.as_bytes().map(std::str::from_utf8) {
            Some(Ok(host)) => host,
            _ => return Node::Unreadable,
        },
    };
    match host {
        "?" => Node::Unknown,
        "" => Node::At((asked_host.to_string(), port)),
        host => Node::At((host.to_string(), port)),
    }
}

/// Whether an error reply says the cluster cannot serve the command for now (down, a
/// migration under way, a node loading): worth trying again, not a refusal.
pub(crate) fn transient(error: &str) -> bool {
    ["CLUSTERDOWN", "TRYAGAIN", "LOADING"]
        .iter()
        .any(|kind| error.starts_with(kind))
}

/// Whether an error reply says the slot is served elsewhere (`MOVED`, or `ASK` during a
/// migration).
pub(crate) fn moved(error: &str) -> bool {
    error.starts_with("MOVED ") || error.starts_with("ASK ")
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn bulk(text: &str) -> Value {
        Value::Bulk(Some(Bytes::copy_from_slice(text.as_bytes())))
    }

    fn member(host: &str, port: i64) -> Value {
        Value::Array(Some(vec![bulk(host), Value::Integer(port), bulk("id")]))
    }

    fn range(start: i64, end: i64, nodes: Vec<Value>) -> Value {
        let mut fields = vec![Value::Integer(start), Value::Integer(end)];
        fields.extend(nodes);
        Value::Array(Some(fields))
    }

    #[test]
    fn the_map_names_each_slots_primary() {
        let reply = Value::Array(Some(vec![
            range(0, 5460, vec![member("10.0.0.1", 7000), member("10.0.0.2", 7003)]),
            range(5461, 10922, vec![member("", 7001)]),
            range(10923, 16383, vec![member("10.0.0.1", 7000)]),
        ]));
        let topology = Topology::parse(&reply, "seed").unwrap();
        assert_eq!(
            topology.primaries(),
            &[("10.0.0.1".to_string(), 7000), ("seed".to_string(), 7001)]
        );
        assert_eq!(topology.nodes().len(), 3);
        for n in 0..1000 {
            let channel = format!("fanout:room:{n}");
            let expected = if (5461..=10922).contains(&slot(channel.as_bytes())) {
                1
            } else {
                0
            };
            assert_eq!(topology.owner(channel.as_bytes()), Ok(expected), "{channel}");
        }
    }

    #[test]
    fn damaged_maps_are_errors() {
        for reply in [
            Value::Integer(1),
            Value::Array(Some(vec![])),
            Value::Array(Some(vec![range(0, 16384, vec![member("h", 1)])])),
            Value::Array(Some(vec![range(5, 4, vec![member("h", 1)])])),
            Value::Array(Some(vec![range(0, 1, vec![member("h", 0)])])),
            Value::Array(Some(vec![Value::Array(Some(vec![Value::Integer(0)]))])),
        ] {
            assert!(Topology::parse(&reply, "seed").is_err(), "{reply:?}");
        }
    }

    #[test]
    fn a_null_host_is_the_one_asked_and_an_unknown_one_leaves_its_range_unowned() {
        let null_host = Value::Array(Some(vec![Value::Bulk(None), Value::Integer(7001), bulk("id")]));
        let reply = Value::Array(Some(vec![
            range(0, 8191, vec![null_host]),
            range(8192, 16383, vec![member("?", 7002)]),
        ]));
        let topology = Topology::parse(&reply, "seed").unwrap();
        assert_eq!(topology.primaries(), &[("seed".to_string(), 7001)]);
        for n in 0..100 {
            let channel = format!("c{n}");
            let owned = slot(channel.as_bytes()) < 8192;
            assert_eq!(topology.owner(channel.as_bytes()).is_ok(), owned, "{channel}");
        }
    }

    #[test]
    fn an_uncovered_slot_has_no_owner() {
        let reply = Value::Array(Some(vec![range(0, 100, vec![member("h", 1)])]));
        let topology = Topology::parse(&reply, "seed").unwrap();
        assert!(topology.owner(b"foo").is_err());
    }
}
