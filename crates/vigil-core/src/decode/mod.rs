//! Numeric metrics found in a payload.
//!
//! A payload is never changed or cut here: decoding only reads it and reports
//! what it found. JSON objects are flattened by path (`{"env":{"humidity":40}}`
//! gives `env.humidity`; array items by index, `list.0`); a payload that is a
//! plain number, a boolean, or `ON`/`OFF`, `true`/`false` gives one metric.
//! Everything else is kept raw with no metric.

mod senml;
pub mod sparkplug;

use serde::Serialize;

use crate::time::Micros;

/// How many metrics one payload may yield; the rest are ignored so a hostile
/// payload cannot create unbounded series.
pub const MAX_METRICS_PER_PAYLOAD: usize = 256;
/// How deep JSON is followed when looking for numbers.
pub const MAX_JSON_DEPTH: usize = 16;

/// What kind of payload this was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    /// Zero bytes.
    Empty,
    /// A JSON document (object, array, or string).
    Json,
    /// A SenML pack (RFC 8428), in JSON or CBOR.
    Senml,
    /// CBOR that is not SenML.
    Cbor,
    /// A plain number.
    Number,
    /// A boolean or ON/OFF.
    Boolean,
    /// UTF-8 text that is none of the above.
    Text,
    /// Bytes that are not UTF-8.
    Binary,
}

/// One numeric reading found in a payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    /// Its name: the path inside the payload (`env.humidity`), empty for a
    /// scalar payload; a convention or the engine prefixes it as needed.
    pub name: String,
    /// The value, always finite.
    pub value: f64,
    /// Its unit, when the payload says (SenML `u`, Sparkplug, discovery).
    pub unit: Option<String>,
    /// When it was measured, when the payload says (SenML time, Sparkplug
    /// timestamp); otherwise the message's arrival time applies.
    pub at: Option<Micros>,
}

impl Metric {
    /// A reading with no unit and no time of its own.
    pub fn new(name: impl Into<String>, value: f64) -> Metric {
        Metric {
            name: name.into(),
            value,
            unit: None,
            at: None,
        }
    }
}

/// The result of decoding a payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decoded {
    /// What the payload was.
    pub kind: PayloadKind,
    /// Metrics found. The name is empty for a scalar payload.
    pub metrics: Vec<Metric>,
    /// Why a payload that said what it was (by its content type) could not
    /// be read as that, in words. The payload is kept whole either way.
    pub error: Option<String>,
}

impl Decoded {
    fn new(kind: PayloadKind, metrics: Vec<Metric>) -> Decoded {
        Decoded {
            kind,
            metrics,
            error: None,
        }
    }
}

/// Decodes a payload into its numeric metrics. Never fails: what cannot be
/// understood is reported as `Text` or `Binary` with no metric. JSON that is
/// a SenML pack is read as SenML; bytes that are not UTF-8 are tried as CBOR
/// (SenML or plain).
pub fn decode_payload(payload: &[u8]) -> Decoded {
    if payload.is_empty() {
        return Decoded::new(PayloadKind::Empty, Vec::new());
    }
    let Ok(text) = std::str::from_utf8(payload) else {
        return match senml::cbor(payload) {
            Ok(senml::CborReadings::Senml(m)) => Decoded::new(PayloadKind::Senml, m),
            Ok(senml::CborReadings::Plain(m)) => Decoded::new(PayloadKind::Cbor, m),
            Err(_) => Decoded::new(PayloadKind::Binary, Vec::new()),
        };
    };
    let trimmed = text.trim();
    if let Some(value) = parse_scalar(trimmed) {
        return value;
    }
    if trimmed.starts_with('{') || trimmed.starts_with('[') || trimmed.starts_with('"') {
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(trimmed) {
            if let Some(m) = senml::senml_json(&json) {
                return Decoded::new(PayloadKind::Senml, m);
            }
            let mut metrics = Vec::new();
            let mut path = String::new();
            flatten(&json, &mut path, 0, &mut metrics);
            return Decoded::new(PayloadKind::Json, metrics);
        }
    }
    Decoded::new(PayloadKind::Text, Vec::new())
}

