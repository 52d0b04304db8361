//! The client side of the node's admin API, for `ilp-bridge status`, `peers`, `settlements` and `pay`:
//! [`AdminClient`] makes the calls, the `render_*` functions make the readable tables.

use std::fmt::Write as _;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::views::{PayOutcome, PayRequest, PeerView, SettlementsView, StatusView};

/// Longest one admin call may take, in seconds: 30 (a test payment waits up to ≈ 12 s for its outcome).
pub const ADMIN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The node could not be reached or the answer not read.
    #[error("admin API at {url}: {source}")]
    Http {
        /// The URL called.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The node answered with an error status.
    #[error("admin API at {url} answered {status}: {detail}")]
    Status {
        /// The URL called.
        url: String,
        /// The status.
        status: u16,
        /// The problem's detail, or the body.
        detail: String,
    },
}

/// A client of one node's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client of the admin listener at `base` (e.g. `http://127.0.0.1:3002`) presenting `token`.
    pub fn new(base: &str, token: Option<String>) -> AdminClient {
        AdminClient {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::builder()
                .timeout(ADMIN_CALL_TIMEOUT)
                .build()
                .unwrap_or_default(),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let http = |source| ClientError::Http {
            url: url.clone(),
            source,
        };
        let resp = req.send().await.map_err(http)?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let detail = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
                .unwrap_or(text);
            return Err(ClientError::Status {
                url,
                status: status.as_u16(),
                detail,
            });
        }
        resp.json().await.map_err(http)
    }

    /// `GET /status`.
    pub async fn status(&self) -> Result<StatusView, ClientError> {
        self.call(reqwest::Method::GET, "/status", None).await
    }

    /// `GET /peers`.
    pub async fn peers(&self) -> Result<Vec<PeerView>, ClientError> {
        self.call(reqwest::Method::GET, "/peers", None).await
    }

    /// `GET /settlements`.
    pub async fn settlements(&self) -> Result<SettlementsView, ClientError> {
        self.call(reqwest::Method::GET, "/settlements", None).await
    }

    /// `POST /peers/{peer}/pay`.
    pub async fn pay(&self, peer: &str, request: &PayRequest) -> Result<PayOutcome, ClientError> {
        let body = serde_json::to_value(request).unwrap_or_default();
        self.call(
            reqwest::Method::POST,
            &format!("/peers/{peer}/pay"),
            Some(body),
        )
        .await
    }
}

/// Lays `rows` out in columns under `header`, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            let _ = write!(l, "{c:<w$}  ");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

fn str_field<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v.get(key).and_then(|x| x.as_str()).unwrap_or("-")
}

/// A Quantity (`{"amount": "…", "scale": n}`) as a decimal number.
fn quantity(v: &serde_json::Value, key: &str) -> String {
    let Some(q) = v.get(key) else {
        return "-".to_owned();
    };
    let amount = q.get("amount").and_then(|a| a.as_str()).unwrap_or("0");
    let scale = q
        .get("scale")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0) as usize;
    if scale == 0 {
        return amount.to_owned();
    }
    let digits = format!("{amount:0>width$}", width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        int.to_owned()
    } else {
        format!("{int}.{frac}")
    }
}

/// The peers as a table.
pub fn render_peers(peers: &[PeerView]) -> String {
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.link.clone(),
                if p.trustline_connected { "yes" } else { "no" }.to_owned(),
                p.balance.clone(),
                p.min_balance.clone(),
                p.max_balance.clone(),
                format!("{}/{}", p.prepared_incoming, p.prepared_outgoing),
                p.last_error.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    table(
        &[
            "PEER",
            "LINK",
            "TRUSTLINE",
            "BALANCE",
            "MIN",
            "MAX",
            "PREPARED IN/OUT",
            "LAST ERROR",
        ],
        &rows,
    )
}

