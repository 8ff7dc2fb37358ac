//! A network between local nodes that can be partitioned: each node
//! listens on an address of its own in 127.0.0.0/8 (`127.0.1.<id>`) and
//! connects to its peers from it (node.toml `source_address`), and every
//! node is reached through a TCP proxy in front of it (its advertised
//! address). A proxy knows which node a connection comes from by its
//! source address, so a cut between two nodes blackholes exactly their
//! traffic, both ways, as a lost route or a failed switch does: bytes
//! stop flowing on the open connections (no reset; the senders' writes
//! block once the buffers fill and their keepalives go unanswered), and new
//! connections are accepted and then hear nothing. Once healed, held
//! bytes are delivered late, so stale Raft messages and requests arrive
//! after the cluster has moved on. Clients (the tests, on 127.0.0.1) are
//! never cut.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The partitionable network of a [`LocalCluster`](crate::cluster::LocalCluster).
pub struct Net {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Pairs of nodes that cannot reach each other, smaller id first.
    cut: Mutex<HashSet<(u64, u64)>>,
    /// The open proxied connections (both sockets), to close them when
    /// the net goes; a connection leaves once either direction ends.
    sockets: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
    next: AtomicU64,
    stopped: AtomicBool,
}

impl Shared {
    fn is_cut(&self, a: u64, b: u64) -> bool {
        a != b && self.cut.lock().unwrap().contains(&(a.min(b), a.max(b)))
    }
}

impl Default for Net {
    fn default() -> Self {
        Self::new()
    }
}

impl Net {
    pub fn new() -> Net {
        Net {
            shared: Arc::default(),
        }
    }

    /// The address node `id` listens on and connects from: `127.0.1.<id>`.
    pub fn node_ip(id: u64) -> IpAddr {
        assert!((1..=254).contains(&id), "node ids 1-254 only");
        IpAddr::V4(Ipv4Addr::new(127, 0, 1, id as u8))
    }

    /// The node a connection from `ip` comes from (None: a client).
    fn node_of(ip: IpAddr) -> Option<u64> {
        match ip {
            IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 1] => Some(v4.octets()[3] as u64),
            _ => None,
        }
    }

    /// Starts the proxy in front of node `id`, which listens on `target`;
    /// returns the proxy's address (`127.0.0.1:<port>`), the node's
    /// advertised one.
    pub fn front(&self, id: u64, target: String) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a node's proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let s = self.shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(from) = conn else { continue };
                let src = from.peer_addr().ok().and_then(|a| Net::node_of(a.ip()));
                let Ok(to) = TcpStream::connect(&target) else {
                    // The node is down: as its own address would answer.
                    let _ = from.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = from.set_nodelay(true);
                let _ = to.set_nodelay(true);
                let (Ok(from2), Ok(to2), Ok(from3), Ok(to3)) = (
                    from.try_clone(),
                    to.try_clone(),
                    from.try_clone(),
                    to.try_clone(),
                ) else {
                    continue;
                };
                let conn = s.next.fetch_add(1, Ordering::SeqCst);
                s.sockets.lock().unwrap().insert(conn, (from3, to3));
                let (s1, s2) = (s.clone(), s.clone());
                std::thread::spawn(move || pump(&s1, conn, id, src, from, to));
                std::thread::spawn(move || pump(&s2, conn, id, src, to2, from2));
            }
        });
        addr
    }

    /// Cuts `a` off from `b`, both ways.
    pub fn cut(&self, a: u64, b: u64) {
        if a != b {
            self.shared.cut.lock().unwrap().insert((a.min(b), a.max(b)));
        }
    }

    /// Cuts node `id` off from every node in `others`.
    pub fn isolate(&self, id: u64, others: impl IntoIterator<Item = u64>) {
        for o in others {
            self.cut(id, o);
        }
    }

    /// Whether `a` and `b` are cut off from each other.
    pub fn is_cut(&self, a: u64, b: u64) -> bool {
        self.shared.is_cut(a, b)
    }

    /// Ends every cut; held bytes flow again.
    pub fn heal(&self) {
        self.shared.cut.lock().unwrap().clear();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        for (_, (a, b)) in self.shared.sockets.lock().unwrap().drain() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

/// Copies one direction of connection `conn` into node `node`'s proxy
/// (from `src`, None for a client), holding each chunk while the two are
/// cut.
fn pump(
    net: &Shared,
    conn: u64,
    node: u64,
    src: Option<u64>,
    mut from: TcpStream,
    mut to: TcpStream,
) {
    let mut buf = vec![0u8; 64 << 10];
    'copy: loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while src.is_some_and(|s| net.is_cut(node, s)) {
            if net.stopped.load(Ordering::SeqCst) {
                break 'copy;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    net.sockets.lock().unwrap().remove(&conn);
}
