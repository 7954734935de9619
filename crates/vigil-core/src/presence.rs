//! Presence: whether a device is there, as a state machine per device.

use serde::{Deserialize, Serialize};

/// Where a device stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    /// Nothing heard yet that says either way.
    Unknown,
    /// Connected, announced, or heard from within its expected interval.
    Online,
    /// Silent for longer than its expected interval allows.
    Stale,
    /// Gone: disconnected, its last will, a death certificate, or silent far
    /// past its expected interval.
    Offline,
    /// Said it will be quiet (Homie `sleeping`): silence is expected.
    Sleeping,
}

impl PresenceState {
    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceState::Unknown => "unknown",
            PresenceState::Online => "online",
            PresenceState::Stale => "stale",
            PresenceState::Offline => "offline",
            PresenceState::Sleeping => "sleeping",
        }
    }

    /// The inverse of [`PresenceState::as_str`].
    pub fn parse(s: &str) -> Option<PresenceState> {
        Some(match s {
            "unknown" => PresenceState::Unknown,
            "online" => PresenceState::Online,
            "stale" => PresenceState::Stale,
            "offline" => PresenceState::Offline,
            "sleeping" => PresenceState::Sleeping,
            _ => return None,
        })
    }
}
