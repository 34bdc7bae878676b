//! CPU time used by this process (user + system), from `/proc/self/stat`.

use std::time::Duration;

/// User plus system CPU time of the process so far; `None` where `/proc` is unavailable.
pub fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks_per_second = 100; // USER_HZ: 100 on every Linux this runs on.
    Some(Duration::from_millis((utime + stime) * 1000 / ticks_per_second))
}
