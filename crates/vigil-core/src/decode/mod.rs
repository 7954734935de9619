//! Numeric metrics found in a payload.
//!
//! A payload is never changed or cut here: decoding only reads it and reports
//! what it found. [`decode_payload`] goes by the bytes alone:
//!
//! 1. zero bytes are `Empty`;
//! 2. UTF-8 text that is a plain number, a boolean, or `ON`/`OFF`,
//!    `true`/`false` gives one metric with an empty name;
//! 3. a JSON document: an array that is a SenML pack (RFC 8428) gives its
//!    readings by name; any other JSON is flattened by path
//!    (`{"env":{"humidity":40}}` gives `env.humidity`; array items by index,
//!    `list.0`);
//! 4. bytes that are not UTF-8 and are one whole CBOR map or array (or carry
//!    the self-described CBOR tag): SenML in CBOR, or else flattened like
//!    JSON. A bare CBOR number or string is not guessed (too many other
//!    binary formats look like one), and plain text is never tried as CBOR.
//!    CBOR arrays and maps start with a byte that cannot start UTF-8, so
//!    the two never compete;
//! 5. anything else is kept raw with no metric (`Text` or `Binary`).
//!
//! [`decode_with`] also takes what the publisher said the payload is (an
//! MQTT 5 content type or a CoAP content format) and reports in words when
//! the payload is not that. [`decode_message`] also knows Sparkplug B topics,
//! whose protobuf payloads cannot be told from other bytes by their looks.
//!
//! Every decoder is bounded: at most [`MAX_METRICS_PER_PAYLOAD`] metrics,
//! nesting followed down to [`MAX_JSON_DEPTH`], every value finite, and no
//! allocation sized by a length the payload claims.

mod cbor;
mod senml;
pub mod sparkplug;

use serde::Serialize;

use crate::time::Micros;

/// How many metrics one payload may yield; the rest are ignored so a hostile
/// payload cannot create unbounded series.
pub const MAX_METRICS_PER_PAYLOAD: usize = 256;
/// How deep JSON (and CBOR) is followed when looking for numbers.
pub const MAX_JSON_DEPTH: usize = 16;

