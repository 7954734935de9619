//! The web UI, embedded at build time (see `build.rs`): `/` is the app, and
//! Vite's content-hashed `assets/` are cached for good.

use axum::http::{header, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// Shown when the binary was built before the UI was.
const NOT_BUILT: &str = "<!doctype html><meta charset=utf-8><title>Vigil</title>\
<body style=\"font:16px system-ui;margin:3em\"><h1>Vigil is running</h1>\
<p>This binary was built without its web UI. Build it with <code>make ui</code> \
(or <code>npm ci &amp;&amp; npm run build</code> in <code>ui/</code>), then rebuild \
<code>vigil</code>. The API is at <a href=\"/api/devices\">/api/devices</a>.</p>";

fn asset(path: &str) -> Option<&'static [u8]> {
    ASSETS
        .iter()
        .find(|(name, _)| *name == path)
        .map(|(_, bytes)| *bytes)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "webmanifest" => "application/json",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// Serves the UI for any path that is not the API. The app routes with the
/// URL's fragment, so every other path gets `index.html`.
pub async fn serve(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    if let Some(bytes) = asset(path).filter(|_| !path.is_empty()) {
        let cache = if path.starts_with("assets/") {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        return (
            [
                (header::CONTENT_TYPE, content_type(path)),
                (header::CACHE_CONTROL, cache),
            ],
            bytes,
        )
            .into_response();
    }
    if path.starts_with("assets/") {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    }
    match asset("index.html") {
        Some(index) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            index,
        )
            .into_response(),
        None => Html(NOT_BUILT).into_response(),
    }
}
