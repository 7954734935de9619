//! One unit for time everywhere: microseconds since the Unix epoch, as `i64`.
//!
//! Microseconds order tens of thousands of messages a second and still fit
//! SQLite's INTEGER and JavaScript's `Number` (exactly up to 2^53 µs, year 2255).

/// Microseconds since the Unix epoch.
pub type Micros = i64;

/// The current wall-clock time in microseconds since the Unix epoch.
pub fn now_micros() -> Micros {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_micros() as Micros,
        Err(e) => -(e.duration().as_micros() as Micros),
    }
}