/// What kind of payload this was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    /// Zero bytes.
    Empty,
    /// A JSON document (object, array, string, or `null`).
    Json,
    /// A SenML pack (RFC 8428), in JSON or CBOR.
    Senml,
    /// CBOR that is not SenML.
    Cbor,
    /// A Sparkplug B protobuf payload (known by its topic).
    Sparkplug,
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
#[cfg_attr(
    feature = "ts",
    derive(ts_rs::TS),
    ts(export, rename = "DecodedMetric")
)]
pub struct Metric {
    /// Its name: the path inside the payload (`env.humidity`), the SenML or
    /// Sparkplug name, or empty for a scalar payload; a convention or the
    /// engine prefixes it as needed.
    pub name: String,
    /// The value, always finite.
    pub value: f64,
    /// Its unit, when the payload says (SenML `u`/`bu`, Sparkplug
    /// `engUnit`, discovery).
    pub unit: Option<String>,
    /// When it was measured, when the payload says (an absolute SenML time,
    /// a Sparkplug timestamp); otherwise the message's arrival time applies.
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
    /// Why a payload that said what it was (by its content type, or by being
    /// on a Sparkplug topic) could not be read as that, in words, e.g.
    /// "content type application/json but not valid JSON: expected value at
    /// line 1 column 3". `kind` and `metrics` then say what the bytes are
    /// by their looks. The payload is kept whole either way.
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

/// Decodes a payload into its numeric metrics by its bytes alone (see the
/// module's documentation for the order of the guesses). Never fails: what
/// cannot be understood is reported as `Text` or `Binary` with no metric.
pub fn decode_payload(payload: &[u8]) -> Decoded {
    if payload.is_empty() {
        return Decoded::new(PayloadKind::Empty, Vec::new());
    }
    let Ok(text) = std::str::from_utf8(payload) else {
        return match looks_like_cbor(payload).then(|| cbor::parse(payload)) {
            Some(Ok(value)) => from_cbor(&value),
            _ => Decoded::new(PayloadKind::Binary, Vec::new()),
        };
    };
    let trimmed = text.trim();
    if let Some(value) = parse_scalar(trimmed) {
        return value;
    }
    if trimmed.starts_with('{') || trimmed.starts_with('[') || trimmed.starts_with('"') {
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(trimmed) {
            return from_json(&json);
        }
    }
    Decoded::new(PayloadKind::Text, Vec::new())
}

/// Like [`decode_payload`], but honours what the publisher said the payload
/// is: an MQTT 5 content type or a CoAP content format, by name
/// (`application/senml+json`) or number (`110`). Parameters (`; charset=`)
/// and letter case are ignored.
///
/// | content type | read as |
/// |---|---|
/// | `application/json`, `*/*+json` (50) | JSON, a SenML pack if it is one |
/// | `application/senml+json`, `application/sensml+json` (110, 111) | SenML in JSON |
/// | `application/cbor`, `*/*+cbor` (60) | any CBOR item, a SenML pack if it is one |
/// | `application/senml+cbor`, `application/sensml+cbor` (112, 113) | SenML in CBOR |
/// | anything else, or none | by its bytes, as [`decode_payload`] |
///
/// A payload that is not what its content type says gets [`Decoded::error`]
/// (and is otherwise described by its bytes). An empty payload is `Empty`
/// with no error whatever its content type (an empty retained message
/// deletes; it claims nothing).
pub fn decode_with(payload: &[u8], content_type: Option<&str>) -> Decoded {
    let Some((format, name)) = content_type.and_then(Format::of) else {
        return decode_payload(payload);
    };
    if payload.is_empty() {
        return decode_payload(payload);
    }
    match format.read(payload) {
        Ok(decoded) => decoded,
        Err(why) => Decoded {
            error: Some(format!("content type {name} but {why}")),
            ..decode_payload(payload)
        },
    }
}

/// Like [`decode_with`], knowing the message's topic too: a payload on a
/// Sparkplug B topic (`spBv1.0/<group>/<type>/...`, not the host state topic
/// `spBv1.0/STATE/<host>`) is read as a Sparkplug B protobuf payload
/// (kind `Sparkplug`, every numeric metric by name or `alias N`), with an
/// error when it is not one. This is what a message inspector should show;
/// readings for devices come from the Sparkplug convention, which also
/// resolves aliases.
pub fn decode_message(topic: &str, payload: &[u8], content_type: Option<&str>) -> Decoded {
    let sparkplug = topic
        .strip_prefix("spBv1.0/")
        .is_some_and(|rest| !rest.starts_with("STATE/"));
    if sparkplug {
        sparkplug::decoded(payload)
    } else {
        decode_with(payload, content_type)
    }
}

/// A binary payload (CBOR, SenML in CBOR, Sparkplug) as JSON, for people to
/// read; `None` for payloads that are text already, or that are not what
/// `kind` says (their `Decoded::error` tells why).
pub fn structure(payload: &[u8], kind: PayloadKind) -> Option<serde_json::Value> {
    match kind {
        PayloadKind::Sparkplug => sparkplug::decode_sparkplug(payload)
            .ok()
            .map(|p| p.to_json()),
        PayloadKind::Cbor if std::str::from_utf8(payload).is_err() => {
            cbor::parse(payload).ok().map(|v| cbor::to_json(&v))
        }
        PayloadKind::Senml if std::str::from_utf8(payload).is_err() => {
            senml::readable(&cbor::parse(payload).ok()?)
        }
        _ => None,
    }
}

/// A format a content type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    SenmlJson,
    Cbor,
    SenmlCbor,
}

