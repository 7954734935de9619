//! Sparkplug (stub: to be written).

use super::{Interpretation, MessageRef};

/// What Sparkplug messages have taught so far.
#[derive(Debug, Default)]
pub(super) struct Sparkplug {}

impl Sparkplug {
    pub(super) fn interpret(&mut self, message: MessageRef<'_>) -> Option<Interpretation> {
        let _ = message;
        None
    }
}
