//! tokio in a Denali VM: the current-thread and multi-thread runtimes,
//! timers, tasks, channels, blocking work.
use std::time::{Duration, Instant};

async fn pipeline() -> Vec<u32> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let producer = tokio::spawn(async move {
        for i in 0..5u32 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            tx.send(i * i).await.unwrap();
        }
    });
    let mut got = Vec::new();
    while let Some(v) = rx.recv().await {
        got.push(v);
    }
    producer.await.unwrap();
    got
}

fn main() {
    let start = Instant::now();
    let current = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    println!("current_thread: {:?}", current.block_on(pipeline()));
    let timed_out = current.block_on(async { tokio::time::timeout(Duration::from_millis(20), std::future::pending::<()>()).await });
    println!("timeout fired: {}", timed_out.is_err());
    let blocking = current.block_on(async { tokio::task::spawn_blocking(|| 6 * 7).await }).unwrap();
    println!("spawn_blocking: {blocking}");
    drop(current);
    let multi = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("multi_thread: {:?}", multi.block_on(pipeline()));
    let tasks: Vec<_> = (0..10u64).map(|i| multi.spawn(async move { tokio::time::sleep(Duration::from_millis(i)).await; i })).collect();
    let sum: u64 = multi.block_on(async { let mut s = 0; for t in tasks { s += t.await.unwrap(); } s });
    println!("multi_thread tasks sum {sum}");
    println!("all within {} ms", start.elapsed().as_millis());
}
