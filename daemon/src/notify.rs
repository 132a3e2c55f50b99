//! The sd_notify protocol, for `Type=notify` units with `WatchdogSec=`.
//!
//! systemd starts a notify service with `NOTIFY_SOCKET` naming a unix
//! datagram socket; the service sends it newline-separated `KEY=value`
//! lines: `READY=1` once it does its job (systemd holds back units ordered
//! after it until then), `STATUS=…` for `systemctl status`, `WATCHDOG=1`
//! at least once per `WATCHDOG_USEC` (or systemd kills and restarts it),
//! and `STOPPING=1` when it begins to shut down.
//!
//! Without `NOTIFY_SOCKET` (run by hand, in a container, in most tests)
//! every call here does nothing. Sending never blocks: the socket is
//! non-blocking and a message that does not fit is dropped, which is what
//! systemd's own `sd_notify` amounts to for a stuck manager.
//!
//! The process-wide [`ready`], [`status`], [`watchdog`] and [`stopping`]
//! use the environment the process started with; a [`Notifier`] can also
//! be made for an explicit socket (tests).

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;
use std::time::Duration;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// Half of `WATCHDOG_USEC` when the watchdog is on for this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// A notifier for `socket` (a `NOTIFY_SOCKET` value: a path, or
    /// `@name` for Linux's abstract namespace), pinging the watchdog every
    /// `watchdog` if given.
    pub fn new(socket: &str, watchdog: Option<Duration>) -> io::Result<Notifier> {
        let addr = socket_addr(socket)?;
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Notifier { socket, addr, watchdog })
    }

    /// The notifier systemd's environment asks for: `None` without
    /// `NOTIFY_SOCKET`. The watchdog is on when `WATCHDOG_USEC` is set and
    /// `WATCHDOG_PID`, if set, is this process (systemd may set the
    /// watchdog for another process of the unit).
    pub fn from_env() -> Option<Notifier> {
        let socket = std::env::var("NOTIFY_SOCKET").ok().filter(|s| !s.is_empty())?;
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        match Notifier::new(&socket, watchdog) {
            Ok(notifier) => Some(notifier),
            Err(e) => {
                tracing::warn!(socket = %socket, error = %e, "NOTIFY_SOCKET is set but unusable; not reporting to systemd");
                None
            }
        }
    }

    /// How often to send `WATCHDOG=1`: half the watchdog timeout, so one
    /// late ping is not yet fatal. `None`: the watchdog is off.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `state` (one or more `KEY=value` lines) as one datagram.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.socket.send_to_addr(state.as_bytes(), &self.addr).map(|_| ())
    }
}

/// `NOTIFY_SOCKET`'s value as an address.
fn socket_addr(socket: &str) -> io::Result<SocketAddr> {
    match socket.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        #[cfg(not(target_os = "linux"))]
        Some(_) => Err(io::Error::new(io::ErrorKind::Unsupported, "abstract sockets are Linux-only")),
        None => SocketAddr::from_pathname(socket),
    }
}

/// Half of `usec` microseconds, if the watchdog is meant for process `pid`.
fn watchdog_interval(usec: Option<&str>, watchdog_pid: Option<&str>, pid: u32) -> Option<Duration> {
    if let Some(for_pid) = watchdog_pid
        && for_pid.trim().parse::<u32>().ok() != Some(pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// The process-wide notifier, from the environment at first use.
fn global() -> Option<&'static Notifier> {
    static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();
    NOTIFIER.get_or_init(Notifier::from_env).as_ref()
}

fn send(state: &str) {
    if let Some(notifier) = global()
        && let Err(e) = notifier.notify(state)
    {
        // The next ping or status tries again; nothing to do but say so.
        tracing::debug!(error = %e, state, "cannot notify systemd");
    }
}

/// `READY=1`: the daemon does its job now. Repeating it is harmless.
pub fn ready() {
    send("READY=1");
}

/// `STATUS=text` for `systemctl status` (one line: line breaks become spaces).
pub fn status(text: &str) {
    send(&format!("STATUS={}", text.replace(['\n', '\r'], " ")));
}

/// `WATCHDOG=1`: still alive.
pub fn watchdog() {
    send("WATCHDOG=1");
}

/// `STOPPING=1`: shutting down (a drain may take a while).
pub fn stopping() {
    send("STOPPING=1");
}

/// How often the caller's main loop should call [`watchdog`]; `None` when
/// systemd asked for no watchdog (or nothing listens).
pub fn watchdog_interval_from_env() -> Option<Duration> {
    global()?.watchdog_interval()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_pings_at_half_the_timeout_for_this_process_only() {
        assert_eq!(watchdog_interval(Some("30000000"), None, 7), Some(Duration::from_secs(15)));
        assert_eq!(watchdog_interval(Some("30000000"), Some("7"), 7), Some(Duration::from_secs(15)));
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
    }

    #[test]
    fn messages_arrive_as_datagrams_on_a_path_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).expect("bind");
        let notifier = Notifier::new(path.to_str().expect("UTF-8 path"), None).expect("notifier");
        notifier.notify("READY=1").expect("send");
        notifier.notify("STATUS=leader (token 7)").expect("send");
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STATUS=leader (token 7)");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn messages_arrive_on_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("runway-daemon-notify-test-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).expect("addr"))
                .expect("bind");
        let notifier = Notifier::new(&format!("@{name}"), None).expect("notifier");
        notifier.notify("WATCHDOG=1").expect("send");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn nobody_listening_is_an_error_the_caller_may_ignore() {
        let dir = tempfile::tempdir().expect("temp dir");
        let notifier = Notifier::new(dir.path().join("gone.sock").to_str().expect("UTF-8 path"), None)
            .expect("notifier");
        assert!(notifier.notify("READY=1").is_err());
    }
}
