//! D3: a stop from any replica idles the key for everyone at once, and the owner's abort
//! signal fires within one round trip, or within TTL/3 when the notification is lost.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Probe, RedisServer, TTL, command, hash, replica};
use futures::stream;
use keyrunner_redis::{Outcome, Reason, State, StopError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_from_another_replica_idles_the_key_everywhere_and_aborts_the_owner() {
    let server = RedisServer::start();
    let owner = replica(&server, TTL).await;
    let stopper = replica(&server, TTL).await;
    let reader = replica(&server, TTL).await;
    let key = "k".to_owned();
    let (probe, dropped) = Probe::new(None, Duration::from_millis(2));
    let handle = owner.run(key.clone(), move |_cx| probe).await.unwrap();
    let signal = handle.abort_signal().unwrap();

    let started = Instant::now();
    let stopped = stopper.stop(&key, Reason::from("user")).await.unwrap();
    assert_eq!(stopped, handle.run_id());
    let stopped = reader.state(&key).await.unwrap();
    assert!(stopped.is_idle(), "visible at once");
    assert_eq!(
        stopped.last_outcome(),
        Some(&Outcome::Stopped {
            reason: Some(Reason::from("user")),
        })
    );
    tokio::time::timeout(Duration::from_millis(100), signal.aborted())
        .await
        .expect("the owner's signal fires within one round trip");
    let latency = started.elapsed();
    assert_eq!(signal.reason(), Some(Reason::from("user")));
    assert_eq!(
        handle.await,
        Outcome::Stopped {
            reason: Some(Reason::from("user"))
        }
    );
    assert_eq!(dropped.load(Ordering::SeqCst), 1, "the stream is dropped");
    assert!(latency < Duration::from_millis(100), "{latency:?}");
}

#[tokio::test]
async fn a_lost_notification_still_aborts_the_owner_within_a_third_of_the_ttl() {
    let server = RedisServer::start();
    let owner = replica(&server, TTL).await;
    let key = "k".to_owned();
    let handle = owner
        .run(key.clone(), |_cx| stream::pending::<String>())
        .await
        .unwrap();
    let signal = handle.abort_signal().unwrap();
    // A stop whose message never reaches the owner: the key is made idle behind its back.
    let outcome = serde_json::to_string(&Outcome::<String>::Stopped {
        reason: Some(Reason::from("behind its back")),
    })
    .unwrap();
    let started = Instant::now();
    let _: () = command(&server, &["HSET", &hash("k"), "s", "i", "x", &outcome]);
    tokio::time::timeout(TTL / 3 + Duration::from_millis(100), signal.aborted())
        .await
        .expect("the owner's next write finds the key idle");
    assert_eq!(signal.reason(), Some(Reason::from("behind its back")));
    assert!(started.elapsed() <= TTL / 3 + Duration::from_millis(100));
    assert_eq!(
        handle.await,
        Outcome::Stopped {
            reason: Some(Reason::from("behind its back"))
        }
    );
}

#[tokio::test]
async fn stopping_an_idle_key_is_a_typed_error() {
    let server = RedisServer::start();
    let repository = replica(&server, TTL).await;
    let error = repository
        .stop(&"nobody".to_owned(), None)
        .await
        .unwrap_err();
    assert!(matches!(error, StopError::Idle), "{error:?}");
    assert!(error.is_already_ended());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_this_replicas_runs_in_redis_and_refuses_new_ones() {
    let server = RedisServer::start();
    let leaving = replica(&server, TTL).await;
    let staying = replica(&server, TTL).await;
    let mine = leaving
        .run("mine".to_owned(), |_cx| stream::pending::<String>())
        .await
        .unwrap();
    let theirs = staying
        .run("theirs".to_owned(), |_cx| stream::pending::<String>())
        .await
        .unwrap();
    tokio::time::timeout(TTL, leaving.shutdown(Reason::from("deploy")))
        .await
        .expect("shutdown resolves once every stream is dropped");
    assert_eq!(leaving.live_tasks(), 0);
    assert_eq!(
        mine.await,
        Outcome::Stopped {
            reason: Some(Reason::from("deploy"))
        }
    );
    assert!(
        staying.state(&"mine".to_owned()).await.unwrap().is_idle(),
        "written to Redis"
    );
    assert!(!theirs.is_finished(), "other replicas' runs go on");
    let refused = leaving
        .run("again".to_owned(), |_cx| stream::empty::<String>())
        .await
        .unwrap_err();
    assert!(refused.is_shut_down());
}

#[tokio::test]
async fn after_shutdown_streams_end_and_listen_is_refused() {
    let server = RedisServer::start();
    let repository = replica(&server, TTL).await;
    let other = replica(&server, TTL).await;
    let key = "k".to_owned();
    let remote = other
        .run(key.clone(), |_cx| stream::pending::<String>())
        .await
        .unwrap();
    let handle = repository
        .run_with(key.clone(), keyrunner_redis::Conflict::UseExisting, |_cx| {
            stream::empty::<String>()
        })
        .await
        .unwrap();
    assert!(!handle.is_local());
    let mut states = repository.stream(key.clone());
    let first = tokio::time::timeout(TTL, futures::StreamExt::next(&mut states))
        .await
        .unwrap();
    assert!(
        first
            .unwrap()
            .unwrap()
            .state()
            .is_some_and(State::is_running)
    );
    repository.shutdown(None).await;
    let last = tokio::time::timeout(TTL, futures::StreamExt::next(&mut states))
        .await
        .unwrap();
    assert_eq!(
        last.unwrap().unwrap_err().kind(),
        keyrunner_redis::ErrorKind::ShutDown
    );
    let end = tokio::time::timeout(TTL, futures::StreamExt::next(&mut states))
        .await
        .unwrap();
    assert!(end.is_none(), "the stream ends");
    let refused = repository
        .listen(key.clone(), |_| {}, true)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), keyrunner_redis::ErrorKind::ShutDown);
    assert_eq!(
        tokio::time::timeout(TTL, handle).await.unwrap(),
        Outcome::Lost,
        "a remote run's end is no longer heard here"
    );
    assert!(!remote.is_finished(), "the other replica's run goes on");
}

