//! Reaching the PostgreSQL the backend tests run against, or skipping them.

use std::sync::Arc;
use std::time::Duration;

use fanout::postgres::{PostgresConfig, PostgresPubSub};
use fanout::{Config, PubSubProvider};

/// The database URL tests use: `DATABASE_URL`, or the local default.
pub fn url() -> String {
    PostgresConfig::from_env().url
}

/// A plain client for administering the server in tests (`pg_terminate_backend`, raw
/// `NOTIFY`), or `None` after printing why the test is skipped. Panics instead when
/// `FANOUT_REQUIRE_SERVICES=1`.
pub async fn admin() -> Option<tokio_postgres::Client> {
    admin_at(&url()).await
}

/// As [`admin`], for the server at `url`.
pub async fn admin_at(url: &str) -> Option<tokio_postgres::Client> {
    let attempt = async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client.simple_query("SELECT 1").await?;
        Ok::<_, tokio_postgres::Error>(client)
    };
    super::reach("postgres", url, "set DATABASE_URL or start PostgreSQL", attempt).await
}

/// Settings for test instances: fast health checks and reconnects.
pub fn test_config(prefix: &str) -> PostgresConfig {
    PostgresConfig::new(url())
        .with_channel_prefix(prefix)
        .with_health_check_interval(Duration::from_millis(250))
        .with_reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
}

/// `n` started providers on one fresh prefix, or `None` (skipped) if PostgreSQL is
/// unreachable.
pub async fn cluster(test: &str, n: usize, config: Config) -> Option<Vec<Arc<PostgresPubSub>>> {
    admin().await?;
    let prefix = super::unique_prefix(test);
    let mut nodes = Vec::new();
    for _ in 0..n {
        let provider =
            PostgresPubSub::with_config(test_config(&prefix), config.clone()).expect("valid config");
        provider
            .start()
            .await
            .expect("start against a reachable postgres");
        nodes.push(Arc::new(provider));
    }
    Some(nodes)
}

/// A PostgreSQL server of a test's own, on a free loopback port, in a temporary directory:
/// for tests that stop and restart the server, which must not be the shared one other tests
/// use. `initdb` and `pg_ctl` run as the `postgres` user when the test runs as root. Dropping
/// it stops the server (immediate mode) and removes the directory, pass or fail.
pub struct PrivateServer {
    dir: std::path::PathBuf,
    pub port: u16,
}

impl PrivateServer {
    /// Creates and starts the server, or `None` after printing why (panics under
    /// `FANOUT_REQUIRE_SERVICES=1`).
    pub fn start(test: &str) -> Option<PrivateServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free loopback port");
        let dir = std::env::temp_dir().join(format!("fanout-pg-{test}-{}-{port}", std::process::id()));
        let server = PrivateServer { dir, port };
        match server.init().and_then(|()| server.pg_ctl("start")) {
            Ok(()) => Some(server),
            Err(reason) => super::skip(format_args!("cannot start a private postgres ({reason})")),
        }
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (clients see their connections drop).
    pub fn stop(&self) {
        self.pg_ctl("stop").expect("stop the private postgres");
    }

    /// Starts it again on the same port, waiting until it accepts connections.
    pub fn restart(&self) {
        self.pg_ctl("start").expect("start the private postgres");
    }

    fn init(&self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|error| format!("{}: {error}", self.dir.display()))?;
        chown_to_postgres(&self.dir)?;
        let data = self.dir.join("data");
        run(as_postgres("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "-D"])
            .arg(&data))
    }

    fn pg_ctl(&self, action: &str) -> Result<(), String> {
        let data = self.dir.join("data");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let mut command = as_postgres("pg_ctl");
        command
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "-t", "30"]);
        if action == "start" {
            command.args(["-o", &options, "-l"]).arg(self.dir.join("log"));
        }
        run(command.arg(action))
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self.pg_ctl("stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

fn as_postgres(program: &str) -> std::process::Command {
    if running_as_root() {
        let mut command = std::process::Command::new("runuser");
        command.args(["-u", "postgres", "--", program]);
        command
    } else {
        std::process::Command::new(program)
    }
}

fn chown_to_postgres(dir: &std::path::Path) -> Result<(), String> {
    if !running_as_root() {
        return Ok(());
    }
    run(std::process::Command::new("chown").arg("postgres").arg(dir))
}

fn run(command: &mut std::process::Command) -> Result<(), String> {
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|error| format!("{command:?}: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
