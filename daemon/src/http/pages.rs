//! The dashboard's pages: HTML rendered on the node, charts as inline SVG,
//! so every page reads without JavaScript; `/static/live.js` only swaps in
//! fresh charts while a job runs. Every string that comes from a user (job
//! names, events, errors) is escaped.

use petuum_cluster::jobs::{JobRecord, Progress};
use petuum_proto::v1::StatusReply;
use std::fmt::Write;

/// HTML-escapes `s` (text and attribute values).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A page with the common head; `refresh` reloads it every few seconds
/// when JavaScript is off (or always, for `Refresh::Always`).
pub fn page(title: &str, refresh: Refresh, body: &str) -> String {
    let meta = match refresh {
        Refresh::Always => "<meta http-equiv=\"refresh\" content=\"5\">".to_string(),
        Refresh::WithoutScript => {
            "<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>".to_string()
        }
        Refresh::Never => String::new(),
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{meta}\
         <title>{} · petuum</title><link rel=\"stylesheet\" href=\"/static/style.css\">\
         <script src=\"/static/live.js\" defer></script></head>\
         <body><header><a href=\"/\">petuum</a> <span class=\"muted\">dashboard</span></header>\
         <main>{body}</main></body></html>\n",
        esc(title)
    )
}

#[derive(Clone, Copy)]
pub enum Refresh {
    Always,
    WithoutScript,
    Never,
}

/// One node as the overview shows it.
pub struct NodeView {
    pub id: u64,
    pub addr: String,
    /// From the metadata group: up, leaving; or unreachable (no answer).
    pub state: String,
    pub status: Option<StatusReply>,
}

/// The overview: nodes, groups without a leader, jobs.
pub fn overview(me: u64, cluster: u64, nodes: &[NodeView], jobs: &[&JobRecord]) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>Cluster <code>{cluster:016x}</code></h1><p class=\"muted\">served by node {me}</p>"
    );
    b.push_str(
        "<h2>Nodes</h2><table id=\"nodes\"><thead><tr><th>node</th><th>address</th>\
         <th>state</th><th>groups</th><th>leads</th></tr></thead><tbody>",
    );
    for n in nodes {
        let (groups, leads) = n.status.as_ref().map_or((0, 0), |s| {
            (
                s.groups.len(),
                s.groups.iter().filter(|g| g.state == "leader").count(),
            )
        });
        let _ = write!(
            b,
            "<tr class=\"node\" data-node=\"{}\" data-state=\"{}\"><td>{}</td><td>{}</td>\
             <td><span class=\"state {}\">{}</span></td><td>{groups}</td><td>{leads}</td></tr>",
            n.id,
            esc(&n.state),
            n.id,
            esc(&n.addr),
            esc(&n.state),
            esc(&n.state)
        );
    }
    b.push_str("</tbody></table>");
    let leaderless = leaderless_groups(nodes);
    if leaderless.is_empty() {
        b.push_str("<p id=\"leaderless\" class=\"ok\">Every group has a leader.</p>");
    } else {
        let list: Vec<String> = leaderless.iter().map(|g| g.to_string()).collect();
        let _ = write!(
            b,
            "<p id=\"leaderless\" class=\"bad\">Groups without a leader: {}</p>",
            list.join(", ")
        );
    }
    b.push_str(
        "<h2>Jobs</h2><table id=\"jobs\"><thead><tr><th>job</th><th>name</th><th>algorithm</th>\
         <th>state</th><th>progress</th><th>objective</th><th>workers on</th><th>epoch</th>\
         <th>recoveries</th></tr></thead><tbody>",
    );
    if jobs.is_empty() {
        b.push_str("<tr><td colspan=\"9\" class=\"muted\">no jobs yet</td></tr>");
    }
    for r in jobs {
        let p = r.progress.clone().unwrap_or_default();
        let pct = if r.clocks > 0 {
            100.0 * p.clock as f64 / r.clocks as f64
        } else {
            0.0
        };
        let hosts: Vec<String> = r.hosts().iter().map(|h| h.to_string()).collect();
        let _ = write!(
            b,
            "<tr class=\"job\" data-job=\"{id}\" data-state=\"{state}\"><td><a href=\"/jobs/{id}\">{id}</a></td>\
             <td>{name}</td><td>{algo}</td><td><span class=\"state {state}\">{state}</span></td>\
             <td><progress max=\"{clocks}\" value=\"{clock}\">{pct:.0}%</progress> {clock}/{clocks}</td>\
             <td>{obj}</td><td>{hosts}</td><td>{epoch}</td><td>{rec}</td></tr>",
            id = r.id,
            name = esc(&r.name),
            algo = esc(&r.algorithm),
            state = r.state.name(),
            clocks = r.clocks,
            clock = p.clock,
            obj = if r.progress.is_some() {
                format!("{:.6}", p.objective)
            } else {
                "–".into()
            },
            hosts = if hosts.is_empty() {
                "–".into()
            } else {
                hosts.join(", ")
            },
            epoch = r.epoch,
            rec = r.recoveries,
        );
    }
    b.push_str("</tbody></table>");
    b
}

