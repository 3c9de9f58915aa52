//! A container-image test agent: one static binary, standard library only, so the test can
//! pack it into an OCI image by itself (`rustc --edition 2024 -C target-feature=+crt-static`). It speaks just
//! enough HTTP/1.1 for the runtime contract: `GET /ping`, and `POST /invocations`, which
//! answers with what the agent sees (its image's files, environment, and a per-process count).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

fn respond(stream: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() {
    let listener = TcpListener::bind("0.0.0.0:8080").expect("bind 8080");
    let mut count = 0u64;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).is_err() {
            continue;
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        let _ = reader.read_exact(&mut body);
        let path = request_line.split_whitespace().nth(1).unwrap_or("/");
        if path == "/ping" {
            respond(&mut stream, "200 OK", r#"{"status":"Healthy"}"#);
        } else if path == "/invocations" {
            count += 1;
            let release = std::fs::read_to_string("/etc/agent-release").unwrap_or_default();
            let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
            let body = format!(
                r#"{{"count":{count},"pid":{},"release":{},"greeting":{},"cwd":{},"region":{},"payload":{}}}"#,
                std::process::id(),
                quote(release.trim()),
                quote(&std::env::var("GREETING").unwrap_or_default()),
                quote(&cwd),
                quote(&std::env::var("AWS_REGION").unwrap_or_default()),
                quote(&String::from_utf8_lossy(&body)),
            );
            respond(&mut stream, "200 OK", &body);
        } else {
            respond(&mut stream, "404 Not Found", r#"{"error":"not found"}"#);
        }
    }
}
