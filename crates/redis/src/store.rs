//! Typed calls to the scripts, each bounded by the call timeout.
//!
//! The store knows the layout and the scripts' replies; what to do with an answer (and with a
//! changed epoch) is the repository's business.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::{FromRedisValue, Script, ScriptInvocation};

use crate::error::{Error, ErrorKind};
use crate::layout::Layout;
use crate::lua::SCRIPTS;
use crate::runtime::Rt;

/// The answer of a script that checks the caller's epoch.
#[derive(Debug)]
pub(crate) enum Answer<T> {
    Done(T),
    /// The namespace's epoch is not the one the caller knows: the data was lost (or the caller
    /// is older than the current epoch). Carries the current one ('' when none).
    Epoch(String),
}

/// A key's hash as stored, every field as text ('' when absent).
#[derive(Debug, Clone, Default)]
pub(crate) struct Stored {
    pub(crate) epoch: String,
    pub(crate) s: String,
    pub(crate) f: String,
    pub(crate) q: String,
    pub(crate) a: String,
    pub(crate) p: String,
    pub(crate) x: String,
    pub(crate) o: String,
}

#[derive(Debug)]
pub(crate) enum Acquired {
    Won { fence: u64, seq: u64 },
    Busy { fence: u64 },
}

/// The answer to one of the owner's writes.
#[derive(Debug)]
pub(crate) enum Written {
    /// Accepted; for progress, the owner's last sequence is now `seq`.
    Ok { seq: Option<u64> },
    /// The lease had run out; the key was reaped (idle with `Lost`).
    Lost,
    /// The key no longer holds this run: `idle_with_fence` when it is idle after this very run
    /// (stopped, or finished by an earlier attempt), with the stored outcome.
    Gone {
        idle_with_fence: bool,
        outcome: String,
    },
}

#[derive(Debug)]
pub(crate) enum Stopped {
    Ok {
        fence: u64,
    },
    /// Nothing runs (idle, or its lease had run out and it was reaped now); the key's last run
    /// and its stored outcome ('' if none).
    Idle {
        fence: u64,
        outcome: String,
    },
    /// Another run holds the key.
    Stale,
}

/// Items of a run on their way to Redis, encoded.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Deltas (folded into the progress) rather than snapshots (each replacing it).
    pub(crate) deltas: bool,
    pub(crate) items: Vec<String>,
    /// What the key's `p` field becomes: the last snapshot, or every delta accumulated.
    pub(crate) stored: String,
}

impl Batch {
    fn mode(&self) -> &'static str {
        if self.deltas { "d" } else { "p" }
    }
}

/// The durations a store works with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// The lease TTL.
    pub(crate) ttl: Duration,
    /// How long an idle key is kept.
    pub(crate) retention: Duration,
    /// The bound on every call.
    pub(crate) timeout: Duration,
}

/// The connection for commands, the layout and the parameters every script needs.
pub(crate) struct Store {
    pub(crate) rt: Rt,
    conn: ConnectionManager,
    pub(crate) layout: Layout,
    pub(crate) replica: Arc<str>,
    pub(crate) ttl: Duration,
    pub(crate) retention: Duration,
    pub(crate) timeout: Duration,
    /// The codec text of `Outcome::Lost`, written by reaps.
    lost: String,
    epoch: Mutex<Arc<str>>,
}

impl Store {
    pub(crate) fn new(
        rt: Rt,
        conn: ConnectionManager,
        layout: Layout,
        replica: Arc<str>,
        timing: Timing,
        lost: String,
    ) -> Self {
        Self {
            rt,
            conn,
            layout,
            replica,
            ttl: timing.ttl,
            retention: timing.retention,
            timeout: timing.timeout,
            lost,
            epoch: Mutex::new("".into()),
        }
    }