/// Groups that no reachable replica reports a leader for.
fn leaderless_groups(nodes: &[NodeView]) -> Vec<u64> {
    let mut all = std::collections::BTreeMap::<u64, bool>::new();
    for s in nodes.iter().filter_map(|n| n.status.as_ref()) {
        for g in &s.groups {
            *all.entry(g.group).or_default() |= g.state == "leader";
        }
    }
    all.into_iter()
        .filter(|(_, led)| !led)
        .map(|(g, _)| g)
        .collect()
}

/// A job's page: its facts, the live charts, its events.
pub fn job(r: &JobRecord) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>Job {} <code>{}</code></h1><dl class=\"facts\">\
         <dt>algorithm</dt><dd>{}</dd><dt>state</dt><dd><span id=\"state\" class=\"state {st}\">{st}</span></dd>\
         <dt>workers</dt><dd>{}</dd><dt>epoch</dt><dd>{}</dd><dt>recoveries</dt><dd>{}</dd>\
         <dt>newest checkpoint</dt><dd>{}</dd>",
        r.id,
        esc(&r.name),
        esc(&r.algorithm),
        r.workers,
        r.epoch,
        r.recoveries,
        r.checkpoint
            .map_or("none yet".into(), |c| format!("clock {c}")),
        st = r.state.name(),
    );
    if let Some(e) = &r.error {
        let _ = write!(b, "<dt>error</dt><dd class=\"bad\">{}</dd>", esc(e));
    }
    if let Some(res) = &r.result {
        let _ = write!(
            b,
            "<dt>result</dt><dd>objective {:.6} in {:.1} s</dd>",
            res.objective, res.seconds
        );
        for (k, v) in &res.metrics {
            let _ = write!(b, "<dt>{}</dt><dd>{v:.4}</dd>", esc(k));
        }
        let _ = write!(
            b,
            "<dt>model</dt><dd><a id=\"model\" href=\"/jobs/{}/model\" download>download ({} bytes)</a></dd>",
            r.id, res.model_bytes
        );
    }
    b.push_str("</dl>");
    let _ = write!(
        b,
        "<section id=\"charts\" data-src=\"/jobs/{}/charts\">{}</section>",
        r.id,
        charts(r)
    );
    b.push_str("<h2>Events</h2><ol id=\"events\" reversed>");
    for e in r.events.iter().rev().take(200) {
        let _ = write!(
            b,
            "<li><time>{}</time> {}</li>",
            clock_time(e.at_ms),
            esc(&e.text)
        );
    }
    b.push_str("</ol>");
    b
}

/// The charts fragment (also served alone, for live updates). Its
/// `data-live` says whether the job can still change.
pub fn charts(r: &JobRecord) -> String {
    let p = r.progress.clone().unwrap_or_default();
    let mut b = String::new();
    let _ = write!(
        b,
        "<div class=\"live\" data-live=\"{}\"><p>clock <span id=\"clock\">{}</span> of {} · \
         {:.0} samples/s</p>",
        if r.state.is_terminal() { 0 } else { 1 },
        p.clock,
        r.clocks,
        p.throughput
    );
    b.push_str(&chart(
        "objective",
        "Objective",
        &r.history,
        |h: &Progress| h.objective,
        "#1f6feb",
    ));
    b.push_str(&chart(
        "throughput",
        "Samples per second",
        &r.history,
        |h: &Progress| h.throughput,
        "#2da44e",
    ));
    b.push_str("</div>");
    b
}

const W: f64 = 640.0;
const H: f64 = 220.0;
const PAD_L: f64 = 70.0;
const PAD_R: f64 = 12.0;
const PAD_T: f64 = 12.0;
const PAD_B: f64 = 30.0;

