//! The routes of the node's admin listener (the table is in the module docs of [`crate::admin`]).

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use channel_modules::amount::LedgerBalance;
use channel_modules::store::{Limit, TransferId};
use serde_json::json;
use tower::ServiceExt;

use super::views::{LimitsChange, PayRequest, PeerView, SettlementsView, StatusView, TransferView};
use super::{pay, NodeView, PeerEntry};
use crate::settlement::api::Problem;
use crate::settlement::auth::{require_bearer, BearerToken};

/// Every route of the node's admin listener (method, path), as `openapi.yaml` must list them; a test checks
/// that the router answers each and that the document has exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/"),
    ("get", "/openapi.yaml"),
    ("get", "/status"),
    ("get", "/peers"),
    ("get", "/peers/{name}"),
    ("get", "/peers/{name}/transfers"),
    ("get", "/peers/{name}/transfers/{id}"),
    ("put", "/peers/{name}/limits"),
    ("post", "/peers/{name}/disconnect"),
    ("post", "/peers/{name}/reconnect"),
    ("post", "/peers/{name}/pay"),
    ("get", "/settlements"),
];

/// The admin router for `view`: the probes, `/metrics`, the page and the document are open; everything else
/// needs `Authorization: Bearer <token>`, including the engine's admin routes it passes on.
pub fn router(view: NodeView, token: &str) -> Router {
    let bearer = BearerToken::new(token);
    let protected = Router::new()
        .route("/status", get(status))
        .route("/peers", get(peers))
        .route("/peers/{name}", get(peer))
        .route("/peers/{name}/transfers", get(prepared))
        .route("/peers/{name}/transfers/{id}", get(transfer))
        .route("/peers/{name}/limits", put(set_limits))
        .route("/peers/{name}/disconnect", post(disconnect))
        .route("/peers/{name}/reconnect", post(reconnect))
        .route("/peers/{name}/pay", post(pay_route))
        .route("/settlements", get(settlements))
        .fallback(engine_admin)
        .route_layer(middleware::from_fn_with_state(
            bearer.clone(),
            require_bearer,
        ))
        .with_state(view.clone());
    // The fallback of a router is not behind its route_layer: the engine's routes check the token themselves
    // (their router is built with the same token, see `NodeView::set_engine`).
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/", get(page))
        .route("/openapi.yaml", get(openapi))
        .with_state(view)
        .merge(protected)
}

async fn health() -> Json<serde_json::Value> {
    Json(
        json!({ "status": "alive", "version": env!("CARGO_PKG_VERSION"), "commit": super::COMMIT }),
    )
}

async fn ready(State(view): State<NodeView>) -> Response {
    let problems = view.not_ready().await;
    if problems.is_empty() {
        (StatusCode::OK, Json(json!({ "ready": true }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "problems": problems })),
        )
            .into_response()
    }
}

async fn metrics(State(view): State<NodeView>) -> Result<Response, Problem> {
    let text = view.metrics().render().map_err(|_| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed",
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        super::STATUS_PAGE_HTML,
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/yaml")],
        super::OPENAPI_YAML,
    )
        .into_response()
}

/// The engine's admin routes when it runs (they check the token themselves); 404 otherwise.
async fn engine_admin(State(view): State<NodeView>, req: Request) -> Response {
    match view.engine_admin() {
        Some(router) => match router.oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        },
        None => Problem::new(StatusCode::NOT_FOUND, "no such route").into_response(),
    }
}

fn no_peer(name: &str) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, format!("no peer {name:?}"))
}

fn peer_entry(view: &NodeView, name: &str) -> Result<PeerEntry, Problem> {
    view.peer(name).ok_or_else(|| no_peer(name))
}

fn all_peers(view: &NodeView) -> Vec<PeerView> {
    view.sources()
        .peers
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .values()
        .map(PeerView::of)
        .collect()
}

async fn peers(State(view): State<NodeView>) -> Json<Vec<PeerView>> {
    Json(all_peers(&view))
}

