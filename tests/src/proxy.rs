//! A TCP proxy in front of a node that breaks a connection part way
//! through, as a client's network does (a dropped Wi-Fi, a NAT that
//! forgets the flow): real sockets, real gRPC through it, and the node on
//! the other side sees its peer vanish mid-stream.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What the proxy does once the client has sent `limit` bytes in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnLimit {
    /// Closes that connection, both ways, at once.
    Cut,
    /// Stops forwarding that connection's bytes (the client's writes
    /// block once the buffers fill), until [`Proxy::close_all`].
    Stall,
}

struct Shared {
    target: String,
    limit: u64,
    on_limit: OnLimit,
    /// Bytes the clients sent through, all connections together.
    forwarded: AtomicU64,
    tripped: AtomicBool,
    closed: AtomicBool,
    sockets: Mutex<Vec<TcpStream>>,
    /// What becomes of the first connection's replies.
    first_replies: Replies,
    connections: AtomicU64,
}

/// A proxy on `127.0.0.1:<port>` to one target address.
pub struct Proxy {
    addr: String,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Forwards every connection to `target` (`host:port`); once the
    /// clients sent `limit` bytes, does `on_limit` to the connection that
    /// crossed it (once: later bytes and connections pass).
    pub fn start(target: &str, limit: u64, on_limit: OnLimit) -> Proxy {
        Self::with(target, limit, on_limit, Replies::Pass)
    }

    /// Forwards every connection to `target`, but once the client sent
    /// `after` bytes on the first one (past HTTP/2's preface and settings,
    /// about 80 bytes), drops every byte the target sends back on it: the
    /// request arrives, its answer is lost, until
    /// [`drop_connections`](Self::drop_connections).
    pub fn muting_first_replies(target: &str, after: u64) -> Proxy {
        Self::with(target, u64::MAX, OnLimit::Cut, Replies::MuteOnceSent(after))
    }

    /// Forwards every connection to `target`, but closes the first one
    /// once `after` bytes of replies went back on it (a download broken
    /// part way).
    pub fn cutting_first_replies(target: &str, after: u64) -> Proxy {
        Self::with(target, u64::MAX, OnLimit::Cut, Replies::CutAfter(after))
    }

    fn with(target: &str, limit: u64, on_limit: OnLimit, first_replies: Replies) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let shared = Arc::new(Shared {
            target: target.to_string(),
            limit,
            on_limit,
            forwarded: AtomicU64::new(0),
            tripped: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            sockets: Mutex::new(Vec::new()),
            first_replies,
            connections: AtomicU64::new(0),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if s.closed.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&s.target) else {
                    // The target is down: as a dead node's address would.
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut socks = s.sockets.lock().unwrap();
                    socks.extend(client.try_clone().ok());
                    socks.extend(server.try_clone().ok());
                }
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let first = s.connections.fetch_add(1, Ordering::SeqCst) == 0;
                let sent = Arc::new(AtomicU64::new(0));
                let (up, sent_up) = (s.clone(), sent.clone());
                std::thread::spawn(move || up.client_to_server(client, server, &sent_up));
                let rule = if first {
                    s.first_replies
                } else {
                    Replies::Pass
                };
                std::thread::spawn(move || replies(s2, c2, &sent, rule));
            }
        });
        Proxy { addr, shared }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Bytes the clients sent through so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Whether the limit was reached.
    pub fn tripped(&self) -> bool {
        self.shared.tripped.load(Ordering::SeqCst)
    }

    /// Closes the connections open now; later ones pass.
    pub fn drop_connections(&self) {
        for s in self.shared.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Closes every connection, and every later one at once.
    pub fn close_all(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        for s in self.shared.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Shared {
    fn client_to_server(&self, mut from: TcpStream, mut to: TcpStream, sent: &AtomicU64) {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            sent.fetch_add(n as u64, Ordering::SeqCst);
            let before = self.forwarded.fetch_add(n as u64, Ordering::SeqCst);
            let crossing = before < self.limit && before + n as u64 >= self.limit;
            if crossing && !self.tripped.swap(true, Ordering::SeqCst) {
                // Up to the limit goes through; then the connection breaks.
                let keep = (self.limit - before) as usize;
                let _ = to.write_all(&buf[..keep]);
                self.forwarded
                    .fetch_sub((n - keep) as u64, Ordering::SeqCst);
                match self.on_limit {
                    OnLimit::Cut => {}
                    OnLimit::Stall => {
                        while !self.closed.load(Ordering::SeqCst) {
                            std::thread::sleep(std::time::Duration::from_millis(20));
                        }
                    }
                }
                break;
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }
}

/// What a connection does with the target's replies.
#[derive(Clone, Copy, Debug)]
enum Replies {
    Pass,
    /// Dropped once the client has sent this many bytes on it.
    MuteOnceSent(u64),
    /// The connection closes once this many bytes went back.
    CutAfter(u64),
}

/// Copies the target's replies to the client, as `rule` says.
fn replies(mut from: TcpStream, mut to: TcpStream, sent: &AtomicU64, rule: Replies) {
    let mut buf = vec![0u8; 64 << 10];
    let mut back = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match rule {
            Replies::Pass => n,
            Replies::MuteOnceSent(after) if sent.load(Ordering::SeqCst) >= after => continue,
            Replies::MuteOnceSent(_) => n,
            Replies::CutAfter(after) => n.min((after - back) as usize),
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        back += n as u64;
        if matches!(rule, Replies::CutAfter(after) if back >= after) {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