/// A run whose abort callback panics when it is stopped from another replica: the stop still
/// ends it, and the owner's replica goes on hearing everything else at once (the callback ran
/// on the replica's subscription connection, whose reader died with it: every later stop of
/// its runs waited for their next renewal, and its listeners heard nothing more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_abort_callback_stops_nothing_else_on_its_replica() {
    // A long lease, so that the watchdogs below can be generous on a busy machine and still
    // tell a message heard at once from one found by the next renewal (TTL/3) or tick (TTL/4).
    let ttl = Duration::from_secs(10);
    let prompt = Duration::from_secs(1);
    let server = RedisServer::start();
    let owner = replica(&server, ttl).await;
    let stopper = replica(&server, ttl).await;
    let seen = common::Seen::default();
    let _listening = owner
        .listen("watched".to_owned(), seen.listener(), true)
        .await
        .unwrap();
    let panicking = owner
        .run("panicking".to_owned(), |cx| {
            cx.abort_signal()
                .on_abort(|_| panic!("an abort callback that panics"))
                .detach();
            stream::pending::<String>()
        })
        .await
        .unwrap();
    let other = owner
        .run("other".to_owned(), |_cx| stream::pending::<String>())
        .await
        .unwrap();
    let signal = other.abort_signal().unwrap();

    stopper
        .stop(&"panicking".to_owned(), Reason::from("first"))
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(prompt, panicking).await.unwrap(),
        Outcome::Stopped {
            reason: Some(Reason::from("first"))
        }
    );
    stopper
        .stop(&"other".to_owned(), Reason::from("second"))
        .await
        .unwrap();
    tokio::time::timeout(prompt, signal.aborted())
        .await
        .expect("the next stop still reaches the owner at once, not at its next renewal");
    let watched = stopper
        .run("watched".to_owned(), |_cx| stream::iter(["1".to_owned()]))
        .await
        .unwrap();
    assert_eq!(watched.await, Outcome::Completed);
    common::eventually(
        prompt,
        "the owner's listener to hear another key's run",
        || {
            seen.states()
                .last()
                .is_some_and(|state| state.last_outcome() == Some(&Outcome::Completed))
        },
    )
    .await;
}

