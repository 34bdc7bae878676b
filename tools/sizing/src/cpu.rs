//! CPU time used by a process (user + system), from `/proc/<pid>/stat`, and the processes of a
//! server on the local machine, found by name or by the port it listens on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// User plus system CPU time of this process so far; `None` where `/proc` is unavailable.
pub fn process_cpu_time() -> Option<Duration> {
    cpu_time("/proc/self/stat")
}

/// Seconds of CPU this process has used since `before` (a [`process_cpu_time`]), if both
/// readings could be taken.
pub fn process_cpu_seconds_since(before: Option<Duration>) -> Option<f64> {
    Some(process_cpu_time()?.saturating_sub(before?).as_secs_f64())
}

/// User plus system CPU time of process `pid` so far, if it is a process named `name` on this
/// machine; `None` otherwise (gone, another program, or no `/proc`).
pub fn cpu_time_of(pid: u32, name: &str) -> Option<Duration> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    if comm.trim_end() != name {
        return None;
    }
    cpu_time(&format!("/proc/{pid}/stat"))
}

/// The CPU time so far of each process on the local machine named `name`, with its id.
pub fn cpu_times_named(name: &str) -> Vec<(u32, Duration)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, cpu_time_of(pid, name)?)))
        .collect()
}

/// The name of process `pid` (its `comm`), if it runs.
pub fn process_name(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end().to_string())
}

/// The process listening on TCP at `server` (or at any address on its port) on the local
/// machine, with its descendants (PostgreSQL's backends); empty when none is found: the server
/// runs elsewhere, or `/proc` is unreadable.
pub fn server_processes(server: SocketAddr) -> Vec<u32> {
    let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| listening_inodes(&table, server))
        .collect();
    let Some(listener) = pids().find(|pid| holds_socket(*pid, &inodes)) else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = pids()
        .filter_map(|pid| {
            Some((
                pid,
                stat_fields(&format!("/proc/{pid}/stat"))?.get(1)?.parse().ok()?,
            ))
        })
        .collect();
    let mut tree = vec![listener];
    let mut next = 0;
    while next < tree.len() {
        let parent = tree[next];
        tree.extend(parents.iter().filter(|(_, p)| *p == parent).map(|(pid, _)| *pid));
        next += 1;
    }
    tree
}

/// The socket inodes of a `/proc/net/tcp` or `tcp6` table listening on `server`'s port, at its
/// address or at every address.
fn listening_inodes(table: &str, server: SocketAddr) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (address, port) = fields.get(1)?.split_once(':')?;
            let address = kernel_address(address)?;
            let matches = u16::from_str_radix(port, 16).ok()? == server.port()
                && *fields.get(3)? == LISTEN
                && (address.is_unspecified()
                    || address == server.ip()
                    || mapped(address) == Some(server.ip()));
            matches.then(|| fields.get(9)?.parse().ok())?
        })
        .collect()
}

/// An address as `/proc/net/tcp{,6}` prints it: 32-bit words in hex, each in host order.
fn kernel_address(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| {
        Some(
            u32::from_str_radix(hex.get(8 * i..8 * i + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[4 * i..4 * i + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// The IPv4 address an IPv4-mapped IPv6 address stands for.
fn mapped(address: IpAddr) -> Option<IpAddr> {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    }
}

fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
}

fn holds_socket(pid: u32, inodes: &[u64]) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .any(|link| {
            let link = link.to_string_lossy();
            link.strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|inode| inode.parse::<u64>().ok())
                .is_some_and(|inode| inodes.contains(&inode))
        })
}

/// CPU time of a server's processes on the local machine, by process id.
pub struct ServerCpu(Vec<(u32, Duration)>);

impl ServerCpu {
    /// Every process named `name` now (none where the server is elsewhere).
    pub fn named(name: &str) -> Self {
        ServerCpu(cpu_times_named(name))
    }

    /// The processes of [`server_processes`] of each of `servers` now (the nodes of a cluster,
    /// or one server), a process found twice counted once.
    pub fn listening(servers: &[SocketAddr]) -> Self {
        let mut pids: Vec<u32> = servers
            .iter()
            .flat_map(|server| server_processes(*server))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        ServerCpu(
            pids.into_iter()
                .filter_map(|pid| Some((pid, cpu_time(&format!("/proc/{pid}/stat"))?)))
                .collect(),
        )
    }

    /// Seconds of CPU the server's processes used from `self` to `later`, counting a process
    /// absent from `self` (a backend that started in between) from zero; `None` if there were
    /// no processes to read.
    pub fn seconds_until(&self, later: &ServerCpu) -> Option<f64> {
        if later.0.is_empty() {
            return None;
        }
        let used = later.0.iter().map(|(pid, after)| {
            let before = self
                .0
                .iter()
                .find(|(p, _)| p == pid)
                .map_or(Duration::ZERO, |(_, d)| *d);
            after.saturating_sub(before)
        });
        Some(used.sum::<Duration>().as_secs_f64())
    }
}

/// The fields of a `/proc/<pid>/stat` after the parenthesised command name: the state first.
fn stat_fields(stat_path: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    let after_name = stat.get(stat.rfind(')')? + 2..)?;
    Some(after_name.split_whitespace().map(str::to_string).collect())
}

fn cpu_time(stat_path: &str) -> Option<Duration> {
    // utime and stime are fields 14 and 15 of the whole line.
    let fields = stat_fields(stat_path)?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks_per_second = 100; // USER_HZ: 100 on every Linux this runs on.
    Some(Duration::from_millis((utime + stime) * 1000 / ticks_per_second))
}
