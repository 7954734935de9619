//! Which client ids are connected right now.
//!
//! MQTT lets a new connection take over a client id that is already connected;
//! the router then drops the old one. The front door records the takeover here
//! so the old connection's end is reported as "session taken over", not as a
//! dropped device.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub(crate) struct Sessions {
    by_client: Mutex<HashMap<String, (u64, Arc<AtomicBool>)>>,
    next: AtomicU64,
}

/// A connection's claim on its client id; releases it when dropped.
pub(crate) struct SessionClaim {
    sessions: Arc<Sessions>,
    client_id: String,
    seq: u64,
    taken_over: Arc<AtomicBool>,
}

impl Sessions {
    pub(crate) fn claim(self: &Arc<Self>, client_id: &str) -> SessionClaim {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let taken_over = Arc::new(AtomicBool::new(false));
        let previous = self
            .by_client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(client_id.to_owned(), (seq, taken_over.clone()));
        if let Some((_, old)) = previous {
            old.store(true, Ordering::Release);
        }
        SessionClaim {
            sessions: self.clone(),
            client_id: client_id.to_owned(),
            seq,
            taken_over,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

impl SessionClaim {
    pub(crate) fn taken_over(&self) -> bool {
        self.taken_over.load(Ordering::Acquire)
    }
}

impl Drop for SessionClaim {
    fn drop(&mut self) {
        let mut map = self
            .sessions
            .by_client
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if map
            .get(&self.client_id)
            .is_some_and(|(seq, _)| *seq == self.seq)
        {
            map.remove(&self.client_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_takes_over_the_first() {
        let sessions = Arc::new(Sessions::default());
        let first = sessions.claim("dev");
        let second = sessions.claim("dev");
        assert!(first.taken_over());
        assert!(!second.taken_over());
        drop(first);
        assert_eq!(
            sessions.len(),
            1,
            "the old claim must not release the new one"
        );
        drop(second);
        assert_eq!(sessions.len(), 0);
    }
}