/// A run whose abort callback takes its time: the owner's replica hears the stop of its other
/// runs meanwhile (the callback ran on the subscription connection's reader, and held up every
/// message of the replica until it returned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_abort_callback_holds_up_no_other_stop() {
    let server = RedisServer::start();
    let owner = replica(&server, TTL).await;
    let stopper = replica(&server, TTL).await;
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    let blocked = std::sync::Mutex::new(blocked);
    let slow = owner
        .run("slow".to_owned(), move |cx| {
            cx.abort_signal()
                .on_abort(move |_| {
                    // Until the test is over: a callback doing slow, blocking work, as tokio
                    // wants it done, so that the runtime's other worker keeps driving timers
                    // and sockets meanwhile.
                    tokio::task::block_in_place(|| {
                        let _ = blocked.lock().unwrap().recv();
                    });
                })
                .detach();
            stream::pending::<String>()
        })
        .await
        .unwrap();
    let other = owner
        .run("other".to_owned(), |_cx| stream::pending::<String>())
        .await
        .unwrap();
    let signal = other.abort_signal().unwrap();
    let slow_signal = slow.abort_signal().unwrap();

    stopper
        .stop(&"slow".to_owned(), Reason::from("first"))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_millis(100), slow_signal.aborted())
        .await
        .expect("the slow run's signal fires");
    stopper
        .stop(&"other".to_owned(), Reason::from("second"))
        .await
        .unwrap();
    let heard = tokio::time::timeout(Duration::from_millis(100), signal.aborted()).await;
    drop(release);
    heard.expect("the other run's stop reaches the owner within one round trip");
    assert_eq!(
        tokio::time::timeout(TTL, other).await.unwrap(),
        Outcome::Stopped {
            reason: Some(Reason::from("second"))
        }
    );
}

/// Shutdown stops every run of the replica, even when abort callbacks panic on the way; the
/// first panic resumes from `shutdown` once every run is asked to stop (a panic used to leave
/// the other runs going, renewing their leases, and the replica's watches open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_every_run_even_when_abort_callbacks_panic() {
    let server = RedisServer::start();
    let leaving = replica(&server, TTL).await;
    let staying = replica(&server, TTL).await;
    let mut handles = Vec::new();
    for key in ["a", "b", "c"] {
        handles.push(
            leaving
                .run(key.to_owned(), |cx| {
                    cx.abort_signal()
                        .on_abort(|_| panic!("an abort callback that panics"))
                        .detach();
                    stream::pending::<String>()
                })
                .await
                .unwrap(),
        );
    }
    let mut states = leaving.stream("a".to_owned());
    let _ = tokio::time::timeout(TTL, futures::StreamExt::next(&mut states))
        .await
        .unwrap();
    let shutdown = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        leaving.shutdown(Reason::from("deploy"))
    }));
    assert!(
        shutdown.is_err(),
        "the callback's panic resumes from shutdown"
    );
    for handle in handles {
        assert_eq!(
            tokio::time::timeout(TTL, handle)
                .await
                .expect("every run ends"),
            Outcome::Stopped {
                reason: Some(Reason::from("deploy"))
            }
        );
    }
    for key in ["a", "b", "c"] {
        assert!(staying.state(&key.to_owned()).await.unwrap().is_idle());
    }
    common::eventually(TTL, "no live task", || leaving.live_tasks() == 0).await;
    while tokio::time::timeout(TTL, futures::StreamExt::next(&mut states))
        .await
        .expect("the replica's streams end")
        .is_some()
    {}
}

