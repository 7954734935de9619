//! Vigil's API (docs/API.md) and its live event stream (SSE): a thin layer
//! over the engine. Every error is JSON: `{"error": "<what was wrong>"}`.
//!
//! One router for both shells: `vigil serve` serves it over HTTP (with the UI
//! as its fallback), the desktop shell calls it in-process for each request
//! of its window (no socket), so the two answer alike.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};
use tokio::sync::watch;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use vigil_core::now_micros;
use vigil_engine::{
    AlertRule, CoapRequestBody, EngineError, Event, MessageQuery, PublishRequest, SettingsUpdate,
};

type Engine = Arc<vigil_engine::Engine>;

#[derive(Clone)]
struct App {
    engine: Engine,
    stopping: watch::Receiver<bool>,
}

/// The API's routes; `stopping` ends the live event streams when it turns true.
pub fn router(engine: Engine, stopping: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/devices", get(devices))
        .route("/api/devices/{id}", get(device).patch(update_device))
        .route("/api/devices/{id}/presence", get(presence_history))
        .route("/api/devices/{id}/metrics/{metric}", get(series))
        .route("/api/alerts", get(alerts))
        .route("/api/alerts/{id}/ack", post(acknowledge))
        .route("/api/alert-rules", get(alert_rules).post(create_alert_rule))
        .route(
            "/api/alert-rules/{id}",
            axum::routing::put(replace_alert_rule).delete(delete_alert_rule),
        )
        .route("/api/messages", get(messages))
        .route("/api/publish", post(publish))
        .route("/api/coap", get(coap))
        .route("/api/coap/discover", post(coap_discover))
        .route("/api/coap/devices", post(coap_add))
        .route("/api/coap/scan", post(coap_scan))
        .route("/api/coap/request", post(coap_request))
        .route("/api/stats", get(stats))
        .route("/api/events", get(events))
        .route("/api/broker", get(broker))
        .route("/api/settings", get(settings))
        .route("/api/certs", get(certificates).post(issue_certificate))
        .route("/api/certs/revoke", post(revoke_certificate))
        .route(
            "/api/{*rest}",
            axum::routing::any(|| async {
                ApiError::new(StatusCode::NOT_FOUND, "no such endpoint; see docs/API.md")
            }),
        )
        .with_state(App { engine, stopping })
}

/// `{"device": ".."}`: which device a certificate is for.
#[derive(serde::Deserialize)]
struct ForDevice {
    device: String,
}

async fn certificates(State(app): State<App>) -> Result<Response, ApiError> {
    Ok(Json(app.engine.certificates()?).into_response())
}

async fn issue_certificate(
    State(app): State<App>,
    request: Result<Json<ForDevice>, JsonRejection>,
) -> Result<Response, ApiError> {
    let device = body(request, "certificate request ({\"device\": \"..\"})")?.device;
    let issued = app.engine.issue_certificate(&device)?;
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

async fn revoke_certificate(
    State(app): State<App>,
    request: Result<Json<ForDevice>, JsonRejection>,
) -> Result<Response, ApiError> {
    let device = body(request, "revocation ({\"device\": \"..\"})")?.device;
    Ok(Json(app.engine.revoke_certificate(&device)?).into_response())
}

/// Answers one request in-process, without a socket (the desktop shell's way
/// in): `path` with its query string, `body` as JSON. Returns the status and
/// the JSON answer (`null` when there is none).
pub async fn call(
    router: &Router,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    use tower::ServiceExt;
    let request = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(match body {
            Some(b) => axum::body::Body::from(b.to_string()),
            None => axum::body::Body::empty(),
        });
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            return (
                400,
                serde_json::json!({ "error": format!("not a request: {e}") }),
            )
        }
    };
    let response = match router.clone().oneshot(request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        })
    };
    (status, json)
}

/// An error as the API says it.
struct ApiError(StatusCode, String);

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError(status, message.into())
    }
    fn bad(message: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match e {
            EngineError::BadRequest(_) => StatusCode::BAD_REQUEST,
            EngineError::NotFound(_) => StatusCode::NOT_FOUND,
            EngineError::Unreachable(_) => StatusCode::GATEWAY_TIMEOUT,
            EngineError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

type Params = Query<HashMap<String, String>>;

/// A number from the query string, with a message that names it.
fn param<T: std::str::FromStr>(
    params: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, ApiError> {
    match params.get(name) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad(format!("'{name}' must be a number, not '{v}'"))),
    }
}

async fn devices(State(app): State<App>) -> Result<Response, ApiError> {
    Ok(Json(app.engine.devices().await?).into_response())
}

async fn device(State(app): State<App>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match app.engine.device(&id).await? {
        Some(d) => Ok(Json(d).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no device '{id}'"),
        )),
    }
}

