//! Services reachable from this machine: the `http` and `echo` templates
//! behind user-mode networking (`-p HOST:GUEST`), answered for real clients.

mod support;

use std::io::{Read, Write};
use std::time::Duration;
use support::*;

#[test]
fn the_http_template_answers_curl_through_a_port_forward_with_keep_alive() {
    let dir = scratch();
    let service = new_from_template(dir.path(), "web", "http");
    build(&service, "web");
    let port = free_port();
    let mut server = Background::start(&service, &["-p", &format!("{port}:80")]);
    server.wait_for("http: serving 2048 bytes on 10.0.2.15:80", Duration::from_secs(120));

    let url = format!("http://127.0.0.1:{port}/");
    let page = curl(&[&url]);
    assert_eq!(page.status, 0, "{}\n{}", page.stderr, server.output());
    assert_eq!(page.stdout.len(), 2048, "{}", page.stdout);
    assert!(page.stdout.contains("<h1>Hello from Denali VM 0</h1>"), "{}", page.stdout);

    // Two requests in one curl: the second reuses the first connection.
    let format = "%{http_code} %{size_download} %{num_connects}\n";
    let twice = curl(&["-o", "/dev/null", "-o", "/dev/null", "-w", format, &url, &url]);
    assert_eq!(twice.stdout, "200 2048 1\n200 2048 0\n", "{}\n{}", twice.stderr, server.output());

    let missing = curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("{url}nope")]);
    assert_eq!(missing.stdout, "404");
}

#[test]
fn the_echo_template_echoes_through_a_port_forward() {
    let dir = scratch();
    let service = new_from_template(dir.path(), "echo", "echo");
    build(&service, "echo");
    let port = free_port();
    let mut server = Background::start(&service, &["-p", &format!("{port}:7")]);
    server.wait_for("echo: listening on 10.0.2.15:7", Duration::from_secs(120));

    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let message: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        let message = message.clone();
        std::thread::spawn(move || {
            stream.write_all(&message).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::new();
    stream.read_to_end(&mut back).expect("the echo ends when we stop sending");
    writer.join().unwrap();
    assert!(back == message, "{} bytes came back, {} sent\n{}", back.len(), message.len(), server.output());
}

#[test]
fn a_forwarded_port_already_in_use_is_refused_with_a_sentence() {
    let dir = scratch();
    let service = new_from_template(dir.path(), "busy", "http");
    let image = build(&service, "busy");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = run(dir.path(), &["-p", &format!("{port}:80"), image.to_str().unwrap()]);
    assert_eq!(out.status, 1, "{}", out.stdout);
    let expected =
        format!("port {port} on 127.0.0.1 is already in use: stop what listens there or forward another host port");
    assert!(out.stderr.contains(&expected), "{}", out.stderr);

    for bad in ["80", "x:80", "0:80", "8080:70000"] {
        let out = run(dir.path(), &["-p", bad, image.to_str().unwrap()]);
        assert_eq!(out.status, 1);
        assert!(
            out.stderr.contains(&format!("`-p {bad}` is not a port forward: write it as HOST:GUEST")),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn a_bad_address_in_denali_toml_is_refused_with_a_sentence() {
    let dir = scratch();
    let service = new_from_template(dir.path(), "badnet", "http");
    std::fs::write(service.join("Denali.toml"), "[network]\nip = \"10.0.2.300/24\"\n").unwrap();
    let out = run(&service, &[]);
    assert_eq!(out.status, 1);
    assert!(out.stderr.contains("`network.ip` = \"10.0.2.300/24\" is not an address with a prefix"), "{}", out.stderr);
}

#[test]
fn a_vm_flooding_frames_does_not_stop_another_from_answering() {
    let dir = scratch();
    let web = build(&new_from_template(dir.path(), "web", "http"), "web");
    let flood = build(&new_service(dir.path(), "flood", Some(include_str!("guests/flood.rs"))), "flood");
    let port = free_port();
    let (web, flood) = (web.to_str().unwrap(), flood.to_str().unwrap());
    let mut server = Background::start(dir.path(), &["-p", &format!("{port}:80"), web, flood]);
    server.wait_for("vm0| http: serving 2048 bytes", Duration::from_secs(120));
    server.wait_for("vm1| flood: 2000 frames sent", Duration::from_secs(120));

    let url = format!("http://127.0.0.1:{port}/");
    let mut args = vec!["-w", "%{http_code} %{size_download}\n"];
    for _ in 0..20 {
        args.extend(["-o", "/dev/null", url.as_str()]);
    }
    let out = curl(&args);
    assert_eq!(out.status, 0, "{}\n{}", out.stderr, server.output());
    assert_eq!(out.stdout.matches("200 2048\n").count(), 20, "{}", out.stdout);
    // The flood went on all the while.
    server.wait_for("vm1| flood: 6000 frames sent", Duration::from_secs(120));
}
