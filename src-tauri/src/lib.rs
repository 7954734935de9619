//! Vigil on the desktop: Tauri 2 around `vigil-engine` and the same web UI.
//!
//! The engine (broker, store, presence, alerts) runs in this process, on the
//! same data folder as `vigil serve`. The window's UI talks to it through two commands
//! and one event:
//! - `request` answers a call of the UI's API (docs/API.md) by handing it to
//!   `vigil-api`'s router in-process — the very router `vigil serve` serves
//!   over HTTP, so both shells answer alike, and no port is opened for it;
//! - `notifications` lists the alert notifications this run has shown;
//! - `save_as` writes an export where the user picks in the native dialog;
//! - `desktop_settings` / `set_desktop_settings` read and change the desktop
//!   app's own settings (close to the tray, alert notifications);
//! - `vigil://events` carries the engine's live events, batched, and
//!   `vigil://open` asks the UI to open a device or the Alerts screen (a
//!   click on a notification, the tray's "Active alerts").
//!
//! Around it: a tray icon with the presence summary and quick actions, native
//! notifications for alerts (paced in storms; a click opens the device),
//! closing the window keeps watching from the tray, one instance at a time,
//! and the window's size and place remembered.

mod desktop;
mod events;
mod tray;

pub use desktop::{config_from_env, Desktop, Notice, Settings};

use std::sync::Arc;

use tauri::{Manager, Runtime, WindowEvent};

/// The answer to a `request`: the API's status and JSON body.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    /// The HTTP status the API gave.
    pub status: u16,
    /// Its JSON body (`null` when it had none).
    pub body: serde_json::Value,
}

/// Calls the API: `path` with its query string, `body` as JSON.
#[tauri::command]
async fn request(
    desktop: tauri::State<'_, Arc<Desktop>>,
    method: String,
    path: String,
    body: Option<serde_json::Value>,
) -> Result<Answer, String> {
    if !path.starts_with("/api/") || path.starts_with("/api/events") {
        return Err(format!("'{path}' is not an API call the window may make"));
    }
    let (status, body) = vigil_api::call(&desktop.api, &method, &path, body.as_ref()).await;
    Ok(Answer { status, body })
}

/// The alert notifications shown since start, oldest first.
#[tauri::command]
fn notifications(desktop: tauri::State<'_, Arc<Desktop>>) -> Vec<Notice> {
    desktop.notices()
}

/// The desktop app's own settings.
#[tauri::command]
fn desktop_settings(desktop: tauri::State<'_, Arc<Desktop>>) -> Settings {
    desktop.settings()
}

/// Saves and applies the desktop app's own settings.
#[tauri::command]
fn set_desktop_settings<R: Runtime>(
    app: tauri::AppHandle<R>,
    desktop: tauri::State<'_, Arc<Desktop>>,
    settings: Settings,
) -> Result<Settings, String> {
    desktop
        .set_settings(settings)
        .map_err(|e| format!("cannot save the desktop settings: {e}"))?;
    let settings = desktop.settings();
    tray::reflect(&app, &settings);
    Ok(settings)
}

/// Saves an export (the inspector's CSV or JSON, a certificate, a key) where
/// the user picks in the native save dialog; `None` if they cancel.
#[tauri::command]
async fn save_as<R: Runtime>(
    app: tauri::AppHandle<R>,
    name: String,
    contents: String,
) -> Result<Option<String>, String> {
    use tauri_plugin_dialog::DialogExt;
    let Some(path) = app
        .dialog()
        .file()
        .set_file_name(&name)
        .blocking_save_file()
    else {
        return Ok(None);
    };
    let path = path
        .into_path()
        .map_err(|e| format!("cannot save there: {e}"))?;
    desktop::write_export(&path, contents.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(Some(path.display().to_string()))
}

/// The commands the window may invoke.
pub fn commands<R: Runtime>(builder: tauri::Builder<R>) -> tauri::Builder<R> {
    builder.invoke_handler(tauri::generate_handler![
        request,
        notifications,
        save_as,
        desktop_settings,
        set_desktop_settings
    ])
}

/// Starts Vigil's desktop app; returns when it quits.
pub fn run() {
    vigil_engine::logging::init();
    let builder = tauri::Builder::default()
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| {
            // A second start shows the running one instead.
            tray::show_main(app);
        }))
        .plugin(tauri_plugin_window_state::Builder::default().build())
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_dialog::init())
        .setup(|app| {
            let config = config_from_env()?;
            let desktop = tauri::async_runtime::block_on(Desktop::start(config))?;
            let desktop = Arc::new(desktop);
            app.manage(desktop.clone());
            tray::build(app.handle(), desktop.clone())?;
            events::on_click(app.handle(), desktop.clone());
            events::forward(app.handle().clone(), desktop);
            Ok(())
        })
        .on_window_event(|window, event| {
            // Closing the window keeps Vigil watching from the tray.
            if let WindowEvent::CloseRequested { api, .. } = event {
                let to_tray = window
                    .try_state::<Arc<Desktop>>()
                    .is_some_and(|d| d.settings().close_to_tray);
                if window.label() == "main" && to_tray {
                    let _ = window.hide();
                    api.prevent_close();
                }
            }
        });
    let app = commands(builder)
        .build(tauri::generate_context!())
        .expect("the desktop app could not be built");
    app.run(|handle, event| {
        if let tauri::RunEvent::Exit = event {
            if let Some(desktop) = handle.try_state::<Arc<Desktop>>() {
                tauri::async_runtime::block_on(desktop.engine.shutdown());
            }
        }
    });
}
