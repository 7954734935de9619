//! The engine's live events to the window, and alerts to the desktop's
//! notifications.
//!
//! Events go out in batches (every 50 ms, at most 1,000 at a time): one IPC
//! message per engine event would cost the webview more than the UI, which
//! draws once per frame anyway, can use. A listener that falls behind gets a
//! `resync` entry and reloads, as over HTTP.

use std::sync::Arc;
use std::time::Duration;

use tauri::{AppHandle, Emitter, Runtime};
use tauri_plugin_notification::NotificationExt;
use tokio::sync::broadcast::error::RecvError;
use vigil_engine::Event;

use crate::desktop::{Desktop, Notice};

/// The event the window listens to: a list of `{name, data}`.
pub const EVENTS: &str = "vigil://events";
const BATCH_EVERY: Duration = Duration::from_millis(50);
const BATCH_MAX: usize = 1000;

/// One engine event as the window gets it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    /// The event's name (`message`, `presence`, ... or `resync`).
    pub name: &'static str,
    /// Its data, as the HTTP stream sends it.
    pub data: serde_json::Value,
}

/// Forwards events until the app stops.
pub fn forward<R: Runtime>(app: AppHandle<R>, desktop: Arc<Desktop>) {
    let subscription = desktop.engine.subscribe(true);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(8192);
    for mut source in [subscription.others]
        .into_iter()
        .chain(subscription.messages)
    {
        let tx = tx.clone();
        tauri::async_runtime::spawn(async move {
            loop {
                let event = match source.recv().await {
                    Ok(e) => e,
                    Err(RecvError::Lagged(_)) => Event::Resync,
                    Err(RecvError::Closed) => return,
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    tauri::async_runtime::spawn(async move {
        let mut batch = Vec::new();
        let mut tick = tokio::time::interval(BATCH_EVERY);
        loop {
            tokio::select! {
                event = rx.recv() => match event {
                    Some(event) => {
                        if let Event::Alert(alert) = &event {
                            if alert.transition == "fired" {
                                notify(&app, &desktop, &alert.alert);
                            }
                        }
                        batch.push(Entry {
                            name: if matches!(event, Event::Resync) { "resync" } else { event.name() },
                            data: serde_json::from_str(&vigil_api::event_data(&event)).unwrap_or_default(),
                        });
                        if batch.len() >= BATCH_MAX {
                            let _ = app.emit(EVENTS, std::mem::take(&mut batch));
                        }
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    if !batch.is_empty() {
                        let _ = app.emit(EVENTS, std::mem::take(&mut batch));
                    }
                }
            }
        }
    });
}

/// A native notification for a fired alert, remembered by the app.
fn notify<R: Runtime>(app: &AppHandle<R>, desktop: &Desktop, alert: &vigil_core::alert::Alert) {
    let notice = Notice {
        at: vigil_core::now_micros(),
        alert: alert.id,
        device: alert.device.clone(),
        title: format!("{} · {}", alert.device, severity(alert)),
        body: alert.message.clone(),
    };
    if let Err(e) = app
        .notification()
        .builder()
        .title(&notice.title)
        .body(&notice.body)
        .show()
    {
        tracing::warn!("could not show a notification for alert {}: {e}", alert.id);
    }
    desktop.noticed(notice);
}

fn severity(alert: &vigil_core::alert::Alert) -> String {
    serde_json::to_value(alert.severity)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
