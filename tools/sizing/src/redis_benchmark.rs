//! Running `redis-benchmark` against the server the scenario uses, for the baseline rate.

use std::process::Command;

use crate::report::Benchmark;

/// Runs `redis-benchmark -u <url> -P 16 -n <requests> -q publish <channel> <message>`:
/// pipelined `PUBLISH` of a `message_bytes` message to a channel nobody subscribes to.
///
/// (`redis-benchmark -t publish` is not a test redis-benchmark 7 knows: it prints nothing. The
/// explicit command is the same `PUBLISH`, with a message of the size of ours.)
pub fn run(url: &str, channel: &str, message_bytes: usize, requests: u64) -> Result<Benchmark, String> {
    let message = "x".repeat(message_bytes);
    let requests = requests.to_string();
    let args = [
        "-u", url, "-P", "16", "-n", &requests, "-q", "publish", channel, &message,
    ];
    let output = Command::new("redis-benchmark")
        .args(args)
        .output()
        .map_err(|error| format!("redis-benchmark could not run: {error}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    // `-q` prints progress lines separated by carriage returns, then the result.
    let last = text.rsplit('\r').next().unwrap_or("").trim();
    let rate = last
        .split(" requests per second")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .filter(|_| output.status.success() && last.contains("requests per second"))
        .ok_or_else(|| {
            format!(
                "redis-benchmark gave no rate (status {}): {last}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })?;
    let shown_url = redacted(url);
    Ok(Benchmark {
        command: format!(
            "redis-benchmark -u {shown_url} -P 16 -n {requests} -q publish {channel} <{message_bytes}-byte message>"
        ),
        requests_per_second: rate,
    })
}

/// The URL without its password, for the report.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_string(),
    }
}
