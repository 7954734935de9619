//! Shelly (stub: to be written).

use super::{Interpretation, MessageRef};

/// What Shelly messages have taught so far.
#[derive(Debug, Default)]
pub(super) struct Shelly {}

impl Shelly {
    pub(super) fn interpret(&mut self, message: MessageRef<'_>) -> Option<Interpretation> {
        let _ = message;
        None
    }
}
