//! Exercises what a std service expects of its platform, printing one
//! checkable line per item.
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

thread_local! {
    static COUNTER: Cell<u32> = const { Cell::new(0) };
}

fn main() -> Result<(), String> {
    println!("hello from std");
    eprintln!("to stderr");
    let args: Vec<String> = std::env::args().collect();
    println!("args {:?}", &args[1..]);
    println!("argv0 {}", args[0]);
    println!("env GREETING={:?}", std::env::var("GREETING"));
    println!("env MISSING is_err={}", std::env::var("MISSING").is_err());

    let start = Instant::now();
    thread::sleep(Duration::from_millis(30));
    println!("slept >= 30 ms: {}", start.elapsed() >= Duration::from_millis(30));
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    println!("wall clock after 2025: {}", since_epoch.as_secs() > 1_735_689_600);

    let mut map = HashMap::new();
    for i in 0..100 {
        map.insert(format!("key{i}"), i);
    }
    println!("hashmap {} {}", map.len(), map["key42"]);

    let handles: Vec<_> = (0..4u32).map(|i| thread::spawn(move || {
        COUNTER.with(|c| c.set(c.get() + i + 1));
        thread::sleep(Duration::from_millis(5));
        COUNTER.with(|c| c.get())
    })).collect();
    let locals: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    println!("thread-locals {locals:?} main {}", COUNTER.with(|c| c.get()));

    // One slot reused past the 16 bits its generation keeps in a thread id.
    let reused = (0..70_000u32).map(|i| thread::spawn(move || i).join().unwrap()).filter(|&i| i % 10_000 == 0).count();
    println!("70000 threads one after another: {reused} checkpoints");

    let counter = Arc::new(Mutex::new(0));
    let handles: Vec<_> = (0..8).map(|_| {
        let counter = Arc::clone(&counter);
        thread::spawn(move || {
            for _ in 0..1000 {
                *counter.lock().unwrap() += 1;
                if rand_yield() { thread::yield_now(); }
            }
        })
    }).collect();
    for h in handles { h.join().unwrap(); }
    println!("mutex {}", *counter.lock().unwrap());

    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let pair2 = Arc::clone(&pair);
    let notifier = thread::spawn(move || {
        thread::sleep(Duration::from_millis(10));
        *pair2.0.lock().unwrap() = true;
        pair2.1.notify_one();
    });
    let mut ready = pair.0.lock().unwrap();
    while !*ready { ready = pair.1.wait(ready).unwrap(); }
    drop(ready);
    notifier.join().unwrap();
    let (guard, timeout) = pair.1.wait_timeout(pair.0.lock().unwrap(), Duration::from_millis(20)).unwrap();
    println!("condvar notified, then timed out: {}", timeout.timed_out() && *guard);
    drop(guard);

    let lock = Arc::new(RwLock::new(vec![1, 2, 3]));
    let readers: Vec<_> = (0..3).map(|_| { let l = Arc::clone(&lock); thread::spawn(move || l.read().unwrap().iter().sum::<i32>()) }).collect();
    lock.write().unwrap().push(4);
    let sums: Vec<i32> = readers.into_iter().map(|h| h.join().unwrap()).collect();
    println!("rwlock {} readers saw {}", lock.read().unwrap().len(), sums.iter().all(|&s| s == 6 || s == 10));

    let (tx, rx) = mpsc::channel();
    for id in 0..3 {
        let tx = tx.clone();
        thread::spawn(move || for n in 0..10 { tx.send(id * 100 + n).unwrap(); });
    }
    drop(tx);
    let received: Vec<i32> = rx.iter().collect();
    println!("mpsc {} sum {}", received.len(), received.iter().sum::<i32>());
    let (stx, srx) = mpsc::sync_channel::<u8>(0);
    thread::spawn(move || stx.send(7).unwrap());
    println!("sync_channel {:?} timeout {:?}", srx.recv(), srx.recv_timeout(Duration::from_millis(5)).is_err());

    match std::env::var("END").as_deref() {
        Ok("exit") => std::process::exit(3),
        Ok("panic") => panic!("asked to panic"),
        Ok("error") => return Err(String::from("asked to fail")),
        Ok("abort") => std::process::abort(),
        _ => Ok(()),
    }
}

fn rand_yield() -> bool {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed) % 7 == 0
}
