//! Reading a Redis Cluster's nodes from `CLUSTER NODES`, which `--instances` does to sum the
//! CPU of every node's process.

#[path = "../src/cluster_nodes.rs"]
mod cluster_nodes;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use cluster_nodes::node_addresses;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn every_primary_and_replica_in_reply_order() {
    let reply = "\
0bb65db62206800cd9dc757970a6568e23a443b8 127.0.0.1:7105@17105 slave c8c3c5a72d8bb5a0171ae4c5648912ad995dcfa6 0 1796670343650 3 connected
c8c3c5a72d8bb5a0171ae4c5648912ad995dcfa6 127.0.0.1:7103@17103 master - 0 1796670343549 3 connected 10923-16383
57a4f502363903873382e20ec5a7fc6713f914c9 127.0.0.1:7101@17101 myself,master - 0 1796670343000 1 connected 0-5460
";
    let ports: Vec<u16> = node_addresses(reply, LOCALHOST)
        .iter()
        .map(SocketAddr::port)
        .collect();
    assert_eq!(ports, [7105, 7103, 7101]);
}

#[test]
fn hostnames_and_ipv6_addresses() {
    let reply = "\
a 10.0.0.5:7101@17101,redis-a.example myself,master - 0 0 1 connected 0-8191
b 2001:db8::7:7102@17102 master - 0 0 2 connected 8192-16383
";
    assert_eq!(
        node_addresses(reply, LOCALHOST),
        [
            "10.0.0.5:7101".parse::<SocketAddr>().unwrap(),
            "[2001:db8::7]:7102".parse().unwrap(),
        ]
    );
}

#[test]
fn a_node_without_an_ip_is_on_the_answering_host_and_one_without_a_port_is_left_out() {
    let reply = "\
a :7101@17101 myself,master - 0 0 1 connected 0-16383
b :0@0 noaddr,master - 0 0 0 disconnected
";
    assert_eq!(
        node_addresses(reply, LOCALHOST),
        ["127.0.0.1:7101".parse::<SocketAddr>().unwrap()]
    );
}
