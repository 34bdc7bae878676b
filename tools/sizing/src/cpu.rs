//! CPU time used by a process (user + system), from `/proc/<pid>/stat`.

use std::time::Duration;

/// User plus system CPU time of this process so far; `None` where `/proc` is unavailable.
pub fn process_cpu_time() -> Option<Duration> {
    cpu_time("/proc/self/stat")
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

fn cpu_time(stat_path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks_per_second = 100; // USER_HZ: 100 on every Linux this runs on.
    Some(Duration::from_millis((utime + stime) * 1000 / ticks_per_second))
}
