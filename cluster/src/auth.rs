//! Who may call what (docs/deploy.md, "Credentials").
//!
//! A node's port serves two kinds of callers, with separate credentials:
//! - **peers** (other nodes): the Peer service (Raft and the Data RPC).
//!   With `[tls]` a peer must present a certificate signed by the cluster
//!   CA that names its node id (the DNS name `node-<id>.petuum` in its
//!   subject alternative names), and every message's `from` must be that
//!   id. A client token is not a peer credential.
//! - **clients**: the Jobs and Cluster services. A client presents the
//!   bearer token of `client_token_file`, or, with `[tls]`, any
//!   certificate signed by the cluster CA (`petuumd certs` makes client
//!   certificates named `client-<name>.petuum`).
//!
//! One interceptor ([`Guard`]) decides for every service; the token is
//! compared in constant time (`subtle`) and never logged.

// tonic's interceptors return `Status` as is.
#![allow(clippy::result_large_err)]

use rustls_pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// The name a node's certificate carries for node `id`.
pub fn node_name(id: u64) -> String {
    format!("node-{id}.petuum")
}

/// The name a client certificate carries for client `name`.
pub fn client_name(name: &str) -> String {
    format!("client-{name}.petuum")
}

/// Whether `got` is the token `want`, in constant time for equal lengths.
pub fn token_matches(want: &str, got: &str) -> bool {
    want.as_bytes().ct_eq(got.as_bytes()).into()
}

/// Whether `cert` names `name` (a DNS subject alternative name). The chain
/// was verified against the cluster CA by the TLS handshake.
fn cert_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(parsed) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(name) else {
        return false;
    };
    parsed.verify_is_valid_for_subject_name(&name).is_ok()
}

/// Whether a DER certificate names node `id` (`node-<id>.petuum`).
pub fn cert_names_node(cert: &[u8], id: u64) -> bool {
    cert_names(&CertificateDer::from(cert), &node_name(id))
}

/// The node a verified peer certificate names, among `members`.
fn certified_node(cert: &CertificateDer<'_>, members: &[u64]) -> Option<u64> {
    members
        .iter()
        .copied()
        .find(|&id| cert_names(cert, &node_name(id)))
}

/// What the guard established about a caller, for the handlers (in the
/// request's extensions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A peer whose certificate names this node id.
    Node(u64),
    /// No TLS on this node: peers are trusted by the token alone (or by
    /// nothing on loopback without one).
    Unverified,
    /// A client (token or client certificate).
    Client,
    /// A peer with a certificate the cluster CA signed that names no
    /// member: a node joining. It may only ask to join, under the id its
    /// certificate names (the leaf is in the request's [`LeafCert`]).
    Candidate,
}

/// The DER leaf certificate of a [`Caller::Candidate`].
#[derive(Clone, Debug)]
pub struct LeafCert(pub Vec<u8>);

/// The member node ids a guard admits as peers: shared with the node,
/// which updates it as members join and leave.
pub type Members = Arc<parking_lot::RwLock<Vec<u64>>>;

/// Which services a [`Guard`] protects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    Peer,
    Client,
}

/// The interceptor of every service of a node.
#[derive(Clone)]
pub struct Guard {
    door: Door,
    token: Option<Arc<str>>,
    tls: bool,
    members: Members,
}

impl Guard {
    pub fn new(door: Door, token: Option<&str>, tls: bool, members: Members) -> Guard {
        Guard {
            door,
            token: token.map(Arc::from),
            tls,
            members,
        }
    }

    fn bearer<T>(req: &Request<T>) -> Option<&str> {
        req.metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
    }

    /// Who the caller is, or why it may not call.
    pub fn check<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let certs = req.peer_certs();
        let leaf = certs.as_ref().and_then(|c| c.first());
        let node = leaf.and_then(|c| certified_node(c, &self.members.read()));
        match self.door {
            Door::Peer if self.tls => match node {
                Some(id) => Ok(Caller::Node(id)),
                None if leaf.is_some() => Ok(Caller::Candidate),
                None => Err(Status::unauthenticated(
                    "peer RPCs need a node certificate signed by the cluster CA (a client token is not a peer credential)",
                )),
            },
            Door::Peer => {
                self.token_ok(req)?;
                Ok(Caller::Unverified)
            }
            Door::Client => {
                // A certificate the cluster CA signed (the handshake
                // verified it), a client's or a node's, stands for the
                // token.
                if leaf.is_none() {
                    self.token_ok(req)?;
                }
                Ok(Caller::Client)
            }
        }
    }

    fn token_ok<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(want) = &self.token else {
            return Ok(());
        };
        if Self::bearer(req).is_some_and(|got| token_matches(want, got)) {
            return Ok(());
        }
        Err(Status::unauthenticated(
            "missing or wrong bearer token (this node requires client_token_file's token)",
        ))
    }
}

impl tonic::service::Interceptor for Guard {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.check(&req)?;
        if caller == Caller::Candidate {
            let leaf = req
                .peer_certs()
                .and_then(|c| c.first().map(|c| c.as_ref().to_vec()))
                .unwrap_or_default();
            req.extensions_mut().insert(LeafCert(leaf));
        }
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[u64]) -> Members {
        Arc::new(parking_lot::RwLock::new(ids.to_vec()))
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abc", "abd"));
        assert!(!token_matches("abc", "ab"));
        assert!(!token_matches("abc", ""));
    }

    #[test]
    fn without_tls_the_token_is_the_only_credential() {
        let g = Guard::new(Door::Peer, Some("t0k"), false, members(&[1, 2]));
        let mut req = Request::new(());
        assert_eq!(
            g.check(&req).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        req.metadata_mut()
            .insert("authorization", "Bearer t0k".parse().unwrap());
        assert_eq!(g.check(&req).unwrap(), Caller::Unverified);
        let open = Guard::new(Door::Client, None, false, members(&[1]));
        assert_eq!(open.check(&Request::new(())).unwrap(), Caller::Client);
    }

    #[test]
    fn with_tls_a_token_is_no_peer_credential() {
        let g = Guard::new(Door::Peer, Some("t0k"), true, members(&[1, 2]));
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("authorization", "Bearer t0k".parse().unwrap());
        let e = g.check(&req).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("not a peer credential"), "{e}");
    }
}
