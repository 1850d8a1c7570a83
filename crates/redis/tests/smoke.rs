//! temporary
mod common;
use common::*;
use futures::StreamExt;
use keyrunner_redis::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    let server = RedisServer::start();
    let a = replica(&server, "t", Duration::from_secs(1)).await;
    let b = replica(&server, "t", Duration::from_secs(1)).await;
    let key = "k".to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let _sub = b
        .listen(
            key.clone(),
            move |item| sink.lock().unwrap().push(format!("{item:?}")),
            true,
        )
        .await
        .unwrap();
    let (tx, rx) = futures::channel::mpsc::unbounded::<String>();
    let h = a
        .run(key.clone(), move |_cx| rx.map(Ok::<_, String>))
        .await
        .unwrap();
    tx.unbounded_send("a".into()).unwrap();
    tx.unbounded_send("b".into()).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    println!("state from b: {:?}", b.state(&key).await);
    println!(
        "busy: {:?}",
        b.run(key.clone(), |_cx| futures::stream::empty::<String>())
            .await
            .err()
    );
    let id = b.stop(&key, Reason::from("user")).await.unwrap();
    println!("stopped {id}; outcome {:?}", h.await);
    println!("state: {:?}", a.state(&key).await);
    let h = a
        .run(key.clone(), |_cx| {
            futures::stream::iter(["x".to_string(), "y".to_string()])
        })
        .await
        .unwrap();
    println!("outcome {:?}", h.await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    for line in seen.lock().unwrap().iter() {
        println!("seen {line}");
    }
    let mut conn = server.connection();
    let audit: Vec<String> = redis::cmd("LRANGE")
        .arg("t:audit")
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    for line in audit {
        println!("{line}");
    }
}
