//! The JSON report of a finished `fanout-sizing --json` run.

use std::process::Output;

/// The report on standard output, once the run is known to have succeeded.
pub fn json_report(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "fanout-sizing failed: {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
