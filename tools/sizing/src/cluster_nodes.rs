//! The nodes of a Redis Cluster, from the reply to `CLUSTER NODES`.
//!
//! Each line of the reply is one node: `<id> <ip:port@cport[,hostname]> <flags> <primary>
//! <ping-sent> <pong-recv> <config-epoch> <link-state> <slot>...`. A node whose address its
//! peers do not know yet prints an empty ip (`:7101@17101`) or port 0; IPv6 addresses print
//! without brackets, so the port is what follows the last colon.

use std::net::{IpAddr, SocketAddr};

/// The client address of every node of a `CLUSTER NODES` reply, in its order, primaries and
/// replicas alike; a node with an empty ip is taken to be on `host`, the node that answered,
/// and a node with no port is left out.
pub fn node_addresses(reply: &str, host: IpAddr) -> Vec<SocketAddr> {
    reply
        .lines()
        .filter_map(|line| {
            let address = line.split_whitespace().nth(1)?;
            let client = address.split(['@', ',']).next()?;
            let (ip, port) = client.rsplit_once(':')?;
            let port: u16 = port.parse().ok().filter(|port| *port != 0)?;
            let ip = match ip.trim_start_matches('[').trim_end_matches(']') {
                "" => host,
                ip => ip.parse().ok()?,
            };
            Some(SocketAddr::new(ip, port))
        })
        .collect()
}
