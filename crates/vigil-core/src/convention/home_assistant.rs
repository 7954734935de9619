//! HomeAssistant (stub: to be written).

use super::{Interpretation, MessageRef};

/// What HomeAssistant messages have taught so far.
#[derive(Debug, Default)]
pub(super) struct HomeAssistant {
    prefix: String,
}

impl HomeAssistant {
    pub(super) fn new(prefix: &str) -> HomeAssistant {
        HomeAssistant {
            prefix: prefix.to_owned(),
        }
    }

    pub(super) fn interpret(&mut self, message: MessageRef<'_>) -> Option<Interpretation> {
        let _ = (&self.prefix, message);
        None
    }
}
