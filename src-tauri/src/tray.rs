//! The tray icon: the presence summary ("42 online · 3 stale · 1 offline"),
//! and quick actions: show the window, open the alerts, notifications on or
//! off, quit.

use std::sync::Arc;
use std::time::Duration;

use tauri::menu::{CheckMenuItem, Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Manager, Runtime};

use crate::desktop::{Desktop, Open, Settings};

/// The tray's items that show a setting.
struct Items<R: Runtime> {
    notify: CheckMenuItem<R>,
}

/// Shows `settings` in the tray (after a change from the Settings screen).
pub fn reflect<R: Runtime>(app: &AppHandle<R>, settings: &Settings) {
    if let Some(items) = app.try_state::<Items<R>>() {
        let _ = items.notify.set_checked(settings.notify);
    }
}

const SUMMARY_EVERY: Duration = Duration::from_secs(5);

/// Shows, unminimises and focuses the main window.
pub fn show_main<R: Runtime>(app: &AppHandle<R>) {
    if let Some(window) = app.get_webview_window("main") {
        let _ = window.show();
        let _ = window.unminimize();
        let _ = window.set_focus();
    }
}

/// Puts the icon in the tray and keeps its summary current.
pub fn build<R: Runtime>(app: &AppHandle<R>, desktop: Arc<Desktop>) -> tauri::Result<()> {
    let summary = MenuItem::with_id(app, "summary", "Starting…", false, None::<&str>)?;
    let show = MenuItem::with_id(app, "show", "Show Vigil", true, None::<&str>)?;
    let alerts = MenuItem::with_id(app, "alerts", "Active alerts", true, None::<&str>)?;
    let notify = CheckMenuItem::with_id(
        app,
        "notify",
        "Alert notifications",
        true,
        desktop.settings().notify,
        None::<&str>,
    )?;
    let quit = MenuItem::with_id(app, "quit", "Quit Vigil", true, None::<&str>)?;
    let line = PredefinedMenuItem::separator(app)?;
    let menu = Menu::with_items(
        app,
        &[&summary, &line, &show, &alerts, &notify, &line, &quit],
    )?;
    app.manage(Items {
        notify: notify.clone(),
    });
    let for_menu = desktop.clone();
    let mut tray = TrayIconBuilder::with_id("vigil")
        .menu(&menu)
        .tooltip("Vigil")
        .on_menu_event(move |app, event| match event.id().as_ref() {
            "show" => show_main(app),
            "alerts" => crate::events::open(app, Open::Alerts),
            "notify" => {
                let mut settings = for_menu.settings();
                settings.notify = !settings.notify;
                if let Err(e) = for_menu.set_settings(settings) {
                    tracing::warn!("cannot save the desktop settings: {e}");
                }
                // The check mark follows what is in force (unchanged if the save failed).
                reflect(app, &for_menu.settings());
            }
            "quit" => app.exit(0),
            _ => {}
        });
    if let Some(icon) = app.default_window_icon() {
        tray = tray.icon(icon.clone());
    }
    let tray = tray.build(app)?;
    tauri::async_runtime::spawn(async move {
        let mut last = String::new();
        loop {
            if let Ok(devices) = desktop.engine.devices().await {
                let text = presence_summary(devices.iter().map(|d| d.presence.state.as_str()));
                if text != last {
                    let _ = summary.set_text(&text);
                    let _ = tray.set_tooltip(Some(format!("Vigil — {text}")));
                    last = text;
                }
            }
            tokio::time::sleep(SUMMARY_EVERY).await;
        }
    });
    Ok(())
}

/// "42 online · 3 stale · 1 offline", the states with no device left out.
pub fn presence_summary<'a>(states: impl Iterator<Item = &'a str>) -> String {
    let order = ["online", "stale", "offline", "sleeping", "unknown"];
    let mut counts = [0usize; 5];
    for s in states {
        if let Some(i) = order.iter().position(|o| *o == s) {
            counts[i] += 1;
        }
    }
    let parts: Vec<String> = order
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{n} {name}"))
        .collect();
    if parts.is_empty() {
        "no devices yet".to_owned()
    } else {
        parts.join(" · ")
    }
}

#[cfg(test)]
mod tests {
    use super::presence_summary;

    #[test]
    fn the_summary_counts_states_in_order_of_concern() {
        let states = ["online", "offline", "online", "stale", "online"];
        assert_eq!(
            presence_summary(states.into_iter()),
            "3 online · 1 stale · 1 offline"
        );
        assert_eq!(presence_summary([].into_iter()), "no devices yet");
    }
}
