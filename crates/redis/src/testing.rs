//! Test support (feature `test-util`): a private `redis-server` per test.
//!
//! Each [`RedisServer`] has its own temporary directory (memory-backed, under `/dev/shm`, where
//! there is one: see [`RedisServer::start_with`]), a unix socket there and no TCP port;
//! it is started on demand, waited for until it answers `PING`, and killed (and its directory
//! removed) on drop. Nothing ever talks to a shared Redis, so tests can kill, pause and restart
//! their server. A missing `redis-server` fails the test with the command that installs it: it
//! never skips.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use keyrunner_redis::ClusterRepository;
//! use keyrunner_redis::testing::RedisServer;
//!
//! let server = RedisServer::start();
//! let repository: ClusterRepository<String, String, String> =
//!     ClusterRepository::builder(server.url()).connect().await.unwrap();
//! assert!(repository.state(&"fresh".to_owned()).await.unwrap().is_idle());
//! # });
//! ```

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How to install `redis-server` on Debian (for error messages).
pub const INSTALL_HINT: &str = "install it with `apt-get install -y --no-install-recommends redis-server` \
     (or set REDIS_SERVER to its path)";

/// Persistence of a private server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// No snapshots, no AOF: a restart starts empty.
    None,
    /// AOF with `appendfsync always`: a restart restores every acknowledged write.
    AppendAlways,
}

/// A private Redis: killed, and its directory removed, on drop.
#[derive(Debug)]
pub struct RedisServer {
    dir: PathBuf,
    socket: PathBuf,
    persistence: Persistence,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server without persistence and waits for `PING`.
    pub fn start() -> Self {
        Self::start_with(Persistence::None)
    }

    /// Starts a server with `persistence` and waits for `PING`.
    ///
    /// Its directory is memory-backed (`/dev/shm`) where there is one, so that
    /// `appendfsync always` waits for no disk the machine's other work is writing to: the AOF
    /// still outlives a killed server, which is what a restart test needs. To measure what an
    /// `fsync` to a real disk costs, use [`start_on_disk`](Self::start_on_disk).
    pub fn start_with(persistence: Persistence) -> Self {
        let shm = Path::new("/dev/shm");
        match Self::make_dir(shm) {
            Ok(dir) => Self::start_in(dir, persistence),
            Err(_) => Self::start_on_disk(persistence),
        }
    }

    /// Like [`start_with`](Self::start_with), in the system's temporary directory.
    pub fn start_on_disk(persistence: Persistence) -> Self {
        let base = std::env::temp_dir();
        match Self::make_dir(&base) {
            Ok(dir) => Self::start_in(dir, persistence),
            Err(error) => panic!("cannot create a directory in {}: {error}", base.display()),
        }
    }

    fn make_dir(base: &Path) -> std::io::Result<PathBuf> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let dir = base.join(format!(
            "keyrunner-redis-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn start_in(dir: PathBuf, persistence: Persistence) -> Self {
        let socket = dir.join("redis.sock");
        let mut server = Self {
            dir,
            socket,
            persistence,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let program = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let mut command = Command::new(&program);
        command
            .arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(&self.socket)
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--save")
            .arg("")
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .arg("--daemonize")
            .arg("no");
        match self.persistence {
            Persistence::None => command.args(["--appendonly", "no"]),
            Persistence::AppendAlways => {
                command.args(["--appendonly", "yes", "--appendfsync", "always"])
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start `{program}` ({error}): {INSTALL_HINT}"));
        self.child = Some(child);
        self.wait_for_ping(Duration::from_secs(20));
    }

    fn wait_for_ping(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                panic!("redis-server exited with {status}; its log:\n{log}");
            }
            if ping(&self.socket) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The URL of the server's socket.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    /// The server's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// A plain synchronous connection, for inspecting (and corrupting) what the repository
    /// stores; see docs/distributed.md for the layout.
    ///
    /// # Panics
    ///
    /// When the server does not accept the connection.
    pub fn connection(&self) -> redis::Connection {
        match redis::Client::open(self.url()).and_then(|client| client.get_connection()) {
            Ok(connection) => connection,
            Err(error) => panic!("cannot connect to the private redis-server: {error}"),
        }
    }

    /// `kill -9`: the server dies without writing anything more.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again in the same directory (an AOF server reloads its file) and waits
    /// for `PING` (a loading server answers only once it has loaded).
    pub fn restart(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.socket);
        self.spawn();
    }

    /// Kills the server, removes its data, and starts it again empty.
    pub fn restart_empty(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(self.dir.join("appendonlydir"));
        let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        let _ = std::fs::remove_file(&self.socket);
        self.spawn();
    }

    /// `SIGSTOP`: the server stops answering, connections stay open.
    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    /// `SIGCONT`: the server answers again, starting with what was sent while it was paused.
    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused server does not die of SIGKILL until it is continued on some kernels.
            signal(child.id(), "CONT");
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `SIG<name>` to `pid` with `kill(1)` (the workspace forbids `unsafe`, so no libc);
/// whether it was delivered.
pub fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn ping(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0_u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
