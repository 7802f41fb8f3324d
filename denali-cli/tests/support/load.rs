//! A load generator for the web tests: many clients at once, each on its
//! own keep-alive connection, every response checked (status 200 and the
//! whole page), so a reset, a refused connection or a short page is a
//! failure that names itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a client waits for each response: a VM under PVM serves a
/// few hundred requests a second, so a thousand clients queue for a while.
const PATIENCE: Duration = Duration::from_secs(180);
/// How long a client waits for its connection. A VM under PVM admits a
/// burst of a thousand SYNs at about 115 packets a second, dropping those
/// it has no room for, so the last clients get in only on a late SYN
/// retry (Linux's come 127 s and 255 s after the first; see `netns`).
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(300);

/// What the clients saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Responses that were a 200 with the whole page.
    pub ok: usize,
    /// Every failure, one sentence each.
    pub failures: Vec<String>,
}

/// `clients` connections to `target` at once, each making `requests`
/// requests for `/` and expecting a page of `page_len` bytes. With
/// `netns`, the clients run in that network namespace (its name under
/// /var/run/netns).
pub fn http_load(
    target: SocketAddr,
    clients: usize,
    requests: usize,
    page_len: usize,
    netns: Option<&str>,
) -> LoadReport {
    let netns = netns.map(str::to_owned);
    // Threads inherit the network namespace of the thread that makes them.
    std::thread::spawn(move || {
        if let Some(name) = netns {
            enter_netns(&name);
        }
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                std::thread::Builder::new()
                    .stack_size(128 << 10)
                    .spawn(move || client(target, requests, page_len))
                    .expect("spawn a client thread")
            })
            .collect();
        let mut report = LoadReport::default();
        for worker in workers {
            match worker.join().expect("a client thread panicked") {
                Ok(n) => report.ok += n,
                Err((n, e)) => {
                    report.ok += n;
                    report.failures.push(e);
                }
            }
        }
        report
    })
    .join()
    .expect("the load generator panicked")
}

/// One client: connects, makes `requests` requests, checks each response.
/// `Err` carries the good responses before the failure.
fn client(target: SocketAddr, requests: usize, page_len: usize) -> Result<usize, (usize, String)> {
    let mut stream = TcpStream::connect_timeout(&target, CONNECT_PATIENCE).map_err(|e| (0, format!("connect: {e}")))?;
    stream.set_read_timeout(Some(PATIENCE)).expect("a timeout");
    let mut buf = Vec::new();
    for done in 0..requests {
        let fail = |what: String| (done, format!("request {}: {what}", done + 1));
        stream.write_all(b"GET / HTTP/1.1\r\nHost: denali\r\n\r\n").map_err(|e| fail(format!("write: {e}")))?;
        let (status, body) = read_response(&mut stream, &mut buf).map_err(fail)?;
        if status != 200 || body != page_len {
            return Err(fail(format!("status {status} with {body} bytes")));
        }
    }
    Ok(requests)
}

/// Reads one response from `stream` (leftover bytes stay in `buf`);
/// returns its status and body length.
pub fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(u16, usize), String> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = response.parse(buf).map_err(|e| format!("bad response: {e}"))? {
            let status = response.code.unwrap_or(0);
            let length = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                .ok_or("a response without Content-Length")?;
            while buf.len() < head + length {
                read_more(stream, buf)?;
            }
            buf.drain(..head + length);
            return Ok((status, length));
        }
        read_more(stream, buf)?;
    }
}

fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk) {
        Ok(0) => Err("the server closed the connection (an empty reply)".into()),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e) => Err(format!("read: {e}")),
    }
}

/// Moves the calling thread into network namespace `name`.
fn enter_netns(name: &str) {
    let ns = std::fs::File::open(format!("/var/run/netns/{name}")).expect("the namespace exists");
    // SAFETY: setns on a descriptor we own; it changes only this thread's
    // network namespace.
    let done = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
    assert_eq!(done, 0, "setns into {name}: {}", std::io::Error::last_os_error());
}
