//! What the shells show of a stored message.
//!
//! JSON cannot carry bytes, so every payload is given whole as base64, and
//! also as text when it is UTF-8. Nothing is ever cut.

use base64::Engine as _;
use serde::Serialize;
use vigil_core::Micros;
use vigil_store::StoredMessage;

/// A stored message as the API returns it.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct MessageView {
    /// Its id in the store (increasing with arrival).
    pub id: i64,
    /// When it arrived.
    pub at: Micros,
    /// Its topic.
    pub topic: String,
    /// The device it belongs to.
    pub device: Option<String>,
    /// Who published it.
    pub client_id: Option<String>,
    /// Its QoS.
    pub qos: u8,
    /// Whether it was retained.
    pub retain: bool,
    /// Payload size in bytes.
    pub size: usize,
    /// The whole payload, base64.
    pub payload_base64: String,
    /// The whole payload as text, when it is UTF-8.
    pub payload_text: Option<String>,
    /// MQTT 5 properties and flags (`user_properties`, `content_type`, `will`).
    pub properties: Option<serde_json::Value>,
    /// What the payload is: `empty`, `json`, `senml`, `cbor`, `sparkplug`,
    /// `number`, `boolean`, `text` or `binary`.
    pub kind: vigil_core::PayloadKind,
    /// Why a payload that claimed a format (its MQTT 5 content type) could
    /// not be read as such; the payload is kept whole regardless.
    pub decode_error: Option<String>,
    /// The readings Vigil took from the payload (JSON paths, SenML and
    /// Sparkplug names, CBOR), with units and times when the payload gave them.
    pub metrics: Vec<vigil_core::decode::Metric>,
    /// A binary payload (CBOR, SenML in CBOR, Sparkplug) as JSON, for people
    /// to read; `null` for text payloads.
    pub structure: Option<serde_json::Value>,
}

impl From<StoredMessage> for MessageView {
    fn from(m: StoredMessage) -> Self {
        let properties: Option<serde_json::Value> = m
            .properties
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok());
        let content_type = properties
            .as_ref()
            .and_then(|p| p.get("content_type"))
            .and_then(|c| c.as_str());
        let decoded = vigil_core::decode::decode_message(&m.topic, &m.payload, content_type);
        let structure = vigil_core::decode::structure(&m.payload, decoded.kind);
        MessageView {
            structure,
            kind: decoded.kind,
            decode_error: decoded.error,
            metrics: decoded.metrics,
            id: m.id,
            at: m.at,
            size: m.payload.len(),
            payload_base64: base64::engine::general_purpose::STANDARD.encode(&m.payload),
            payload_text: std::str::from_utf8(&m.payload).ok().map(str::to_owned),
            properties,
            topic: m.topic,
            device: m.device,
            client_id: m.client_id,
            qos: m.qos,
            retain: m.retain,
        }
    }
}
