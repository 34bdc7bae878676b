//! A `redis-server` of a test's own on a loopback port, with no persistence, killed when
//! dropped (pass or fail), so stopping it or changing its limits touches no other test. Loaded
//! by path by the tests that need it, in this crate and in the sizing tool's.

use std::process::{Child, Command, Stdio};

pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one on `port`, with `args` after the defaults; the error says why it could not
    /// be run. It takes connections shortly after: callers wait for it to answer.
    pub fn start(port: u16, args: &[&str]) -> std::io::Result<PrivateRedis> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(args)
            .stdout(Stdio::null())
            .spawn()?;
        Ok(PrivateRedis {
            port,
            child: Some(child),
        })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (a later `start` on the same port brings one back).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
