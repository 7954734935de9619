//! Tasmota (stub: to be written).

use super::{Interpretation, MessageRef};

/// What Tasmota messages have taught so far.
#[derive(Debug, Default)]
pub(super) struct Tasmota {}

impl Tasmota {
    pub(super) fn interpret(&mut self, message: MessageRef<'_>) -> Option<Interpretation> {
        let _ = message;
        None
    }
}
