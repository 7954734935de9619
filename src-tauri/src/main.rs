// No console window on Windows in release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    // As `vigil`: two malloc arenas, and file descriptors for every device.
    vigil_engine::process::prepare();
    // WebKitGTK takes the page's language from LANG; under the C/POSIX locale
    // (minimal installs, services, CI) that is "C", which Intl rejects
    // ("invalid language tag: C"), and the UI's chart library fails to load.
    let c_locale = |v: Option<std::ffi::OsString>| {
        v.is_none_or(|v| {
            let v = v.to_string_lossy();
            v.is_empty() || v == "C" || v.starts_with("C.") || v == "POSIX"
        })
    };
    if c_locale(std::env::var_os("LC_ALL")) && c_locale(std::env::var_os("LANG")) {
        // SAFETY: no other thread exists yet.
        unsafe {
            std::env::remove_var("LC_ALL");
            std::env::set_var("LANG", "en_US.UTF-8");
        }
    }
    vigil_desktop::run();
}
