//! Clients that hold connections without finishing a request (slowloris:
//! headers trickled byte by byte; sockets opened and left idle) cannot
//! keep a real `errand serve` from answering health checks and submits.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

mod common;
use common::serve::Server;

const CONFIG: &str = "
[serve]
max_connections = 200
header_timeout_secs = 1.0
body_timeout_secs = 1.0
";

fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("errand.toml"), CONFIG).unwrap();
    Server::start_in(dir, &[])
}

fn address(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

/// One request on a fresh connection; the status line, or why not.
fn request(address: &str, raw: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(address).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
        .write_all(raw.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("{e}; read {answer:?}"))?;
    Ok(answer.lines().next().unwrap_or_default().to_owned())
}

#[test]
fn trickled_headers_and_idle_sockets_do_not_starve_real_requests() {
    let server = server();
    let address = address(&server);
    // Three times the connection limit: 300 trickling headers, 300 idle.
    let mut held = Vec::new();
    for i in 0..600 {
        let Ok(mut stream) = TcpStream::connect(&address) else {
            continue;
        };
        if i % 2 == 0 {
            let _ = stream.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: ");
        }
        held.push(stream);
    }
    let started = Instant::now();
    let health = request(
        &address,
        "GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        health.as_deref(),
        Ok("HTTP/1.1 200 OK"),
        "health under load"
    );
    let body = r#"{"app": "demo", "command": "echo", "input": {"x": 1}}"#;
    let submit = request(
        &address,
        &format!(
            "POST /api/commands/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(
        submit.as_deref(),
        Ok("HTTP/1.1 202 Accepted"),
        "submit under load"
    );
    // Answered once the stalled connections timed out (1 s), not never.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    drop(held);
}

#[test]
fn an_idle_connection_is_closed_after_the_header_timeout() {
    let server = server();
    let mut idle = TcpStream::connect(address(&server)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buffer = [0u8; 256];
    // The server closes it (read returns 0, or a reset), well before the
    // read timeout.
    let started = Instant::now();
    let read = idle.read(&mut buffer);
    assert!(
        matches!(read, Ok(0)) || read.is_err() && started.elapsed() < Duration::from_secs(9),
        "{read:?} after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_body_that_never_arrives_fails_the_request_without_holding_the_connection() {
    let server = server();
    let answer = request(
        &address(&server),
        "POST /api/commands/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"app\"",
    );
    let status = answer.unwrap();
    assert!(status.starts_with("HTTP/1.1 4"), "{status}");
}
