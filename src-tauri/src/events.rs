//! The engine's live events to the window, and alerts to the desktop's
//! notifications.
//!
//! Events go out in batches (every 50 ms, at most 1,000 at a time): one IPC
//! message per engine event would cost the webview more than the UI, which
//! draws once per frame anyway, can use. A listener that falls behind gets a
//! `resync` entry and reloads, as over HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tauri::{AppHandle, Emitter, Runtime};
use tauri_plugin_notification::NotificationExt;
use tokio::sync::broadcast::error::RecvError;
use vigil_engine::Event;

use crate::desktop::{Desktop, Notice, Open, Pacer};

/// The event the window listens to: a list of `{name, data}`.
pub const EVENTS: &str = "vigil://events";
/// The event that asks the window to open a place ([`Open`]).
pub const OPEN: &str = "vigil://open";
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
        let mut pacer = Pacer::new(Instant::now());
        loop {
            tokio::select! {
                event = rx.recv() => match event {
                    Some(event) => {
                        if let Event::Alert(alert) = &event {
                            if alert.transition == "fired"
                                && desktop.settings().notify
                                && pacer.admit(Instant::now())
                            {
                                notify(&app, &desktop, alert_notice(&alert.alert));
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
                    if let Some(held) = pacer.summary_due(Instant::now()) {
                        notify(&app, &desktop, summary_notice(held));
                    }
                }
            }
        }
    });
}

/// The notification for a fired alert.
fn alert_notice(alert: &vigil_core::alert::Alert) -> Notice {
    Notice {
        id: 0,
        at: vigil_core::now_micros(),
        alert: Some(alert.id),
        device: Some(alert.device.clone()),
        title: format!("{} · {}", alert.device, severity(alert)),
        body: alert.message.clone(),
    }
}

/// The notification that tells the alerts held back during a storm.
fn summary_notice(held: u32) -> Notice {
    Notice {
        id: 0,
        at: vigil_core::now_micros(),
        alert: None,
        device: None,
        title: format!(
            "Vigil · {held} more alert{}",
            if held == 1 { "" } else { "s" }
        ),
        body: "Open Vigil's Alerts screen to see them all.".to_owned(),
    }
}

/// Shows a native notification and remembers it; a click on it opens what
/// it is about (see [`on_click`]).
fn notify<R: Runtime>(app: &AppHandle<R>, desktop: &Desktop, notice: Notice) {
    let notice = desktop.noticed(notice);
    if let Err(e) = app
        .notification()
        .builder()
        .id(notice.id)
        .title(&notice.title)
        .body(&notice.body)
        .show()
    {
        tracing::warn!("could not show the notification \"{}\": {e}", notice.title);
    }
}

/// A click on one of the app's notifications brings the window up at the
/// device (or, for a summary, the Alerts screen). Registered before the
/// first notification: the plugin reports clicks only to handlers that
/// existed when a notification was shown.
pub fn on_click<R: Runtime>(app: &AppHandle<R>, desktop: Arc<Desktop>) {
    let handle = app.clone();
    let _ = app.notification().on_action(move |performed| {
        if performed.action_id() != "tap" {
            return;
        }
        let Some(notice) = performed
            .notification()
            .and_then(|n| desktop.notice(n.id()))
        else {
            return;
        };
        open(&handle, notice.opens());
    });
}

/// Shows the window and asks the UI to open `place`.
pub fn open<R: Runtime>(app: &AppHandle<R>, place: Open) {
    crate::tray::show_main(app);
    let _ = app.emit(OPEN, place);
}

fn severity(alert: &vigil_core::alert::Alert) -> String {
    serde_json::to_value(alert.severity)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
