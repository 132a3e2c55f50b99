//! A tiny HTTP app for the quick start and the end-to-end tests.
//!
//! `GET /health` answers 200 with the version and PID (503 while `--dir`
//! holds a file `unhealthy-version` naming this version: a release that
//! never becomes healthy, or one that turns unhealthy when a test writes
//! the file); `GET /` answers 503 while the maintenance flag file exists in
//! `--dir`, 500 while `--dir` holds a file `broken-page-version` naming this
//! version (a release whose pages fail though its health check passes),
//! else 200. Both files are read on every request.

use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Args {
    addr: String,
    port: u16,
    dir: PathBuf,
    version: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut port = None;
    let mut addr = String::from("127.0.0.1");
    let mut dir = None;
    let mut version = String::from("unknown");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => addr = value,
            "--port" => port = Some(value.parse()?),
            "--dir" => dir = Some(PathBuf::from(value)),
            "--version" => version = value,
            other => anyhow::bail!("unknown flag {other}; use --addr, --port, --dir, --version"),
        }
    }
    Ok(Args {
        addr,
        port: port.ok_or_else(|| anyhow::anyhow!("--port is required"))?,
        dir: dir.ok_or_else(|| anyhow::anyhow!("--dir is required"))?,
        version,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let listener = tokio::net::TcpListener::bind((args.addr.as_str(), args.port)).await?;
    eprintln!(
        "sample app {} listening on {}:{} as pid {}",
        args.version,
        args.addr,
        args.port,
        std::process::id()
    );
    let names_this_version =
        |file: &str| std::fs::read_to_string(args.dir.join(file)).is_ok_and(|v| v.trim() == args.version);
    loop {
        let (mut socket, _) = listener.accept().await?;
        let maintenance = args.dir.join("maintenance").exists();
        let broken = names_this_version("unhealthy-version");
        let broken_page = names_this_version("broken-page-version");
        let version = args.version.clone();
        tokio::spawn(async move {
            // Read the whole request head: closing a socket with unread
            // bytes makes the kernel reset the connection.
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let request = String::from_utf8_lossy(&buf);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/health" if broken => ("503 Service Unavailable", format!("version {version} is broken")),
                "/health" => ("200 OK", format!("ok version={version} pid={}", std::process::id())),
                _ if maintenance => ("503 Service Unavailable", "down for maintenance".to_owned()),
                _ if broken_page => {
                    ("500 Internal Server Error", format!("version {version} fails to render"))
                }
                _ => ("200 OK", format!("hello from version {version}")),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}
