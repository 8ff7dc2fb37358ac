//! The node's HTTP endpoint (`http_listen` in node.toml): Prometheus
//! metrics at `/metrics` and the web dashboard (docs/operations.md).
//!
//! With `client_token_file` set, every path asks for the token, as a
//! bearer token (Prometheus' `authorization`) or as the password of HTTP
//! basic authentication (what a browser prompts for; any user name).

pub mod metrics;
pub mod pages;

use crate::jobs::Jobs;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use pages::{NodeView, Refresh};
use petuum_cluster::server::token_matches;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

struct Http {
    jobs: Arc<Jobs>,
    metrics: metrics::Metrics,
    token: Option<String>,
}

/// Binds `addr` now (a busy port is an error at start) and returns the
/// server, to be spawned; it stops when `shutdown` resolves.
pub async fn bind(
    addr: SocketAddr,
    jobs: Arc<Jobs>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<impl Future<Output = ()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("http_listen {addr}: {e}"))?;
    let token = jobs.node.client_token();
    let state = Arc::new(Http {
        metrics: metrics::Metrics::new(jobs.clone()),
        jobs,
        token,
    });
    let app = router(state);
    tracing::info!(%addr, "HTTP endpoint (metrics, dashboard) listening");
    Ok(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "HTTP endpoint stopped");
        }
    })
}

fn router(state: Arc<Http>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/static/style.css", get(style))
        .route("/static/live.js", get(live_js))
        .route("/jobs/:id", get(job_page))
        .route("/jobs/:id/charts", get(job_charts))
        .route("/jobs/:id/progress.json", get(job_progress))
        .route("/jobs/:id/model", get(job_model))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Checks the client token (when one is configured) and adds the
/// security headers every answer carries.
async fn guard(State(s): State<Arc<Http>>, req: Request, next: Next) -> Response {
    if let Some(want) = &s.token {
        let got = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(presented_token);
        if !got.is_some_and(|g| token_matches(want, &g)) {
            let mut r = (
                StatusCode::UNAUTHORIZED,
                "this node requires its client token: as `Authorization: Bearer <token>`, or as the password of HTTP basic authentication\n",
            )
                .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"petuum\", charset=\"UTF-8\""),
            );
            return r;
        }
    }
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The token in an `Authorization` value: `Bearer <t>`, or `Basic` with
/// `<any user>:<t>`.
fn presented_token(v: &str) -> Option<String> {
    if let Some(t) = v.strip_prefix("Bearer ") {
        return Some(t.trim().to_string());
    }
    let b = v.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_string())
}

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn error_page(code: StatusCode, message: &str) -> Response {
    let body = pages::page(
        "error",
        Refresh::Never,
        &format!("<h1>{}</h1><p>{}</p>", code, pages::esc(message)),
    );
    (code, html(body)).into_response()
}

async fn metrics(State(s): State<Arc<Http>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode().await,
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        pages::STYLE,
    )
        .into_response()
}

async fn live_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        pages::LIVE_JS,
    )
        .into_response()
}

/// How long the overview waits for each node's status.
const STATUS_TIMEOUT: Duration = Duration::from_millis(800);

async fn overview(State(s): State<Arc<Http>>) -> Response {
    let node = &s.jobs.node;
    let meta = node.meta_view_linear(|m| m.clone()).await.ok();
    let states = meta
        .as_ref()
        .map(|m| m.node_states.clone())
        .unwrap_or_default();
    let ids = node.placement().nodes().to_vec();
    let states = &states;
    let views = futures::future::join_all(ids.iter().map(|&n| async move {
        let status = if n == node.id() {
            Some(node.status())
        } else {
            node.peers.status(n, STATUS_TIMEOUT).await.ok()
        };
        let state = match (&status, states.get(&n)) {
            (None, _) => "unreachable".to_string(),
            (Some(_), Some(st)) => st.name().to_string(),
            (Some(_), None) => "up".to_string(),
        };
        NodeView {
            id: n,
            addr: node.peers.addr(n).unwrap_or_default(),
            state,
            status,
        }
    }))
    .await;
    let mut jobs: Vec<_> = meta.as_ref().map_or(Vec::new(), |m| {
        m.jobs.values().map(|r| &**r).collect::<Vec<_>>()
    });
    jobs.sort_by_key(|r| std::cmp::Reverse(r.id));
    let mut body = pages::overview(node.id(), node.cluster_id, &views, &jobs);
    if meta.is_none() {
        body.push_str("<p class=\"bad\">The metadata group does not answer (no quorum?): jobs are not shown.</p>");
    }
    html(pages::page("cluster", Refresh::Always, &body))
}

async fn record(
    s: &Http,
    id: &str,
) -> Result<std::sync::Arc<petuum_cluster::jobs::JobRecord>, Response> {
    let Ok(job) = id.parse::<u64>() else {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "a job id is a positive integer",
        ));
    };
    s.jobs
        .node
        .meta_job_linear(job)
        .await
        .map_err(|e| {
            error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the metadata group does not answer: {e}"),
            )
        })?
        .ok_or_else(|| error_page(StatusCode::NOT_FOUND, &format!("job {job} not found")))
}

async fn job_page(State(s): State<Arc<Http>>, Path(id): Path<String>) -> Response {
    match record(&s, &id).await {
        Ok(r) => html(pages::page(
            &format!("job {} {}", r.id, r.name),
            if r.state.is_terminal() {
                Refresh::Never
            } else {
                Refresh::WithoutScript
            },
            &pages::job(&r),
        )),
        Err(e) => e,
    }
}

async fn job_charts(State(s): State<Arc<Http>>, Path(id): Path<String>) -> Response {
    match record(&s, &id).await {
        Ok(r) => html(pages::charts(&r)),
        Err(e) => e,
    }
}

async fn job_progress(State(s): State<Arc<Http>>, Path(id): Path<String>) -> Response {
    let r = match record(&s, &id).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    let points: Vec<serde_json::Value> = r
        .history
        .iter()
        .map(|p| {
            serde_json::json!({
                "clock": p.clock,
                "objective": p.objective,
                "samples_per_second": p.throughput,
                "elapsed_s": p.elapsed_s,
                "at_ms": p.at_ms,
            })
        })
        .collect();
    let body = serde_json::json!({
        "job": r.id,
        "state": r.state.name(),
        "clock": r.progress.as_ref().map_or(0, |p| p.clock),
        "clocks": r.clocks,
        "epoch": r.epoch,
        "recoveries": r.recoveries,
        "history": points,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn job_model(State(s): State<Arc<Http>>, Path(id): Path<String>) -> Response {
    let r = match record(&s, &id).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    if r.result.is_none() {
        return error_page(
            StatusCode::CONFLICT,
            &format!(
                "job {} is {}: a model exists once it has succeeded",
                r.id,
                r.state.name()
            ),
        );
    }
    let name = serde_json::from_str::<petuum_core::spec::JobSpec>(&r.spec)
        .ok()
        .and_then(|s| {
            s.model
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .filter(|n| {
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        })
        .unwrap_or_else(|| format!("job-{}.model", r.id));
    match s.jobs.model_bytes(r.id).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => error_page(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::presented_token;
    use base64::Engine;

    #[test]
    fn a_token_is_read_from_bearer_or_basic_authorization() {
        assert_eq!(presented_token("Bearer abc").as_deref(), Some("abc"));
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:s3cret:x");
        assert_eq!(
            presented_token(&format!("Basic {basic}")).as_deref(),
            Some("s3cret:x")
        );
        assert_eq!(presented_token("Basic !!!"), None);
        assert_eq!(presented_token("Digest abc"), None);
    }
}