/// A run whose acquisition is in flight when shutdown begins: shutdown resolves only once that
/// run is refused, or started and its stream dropped (it used to resolve at once, and the task
/// was then called and run after it had).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_run_whose_acquisition_is_in_flight() {
    let server = RedisServer::start();
    let repository: common::Repo = keyrunner_redis::ClusterRepository::builder(server.url())
        .namespace("test")
        .lease_ttl(Duration::from_secs(30))
        .call_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    // Redis answers nothing until it is resumed: the acquisition stays in flight.
    server.pause();
    let (probe, dropped) = Probe::new(None, Duration::from_millis(1));
    let called = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&called);
    let mut run = Box::pin(repository.run("k".to_owned(), move |_cx| {
        flag.store(true, Ordering::SeqCst);
        probe
    }));
    assert!(futures::poll!(run.as_mut()).is_pending(), "Redis is paused");
    let mut shutdown = repository.shutdown(Reason::from("deploy"));
    let early = futures::poll!(&mut shutdown).is_ready();
    server.resume();
    assert!(
        !early,
        "shutdown resolved with a run's acquisition in flight"
    );
    let resolved = async {
        shutdown.await;
        (
            repository.live_tasks(),
            called.load(Ordering::SeqCst),
            dropped.load(Ordering::SeqCst),
        )
    };
    let (result, (live, was_called, was_dropped)) =
        tokio::time::timeout(TTL * 5, futures::future::join(run, resolved))
            .await
            .unwrap();
    assert_eq!(live, 0, "no task alive once shutdown resolved");
    assert!(!was_called || was_dropped == 1, "a task called is dropped");
    match result {
        Ok(handle) => assert!(matches!(
            handle.await,
            Outcome::Stopped { .. } | Outcome::Lost
        )),
        Err(error) => assert!(error.is_shut_down(), "{error:?}"),
    }
    assert!(repository.state(&"k".to_owned()).await.unwrap().is_idle());
}

/// A stop that lands while the owner is still receiving the answer to its acquisition: the
/// owner's signal still fires within one round trip of the stop (the control message used to
/// be dropped, the run not registered yet, and the task ran on until its first renewal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_racing_the_owners_acquisition_still_aborts_it_at_once() {
    let server = RedisServer::start();
    let owner = replica(&server, TTL).await;
    let stopper = replica(&server, TTL).await;
    let key = "k".to_owned();
    let marks = common::Seen::default();
    let _marking = owner
        .listen("mark".to_owned(), marks.listener(), false)
        .await
        .unwrap();
    // The acquisition is sent; its answer is not taken until the run future is polled again.
    let mut run = Box::pin(owner.run(key.clone(), |_cx| stream::pending::<String>()));
    assert!(futures::poll!(run.as_mut()).is_pending());
    common::eventually(TTL, "the key running in Redis", || {
        matches!(
            command::<Option<String>>(&server, &["HGET", &hash("k"), "s"]).as_deref(),
            Some("r")
        )
    })
    .await;
    stopper.stop(&key, Reason::from("racing")).await.unwrap();
    // Published after the stop's message to the owner, on the same connection: once the owner
    // hears it, it has heard the stop too.
    stopper
        .run("mark".to_owned(), |_cx| stream::pending::<String>())
        .await
        .unwrap()
        .detach();
    common::eventually(TTL, "the owner to hear the mark", || {
        !marks.states().is_empty()
    })
    .await;
    let handle = run.await.unwrap();
    let signal = handle.abort_signal().unwrap();
    tokio::time::timeout(Duration::from_millis(100), signal.aborted())
        .await
        .expect("the stop reaches the owner within one round trip");
    assert_eq!(
        handle.await,
        Outcome::Stopped {
            reason: Some(Reason::from("racing"))
        }
    );
}