/// Like [`decode_payload`], but a payload whose MQTT 5 content type (or CoAP
/// content format name) says JSON, CBOR or SenML and is not that gets
/// [`Decoded::error`] saying so.
pub fn decode_with(payload: &[u8], content_type: Option<&str>) -> Decoded {
    let mut d = decode_payload(payload);
    let Some(ct) = content_type.map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }) else {
        return d;
    };
    let error = match ct.as_str() {
        "application/json" | "text/json"
            if !matches!(
                d.kind,
                PayloadKind::Json | PayloadKind::Senml | PayloadKind::Number | PayloadKind::Boolean
            ) =>
        {
            Some(match serde_json::from_slice::<serde_json::Value>(payload) {
                Err(e) => format!("content type {ct} but not valid JSON: {e}"),
                Ok(_) => format!("content type {ct} but not a JSON document"),
            })
        }
        "application/senml+json" if d.kind != PayloadKind::Senml => {
            Some(format!("content type {ct} but not a SenML pack in JSON"))
        }
        "application/cbor" | "application/senml+cbor" => match senml::cbor(payload) {
            Err(e) => Some(format!("content type {ct} but {e}")),
            Ok(senml::CborReadings::Plain(_)) if ct == "application/senml+cbor" => {
                Some(format!("content type {ct} but not a SenML pack"))
            }
            Ok(senml::CborReadings::Senml(m)) => {
                d = Decoded::new(PayloadKind::Senml, m);
                None
            }
            Ok(senml::CborReadings::Plain(m)) => {
                d = Decoded::new(PayloadKind::Cbor, m);
                None
            }
        },
        _ => None,
    };
    d.error = error;
    d
}

fn parse_scalar(text: &str) -> Option<Decoded> {
    let boolean = match text {
        "true" | "ON" | "on" | "On" => Some(1.0),
        "false" | "OFF" | "off" | "Off" => Some(0.0),
        _ => None,
    };
    if let Some(v) = boolean {
        return Some(Decoded::new(
            PayloadKind::Boolean,
            vec![Metric::new(String::new(), v)],
        ));
    }
    // Only what looks like a decimal number: Rust also parses "inf" and "NaN".
    let looks_numeric = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
        && text.bytes().any(|b| b.is_ascii_digit());
    if looks_numeric {
        if let Ok(v) = text.parse::<f64>() {
            if v.is_finite() {
                return Some(Decoded::new(
                    PayloadKind::Number,
                    vec![Metric::new(String::new(), v)],
                ));
            }
        }
    }
    None
}

fn flatten(value: &serde_json::Value, path: &mut String, depth: usize, out: &mut Vec<Metric>) {
    if out.len() >= MAX_METRICS_PER_PAYLOAD || depth > MAX_JSON_DEPTH {
        return;
    }
    match value {
        serde_json::Value::Number(n) => {
            if let Some(v) = n.as_f64().filter(|v| v.is_finite()) {
                out.push(Metric::new(path.clone(), v));
            }
        }
        serde_json::Value::Bool(b) => {
            out.push(Metric::new(path.clone(), if *b { 1.0 } else { 0.0 }))
        }
        serde_json::Value::String(s) => {
            if let Some(d) = parse_scalar(s.trim()) {
                if d.kind == PayloadKind::Boolean && !path.is_empty() {
                    out.push(Metric::new(path.clone(), d.metrics[0].value));
                }
            }
        }
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                flatten(item, path, depth + 1, out);
                path.truncate(len);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&i.to_string());
                flatten(item, path, depth + 1, out);
                path.truncate(len);
            }
        }
        serde_json::Value::Null => {}
    }
}

