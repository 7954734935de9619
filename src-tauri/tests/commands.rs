//! The window's commands and capabilities through Tauri's real IPC layer
//! (the mock runtime: no display), against a real engine on loopback.

use std::sync::Arc;

use serde_json::{json, Value};
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{get_ipc_response, mock_builder, MockRuntime, INVOKE_KEY};
use tauri::webview::InvokeRequest;
use tauri::{Manager, WebviewWindow};
use vigil_desktop::Desktop;

fn invoke(window: &WebviewWindow<MockRuntime>, cmd: &str, body: Value) -> Result<Value, Value> {
    invoke_from(window, "tauri://localhost", cmd, body)
}

/// Invokes as a page at `url` would.
fn invoke_from(
    window: &WebviewWindow<MockRuntime>,
    url: &str,
    cmd: &str,
    body: Value,
) -> Result<Value, Value> {
    get_ipc_response(
        window,
        InvokeRequest {
            cmd: cmd.into(),
            callback: CallbackFn(0),
            error: CallbackFn(1),
            url: url.parse().unwrap(),
            body: InvokeBody::Json(body),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_string(),
        },
    )
    .map(|b| b.deserialize::<Value>().expect("JSON"))
}

/// A desktop app (mock runtime, the real configuration and capabilities)
/// around an engine in `dir`, every listener on a free loopback port.
fn app(dir: &std::path::Path) -> (tauri::App<MockRuntime>, Arc<Desktop>) {
    let mut config = vigil_engine::Config {
        data_dir: dir.to_owned(),
        ..Default::default()
    };
    config.broker.mqtt_listen = "127.0.0.1:0".parse().unwrap();
    config.broker.ws_listen = None;
    config.broker.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    config.broker.wss_listen = None;
    let desktop =
        Arc::new(tauri::async_runtime::block_on(Desktop::start(config)).expect("engine starts"));
    let app = vigil_desktop::commands(mock_builder())
        .manage(desktop.clone())
        .build(tauri::generate_context!())
        .expect("the app builds");
    (app, desktop)
}

fn main_window(app: &tauri::App<MockRuntime>) -> WebviewWindow<MockRuntime> {
    app.get_webview_window("main").unwrap_or_else(|| {
        tauri::WebviewWindowBuilder::new(app, "main", Default::default())
            .build()
            .expect("the main window opens")
    })
}

#[test]
fn the_window_reaches_the_api_through_request() {
    let dir = tempfile::tempdir().unwrap();
    let (app, desktop) = app(dir.path());
    let window = main_window(&app);

    let devices = invoke(
        &window,
        "request",
        json!({"method": "GET", "path": "/api/devices"}),
    )
    .unwrap();
    assert_eq!(devices, json!({"status": 200, "body": []}));

    // Published through the API, then read back through it: the same router as `vigil serve`.
    let published = invoke(
        &window,
        "request",
        json!({"method": "POST", "path": "/api/publish", "body": {"topic": "kitchen/env", "payload": "{\"temp\": 21.5}"}}),
    )
    .unwrap();
    assert_eq!(published["status"], 200, "{published}");
    let device = (0..100)
        .find_map(|_| {
            let d = invoke(
                &window,
                "request",
                json!({"method": "GET", "path": "/api/devices/kitchen"}),
            )
            .unwrap();
            if d["status"] == 200 {
                return Some(d);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            None
        })
        .expect("the device appears");
    assert_eq!(device["body"]["id"], "kitchen");

    // The API's errors come back as answers with their status.
    let missing = invoke(
        &window,
        "request",
        json!({"method": "GET", "path": "/api/devices/nobody"}),
    )
    .unwrap();
    assert_eq!(missing["status"], 404);
    assert!(missing["body"]["error"]
        .as_str()
        .unwrap()
        .contains("nobody"));

    // Only API calls; the live stream comes as Tauri events instead.
    for path in ["/api/events", "/etc/passwd", "/"] {
        let refused = invoke(&window, "request", json!({"method": "GET", "path": path}));
        assert!(refused.is_err(), "{path}: {refused:?}");
    }
    assert_eq!(
        invoke(&window, "notifications", json!({})).unwrap(),
        json!([])
    );
    tauri::async_runtime::block_on(desktop.engine.shutdown());
}

#[test]
fn the_window_may_not_call_what_its_capabilities_leave_out() {
    let dir = tempfile::tempdir().unwrap();
    let (app, desktop) = app(dir.path());
    let window = main_window(&app);
    // The window may listen to events (the live stream)...
    let listen = invoke(
        &window,
        "plugin:event|listen",
        json!({"event": "vigil://events", "target": {"kind": "Any"}, "handler": 3}),
    );
    assert!(listen.is_ok(), "{listen:?}");
    // ...but not, say, close or move windows, or read files.
    for cmd in [
        "plugin:window|close",
        "plugin:webview|create_webview_window",
        "plugin:fs|read_file",
        "plugin:notification|notify",
    ] {
        let refused = invoke(&window, cmd, json!({}));
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("not allowed")),
            "{cmd} should be refused: {refused:?}"
        );
    }
    // A page from elsewhere (had the window been sent to one) may call nothing.
    let remote = invoke_from(
        &window,
        "https://example.com/",
        "request",
        json!({"method": "GET", "path": "/api/devices"}),
    );
    assert!(remote.is_err(), "{remote:?}");
    tauri::async_runtime::block_on(desktop.engine.shutdown());
}

#[test]
fn desktop_settings_are_changed_through_the_window_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (app, desktop) = app(dir.path());
    let window = main_window(&app);
    assert_eq!(
        invoke(&window, "desktop_settings", json!({})).unwrap(),
        json!({"close_to_tray": true, "notify": true})
    );
    let saved = invoke(
        &window,
        "set_desktop_settings",
        json!({"settings": {"close_to_tray": false, "notify": true}}),
    )
    .unwrap();
    assert_eq!(saved, json!({"close_to_tray": false, "notify": true}));
    assert!(!desktop.settings().close_to_tray, "in force at once");
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("desktop.json")).unwrap())
            .unwrap();
    assert_eq!(file, saved, "kept in desktop.json for the next start");

    // A setting the app does not know is refused, and nothing changes.
    let refused = invoke(
        &window,
        "set_desktop_settings",
        json!({"settings": {"close_to_tray": true, "autostart": true}}),
    );
    assert!(refused.is_err(), "{refused:?}");
    assert!(!desktop.settings().close_to_tray);
    tauri::async_runtime::block_on(desktop.engine.shutdown());
}