impl Format {
    /// The format a content type names, and the media type's name for
    /// messages (a CoAP content-format number is shown with its name).
    fn of(content_type: &str) -> Option<(Format, String)> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let coap = |name: &str| format!("{name} (CoAP content-format {essence})");
        let (format, name) = match essence.as_str() {
            "50" => (Format::Json, coap("application/json")),
            "60" => (Format::Cbor, coap("application/cbor")),
            "110" => (Format::SenmlJson, coap("application/senml+json")),
            "111" => (Format::SenmlJson, coap("application/sensml+json")),
            "112" => (Format::SenmlCbor, coap("application/senml+cbor")),
            "113" => (Format::SenmlCbor, coap("application/sensml+cbor")),
            "application/senml+json" | "application/sensml+json" => (Format::SenmlJson, essence),
            "application/senml+cbor" | "application/sensml+cbor" => (Format::SenmlCbor, essence),
            "application/json" | "text/json" => (Format::Json, essence),
            "application/cbor" => (Format::Cbor, essence),
            e if e.contains('/') && e.ends_with("+json") => (Format::Json, essence),
            e if e.contains('/') && e.ends_with("+cbor") => (Format::Cbor, essence),
            _ => return None,
        };
        Some((format, name))
    }

    /// Reads a non-empty payload as this format, or says why it is not.
    fn read(self, payload: &[u8]) -> Result<Decoded, String> {
        match self {
            Format::Json | Format::SenmlJson => {
                let json = serde_json::from_slice::<serde_json::Value>(payload)
                    .map_err(|e| format!("not valid JSON: {e}"))?;
                if self == Format::Json {
                    return Ok(from_json(&json));
                }
                senml::from_json(&json)
                    .map(|m| Decoded::new(PayloadKind::Senml, m))
                    .map_err(|why| format!("not a SenML pack: {why}"))
            }
            Format::Cbor | Format::SenmlCbor => {
                let value = cbor::parse(payload)?;
                if self == Format::Cbor {
                    return Ok(from_cbor(&value));
                }
                senml::from_cbor(&value)
                    .map(|m| Decoded::new(PayloadKind::Senml, m))
                    .map_err(|why| format!("not a SenML pack: {why}"))
            }
        }
    }
}

/// Whether a payload that is not UTF-8 is worth trying as CBOR: a map or
/// an array (major types 5 and 4), or the self-described CBOR tag.
fn looks_like_cbor(payload: &[u8]) -> bool {
    matches!(payload.first().map(|b| b >> 5), Some(4 | 5))
        || payload.starts_with(&[0xd9, 0xd9, 0xf7])
}

/// A JSON document's readings: SenML if it is a pack, else flattened.
fn from_json(json: &serde_json::Value) -> Decoded {
    match json {
        serde_json::Value::Number(n) => {
            let metrics = n
                .as_f64()
                .filter(|v| v.is_finite())
                .map(|v| Metric::new(String::new(), v))
                .into_iter()
                .collect();
            Decoded::new(PayloadKind::Number, metrics)
        }
        serde_json::Value::Bool(b) => Decoded::new(
            PayloadKind::Boolean,
            vec![Metric::new(String::new(), f64::from(u8::from(*b)))],
        ),
        _ => match senml::from_json(json) {
            Ok(metrics) => Decoded::new(PayloadKind::Senml, metrics),
            Err(_) => {
                let mut metrics = Vec::new();
                flatten(json, &mut String::new(), 0, &mut metrics);
                Decoded::new(PayloadKind::Json, metrics)
            }
        },
    }
}

