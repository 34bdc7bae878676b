//! The reaper waits for a disconnected session's handler call (G2) without spinning a worker:
//! while a handler is stalled in its synchronous part, the process stays near idle. Its own
//! test binary, so no other test's CPU is counted.

use std::time::Duration;

use fanout::PubSubProvider;

mod support;

use support::{wait_until, StalledSession};

/// This process's CPU time (user and system) in clock ticks, from `/proc/self/stat`; `None`
/// where there is no such file.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces): utime and
    // stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaper_waits_for_a_stalled_handler_without_spinning() {
    let Some(_) = cpu_ticks() else {
        println!("skipped: no /proc/self/stat to read this process's CPU time from");
        return;
    };
    let stalled = StalledSession::start().await;
    // Disconnect it: the reaper now waits for the call begun above, which stays stalled.
    stalled.disconnect().await;

    std::thread::sleep(Duration::from_millis(100));
    let before = cpu_ticks().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let used = cpu_ticks().unwrap() - before;
    stalled.release.send(()).unwrap();
    let pubsub = &stalled.pubsub;
    wait_until("the session to be retired", || {
        pubsub.engine().session_count() == 0
    })
    .await;
    pubsub.stop().await.unwrap();
    // Linux counts 100 ticks a second: a worker spinning through those 500 ms would use about
    // 50; a reaper waiting by pauses uses about none.
    assert!(
        used < 20,
        "the process used {used} ticks of CPU in 500 ms while the reaper waited"
    );
}
