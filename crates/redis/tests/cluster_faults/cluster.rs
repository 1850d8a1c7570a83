//! The suite's side of a cluster: a private Redis, replica processes (this same binary in
//! replica mode), and one log of everything they report.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::server::{Persistence, RedisServer, signal};
use crate::replica::now_us;

/// One line a replica reported.
#[derive(Debug, Clone)]
pub struct Logged {
    pub replica: usize,
    pub value: Value,
}

#[derive(Default)]
pub struct Log {
    events: Mutex<Vec<Logged>>,
    changed: Condvar,
}

impl Log {
    fn push(&self, logged: Logged) {
        self.lock().push(logged);
        self.changed.notify_all();
    }

    /// The events; a scenario that failed while waiting on them leaves nothing half-written.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Logged>> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub struct Replica {
    child: Child,
    stdin: ChildStdin,
    pub id: String,
    pub alive: bool,
    pub paused: bool,
    /// Its way to Redis, when it goes through a proxy the suite can cut.
    pub proxy: Option<Proxy>,
}

/// A unix-socket forwarder between one replica and Redis: cutting it partitions that replica
/// alone from Redis, while the others go on. Cut, it forwards nothing in either direction and
/// connects nothing new: what was sent waits (as on a network that drops nothing but delivers
/// late) and arrives when the partition heals. `reset` closes every connection through it (a
/// connection reset, or `CLIENT KILL` of that replica's connections alone).
pub struct Proxy {
    pub path: PathBuf,
    shared: Arc<ProxyShared>,
}

#[derive(Default)]
struct ProxyShared {
    state: Mutex<ProxyState>,
    healed: Condvar,
}

#[derive(Default)]
struct ProxyState {
    cut: bool,
    closed: bool,
    /// Both ends of every connection, to reset them.
    streams: Vec<UnixStream>,
}

impl ProxyShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, ProxyState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits while the proxy is cut; false once it is closed.
    fn wait_healed(&self) -> bool {
        let mut state = self.lock();
        while state.cut && !state.closed {
            state = self
                .healed
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        !state.closed
    }
}

impl Proxy {
    /// A proxy listening at `path`, forwarding to the Redis socket at `redis`.
    pub fn start(path: PathBuf, redis: &Path) -> Self {
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind a proxy socket");
        let shared = Arc::new(ProxyShared::default());
        let (accepting, redis) = (Arc::clone(&shared), redis.to_owned());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.lock().closed {
                    return;
                }
                let Ok(client) = client else { continue };
                let (shared, redis) = (Arc::clone(&accepting), redis.clone());
                std::thread::spawn(move || forward(&shared, client, &redis));
            }
        });
        Self { path, shared }
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.path.display())
    }

    pub fn cut(&self) {
        self.shared.lock().cut = true;
    }

    pub fn heal(&self) {
        self.shared.lock().cut = false;
        self.shared.healed.notify_all();
    }

    pub fn is_cut(&self) -> bool {
        self.shared.lock().cut
    }

    /// Closes every connection through the proxy (new ones are accepted as usual).
    pub fn reset(&self) {
        for stream in std::mem::take(&mut self.shared.lock().streams) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.closed = true;
            state.cut = false;
        }
        self.shared.healed.notify_all();
        self.reset();
        // Wakes the accepting thread, which then sees the proxy closed.
        let _ = UnixStream::connect(&self.path);
    }
}