/// A CBOR item's readings: SenML if it is a pack, else flattened.
fn from_cbor(value: &ciborium::value::Value) -> Decoded {
    match senml::from_cbor(value) {
        Ok(metrics) => Decoded::new(PayloadKind::Senml, metrics),
        Err(_) => Decoded::new(PayloadKind::Cbor, cbor::metrics(value)),
    }
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

    fn metrics_of(p: &[u8]) -> Vec<(String, f64)> {
        pairs(&decode_payload(p))
    }

    #[test]
    fn cbor_is_only_guessed_for_whole_maps_and_arrays() {
        // {"t": 21}
        let map = [0xa1, 0x61, b't', 0x15];
        assert_eq!(metrics_of(&map), [("t".to_owned(), 21.0)]);
        assert_eq!(decode_payload(&map).kind, PayloadKind::Cbor);
        // A CBOR uint8 (0x18 0x9c) could as well be two bytes of anything.
        assert_eq!(decode_payload(&[0x18, 0x9c]).kind, PayloadKind::Binary);
        assert_eq!(
            decode_with(&[0x18, 0x9c], Some("application/cbor")).metrics[0].value,
            156.0,
            "unless the content type says CBOR"
        );
        // Trailing bytes: not CBOR.
        assert_eq!(
            decode_payload(&[0xa1, 0x61, b't', 0x15, 0x00]).kind,
            PayloadKind::Binary
        );
        // A protobuf payload (Sparkplug) is not mistaken for CBOR.
        assert_eq!(
            decode_payload(&[0x08, 0xe8, 0xd7, 0x95, 0xff, 0xbc, 0x31, 0x18, 0x01]).kind,
            PayloadKind::Binary
        );
    }

    #[test]
    fn content_types_are_honoured_and_failures_said_in_words() {
        let d = decode_with(b"{oops", Some("application/json"));
        assert_eq!(d.kind, PayloadKind::Text);
        assert_eq!(
            d.error.as_deref(),
            Some("content type application/json but not valid JSON: key must be a string at line 1 column 2")
        );
        let d = decode_with(b"ON", Some("Application/JSON; charset=utf-8"));
        assert_eq!((d.kind, d.metrics.len()), (PayloadKind::Boolean, 1));
        assert!(d
            .error
            .unwrap()
            .starts_with("content type application/json but not valid JSON"));
        let d = decode_with(b"null", Some("application/json"));
        assert_eq!((d.kind, d.error), (PayloadKind::Json, None));
        let d = decode_with(br#"{"a":1}"#, Some("application/vnd.acme+json"));
        assert_eq!(pairs(&d), [("a".to_owned(), 1.0)]);
        assert_eq!((d.kind, d.error), (PayloadKind::Json, None));
        let d = decode_with(br#"{"a":1}"#, Some("application/senml+json"));
        assert_eq!(d.kind, PayloadKind::Json);
        assert_eq!(
            d.error.as_deref(),
            Some("content type application/senml+json but not a SenML pack: a SenML pack is a JSON array of records")
        );
        let d = decode_with(b"12", Some("60"));
        assert_eq!(d.kind, PayloadKind::Number);
        assert_eq!(
            d.error.as_deref(),
            Some("content type application/cbor (CoAP content-format 60) but not one CBOR item: 1 byte(s) follow the first item")
        );
        let d = decode_with(&[0xa1, 0x01], Some("application/cbor"));
        assert_eq!(
            d.error.as_deref(),
            Some(
                "content type application/cbor but not valid CBOR: the payload ends inside an item"
            )
        );
        // Content types that claim no format, and empty payloads, are never errors.
        for ct in [
            None,
            Some("text/plain"),
            Some("application/octet-stream"),
            Some("0"),
            Some(""),
        ] {
            assert_eq!(decode_with(b"hello", ct).error, None);
        }
        assert_eq!(
            decode_with(b"", Some("application/json")),
            decode_payload(b"")
        );
    }

    #[test]
    fn sparkplug_topics_are_read_as_sparkplug() {
        use sparkplug::encode::{metric, payload};
        let p = payload(1_000, 0, &[metric(Some("Temp"), Some(1), 9, 21.5)]);
        let d = decode_message("spBv1.0/G/NDATA/E", &p, None);
        assert_eq!(d.kind, PayloadKind::Sparkplug);
        assert_eq!(
            d.metrics,
            [Metric {
                name: "Temp".into(),
                value: 21.5,
                unit: None,
                at: Some(1_000_000)
            }]
        );
        let d = decode_message("spBv1.0/G/NDATA/E", b"\x12\x09", None);
        assert_eq!(d.kind, PayloadKind::Text, "described by its bytes");
        assert_eq!(
            d.error.as_deref(),
            Some("not a Sparkplug B payload: a field claims 9 bytes, but only 0 are left")
        );
        let d = decode_message(
            "spBv1.0/STATE/scada",
            br#"{"online":true,"timestamp":1}"#,
            None,
        );
        assert_eq!((d.kind, d.error), (PayloadKind::Json, None));
        assert_eq!(
            decode_message("a/b", b"{", Some("application/json")).kind,
            PayloadKind::Text
        );
        assert_eq!(
            serde_json::to_string(&PayloadKind::Sparkplug).unwrap(),
            "\"sparkplug\""
        );
    }

    /// The stable twin of the `content_types` fuzz target.
    #[test]
    fn random_payloads_with_content_types_never_panic() {
        let seeds: [&[u8]; 4] = [
            br#"[{"bn":"a:","n":"b","v":1,"u":"V"}]"#,
            br#"{"a":[1,true,{"b":2}]}"#,
            &[
                0xa2, 0x61, b'a', 0xf9, 0x3e, 0x00, 0x61, b'b', 0x82, 0x01, 0xf5,
            ],
            &[0x81, 0xa2, 0x00, 0x61, b'x', 0x02, 0x01],
        ];
        let types = [
            "application/json",
            "application/senml+json",
            "application/cbor",
            "application/senml+cbor",
            "50",
            "112",
        ];
        let mut rng = crate::testing::Rng::new(0x0123_4567_89AB_CDEF);
        for round in 0..20_000usize {
            let mut p = seeds[round % seeds.len()].to_vec();
            crate::testing::mutate(&mut p, &mut rng, 4);
            let d = decode_with(&p, Some(types[round % types.len()]));
            assert!(d.metrics.len() <= MAX_METRICS_PER_PAYLOAD);
            assert!(d.metrics.iter().all(|m| m.value.is_finite()), "{p:?}");
            let _ = structure(&p, d.kind);
        }
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

    #[test]
    fn binary_payloads_have_a_readable_structure() {
        // {"t": 21.5, "raw": h'01ff', 1: tag 1 (epoch), "l": [1, -2]}
        let cbor = [
            0xa4, 0x61, b't', 0xf9, 0x4d, 0x60, 0x63, b'r', b'a', b'w', 0x42, 0x01, 0xff, 0x01,
            0xc1, 0x1a, 0x65, 0x00, 0x00, 0x00, 0x61, b'l', 0x82, 0x01, 0x21,
        ];
        let decoded = decode_payload(&cbor);
        assert_eq!(decoded.kind, PayloadKind::Cbor);
        let s = structure(&cbor, decoded.kind).unwrap();
        assert_eq!(s["t"], serde_json::json!(21.5));
        assert_eq!(s["raw"], serde_json::json!({"bytes": "01ff"}));
        assert_eq!(s["1"], serde_json::json!({"tag": 1, "value": 1694498816}));
        assert_eq!(s["l"], serde_json::json!([1, -2]));
        // SenML in CBOR, with its integer labels named (RFC 8428, section 6).
        let senml = [
            0x81, 0xa4, 0x21, 0x62, b'p', b'/', 0x00, 0x61, b't', 0x01, 0x63, b'C', b'e', b'l',
            0x02, 0xf9, 0x4d, 0x60,
        ];
        let decoded = decode_payload(&senml);
        assert_eq!(decoded.kind, PayloadKind::Senml);
        assert_eq!(
            structure(&senml, decoded.kind).unwrap(),
            serde_json::json!([{"bn": "p/", "n": "t", "u": "Cel", "v": 21.5}])
        );
        // Text payloads are readable as they are.
        assert_eq!(structure(br#"{"t": 1}"#, PayloadKind::Json), None);
        // Not what the kind says: nothing to show (the decode error says why).
        assert_eq!(structure(&[0xff, 0x00], PayloadKind::Sparkplug), None);
    }
}