/// A JSON body, or an error that says what is wrong with it.
fn body<T>(body: Result<Json<T>, JsonRejection>, what: &str) -> Result<T, ApiError> {
    body.map(|Json(t)| t).map_err(|e| {
        ApiError::bad(format!(
            "the request body is not a valid {what}: {}",
            e.body_text()
        ))
    })
}

async fn update_device(
    State(app): State<App>,
    Path(id): Path<String>,
    update: Result<Json<SettingsUpdate>, JsonRejection>,
) -> Result<Response, ApiError> {
    let update = body(update, "device update")?;
    Ok(Json(app.engine.update_device(&id, update).await?).into_response())
}

async fn presence_history(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let to = param(&p, "to")?.unwrap_or(i64::MAX);
    let from = param(&p, "from")?.unwrap_or(0);
    let limit = param(&p, "limit")?.unwrap_or(1000);
    if app.engine.device(&id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no device '{id}'"),
        ));
    }
    Ok(Json(app.engine.presence_history(&id, from, to, limit).await?).into_response())
}

async fn alerts(State(app): State<App>, Query(p): Params) -> Result<Response, ApiError> {
    let active = match p.get("state").map(String::as_str) {
        None | Some("") | Some("all") => false,
        Some("active") => true,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "'state' must be 'active' or 'all', not '{other}'"
            )))
        }
    };
    let device = p.get("device").filter(|d| !d.is_empty());
    let limit = param(&p, "limit")?.unwrap_or(100);
    Ok(Json(
        app.engine
            .alerts(
                active,
                device.map(String::as_str),
                param(&p, "before")?,
                limit,
            )
            .await?,
    )
    .into_response())
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Acknowledgement {
    by: Option<String>,
}

async fn acknowledge(
    State(app): State<App>,
    Path(id): Path<i64>,
    ack: Option<Json<Acknowledgement>>,
) -> Result<Response, ApiError> {
    let by = ack.and_then(|Json(a)| a.by);
    Ok(Json(app.engine.acknowledge(id, by).await?).into_response())
}

async fn alert_rules(State(app): State<App>) -> Result<Response, ApiError> {
    Ok(Json(app.engine.alert_rules().await?).into_response())
}

async fn create_alert_rule(
    State(app): State<App>,
    rule: Result<Json<AlertRule>, JsonRejection>,
) -> Result<Response, ApiError> {
    let mut rule = body(rule, "alert rule")?;
    rule.id = 0;
    let rule = app.engine.save_alert_rule(rule).await?;
    Ok((StatusCode::CREATED, Json(rule)).into_response())
}

async fn replace_alert_rule(
    State(app): State<App>,
    Path(id): Path<i64>,
    rule: Result<Json<AlertRule>, JsonRejection>,
) -> Result<Response, ApiError> {
    let mut rule = body(rule, "alert rule")?;
    if id <= 0 {
        return Err(ApiError::bad(format!("no alert rule {id}")));
    }
    rule.id = id;
    Ok(Json(app.engine.save_alert_rule(rule).await?).into_response())
}

async fn delete_alert_rule(
    State(app): State<App>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    app.engine.delete_alert_rule(id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn series(
    State(app): State<App>,
    Path((id, metric)): Path<(String, String)>,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let to = param(&p, "to")?.unwrap_or_else(now_micros);
    let from = param(&p, "from")?.unwrap_or(to - 3_600_000_000);
    let max_points = param(&p, "max_points")?.unwrap_or(1000);
    if app.engine.device(&id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no device '{id}'"),
        ));
    }
    let series = app
        .engine
        .series(&id, &metric, from, to, max_points)
        .await?;
    let mut body = serde_json::to_value(series)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    body["device"] = id.into();
    body["metric"] = metric.into();
    Ok(Json(body).into_response())
}

