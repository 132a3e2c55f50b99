//! A throwaway S3-compatible server (`moto_server`) on a free 127.0.0.1
//! port, killed when dropped; for backups copied to object storage.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::{Proc, free_port, wait_until};

/// Credentials moto accepts (it checks none); the secret must never show up
/// in output.
pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "moto-secret-key";

/// Whether `moto_server` is installed.
pub fn installed() -> bool {
    Command::new("moto_server")
        .arg("--help")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _proc: Proc,
}

impl Moto {
    /// Starts moto, logging to `<log_dir>/moto.log`. Panics with the install
    /// hint when `moto_server` is missing: tests do not skip silently.
    pub fn start(log_dir: &Path) -> Moto {
        let port = free_port();
        let proc = Proc::spawn(
            "moto",
            Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                // Small parts, so tests can upload with many parts.
                .env("S3_UPLOAD_PART_MIN_SIZE", "65536"),
            log_dir,
        );
        wait_until(
            "moto_server to listen (install: python3 -m pip install 'moto[server]')",
            Duration::from_secs(30),
            || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
        );
        Moto { endpoint: format!("http://127.0.0.1:{port}"), _proc: proc }
    }

    /// Creates `bucket` (moto accepts unsigned requests).
    pub fn create_bucket(&self, bucket: &str) {
        self.put(&format!("/{bucket}"), b"", &format!("create bucket {bucket}"));
    }

    /// Writes object `key` (plain characters only) into `bucket`, as
    /// someone with write access to the bucket could.
    pub fn put_object(&self, bucket: &str, key: &str, body: &[u8]) {
        self.put(&format!("/{bucket}/{key}"), body, &format!("put {bucket}/{key}"));
    }

    /// One unsigned `PUT path` with `body`; panics unless moto answers 200.
    fn put(&self, path: &str, body: &[u8], what: &str) {
        use std::io::{Read, Write};
        let addr = self.endpoint.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).expect("connect to moto");
        write!(
            stream,
            "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .and_then(|()| stream.write_all(body))
        .unwrap_or_else(|e| panic!("{what}: cannot send the request: {e}"));
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap_or_else(|e| panic!("{what}: cannot read the reply: {e}"));
        assert!(reply.starts_with("HTTP/1.1 200"), "{what}: {reply}");
    }

    /// The agent config's `[backup.object_store]` table for `bucket`.
    pub fn agent_config(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "[backup.object_store]\nbucket = \"{bucket}\"\nprefix = \"{prefix}\"\nendpoint = \"{}\"\n\
             region = \"us-east-1\"\naccess_key_id = \"{ACCESS_KEY_ID}\"\nsecret_access_key = \"{SECRET_ACCESS_KEY}\"\n\
             allow_http = true\n",
            self.endpoint
        )
    }
}