/// The settlement part as tables: engine accounts, bridged pairs, alerts.
pub fn render_settlements(s: &SettlementsView) -> String {
    let mut out = String::new();
    if s.accounts.is_empty() {
        out.push_str("engine accounts: none\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .accounts
            .iter()
            .map(|a| {
                let uncredited = a
                    .get("uncredited")
                    .and_then(|u| u.as_array())
                    .map_or(0, Vec::len);
                vec![
                    str_field(a, "id").to_owned(),
                    str_field(a, "module").to_owned(),
                    quantity(a, "settled"),
                    quantity(a, "queued"),
                    a.get("queued_requests")
                        .map_or_else(|| "-".to_owned(), ToString::to_string),
                    quantity(a, "in_flight"),
                    quantity(a, "received"),
                    uncredited.to_string(),
                    a.get("last_error")
                        .and_then(|e| e.as_str())
                        .unwrap_or("-")
                        .to_owned(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "ACCOUNT",
                "MODULE",
                "SETTLED",
                "QUEUED",
                "QUEUED REQS",
                "IN FLIGHT",
                "RECEIVED",
                "UNCREDITED",
                "LAST ERROR",
            ],
            &rows,
        ));
    }
    if !s.pairs.is_empty() {
        let rows: Vec<Vec<String>> = s
            .pairs
            .iter()
            .map(|p| {
                vec![
                    str_field(p, "pair").to_owned(),
                    str_field(p, "account").to_owned(),
                    str_field(p, "requested").to_owned(),
                    str_field(p, "paid").to_owned(),
                    str_field(p, "owed").to_owned(),
                    str_field(p, "out_of_band").to_owned(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &[
                "PAIR",
                "ACCOUNT",
                "REQUESTED",
                "PAID",
                "OWED",
                "OUT OF BAND",
            ],
            &rows,
        ));
    }
    if s.alerts.is_empty() {
        out.push_str("alerts: none\n");
    } else {
        out.push_str("alerts:\n");
        for a in &s.alerts {
            let credit = a.get("credit").cloned().unwrap_or_default();
            let _ = writeln!(
                out,
                "  {} {}: credit {} ({})",
                str_field(a, "account"),
                str_field(a, "kind"),
                str_field(&credit, "idempotency_key"),
                str_field(&credit, "last_error"),
            );
        }
    }
    out
}

/// `ilp-bridge status`: the node, its peers, its settlement.
pub fn render_status(s: &StatusView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ilp-bridge {} ({}), up {}s, {}",
        s.version,
        s.commit,
        s.uptime_s,
        if s.ready { "ready" } else { "NOT READY" }
    );
    for p in &s.problems {
        let _ = writeln!(out, "  problem: {p}");
    }
    out.push('\n');
    if s.peers.is_empty() {
        out.push_str("peers: none\n");
    } else {
        out.push_str(&render_peers(&s.peers));
    }
    out.push('\n');
    out.push_str(&render_settlements(&s.settlements));
    out
}

/// `ilp-bridge pay`: one line with the outcome and the time it took.
pub fn render_pay(o: &PayOutcome) -> String {
    let mut line = format!(
        "{} via {} to {} ({} units): {} in {} ms",
        o.transfer_id, o.peer, o.destination, o.amount, o.outcome, o.elapsed_ms
    );
    if let Some(code) = &o.code {
        let _ = write!(line, ", {code}");
    }
    if let Some(m) = &o.message {
        let _ = write!(line, " {m}");
    }
    if let Some(t) = &o.triggered_by {
        let _ = write!(line, " (triggered by {t})");
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_print_as_decimals() {
        let v = serde_json::json!({"a": {"amount": "1500", "scale": 3}, "b": {"amount": "5", "scale": 2}, "c": {"amount": "7", "scale": 0}});
        assert_eq!(quantity(&v, "a"), "1.5");
        assert_eq!(quantity(&v, "b"), "0.05");
        assert_eq!(quantity(&v, "c"), "7");
        assert_eq!(quantity(&v, "d"), "-");
    }

    #[test]
    fn tables_align_their_columns() {
        let t = table(
            &["A", "LONG HEADER"],
            &[vec!["wide cell".to_owned(), "x".to_owned()]],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines, ["A          LONG HEADER", "wide cell  x"]);
    }
}
