//! The daemon's side of the dataset store (docs/jobs.md, "Data that
//! reaches every node"): uploads from clients, datasets named by URL, and
//! turning a job's `sha256:` data paths into files on this node before its
//! workers read them. The store itself (records, copies, transfers between
//! nodes) is `petuum_cluster::datasets`.

use petuum_cluster::datasets::place::publish;
use petuum_cluster::datasets::store::IngestError;
use petuum_cluster::datasets::{self, fetch, is_sha256_hex, DatasetRecord};
use petuum_cluster::ClusterNode;
use petuum_core::spec::JobSpec;
use petuum_proto::v1::DatasetInfo;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// A dataset record as the API shows it.
pub fn info(rec: &DatasetRecord, used_by: Vec<u64>) -> DatasetInfo {
    DatasetInfo {
        sha256: rec.sha256.clone(),
        name: rec.name.clone(),
        size: rec.size,
        holders: rec.holders.clone(),
        ready: rec.ready,
        source: rec.source.clone(),
        created_ms: rec.created_ms,
        used_by,
    }
}

/// Ingests (uploads, URL fetches) this node takes at once, and the
/// uploads it keeps for their clients to resume (`crate::uploads`).
#[derive(Clone)]
pub struct Ingests {
    permits: Arc<tokio::sync::Semaphore>,
    pub(crate) uploads: crate::uploads::Uploads,
}

impl Ingests {
    pub fn new(n: u32) -> Ingests {
        Ingests {
            permits: Arc::new(tokio::sync::Semaphore::new(n as usize)),
            uploads: crate::uploads::Uploads::new(2 * n.max(1) as usize),
        }
    }

    /// A permit, or why there is none.
    pub(crate) fn take(&self) -> Result<tokio::sync::OwnedSemaphorePermit, String> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            "this node is taking as many uploads as it may (datasets.max_ingests); try again shortly"
                .to_string()
        })
    }
}

pub(crate) fn ingest_status(e: IngestError) -> Status {
    match e {
        IngestError::TooLarge(_) => Status::resource_exhausted(e.to_string()),
        IngestError::Io(_) => Status::internal(e.to_string()),
    }
}

/// A publication's failure as the client sees it: only a metadata group
/// that did not answer (for half a minute) is worth sending the bytes
/// again for; too few live nodes to copy to, or a disk error, ends the
/// upload with the reason.
pub(crate) fn publish_status(e: datasets::place::PublishError) -> Status {
    use datasets::place::PublishError;
    match e {
        PublishError::Meta(_) => Status::unavailable(e.to_string()),
        PublishError::TooFewCopies { .. } => Status::failed_precondition(e.to_string()),
        PublishError::Io(_) => Status::internal(e.to_string()),
    }
}

/// Whether an address is one a URL may not reach: link-local always
/// (cloud metadata services live there), loopback, private and unique
/// local ones unless `allow_private`.
fn forbidden(ip: IpAddr, allow_private: bool) -> bool {
    match ip {
        IpAddr::V4(v) => {
            v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || (!allow_private
                    && (v.is_loopback()
                        || v.is_private()
                        || (v.octets()[0] == 100 && (v.octets()[1] & 0xc0) == 64)))
        }
        IpAddr::V6(v) => {
            if let Some(v4) = v.to_ipv4_mapped() {
                return forbidden(IpAddr::V4(v4), allow_private);
            }
            let seg = v.segments()[0];
            (seg & 0xffc0) == 0xfe80
                || v.is_unspecified()
                || (!allow_private && (v.is_loopback() || (seg & 0xfe00) == 0xfc00))
        }
    }
}

/// Resolves names for URL fetches, dropping the addresses [`forbidden`]
/// rules out (checked at connection time, so a name cannot resolve to an
/// allowed address for a check and a forbidden one for the fetch).
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !forbidden(a.ip(), allow))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves to no address a dataset URL may reach (loopback, private and link-local addresses are refused; see datasets.allow_private_urls)"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Checks a URL's scheme and literal address.
fn check_url(url: &str, allow_private: bool) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("`{url}`: only http and https URLs can be fetched"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("a dataset URL may not carry credentials".into());
    }
    let host = u.host_str().ok_or_else(|| format!("`{url}` has no host"))?;
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    if let Some(ip) = literal {
        if forbidden(ip, allow_private) {
            return Err(format!(
                "`{url}`: {ip} is an address dataset URLs may not reach (see datasets.allow_private_urls)"
            ));
        }
    }
    Ok(u)
}

