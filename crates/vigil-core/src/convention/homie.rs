//! Homie (stub: to be written).

use super::{Interpretation, MessageRef};

/// What Homie messages have taught so far.
#[derive(Debug, Default)]
pub(super) struct Homie {
    prefix: String,
}

impl Homie {
    pub(super) fn new(prefix: &str) -> Homie {
        Homie {
            prefix: prefix.to_owned(),
        }
    }

    pub(super) fn interpret(&mut self, message: MessageRef<'_>) -> Option<Interpretation> {
        let _ = (&self.prefix, message);
        None
    }
}