async fn peer(
    State(view): State<NodeView>,
    Path(name): Path<String>,
) -> Result<Json<PeerView>, Problem> {
    Ok(Json(PeerView::of(&peer_entry(&view, &name)?)))
}

fn store_problem(e: impl std::fmt::Display) -> Problem {
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, format!("store: {e}"))
}

async fn prepared(
    State(view): State<NodeView>,
    Path(name): Path<String>,
) -> Result<Json<Vec<TransferView>>, Problem> {
    let p = peer_entry(&view, &name)?;
    let records = p.trustline.log().prepared().await.map_err(store_problem)?;
    Ok(Json(records.iter().map(TransferView::of).collect()))
}

async fn transfer(
    State(view): State<NodeView>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<TransferView>, Problem> {
    let p = peer_entry(&view, &name)?;
    let tid: TransferId = id
        .parse()
        .map_err(|_| Problem::new(StatusCode::BAD_REQUEST, format!("{id:?} is not a UUID")))?;
    match p.trustline.log().get(&tid).await.map_err(store_problem)? {
        Some(r) => Ok(Json(TransferView::of(&r))),
        None => Err(Problem::new(
            StatusCode::NOT_FOUND,
            format!("peer {name:?} has no transfer {id}"),
        )),
    }
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            format!("body must be {shape}: {e}"),
        )
    })
}

/// A limit as the API takes it: a decimal integer, or `Infinity` / `-Infinity` for none.
fn parse_limit(field: &str, text: &str, negative: bool) -> Result<Limit, Problem> {
    let t = text.trim();
    let unbounded = if negative { "-Infinity" } else { "Infinity" };
    if t == unbounded {
        return Ok(Limit::Unbounded);
    }
    t.parse::<i128>()
        .map(|v| Limit::Finite(LedgerBalance(v)))
        .map_err(|_| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                format!("{field} {text:?} must be an integer in ledger units, or {unbounded:?}"),
            )
        })
}

async fn set_limits(
    State(view): State<NodeView>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<PeerView>, Problem> {
    let p = peer_entry(&view, &name)?;
    let change: LimitsChange = json_body(
        &body,
        r#"{"max_balance": "<integer|Infinity>", "min_balance": "<integer|-Infinity>"}"#,
    )?;
    let max = change
        .max_balance
        .as_deref()
        .map(|t| parse_limit("max_balance", t, false))
        .transpose()?;
    let min = change
        .min_balance
        .as_deref()
        .map(|t| parse_limit("min_balance", t, true))
        .transpose()?;
    if max.is_none() && min.is_none() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "give max_balance, min_balance or both",
        ));
    }
    let log = p.trustline.log();
    // Refused as a whole: a maximum below the minimum leaves no balance the peer may have.
    if let (Limit::Finite(hi), Limit::Finite(lo)) =
        (max.unwrap_or(log.maximum()), min.unwrap_or(log.minimum()))
    {
        if hi.0 < lo.0 {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                format!("max_balance {hi} would be below min_balance {lo}"),
            ));
        }
    }
    if let Some(m) = max {
        log.set_maximum(m).await.map_err(store_problem)?;
    }
    if let Some(m) = min {
        log.set_minimum(m).await.map_err(store_problem)?;
    }
    tracing::info!(peer = %name, max_balance = ?max, min_balance = ?min, "limits changed by the operator");
    Ok(Json(PeerView::of(&p)))
}

async fn disconnect(
    State(view): State<NodeView>,
    Path(name): Path<String>,
) -> Result<Json<PeerView>, Problem> {
    let p = peer_entry(&view, &name)?;
    p.trustline
        .disconnect()
        .await
        .map_err(|e| Problem::new(StatusCode::BAD_GATEWAY, format!("disconnect failed: {e}")))?;
    tracing::warn!(peer = %name, "trustline disconnected by the operator");
    Ok(Json(PeerView::of(&p)))
}

async fn reconnect(
    State(view): State<NodeView>,
    Path(name): Path<String>,
) -> Result<Json<PeerView>, Problem> {
    let p = peer_entry(&view, &name)?;
    p.trustline.connect().await.map_err(|e| {
        p.trustline.note_error(format!("connect failed: {e}"));
        Problem::new(StatusCode::BAD_GATEWAY, format!("connect failed: {e}"))
    })?;
    tracing::info!(peer = %name, "trustline reconnected by the operator");
    Ok(Json(PeerView::of(&p)))
}

