//! Which notification is the newest (RFC 7641 §3.4).

use std::time::{Duration, Instant};

/// After this long, a notification is taken as newer whatever its number
/// (the sequence number may have wrapped or the server restarted).
pub const REORDER_WINDOW: Duration = Duration::from_secs(128);

/// Whether a notification numbered `v2` that arrived at `t2` is newer than
/// the last one taken (`v1` at `t1`). Observe numbers are 24 bits and wrap.
pub fn is_newer(v1: u32, t1: Instant, v2: u32, t2: Instant) -> bool {
    const HALF: u32 = 1 << 23;
    let (v1, v2) = (v1 & 0xff_ffff, v2 & 0xff_ffff);
    (v1 < v2 && v2 - v1 < HALF)
        || (v1 > v2 && v1 - v2 > HALF)
        || t2.saturating_duration_since(t1) > REORDER_WINDOW
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_number_with_wrap_and_time() {
        let t = Instant::now();
        assert!(is_newer(1, t, 2, t));
        assert!(!is_newer(2, t, 1, t));
        assert!(!is_newer(5, t, 5, t));
        // Wrapped around 2^24.
        assert!(is_newer(0xff_fffe, t, 1, t));
        assert!(!is_newer(1, t, 0xff_fffe, t));
        // An old number long after: the server restarted.
        assert!(is_newer(900, t, 3, t + Duration::from_secs(129)));
        assert!(!is_newer(900, t, 3, t + Duration::from_secs(100)));
    }
}
