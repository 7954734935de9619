//! TEMPORARY stub to compile-check the engine while the core alert module is written.
#![allow(dead_code, missing_docs)]
use vigil_store::AlertRow;
pub(crate) struct DeviceFacts<'a> {
    pub key: &'a str,
    pub convention: &'a str,
    pub group: Option<&'a str>,
}
pub(crate) fn alert_row(_c: &AlertChange) -> (AlertRow, &'static str) {
    unimplemented!()
}
pub(crate) fn alert_from_row(_r: &AlertRow) -> Option<Alert> {
    None
}
pub struct Alert;
pub struct AlertChange;
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AlertRule {
    pub id: i64,
}
impl AlertRule {
    pub fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}
pub struct AlertEvaluator;
impl AlertEvaluator {
    pub fn new(_r: Vec<AlertRule>, _n: i64) -> Self {
        AlertEvaluator
    }
    pub fn restore(&mut self, _a: Vec<Alert>) {}
    pub fn on_sample(&mut self, _d: &DeviceFacts, _m: &str, _v: f64, _at: i64) -> Vec<AlertChange> {
        Vec::new()
    }
    pub fn on_presence(
        &mut self,
        _d: &DeviceFacts,
        _s: vigil_core::PresenceState,
        _at: i64,
    ) -> Vec<AlertChange> {
        Vec::new()
    }
    pub fn acknowledge(
        &mut self,
        _id: i64,
        _at: i64,
        _by: Option<String>,
    ) -> Result<AlertChange, String> {
        Err("x".into())
    }
    pub fn set_rules(&mut self, _r: Vec<AlertRule>, _now: i64) -> Vec<AlertChange> {
        Vec::new()
    }
    pub fn next_deadline(&self) -> Option<i64> {
        None
    }
    pub fn tick(&mut self, _now: i64) -> Vec<AlertChange> {
        Vec::new()
    }
}
