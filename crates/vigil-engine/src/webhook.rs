//! Alert webhooks: every alert change is POSTed as JSON to each configured
//! URL, from a persisted outbox, retried with backoff until the receiver
//! answers 2xx. An alert raised while the receiver (or the network) is down
//! is delivered when it comes back, also after a restart of Vigil.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Notify;
use vigil_core::presence::seconds;
use vigil_core::{now_micros, Micros};
use vigil_store::{Change, Store, WebhookDelivery, WriterHandle};

/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two attempts.
const MAX_BACKOFF: Micros = 300_000_000;
/// How often the outbox is looked at when nothing wakes the task.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// Checks that a webhook URL is one Vigil can deliver to.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "'{url}': https webhooks are not supported yet (TLS arrives with the security work); use http:// on a trusted network"
            ))
        }
        _ => return Err(format!("'{url}' must start with http://")),
    }
    if uri.host().is_none() {
        return Err(format!("'{url}' has no host"));
    }
    Ok(())
}

/// A webhook URL as people may see it: scheme, host and port, without the
/// user, path or query, which may hold a token.
pub(crate) fn display_url(url: &str) -> String {
    match url.parse::<hyper::Uri>() {
        Ok(uri) => {
            let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{}{port}/…",
                uri.scheme_str().unwrap_or("?"),
                uri.host().unwrap_or("?")
            )
        }
        Err(_) => "…".to_owned(),
    }
}

/// Delivers what the outbox holds, forever (the engine aborts it at shutdown;
/// an interrupted delivery is simply made again).
pub(crate) async fn run(store: Store, writer: WriterHandle, wake: Arc<Notify>) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    loop {
        let due = match store.webhook_due(now_micros(), 100).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!("cannot read the webhook outbox: {e}");
                Vec::new()
            }
        };
        for delivery in &due {
            let change = match deliver(&client, delivery).await {
                Ok(()) => Change::WebhookDone { id: delivery.id },
                Err(error) => {
                    let backoff = (1_000_000i64 << delivery.attempts.clamp(0, 20)).min(MAX_BACKOFF);
                    tracing::warn!(
                        url = delivery.url,
                        attempt = delivery.attempts + 1,
                        "webhook delivery failed, next try in {}: {error}",
                        seconds(backoff)
                    );
                    Change::WebhookFailed {
                        id: delivery.id,
                        next_attempt: now_micros() + backoff,
                        error,
                    }
                }
            };
            if writer.change(change).await.is_err() {
                return; // the writer stopped: Vigil is stopping
            }
        }
        // The outcome of these deliveries commits within a flush interval;
        // look again after that, or when woken, or now and then for retries.
        let wait = match store.webhook_next().await {
            Ok(Some(next)) if due.is_empty() => {
                Duration::from_micros((next - now_micros()).clamp(100_000, 5_000_000) as u64)
            }
            Ok(Some(_)) => Duration::from_millis(200),
            _ => IDLE_CHECK,
        };
        tokio::select! {
            _ = wake.notified() => {
                // Let the writer commit what woke us.
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn deliver(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    delivery: &WebhookDelivery,
) -> Result<(), String> {
    let request = hyper::Request::post(delivery.url.as_str())
        .header("content-type", "application/json")
        .header("user-agent", concat!("vigil/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(Bytes::from(delivery.body.clone())))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let response = tokio::time::timeout(TIMEOUT, client.request(request))
        .await
        .map_err(|_| format!("no answer within {} s", TIMEOUT.as_secs()))?
        .map_err(|e| format!("{e}"))?;
    let status = response.status();
    // Read (and drop) the body so the connection can be reused.
    let _ = tokio::time::timeout(TIMEOUT, response.into_body().collect()).await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {status}"))
    }
}