/// A line chart of `value` over the clock, as SVG. Each point is also a
/// `<circle>` (with its values in a `<title>`) up to 300 points.
fn chart(
    id: &str,
    title: &str,
    history: &[Progress],
    value: impl Fn(&Progress) -> f64,
    colour: &str,
) -> String {
    let pts: Vec<(f64, f64)> = history
        .iter()
        .map(|h| (h.clock as f64, value(h)))
        .filter(|(_, v)| v.is_finite())
        .collect();
    let mut b = String::new();
    let _ = write!(
        b,
        "<figure><figcaption>{}</figcaption><svg id=\"chart-{id}\" class=\"chart\" \
         viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{} by clock\" data-points=\"{}\">",
        esc(title),
        esc(title),
        pts.len()
    );
    let (x0, x1) = bounds(pts.iter().map(|p| p.0));
    let (y0, y1) = bounds(pts.iter().map(|p| p.1));
    let sx = |x: f64| PAD_L + (x - x0) / (x1 - x0) * (W - PAD_L - PAD_R);
    let sy = |y: f64| H - PAD_B - (y - y0) / (y1 - y0) * (H - PAD_T - PAD_B);
    let _ = write!(
        b,
        "<rect x=\"{PAD_L}\" y=\"{PAD_T}\" width=\"{}\" height=\"{}\" fill=\"#fafbfc\" stroke=\"#d0d7de\"/>",
        W - PAD_L - PAD_R,
        H - PAD_T - PAD_B
    );
    for (y, v) in [(sy(y1), y1), (sy(y0), y0)] {
        let _ = write!(
            b,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"11\" fill=\"#57606a\">{}</text>",
            PAD_L - 6.0,
            y + 4.0,
            short(v)
        );
    }
    for (x, v) in [(sx(x0), x0), (sx(x1), x1)] {
        let _ = write!(
            b,
            "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\" fill=\"#57606a\">{}</text>",
            H - PAD_B + 16.0,
            v as u64
        );
    }
    if pts.is_empty() {
        let _ = write!(
            b,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\" fill=\"#57606a\">no progress reported yet</text>",
            W / 2.0,
            H / 2.0
        );
    } else {
        let line: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            b,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            line.join(" ")
        );
        if pts.len() <= 300 {
            for &(x, y) in &pts {
                let _ = write!(
                    b,
                    "<circle class=\"point\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{colour}\"><title>clock {}: {}</title></circle>",
                    sx(x),
                    sy(y),
                    x as u64,
                    short(y)
                );
            }
        }
    }
    b.push_str("</svg></figure>");
    b
}

/// Min and max, widened so the range is never empty.
fn bounds(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for x in v {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 * lo.abs().max(1.0) {
        return (lo - 0.5 * lo.abs().max(1.0), hi + 0.5 * hi.abs().max(1.0));
    }
    (lo, hi)
}

/// A number in a few significant digits.
fn short(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        format!("{v:.3e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

/// `HH:MM:SS` (UTC) of a time in ms since the Unix epoch.
fn clock_time(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

pub const STYLE: &str = "\
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1f2328}\
header{background:#24292f;color:#fff;padding:8px 16px;font-weight:600}\
header a{color:#fff;text-decoration:none}\
main{padding:8px 16px;max-width:1100px}\
table{border-collapse:collapse;margin:8px 0}\
th,td{border-bottom:1px solid #d0d7de;padding:4px 10px;text-align:left}\
.muted{color:#57606a;font-weight:normal}\
.state{padding:1px 6px;border-radius:8px;background:#eaeef2}\
.state.up,.state.running,.state.succeeded,.ok{color:#1a7f37}\
.state.unreachable,.state.failed,.bad{color:#cf222e}\
.state.recovering,.state.paused,.state.leaving{color:#9a6700}\
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 12px}\
dt{color:#57606a}dd{margin:0}\
figure{margin:12px 0}svg.chart{width:100%;max-width:640px;height:auto}\
ol#events{font-family:ui-monospace,monospace;font-size:12px}\
";

/// Swaps in fresh charts every 2 s while the job can change.
pub const LIVE_JS: &str = "\
(function(){\
var box=document.getElementById('charts');if(!box||!window.fetch)return;\
function live(){var d=box.querySelector('[data-live]');return d&&d.getAttribute('data-live')==='1';}\
function tick(){if(!live())return;\
fetch(box.getAttribute('data-src'),{credentials:'same-origin',cache:'no-store'})\
.then(function(r){return r.ok?r.text():null;})\
.then(function(t){if(t!==null){box.innerHTML=t;}setTimeout(tick,2000);})\
.catch(function(){setTimeout(tick,2000);});}\
setTimeout(tick,2000);})();\
";
