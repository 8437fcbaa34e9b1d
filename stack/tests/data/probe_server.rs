//! A pod for the kubelet test, std only (compiled by the test with `rustc`): listens
//! on 127.0.0.1:$PORT; `/readyz` and `/healthz` answer 200 (`/healthz` 500 once a file
//! `sick` exists in its working directory, the image's root); any other path answers
//! `$VERSION $PORT`.
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

fn main() {
    let port = std::env::var("PORT").expect("PORT");
    let version = std::env::var("VERSION").unwrap_or_default();
    let l = TcpListener::bind(format!("127.0.0.1:{port}")).expect("bind");
    println!("listening on {port}");
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        let mut line = String::new();
        let mut r = BufReader::new(&s);
        if r.read_line(&mut line).is_err() {
            continue;
        }
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                break;
            }
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/");
        let (code, body) = match path {
            "/readyz" => ("200 OK", "ok".to_string()),
            "/healthz" if std::path::Path::new("sick").exists() => {
                ("500 Internal Server Error", "sick".to_string())
            }
            "/healthz" => ("200 OK", "ok".to_string()),
            _ => ("200 OK", format!("{version} {port}")),
        };
        let _ = write!(
            s,
            "HTTP/1.1 {code}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
