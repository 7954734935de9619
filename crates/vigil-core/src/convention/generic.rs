//! Generic: a user-defined availability topic (stub: to be written).

use serde::{Deserialize, Serialize};

use super::{Interpretation, MessageRef};

/// A user-defined availability (last will) topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericAvailability {
    /// A topic filter whose single `+` level names the device, e.g.
    /// `clinic/+/availability`.
    pub topic: String,
    /// Payloads that mean online.
    #[serde(default = "default_online")]
    pub online: Vec<String>,
    /// Payloads that mean offline.
    #[serde(default = "default_offline")]
    pub offline: Vec<String>,
    /// Payloads that mean sleeping.
    #[serde(default)]
    pub sleeping: Vec<String>,
}

fn default_online() -> Vec<String> {
    vec!["online".into()]
}

fn default_offline() -> Vec<String> {
    vec!["offline".into()]
}

impl GenericAvailability {
    pub(super) fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The user's rules.
#[derive(Debug, Default)]
pub(super) struct Generic {
    rules: Vec<GenericAvailability>,
}

impl Generic {
    pub(super) fn new(rules: &[GenericAvailability]) -> Generic {
        Generic {
            rules: rules.to_vec(),
        }
    }

    pub(super) fn interpret(&mut self, message: MessageRef<'_>) -> Option<Interpretation> {
        let _ = (&self.rules, message);
        None
    }
}
