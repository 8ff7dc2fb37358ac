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

    /// Forwards every connection to `target`, but on the first one drops
    /// every byte the target sends back once the client began its first
    /// request (an HTTP/2 HEADERS frame, found by reading the frames' own
    /// headers): whatever the request's size, it arrives and its answer
    /// is lost, until [`drop_connections`](Self::drop_connections).
    pub fn muting_first_request(target: &str) -> Proxy {
        Self::with(target, u64::MAX, OnLimit::Cut, Replies::MuteFromRequest)
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
                let rule = if first {
                    s.first_replies
                } else {
                    Replies::Pass
                };
                let sent = Arc::new(Sent::default());
                let (up, sent_up) = (s.clone(), sent.clone());
                let frames = matches!(rule, Replies::MuteFromRequest).then(H2Frames::default);
                std::thread::spawn(move || up.client_to_server(client, server, &sent_up, frames));
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
    fn client_to_server(
        &self,
        mut from: TcpStream,
        mut to: TcpStream,
        sent: &Sent,
        mut frames: Option<H2Frames>,
    ) {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Marked before the request's bytes go on: its answer cannot
            // come back before the mark.
            if frames.as_mut().is_some_and(|f| f.headers_in(&buf[..n])) {
                sent.requested.store(true, Ordering::SeqCst);
            }
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
    /// The connection closes once this many bytes went back.
    CutAfter(u64),
    /// Dropped once the client began its first request.
    MuteFromRequest,
}

/// What the client sent on one connection.
#[derive(Default)]
struct Sent {
    /// An HTTP/2 HEADERS frame went through (watched only where the rule
    /// needs it).
    requested: AtomicBool,
}

/// Reads the HTTP/2 frames a client sends, by their 9-byte headers (after
/// the 24-byte connection preface), however the bytes are split.
#[derive(Default)]
struct H2Frames {
    /// Bytes of the preface still to skip, once started.
    preface_left: Option<usize>,
    /// The frame header being read.
    header: Vec<u8>,
    /// Payload bytes of the current frame still to skip.
    payload_left: usize,
}

impl H2Frames {
    /// Whether `bytes` hold the start of a HEADERS frame (type 1).
    fn headers_in(&mut self, mut bytes: &[u8]) -> bool {
        let mut seen = false;
        let preface = self.preface_left.get_or_insert(24);
        let skip = (*preface).min(bytes.len());
        *preface -= skip;
        bytes = &bytes[skip..];
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skip = self.payload_left.min(bytes.len());
                self.payload_left -= skip;
                bytes = &bytes[skip..];
                continue;
            }
            let take = (9 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.header.len() == 9 {
                let h = std::mem::take(&mut self.header);
                self.payload_left = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                seen |= h[3] == 1;
            }
        }
        seen
    }
}

/// Copies the target's replies to the client, as `rule` says.
fn replies(mut from: TcpStream, mut to: TcpStream, sent: &Sent, rule: Replies) {
    let mut buf = vec![0u8; 64 << 10];
    let mut back = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match rule {
            Replies::Pass => n,
            Replies::MuteFromRequest if sent.requested.load(Ordering::SeqCst) => continue,
            Replies::MuteFromRequest => n,
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
