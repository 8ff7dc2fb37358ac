//! `petuumd certs`: a cluster CA and the node and client certificates
//! signed by it (docs/deploy.md, "Credentials"), with rcgen.
//!
//! - A node's certificate names its node id (`node-<id>.petuum`, what
//!   peers check against the `from` of its messages) and the hosts it is
//!   reached at.
//! - A client's certificate names `client-<name>.petuum`.
//!
//! The CA's key stays in the output directory; a later call reuses it, so
//! the cluster can grow one node at a time. Keys are written mode 0600 and
//! no file is overwritten.

use anyhow::{bail, Context};
use petuum_cluster::auth::{client_name, node_name};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::io::Write;
use std::path::Path;

const CA_NAME: &str = "petuum cluster CA";

/// What to make.
pub struct Request<'a> {
    pub out: &'a Path,
    pub nodes: &'a [u64],
    pub hosts: &'a [String],
    pub clients: &'a [String],
    pub days: u32,
}

fn validity(p: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // An hour back, for clocks a little behind.
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(days as i64);
}

/// The CA's parameters: the same every time, so a reloaded key signs
/// certificates that chain to the CA certificate written first.
fn ca_params(days: u32) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p, days.max(3650));
    Ok(p)
}

/// Writes `data` to a new file (never over an existing one); `secret`
/// files are readable by their owner only.
fn write_new(path: &Path, data: &str, secret: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("{} (not overwritten; remove it first)", path.display()))?;
    f.write_all(data.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Makes what `req` asks for and returns the files written.
pub fn make(req: &Request<'_>) -> anyhow::Result<Vec<String>> {
    if req.nodes.is_empty() && req.clients.is_empty() {
        bail!("nothing to make: name at least one --node ID or --client NAME");
    }
    if req.nodes.contains(&0) {
        bail!("--node: node ids start at 1");
    }
    for c in req.clients {
        if c.is_empty() || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-') {
            bail!("--client `{c}`: use letters, digits and '-' only");
        }
    }
    std::fs::create_dir_all(req.out).with_context(|| format!("{}", req.out.display()))?;
    let mut written = Vec::new();
    let (ca_pem, ca_key_path) = (req.out.join("ca.pem"), req.out.join("ca.key"));
    let ca_key = if ca_key_path.exists() {
        let pem = std::fs::read_to_string(&ca_key_path)
            .with_context(|| format!("reading {}", ca_key_path.display()))?;
        KeyPair::from_pem(&pem).map_err(|e| {
            anyhow::anyhow!("{}: not a PEM private key ({e})", ca_key_path.display())
        })?
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params(req.days)?.self_signed(&key)?;
        write_new(&ca_key_path, &key.serialize_pem(), true)?;
        write_new(&ca_pem, &cert.pem(), false)?;
        written.push(ca_pem.display().to_string());
        written.push(ca_key_path.display().to_string());
        key
    };
    let ca = ca_params(req.days)?.self_signed(&ca_key)?;
    let mut issue = |file: &str, names: Vec<String>, ips: Vec<std::net::IpAddr>| {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(names.clone())?;
        p.subject_alt_names
            .extend(ips.into_iter().map(SanType::IpAddress));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names[0].clone());
        p.distinguished_name = dn;
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut p, req.days);
        let cert = p.signed_by(&key, &ca, &ca_key)?;
        let (pem, key_path) = (
            req.out.join(format!("{file}.pem")),
            req.out.join(format!("{file}.key")),
        );
        write_new(&pem, &cert.pem(), false)?;
        write_new(&key_path, &key.serialize_pem(), true)?;
        written.push(pem.display().to_string());
        written.push(key_path.display().to_string());
        anyhow::Ok(())
    };
    // Hosts: DNS names or IP addresses the node is reached at.
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for h in req.hosts {
        match h.parse::<std::net::IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(h.clone()),
        }
    }
    for &id in req.nodes {
        let mut names = vec![node_name(id)];
        names.extend(dns.iter().cloned());
        issue(&format!("node{id}"), names, ips.clone())?;
    }
    for c in req.clients {
        issue(&format!("client-{c}"), vec![client_name(c)], Vec::new())?;
    }
    Ok(written)
}