async fn messages(State(app): State<App>, Query(p): Params) -> Result<Response, ApiError> {
    let limit: u32 = param(&p, "limit")?.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad(format!(
            "'limit' must be between 1 and 10000, not {limit}"
        )));
    }
    let query = MessageQuery {
        topic: p.get("topic").filter(|t| !t.is_empty()).cloned(),
        device: p.get("device").filter(|d| !d.is_empty()).cloned(),
        before: param(&p, "before")?,
        after: param(&p, "after")?,
        limit,
    };
    Ok(Json(app.engine.messages(&query).await?).into_response())
}

async fn publish(
    State(app): State<App>,
    request: Result<Json<PublishRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = body(request, "publish request")?;
    app.engine.publish(request).await?;
    Ok(Json(serde_json::json!({ "ok": true })).into_response())
}

async fn coap(State(app): State<App>) -> Result<Response, ApiError> {
    Ok(Json(app.engine.coap().await?).into_response())
}

async fn coap_discover(State(app): State<App>) -> Result<Response, ApiError> {
    Ok(Json(app.engine.coap_discover().await?).into_response())
}

/// `{"address": "192.0.2.7:5683"}`
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CoapAddress {
    address: String,
}

async fn coap_add(
    State(app): State<App>,
    request: Result<Json<CoapAddress>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = body(request, "CoAP device")?;
    Ok(Json(app.engine.coap_add(&request.address).await?).into_response())
}

/// `{"range": "192.0.2.0/26", "port": 5683}`
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CoapRange {
    range: String,
    port: Option<u16>,
}

async fn coap_scan(
    State(app): State<App>,
    request: Result<Json<CoapRange>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = body(request, "CoAP scan")?;
    Ok(Json(app.engine.coap_scan(&request.range, request.port).await?).into_response())
}

async fn coap_request(
    State(app): State<App>,
    request: Result<Json<CoapRequestBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = body(request, "CoAP request")?;
    Ok(Json(app.engine.coap_request(request).await?).into_response())
}

async fn broker(State(app): State<App>) -> Result<Response, ApiError> {
    Ok(Json(app.engine.broker().await?).into_response())
}

async fn settings(State(app): State<App>) -> Response {
    Json(app.engine.settings()).into_response()
}

async fn stats(State(app): State<App>) -> Result<Response, ApiError> {
    Ok(Json(app.engine.stats().await?).into_response())
}

/// Live events. `?types=message,flushed` picks which; a listener that falls
/// behind gets a `resync` event instead of the ones it missed. Message events
/// come from their own channel, subscribed only when asked for.
async fn events(
    State(app): State<App>,
    Query(p): Params,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let types: Option<HashSet<String>> = p
        .get("types")
        .map(|t| t.split(',').map(|s| s.trim().to_owned()).collect());
    let wants = move |name: &str| types.as_ref().is_none_or(|t| t.contains(name));
    let subscription = app.engine.subscribe(wants("message"));
    let live = |rx| {
        BroadcastStream::new(rx).map(|item| match item {
            Ok(event) => event,
            Err(BroadcastStreamRecvError::Lagged(_)) => Event::Resync,
        })
    };
    let others = live(subscription.others).boxed();
    let merged = match subscription.messages {
        Some(messages) => futures_util::stream::select(others, live(messages)).boxed(),
        None => others,
    };
    let mut stopping = app.stopping.clone();
    let stream = merged
        .filter(move |e| {
            let keep = matches!(e, Event::Resync) || wants(e.name());
            async move { keep }
        })
        .map(|e| Ok(SseEvent::default().event(e.name()).data(event_data(&e))))
        .take_until(async move {
            let _ = stopping.wait_for(|s| *s).await;
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// An event's data as JSON, as the live stream sends it.
pub fn event_data(event: &Event) -> String {
    let json = match event {
        Event::Message(m) => serde_json::to_string(&**m),
        Event::Connection(c) => serde_json::to_string(&**c),
        Event::Flushed(f) => serde_json::to_string(f),
        Event::Device(d) => serde_json::to_string(&**d),
        Event::Presence(p) => serde_json::to_string(&**p),
        Event::Alert(a) => serde_json::to_string(&**a),
        Event::Resync => Ok("{}".to_owned()),
    };
    json.unwrap_or_else(|_| "{}".to_owned())
}