/// The metric name for a value found at `path` in a payload published under
/// `topic_rest` (the topic after the device's level): the two joined with a
/// `.`, or `value` when both are empty.
pub fn metric_name(topic_rest: &str, path: &str) -> String {
    match (topic_rest.is_empty(), path.is_empty()) {
        (true, true) => "value".to_owned(),
        (true, false) => path.to_owned(),
        (false, true) => topic_rest.to_owned(),
        (false, false) => format!("{topic_rest}.{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(p: &str) -> Vec<(String, f64)> {
        pairs(&decode_payload(p.as_bytes()))
    }

    fn pairs(d: &Decoded) -> Vec<(String, f64)> {
        d.metrics
            .iter()
            .map(|m| (m.name.clone(), m.value))
            .collect()
    }

    #[test]
    fn json_is_flattened_by_path() {
        let d = decode_payload(
            br#"{"temp": 21.5, "env": {"humidity": 40, "ok": true}, "name": "x", "l": [1, 2]}"#,
        );
        assert_eq!(d.kind, PayloadKind::Json);
        assert_eq!(
            pairs(&d),
            vec![
                ("env.humidity".into(), 40.0),
                ("env.ok".into(), 1.0),
                ("l.0".into(), 1.0),
                ("l.1".into(), 2.0),
                ("temp".into(), 21.5),
            ]
        );
    }

    #[test]
    fn scalars() {
        assert_eq!(metrics("42"), vec![("".into(), 42.0)]);
        assert_eq!(metrics(" -1.5e3\n"), vec![("".into(), -1500.0)]);
        assert_eq!(metrics("ON"), vec![("".into(), 1.0)]);
        assert_eq!(metrics("false"), vec![("".into(), 0.0)]);
        assert_eq!(decode_payload(b"NaN").kind, PayloadKind::Text);
        assert_eq!(decode_payload(b"inf").kind, PayloadKind::Text);
        assert_eq!(decode_payload(b"1e999").kind, PayloadKind::Text);
    }

    #[test]
    fn everything_else_is_raw() {
        assert_eq!(decode_payload(b"").kind, PayloadKind::Empty);
        assert_eq!(decode_payload(b"hello").kind, PayloadKind::Text);
        assert_eq!(decode_payload(b"{not json").kind, PayloadKind::Text);
        assert_eq!(
            decode_payload(&[0xff, 0xfe, 0x00]).kind,
            PayloadKind::Binary
        );
        assert!(metrics("hello").is_empty());
    }

    #[test]
    fn hostile_json_is_bounded() {
        let wide = format!("[{}]", vec!["1"; 10_000].join(","));
        assert_eq!(metrics(&wide).len(), MAX_METRICS_PER_PAYLOAD);
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert!(metrics(&deep).is_empty());
    }

    /// The stable-toolchain twin of the cargo-fuzz target `payloads`: mutated
    /// JSON and random bytes never panic and never yield a non-finite value.
    #[test]
    fn random_payloads_never_panic() {
        let seeds: [&[u8]; 5] = [
            br#"{"a":{"b":[1,2.5e3,true]},"c":"ON"}"#,
            b"-12.5",
            b"[[[[1]]]]",
            b"OFF",
            b"\x00\xff{",
        ];
        let mut rng = crate::testing::Rng::new(0x2545_F491_4F6C_DD1D);
        for round in 0..20_000u64 {
            let mut p = seeds[(round % seeds.len() as u64) as usize].to_vec();
            crate::testing::mutate(&mut p, &mut rng, 4);
            let d = decode_payload(&p);
            assert!(d.metrics.len() <= MAX_METRICS_PER_PAYLOAD);
            assert!(d.metrics.iter().all(|m| m.value.is_finite()), "{p:?}");
        }
    }

    #[test]
    fn metric_names() {
        assert_eq!(metric_name("", ""), "value");
        assert_eq!(metric_name("temp", ""), "temp");
        assert_eq!(metric_name("", "env.h"), "env.h");
        assert_eq!(metric_name("telemetry", "temp"), "telemetry.temp");
    }
}