/// Fetches a URL into the dataset store and publishes it (the same bytes
/// fetched before cost one download and no new copies).
pub async fn fetch_url(
    node: &Arc<ClusterNode>,
    ingests: &Ingests,
    url: &str,
) -> Result<DatasetRecord, String> {
    let allow = node.config.datasets.allow_private_urls;
    let u = check_url(url, allow)?;
    // The URL as logged and recorded: no query string (it may carry a
    // signature or token).
    let shown = format!(
        "{}://{}{}{}",
        u.scheme(),
        u.host_str().unwrap_or(""),
        u.port().map_or(String::new(), |p| format!(":{p}")),
        u.path()
    );
    let client = reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver {
            allow_private: allow,
        }))
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::custom(move |a| {
            if a.previous().len() >= 5 {
                return a.error("more than 5 redirects");
            }
            match check_url(a.url().as_str(), allow) {
                Ok(_) => a.follow(),
                Err(e) => a.error(e),
            }
        }))
        .build()
        .map_err(|e| format!("{shown}: {e}"))?;
    let _permit = ingests.take()?;
    let mut resp = client
        .get(u.clone())
        .send()
        .await
        .map_err(|e| format!("fetching {shown}: {}", petuum_core::error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(format!(
            "fetching {shown}: the server answered {}",
            resp.status()
        ));
    }
    let name = u
        .path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|s| !s.is_empty())
        .unwrap_or("data")
        .to_string();
    let max = node.config.datasets.max_mib << 20;
    let mut ing = node
        .datasets
        .ingest(&name, max)
        .map_err(|e| format!("{shown}: {e}"))?;
    loop {
        match resp.chunk().await {
            Ok(Some(bytes)) => {
                if let Err(e) = tokio::task::block_in_place(|| ing.write(bytes)) {
                    ing.abandon();
                    return Err(format!("{shown}: {e}"));
                }
            }
            Ok(None) => break,
            Err(e) => {
                ing.abandon();
                return Err(format!(
                    "fetching {shown}: {}",
                    petuum_core::error_chain(&e)
                ));
            }
        }
    }
    let done = tokio::task::block_in_place(|| ing.finish()).map_err(|e| format!("{shown}: {e}"))?;
    tracing::info!(url = %shown, bytes = done.size, dataset = %done.sha256, "dataset fetched from its URL");
    if let Some(rec) = node.meta_dataset(&done.sha256).await.ok().flatten() {
        if rec.ready {
            let _ = std::fs::remove_dir_all(&done.dir);
            return Ok(rec);
        }
    }
    publish(node, done, shown.clone())
        .await
        .map_err(|e| format!("{shown}: {e}"))
}

/// Every data field of a spec, mutable, with its name.
pub fn data_fields(spec: &mut JobSpec) -> Vec<(&'static str, &mut PathBuf)> {
    let d = &mut spec.data;
    let mut out = vec![("data.train", &mut d.train)];
    for (f, p) in [
        ("data.train_labels", &mut d.train_labels),
        ("data.test", &mut d.test),
        ("data.test_labels", &mut d.test_labels),
        ("data.vocab", &mut d.vocab),
    ] {
        if let Some(p) = p.as_mut() {
            out.push((f, p));
        }
    }
    out
}

/// Replaces each `http(s)://` data path of a submitted spec by the
/// dataset its bytes were stored as (`sha256:<hex>`): every node and every
/// recovery then reads exactly what was fetched at submission.
pub async fn store_urls(
    node: &Arc<ClusterNode>,
    ingests: &Ingests,
    spec: &mut JobSpec,
) -> Result<(), Status> {
    for (field, p) in data_fields(spec) {
        let s = p.to_string_lossy().to_string();
        if s.starts_with("http://") || s.starts_with("https://") {
            let rec = fetch_url(node, ingests, &s)
                .await
                .map_err(|e| Status::invalid_argument(format!("`{field}`: {e}")))?;
            *p = PathBuf::from(format!("{}{}", datasets::REF_PREFIX, rec.sha256));
        }
    }
    Ok(())
}

/// Checks the form of the datasets a spec names (`sha256:` paths). That
/// they are in the store and sealed is checked where the job is recorded
/// (the metadata group's leader, which has seen every seal; this node's
/// replica may lag a seal it just made).
pub fn check_refs(spec: &JobSpec) -> Result<(), String> {
    for (field, p) in spec.data_files() {
        let s = p.to_string_lossy();
        if let Some(sha) = datasets::dataset_ref(&s) {
            if !is_sha256_hex(sha) {
                return Err(format!(
                    "`{field}`: `{s}` is not sha256: and 64 lowercase hex digits"
                ));
            }
        }
    }
    Ok(())
}

/// Makes each dataset a spec names available on this node (fetched from
/// its holders when missing, verified when present) and points the spec
/// at the local copies. `Err((retry, message))`: `retry` when another try
/// may succeed (no holder reachable now).
pub async fn materialize(node: &ClusterNode, spec: &mut JobSpec) -> Result<(), (bool, String)> {
    for (field, p) in data_fields(spec) {
        let s = p.to_string_lossy().to_string();
        let Some(sha) = datasets::dataset_ref(&s) else {
            continue;
        };
        let rec = match node.meta_dataset(sha).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err((
                    false,
                    format!("`{field}`: dataset {s} is no longer in the store (removed?)"),
                ))
            }
            Err(e) => {
                return Err((
                    true,
                    format!("`{field}`: reading the dataset's record: {e}"),
                ))
            }
        };
        match fetch::ensure(node, &rec).await {
            Ok(path) => *p = path,
            Err(e) => return Err((true, format!("`{field}`: {e}"))),
        }
    }
    Ok(())
}

/// The sweeps of this node's dataset copies, forever.
pub async fn sweep_forever(node: Arc<ClusterNode>) {
    let mut sweeper = datasets::place::Sweeper::default();
    loop {
        tokio::time::sleep(datasets::place::SWEEP_EVERY).await;
        sweeper.sweep(&node).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_to_metadata_services_and_private_nets_are_refused() {
        assert!(check_url("http://169.254.169.254/latest/meta-data", true).is_err());
        assert!(check_url("http://[fe80::1]/x", true).is_err());
        assert!(check_url("http://127.0.0.1:8080/x.csv", false).is_err());
        assert!(check_url("http://10.1.2.3/x.csv", false).is_err());
        assert!(check_url("http://[::ffff:127.0.0.1]/x", false).is_err());
        assert!(check_url("http://127.0.0.1:8080/x.csv", true).is_ok());
        assert!(check_url("https://example.org/x.csv", false).is_ok());
        assert!(check_url("file:///etc/passwd", true).is_err());
        assert!(check_url("http://user:pw@example.org/x", false).is_err());
    }
}