/// One connection through a proxy: once the proxy is not cut, connects to Redis and copies both
/// ways, holding whatever it read while the proxy is cut.
fn forward(shared: &Arc<ProxyShared>, client: UnixStream, redis: &Path) {
    if !shared.wait_healed() {
        return;
    }
    let Ok(server) = UnixStream::connect(redis) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(client_end), Ok(server_end)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    shared.lock().streams.extend([client_end, server_end]);
    let (Ok(client_read), Ok(server_write)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let upstream = Arc::clone(shared);
    std::thread::spawn(move || copy(&upstream, client_read, server_write));
    copy(shared, server, client);
}

fn copy(shared: &ProxyShared, mut from: UnixStream, mut to: UnixStream) {
    let mut buffer = [0_u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if !shared.wait_healed() || to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// A window during which something could not act: Redis down or paused, or a replica paused.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from_us: u64,
    pub to_us: u64,
}

pub struct Cluster {
    pub server: RedisServer,
    pub namespace: String,
    pub ttl: Duration,
    pub replicas: Vec<Replica>,
    pub log: Arc<Log>,
    next_id: AtomicU64,
    /// When Redis was down or paused (wall µs).
    pub redis_outages: Vec<Window>,
    /// When each replica was paused (by replica id).
    pub replica_pauses: Vec<(String, Window)>,
    /// The audit entries of Redis instances that lost their data, read before they did.
    pub lost_audits: Vec<Vec<String>>,
    /// When this machine was too busy to run a thread on time (see [`Stalls`]).
    pub stalls: Stalls,
    /// What the nemesis did, and when (wall µs): printed next to a violation near it.
    pub actions: Vec<(u64, String)>,
}

/// Windows in which a thread of the suite that sleeps 5 ms at a time woke more than 20 ms late:
/// the machine was too busy to run anything on time (the replicas and Redis share its cores).
/// Real-time bounds are extended by the stalls that overlap them; nothing else is excused.
#[derive(Clone, Default)]
pub struct Stalls(Arc<Mutex<Vec<Window>>>);

impl Stalls {
    fn start() -> Self {
        let stalls = Self::default();
        let windows = Arc::clone(&stalls.0);
        std::thread::spawn(move || {
            loop {
                let before = now_us();
                std::thread::sleep(Duration::from_millis(5));
                let after = now_us();
                if after - before > 25_000 {
                    windows.lock().unwrap().push(Window {
                        from_us: before + 5_000,
                        to_us: after,
                    });
                }
                if Arc::strong_count(&windows) == 1 {
                    return;
                }
            }
        });
        stalls
    }

    /// How long the machine stalled between `from_us` and `to_us`.
    pub fn within(&self, from_us: u64, to_us: u64) -> u64 {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|window| {
                window
                    .to_us
                    .min(to_us)
                    .saturating_sub(window.from_us.max(from_us))
            })
            .sum()
    }
}

impl Cluster {
    pub fn start(persistence: Persistence, ttl: Duration, replicas: usize) -> Self {
        let mut cluster = Self {
            server: RedisServer::start_with(persistence),
            namespace: "faults".to_owned(),
            ttl,
            replicas: Vec::new(),
            log: Arc::default(),
            next_id: AtomicU64::new(1),
            redis_outages: Vec::new(),
            replica_pauses: Vec::new(),
            lost_audits: Vec::new(),
            stalls: Stalls::start(),
            actions: Vec::new(),
        };
        for _ in 0..replicas {
            cluster.spawn_replica();
        }
        cluster
    }

    /// Starts one more replica process and waits until it is connected; returns its index. A
    /// replica that could not connect (its typed error, when the machine is too busy to answer
    /// within the timeouts) is replaced by another, twice at most.
    pub fn spawn_replica(&mut self) -> usize {
        (0..3)
            .find_map(|_| self.try_spawn_replica(false))
            .expect("no replica could connect, three times")
    }

    /// Like [`spawn_replica`](Self::spawn_replica), the replica reaching Redis through a
    /// [`Proxy`] of its own (see [`partition`](Self::partition)).
    pub fn spawn_proxied_replica(&mut self) -> usize {
        (0..3)
            .find_map(|_| self.try_spawn_replica(true))
            .expect("no replica could connect, three times")
    }

    fn try_spawn_replica(&mut self, proxied: bool) -> Option<usize> {
        let index = self.replicas.len();
        let from = self.log.lock().len();
        let proxy = proxied.then(|| {
            Proxy::start(
                self.server
                    .socket()
                    .with_file_name(format!("replica-{index}.sock")),
                self.server.socket(),
            )
        });
        let url = proxy.as_ref().map_or_else(|| self.server.url(), Proxy::url);
        let mut child = Command::new(std::env::current_exe().expect("the suite's own binary"))
            .env("KEYRUNNER_REDIS_REPLICA", "1")
            .env("KEYRUNNER_REDIS_URL", url)
            .env("KEYRUNNER_REDIS_NAMESPACE", &self.namespace)
            .env("KEYRUNNER_REDIS_TTL_MS", self.ttl.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a replica process");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let log = Arc::clone(&self.log);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| json!({"ev": "garbage", "line": line}));
                log.push(Logged {
                    replica: index,
                    value,
                });
            }
            log.push(Logged {
                replica: index,
                value: json!({"ev": "exited"}),
            });
        });
        self.replicas.push(Replica {
            child,
            stdin,
            id: String::new(),
            alive: true,
            paused: false,
            proxy,
        });
        let ready = self.wait_from(
            from,
            Duration::from_secs(20),
            "a replica to connect",
            |logged| {
                logged.replica == index
                    && matches!(
                        logged.value["ev"].as_str(),
                        Some("ready" | "failed" | "exited")
                    )
            },
        );
        if ready.value["ev"] != "ready" {
            eprintln!("a replica did not connect: {}", ready.value);
            self.kill(index);
            self.replicas.pop();
            return None;
        }
        self.replicas[index].id = ready.value["replica"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Some(index)
    }

    /// Sends `command` to replica `index` (an `id` is added); returns the id.
    pub fn send(&mut self, index: usize, mut command: Value) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        command["id"] = json!(id);
        let replica = &mut self.replicas[index];
        assert!(replica.alive, "replica {index} is dead");
        writeln!(replica.stdin, "{command}").expect("write a command to a replica");
        replica.stdin.flush().expect("flush a command");
        id
    }

    /// Sends `command` and waits for its answer.
    pub fn request(&mut self, index: usize, command: Value) -> Value {
        let kind = command["cmd"].as_str().unwrap_or_default().to_owned();
        let id = self.send(index, command);
        self.answer(index, &kind, id)
    }

    /// Waits for the answer `id` of replica `index`.
    pub fn answer(&self, index: usize, kind: &str, id: u64) -> Value {
        let within = self.ttl * 10 + Duration::from_secs(5);
        self.wait_for(within, &format!("the answer to {kind} #{id}"), |logged| {
            logged.replica == index && logged.value["id"] == json!(id) && logged.value["ev"] == kind
        })
        .value
    }

    /// The first logged event (from the start) matching `predicate`, waiting up to `within`.
    pub fn wait_for(
        &self,
        within: Duration,
        what: &str,
        predicate: impl Fn(&Logged) -> bool,
    ) -> Logged {
        self.wait_from(0, within, what, predicate)
    }

    /// Like [`wait_for`](Self::wait_for), among the events logged from position `from` on.
    fn wait_from(
        &self,
        from: usize,
        within: Duration,
        what: &str,
        predicate: impl Fn(&Logged) -> bool,
    ) -> Logged {
        let deadline = Instant::now() + within;
        let mut events = self.log.lock();
        loop {
            if let Some(found) = events.iter().skip(from).find(|logged| predicate(logged)) {
                return found.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                // Unlocked first, so the log stays usable for whoever looks after the failure.
                drop(events);
                panic!("timed out after {within:?} waiting for {what}");
            }
            events = self
                .log
                .changed
                .wait_timeout(events, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Every event logged so far.
    pub fn events(&self) -> Vec<Logged> {
        self.log.lock().clone()
    }

    /// `kill -9` of replica `index`.
    pub fn kill(&mut self, index: usize) {
        let replica = &mut self.replicas[index];
        if replica.paused {
            signal(replica.child.id(), "CONT");
        }
        let _ = replica.child.kill();
        let _ = replica.child.wait();
        replica.alive = false;
        replica.paused = false;
    }

    /// `SIGSTOP` of replica `index`; `resume` ends the pause and records its window.
    pub fn pause(&mut self, index: usize) -> u64 {
        signal(self.replicas[index].child.id(), "STOP");
        self.replicas[index].paused = true;
        now_us()
    }

    pub fn resume(&mut self, index: usize, paused_at: u64) {
        signal(self.replicas[index].child.id(), "CONT");
        self.replicas[index].paused = false;
        let id = self.replicas[index].id.clone();
        self.replica_pauses.push((
            id,
            Window {
                from_us: paused_at,
                to_us: now_us(),
            },
        ));
    }

    pub fn pause_redis(&mut self) -> u64 {
        self.server.pause();
        now_us()
    }

    pub fn resume_redis(&mut self, paused_at: u64) {
        self.server.resume();
        self.redis_outages.push(Window {
            from_us: paused_at,
            to_us: now_us(),
        });
    }

    /// `kill -9` of Redis and a restart on its AOF.
    pub fn restart_redis(&mut self) {
        let from = now_us();
        self.server.restart();
        self.redis_outages.push(Window {
            from_us: from,
            to_us: now_us(),
        });
    }

    /// Redis killed and restarted empty; its audit is kept for the checker first.
    pub fn restart_redis_empty(&mut self) {
        self.lost_audits.push(self.audit_lines());
        let from = now_us();
        self.server.restart_empty();
        self.redis_outages.push(Window {
            from_us: from,
            to_us: now_us(),
        });
    }

    /// `CLIENT KILL TYPE pubsub`: every replica's subscription connection is cut.
    pub fn kill_subscribers(&self) -> i64 {
        let mut conn = self.server.connection();
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query(&mut conn)
            .expect("CLIENT KILL")
    }

    /// The audit list as Redis holds it now.
    pub fn audit_lines(&self) -> Vec<String> {
        let mut conn = self.server.connection();
        redis::cmd("LRANGE")
            .arg(format!("{}:audit", self.namespace))
            .arg(0)
            .arg(-1)
            .query(&mut conn)
            .expect("read the audit list")
    }

    /// The stored hash of `key`, field by field.
    pub fn stored(&self, key: &str) -> std::collections::HashMap<String, String> {
        let mut conn = self.server.connection();
        redis::cmd("HGETALL")
            .arg(format!(
                "{}:k:{}",
                self.namespace,
                serde_json::to_string(key).unwrap()
            ))
            .query(&mut conn)
            .expect("read a key's hash")
    }

    /// Indexes of the replicas alive, not paused and not partitioned from Redis.
    pub fn live(&self) -> Vec<usize> {
        (0..self.replicas.len())
            .filter(|&index| {
                let replica = &self.replicas[index];
                replica.alive
                    && !replica.paused
                    && !replica.proxy.as_ref().is_some_and(Proxy::is_cut)
            })
            .collect()
    }

    /// Partitions replica `index` (spawned with a proxy) from Redis; `heal` ends it.
    pub fn partition(&mut self, index: usize) -> u64 {
        self.replicas[index]
            .proxy
            .as_ref()
            .expect("a replica behind a proxy")
            .cut();
        now_us()
    }

    pub fn heal(&mut self, index: usize) {
        if let Some(proxy) = &self.replicas[index].proxy {
            proxy.heal();
        }
    }

    /// Closes every connection of replica `index` (spawned with a proxy) to Redis.
    pub fn reset_connections(&self, index: usize) {
        self.replicas[index]
            .proxy
            .as_ref()
            .expect("a replica behind a proxy")
            .reset();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for replica in &mut self.replicas {
            if replica.alive {
                signal(replica.child.id(), "CONT");
                let _ = replica.child.kill();
                let _ = replica.child.wait();
            }
            // Closed while their sockets' directory (the server's) is still there.
            replica.proxy = None;
        }
    }
}

impl Cluster {
    /// The nemesis actions between `from_us` and `to_us`, as text.
    pub fn actions_between(&self, from_us: u64, to_us: u64) -> String {
        let actions: Vec<String> = self
            .actions
            .iter()
            .filter(|(at, _)| (from_us..=to_us).contains(at))
            .map(|(at, action)| format!("{action} at {} ms", at / 1000))
            .collect();
        if actions.is_empty() {
            "no nemesis action around".to_owned()
        } else {
            actions.join(", ")
        }
    }
}
