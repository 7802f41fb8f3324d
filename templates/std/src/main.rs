//! An ordinary Rust program: `fn main()` and the standard library, nothing
//! Denali-specific. `cargo denali build` sees that the crate does not opt
//! out of std and builds it with std over the Denali library OS.
use std::thread;
use std::time::{Duration, Instant};

fn main() {
    let started = Instant::now();
    let name = std::env::var("NAME").unwrap_or_else(|_| String::from("world"));
    let workers: Vec<_> = (1..=3u64)
        .map(|n| {
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(10 * n));
                n * n
            })
        })
        .collect();
    let squares: Vec<u64> = workers.into_iter().map(|w| w.join().expect("a worker panicked")).collect();
    println!("Hello, {name}, from std in a Denali VM: squares {squares:?} after {:?}", started.elapsed());
}
