//! Between the core's alert evaluator and the store's alert rows.

use vigil_core::alert::{Alert, AlertChange, AlertState, Severity};
use vigil_store::AlertRow;

/// The stored row of an alert as it is after `change`, and the name of what
/// happened to it (`fired`, `acknowledged`, `cleared`).
pub(crate) fn alert_row(change: &AlertChange) -> (AlertRow, &'static str) {
    let a = &change.alert;
    let row = AlertRow {
        id: a.id,
        rule_id: a.rule_id,
        device: a.device.clone(),
        severity: a.severity.as_str().to_owned(),
        state: a.state.as_str().to_owned(),
        fired_at: a.fired_at,
        acked_at: a.acked_at,
        acked_by: a.acked_by.clone(),
        cleared_at: a.cleared_at,
        value: a.value.filter(|v| v.is_finite()),
        message: a.message.clone(),
    };
    (row, change.transition.as_str())
}

/// An active alert read back from the store, for the evaluator to resume
/// (`None` for a row this version cannot read, which is logged).
pub(crate) fn alert_from_row(r: &AlertRow) -> Option<Alert> {
    let (Some(severity), Some(state)) = (Severity::parse(&r.severity), AlertState::parse(&r.state))
    else {
        tracing::error!(
            id = r.id,
            "alert {} in the store cannot be read, skipped",
            r.id
        );
        return None;
    };
    Some(Alert {
        id: r.id,
        rule_id: r.rule_id,
        device: r.device.clone(),
        severity,
        state,
        fired_at: r.fired_at,
        acked_at: r.acked_at,
        acked_by: r.acked_by.clone(),
        cleared_at: r.cleared_at,
        value: r.value,
        message: r.message.clone(),
    })
}