async fn pay_route(
    State(view): State<NodeView>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<super::views::PayOutcome>, Problem> {
    let p = peer_entry(&view, &name)?;
    let req: PayRequest = json_body(&body, r#"{"amount": "<integer>", "to": "<ILP address>"}"#)?;
    let outcome = pay::test_payment(&p.trustline, &req.amount, req.to)
        .await
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(Json(outcome))
}

/// The settlement part of the node now.
pub(crate) async fn settlements_now(view: &NodeView) -> SettlementsView {
    let engine = view
        .sources()
        .engine
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut accounts = Vec::new();
    let mut alerts = Vec::new();
    if let Some(engine) = engine {
        for id in engine.account_ids() {
            if let Ok(v) = engine.account_view(&id) {
                accounts.push(serde_json::to_value(v).unwrap_or_default());
            }
        }
        alerts = engine
            .alerts()
            .into_iter()
            .map(|a| serde_json::to_value(a).unwrap_or_default())
            .collect();
    }
    let pairs: Vec<_> = view
        .sources()
        .pairs
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .values()
        .cloned()
        .collect();
    let mut pair_views = Vec::new();
    for p in pairs {
        pair_views.push(serde_json::to_value(p.view().await).unwrap_or_default());
    }
    SettlementsView {
        accounts,
        alerts,
        pairs: pair_views,
    }
}

async fn settlements(State(view): State<NodeView>) -> Json<SettlementsView> {
    Json(settlements_now(&view).await)
}

async fn status(State(view): State<NodeView>) -> Json<StatusView> {
    let problems = view.not_ready().await;
    Json(StatusView {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        commit: super::COMMIT.to_owned(),
        uptime_s: view.uptime().as_secs(),
        ready: problems.is_empty(),
        problems,
        peers: all_peers(&view),
        settlements: settlements_now(&view).await,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;

    /// (method, path) of every operation in `openapi.yaml`: paths are the two-space-indented keys under
    /// `paths:`, methods the four-space-indented keys under them.
    fn documented() -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut in_paths = false;
        let mut path = String::new();
        for line in super::super::OPENAPI_YAML.lines() {
            if !line.starts_with(' ') {
                in_paths = line.trim_end() == "paths:";
                continue;
            }
            if !in_paths {
                continue;
            }
            if let Some(p) = line.strip_prefix("  /") {
                path = format!("/{}", p.trim_end().trim_end_matches(':'));
            } else if let Some(m) = line.strip_prefix("    ") {
                let m = m.trim_end().trim_end_matches(':');
                if ["get", "put", "post", "delete", "patch"].contains(&m) {
                    out.push((m.to_owned(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn the_document_lists_exactly_the_routes() {
        let mut doc = documented();
        doc.sort();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        routes.sort();
        assert_eq!(doc, routes);
    }

    #[tokio::test]
    async fn the_router_answers_every_listed_route() -> Result<(), Box<dyn std::error::Error>> {
        let app = router(NodeView::new(None, &[]), "t");
        for (method, path) in ROUTES {
            let uri = path.replace("{name}", "nobody").replace("{id}", "x");
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri)
                .header(header::AUTHORIZATION, "Bearer t")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))?;
            let resp = app.clone().oneshot(req).await?;
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await?;
            let body = String::from_utf8_lossy(&body);
            // An unknown route gets the fallback's "no such route"; a listed one answers for itself.
            assert!(
                !body.contains("no such route") && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {uri}: {status} {body}"
            );
        }
        let unknown = Request::builder()
            .uri("/no-such-thing")
            .header(header::AUTHORIZATION, "Bearer t")
            .body(Body::empty())?;
        let body = axum::body::to_bytes(app.oneshot(unknown).await?.into_body(), 1 << 20).await?;
        assert!(String::from_utf8_lossy(&body).contains("no such route"));
        Ok(())
    }
}