    /// The epoch this replica knows.
    pub(crate) fn epoch(&self) -> Arc<str> {
        Arc::clone(&self.epoch.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the known epoch `old` by `new`; false if another call replaced `old` first.
    pub(crate) fn replace_epoch(&self, old: &str, new: &str) -> bool {
        let mut epoch = self.epoch.lock().unwrap_or_else(PoisonError::into_inner);
        if &**epoch != old {
            return false;
        }
        *epoch = new.into();
        true
    }

    /// The codec text of `Outcome::Lost`.
    pub(crate) fn lost(&self) -> &str {
        &self.lost
    }

    pub(crate) fn ttl_ms(&self) -> u64 {
        millis(self.ttl)
    }

    /// The retention of idle keys, as the scripts pass it to `PEXPIRE`: at least 1 ms, and at
    /// most what Redis accepts (a longer one, such as `Duration::MAX`, keeps idle keys for
    /// about 146 million years rather than failing every script that ends a run half-way).
    fn retention_ms(&self) -> u64 {
        millis(self.retention).clamp(1, MAX_RETENTION_MS)
    }

    /// Runs one script invocation within the call timeout.
    async fn eval<T: FromRedisValue>(&self, invocation: &ScriptInvocation<'_>) -> Result<T, Error> {
        self.eval_within(invocation, self.timeout).await
    }

    /// Runs a read-only invocation within the call timeout, once more on a connection that
    /// broke under it (the reconnection starts with the failure; a read is safe to repeat).
    async fn eval_read<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        let deadline = Instant::now() + self.timeout;
        match self.eval(invocation).await {
            Err(error) if error.kind() == ErrorKind::Unavailable => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(error);
                }
                self.eval_within(invocation, left).await
            }
            result => result,
        }
    }

    async fn eval_within<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
        timeout: Duration,
    ) -> Result<T, Error> {
        let mut conn = self.conn.clone();
        self.rt
            .timeout(timeout, invocation.invoke_async(&mut conn))
            .await?
            .map_err(Error::redis)
    }

    /// Loads every script (so that the first call of each costs one round trip), all within
    /// `within`.
    pub(crate) async fn load_scripts(&self, within: Duration) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let load = async {
            for script in SCRIPTS.all() {
                script
                    .prepare_invoke()
                    .load_async(&mut conn)
                    .await
                    .map_err(Error::redis)?;
            }
            Ok(())
        };
        self.rt.timeout(within, load).await?
    }

    /// A key script's call: KEYS = epoch, hash, leases, audit; ARGV = epoch, channel, member,
    /// control prefix, `Lost`, retention (see `prelude.lua`).
    fn key_call<'a>(&self, script: &'a Script, member: &str, epoch: &str) -> ScriptInvocation<'a> {
        let mut call = script.prepare_invoke();
        call.key(&self.layout.epoch)
            .key(self.layout.hash(member))
            .key(&self.layout.leases)
            .key(&self.layout.audit)
            .arg(epoch)
            .arg(self.layout.channel(member))
            .arg(member)
            .arg(self.layout.control_prefix())
            .arg(&self.lost)
            .arg(self.retention_ms());
        call
    }

    /// The namespace's epoch, created from `fresh` if it is missing.
    pub(crate) async fn hello(&self, fresh: &str) -> Result<String, Error> {
        let mut call = SCRIPTS.hello.prepare_invoke();
        call.key(&self.layout.epoch).arg(fresh);
        self.eval_read(&call).await
    }

    /// [`hello`](Self::hello) within `within` (while connecting).
    pub(crate) async fn hello_within(
        &self,
        fresh: &str,
        within: Duration,
    ) -> Result<String, Error> {
        let mut call = SCRIPTS.hello.prepare_invoke();
        call.key(&self.layout.epoch).arg(fresh);
        self.eval_within(&call, within).await
    }

    pub(crate) async fn read(&self, member: &str) -> Result<Stored, Error> {
        let mut call = SCRIPTS.read.prepare_invoke();
        call.key(&self.layout.epoch).key(self.layout.hash(member));
        let reply: Vec<String> = self.eval_read(&call).await?;
        let at = self.layout.hash(member);
        let [epoch, s, f, q, a, p, x, o]: [String; 8] = reply
            .try_into()
            .map_err(|_| Error::corrupt(&at, "the read script answered with another shape"))?;
        Ok(Stored {
            epoch,
            s,
            f,
            q,
            a,
            p,
            x,
            o,
        })
    }

    /// The members of the keys whose lease is live, with the epoch.
    pub(crate) async fn running(&self) -> Result<(String, Vec<String>), Error> {
        let mut call = SCRIPTS.running.prepare_invoke();
        call.key(&self.layout.epoch).key(&self.layout.leases);
        let mut reply: Vec<String> = self.eval_read(&call).await?;
        if reply.is_empty() {
            return Err(Error::corrupt(
                &self.layout.leases,
                "no epoch in the answer",
            ));
        }
        let epoch = reply.remove(0);
        Ok((epoch, reply))
    }

    /// Acquires `member`; bounded by `timeout`, which the caller picks: the acquisition goes on
    /// in the background after the caller stops waiting (see `RunError::is_outcome_unknown`).
    pub(crate) async fn acquire(
        &self,
        member: &str,
        epoch: &str,
        timeout: Duration,
    ) -> Result<Answer<Acquired>, Error> {
        let mut call = self.key_call(&SCRIPTS.acquire, member, epoch);
        call.arg(&*self.replica).arg(self.ttl_ms());
        let at = self.layout.hash(member);
        let reply: Vec<String> = self.eval_within(&call, timeout).await?;
        Ok(match reply.first().map(String::as_str) {
            Some("ok") => Answer::Done(Acquired::Won {
                fence: field(&reply, 1, &at)?,
                seq: field(&reply, 2, &at)?,
            }),
            Some("busy") => Answer::Done(Acquired::Busy {
                fence: field(&reply, 1, &at)?,
            }),
            _ => epoch_or_corrupt(reply, &at)?,
        })
    }

    pub(crate) async fn renew(
        &self,
        member: &str,
        epoch: &str,
        fence: u64,
    ) -> Result<Answer<Written>, Error> {
        let mut call = self.key_call(&SCRIPTS.renew, member, epoch);
        call.arg(fence).arg(self.ttl_ms());
        let reply: Vec<String> = self.eval(&call).await?;
        written(reply, &self.layout.hash(member), fence, false)
    }

    pub(crate) async fn progress(
        &self,
        member: &str,
        epoch: &str,
        fence: u64,
        seq: u64,
        batch: &Batch,
    ) -> Result<Answer<Written>, Error> {
        let mut call = self.key_call(&SCRIPTS.progress, member, epoch);
        call.arg(fence)
            .arg(self.ttl_ms())
            .arg(seq)
            .arg(batch.mode())
            .arg(&batch.stored)
            .arg(&batch.items);
        let reply: Vec<String> = self.eval(&call).await?;
        written(reply, &self.layout.hash(member), fence, true)
    }

    pub(crate) async fn finish(
        &self,
        member: &str,
        epoch: &str,
        fence: u64,
        outcome: &str,
        seq: u64,
        batch: &Batch,
    ) -> Result<Answer<Written>, Error> {
        let mut call = self.key_call(&SCRIPTS.finish, member, epoch);
        call.arg(fence)
            .arg(outcome)
            .arg(seq)
            .arg(batch.mode())
            .arg(&batch.stored)
            .arg(&batch.items);
        let reply: Vec<String> = self.eval(&call).await?;
        written(reply, &self.layout.hash(member), fence, false)
    }

    /// Stops the run `fence` (or whichever run holds the key, for `None`) with `outcome`.
    pub(crate) async fn stop(
        &self,
        member: &str,
        epoch: &str,
        fence: Option<u64>,
        outcome: &str,
    ) -> Result<Answer<Stopped>, Error> {
        let mut call = self.key_call(&SCRIPTS.stop, member, epoch);
        call.arg(fence.map(|fence| fence.to_string()).unwrap_or_default())
            .arg(outcome)
            .arg(&*self.replica);
        let at = self.layout.hash(member);
        let reply: Vec<String> = self.eval(&call).await?;
        Ok(match reply.first().map(String::as_str) {
            Some("ok") => Answer::Done(Stopped::Ok {
                fence: field(&reply, 1, &at)?,
            }),
            Some("idle") => Answer::Done(Stopped::Idle {
                fence: reply.get(1).and_then(|f| f.parse().ok()).unwrap_or(0),
                outcome: reply.get(2).cloned().unwrap_or_default(),
            }),
            Some("stale") => Answer::Done(Stopped::Stale),
            _ => epoch_or_corrupt(reply, &at)?,
        })
    }

    /// Reaps up to `limit` keys whose lease ran out; the number reaped.
    pub(crate) async fn reap(&self, epoch: &str, limit: usize) -> Result<Answer<usize>, Error> {
        let mut call = SCRIPTS.reap.prepare_invoke();
        call.key(&self.layout.epoch)
            .key(&self.layout.leases)
            .key(&self.layout.audit)
            .arg(epoch)
            .arg(self.layout.hash_prefix())
            .arg(self.layout.channel_prefix())
            .arg(self.layout.control_prefix())
            .arg(&self.lost)
            .arg(self.retention_ms())
            .arg(limit);
        let reply: Vec<String> = self.eval(&call).await?;
        let at = &self.layout.leases;
        Ok(match reply.first().map(String::as_str) {
            Some("ok") => Answer::Done(field(&reply, 1, at)?),
            _ => epoch_or_corrupt(reply, at)?,
        })
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("replica", &self.replica)
            .field("rt", &self.rt)
            .field("ttl", &self.ttl)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The longest retention `PEXPIRE` takes: Redis refuses an expiry that, added to its clock (in
/// ms), overflows a signed 64-bit number.
const MAX_RETENTION_MS: u64 = 1 << 62;

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Field `index` of a script's reply, parsed.
fn field<T: std::str::FromStr>(reply: &[String], index: usize, at: &str) -> Result<T, Error> {
    reply
        .get(index)
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| Error::corrupt(at, format_args!("unexpected script answer {reply:?}")))
}

fn epoch_or_corrupt<T>(reply: Vec<String>, at: &str) -> Result<Answer<T>, Error> {
    match reply.first().map(String::as_str) {
        Some("epoch") => Ok(Answer::Epoch(reply.get(1).cloned().unwrap_or_default())),
        _ => Err(Error::corrupt(
            at,
            format_args!("unexpected script answer {reply:?}"),
        )),
    }
}

/// The answer to an owner's write of run `fence`; `with_seq` when an accepted answer carries the
/// owner's new last sequence (progress).
fn written(
    reply: Vec<String>,
    at: &str,
    fence: u64,
    with_seq: bool,
) -> Result<Answer<Written>, Error> {
    Ok(match reply.first().map(String::as_str) {
        Some("ok") => Answer::Done(Written::Ok {
            seq: if with_seq {
                Some(field(&reply, 1, at)?)
            } else {
                None
            },
        }),
        Some("lost") => Answer::Done(Written::Lost),
        Some("gone") => Answer::Done(Written::Gone {
            idle_with_fence: reply.get(1).is_some_and(|s| s == "i")
                && reply.get(2).is_some_and(|f| *f == fence.to_string()),
            outcome: reply.get(3).cloned().unwrap_or_default(),
        }),
        _ => epoch_or_corrupt(reply, at)?,
    })
}
