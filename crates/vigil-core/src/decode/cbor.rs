//! CBOR (RFC 8949) payloads that are not SenML: numbers and booleans
//! flattened by path, like JSON (`{"env": {"t": 21}}` gives `env.t`).
//!
//! The payload must be exactly one CBOR item with nothing after it. Lengths
//! declared in the payload are never trusted for allocation: `ciborium`
//! grows its buffers as bytes actually arrive, so an array that claims 2^64
//! items costs nothing before the payload runs out.

use ciborium::value::Value;

use super::{Metric, MAX_JSON_DEPTH, MAX_METRICS_PER_PAYLOAD};

/// How deep the CBOR reader itself may nest before it gives up (metrics
/// are only looked for down to [`MAX_JSON_DEPTH`]).
const MAX_CBOR_NESTING: usize = 64;

/// The self-described CBOR tag (RFC 8949, 3.4.6): a marker, no meaning.
pub(super) const SELF_DESCRIBED: u64 = 55_799;

/// Reads the whole payload as one CBOR item, without its self-described
/// tag if it has one. The error says why in words.
pub(super) fn parse(payload: &[u8]) -> Result<Value, String> {
    let mut rest = payload;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_CBOR_NESTING)
        .map_err(|e| match e {
            ciborium::de::Error::Io(_) => {
                "not valid CBOR: the payload ends inside an item".to_owned()
            }
            ciborium::de::Error::Syntax(at) => format!("not valid CBOR: malformed at byte {at}"),
            ciborium::de::Error::Semantic(Some(at), why) => {
                format!("not valid CBOR: {why} at byte {at}")
            }
            ciborium::de::Error::Semantic(None, why) => format!("not valid CBOR: {why}"),
            ciborium::de::Error::RecursionLimitExceeded => {
                format!("not valid CBOR for Vigil: nested deeper than {MAX_CBOR_NESTING} levels")
            }
        })?;
    if !rest.is_empty() {
        return Err(format!(
            "not one CBOR item: {} byte(s) follow the first item",
            rest.len()
        ));
    }
    Ok(match value {
        Value::Tag(SELF_DESCRIBED, inner) => *inner,
        v => v,
    })
}

/// A CBOR number as `f64`: an integer, a float, or a decimal fraction
/// (tag 4, `[exponent, mantissa]`, which SenML allows). `None` for anything
/// else or for a result that is not finite.
pub(super) fn number(value: &Value) -> Option<f64> {
    let v = match value {
        Value::Integer(i) => i128::from(*i) as f64,
        Value::Float(f) => *f,
        Value::Tag(4, inner) => match inner.as_array().map(Vec::as_slice) {
            Some([Value::Integer(exponent), Value::Integer(mantissa)]) => {
                let exponent = i32::try_from(i128::from(*exponent)).ok()?;
                i128::from(*mantissa) as f64 * 10f64.powi(exponent)
            }
            _ => return None,
        },
        _ => return None,
    };
    v.is_finite().then_some(v)
}

/// The numbers and booleans of a CBOR item, named by path.
pub(super) fn metrics(value: &Value) -> Vec<Metric> {
    let mut out = Vec::new();
    flatten(value, &mut String::new(), 0, &mut out);
    out
}

fn flatten(value: &Value, path: &mut String, depth: usize, out: &mut Vec<Metric>) {
    if out.len() >= MAX_METRICS_PER_PAYLOAD || depth > MAX_JSON_DEPTH {
        return;
    }
    match value {
        Value::Bool(b) => out.push(Metric::new(path.clone(), if *b { 1.0 } else { 0.0 })),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                push_segment(path, &i.to_string());
                flatten(item, path, depth + 1, out);
                path.truncate(len);
            }
        }
        Value::Map(entries) => {
            for (key, item) in entries {
                let key = match key {
                    Value::Text(t) => t.clone(),
                    Value::Integer(i) => i128::from(*i).to_string(),
                    _ => continue, // maps keyed by arrays, floats, bytes: no usable name
                };
                let len = path.len();
                push_segment(path, &key);
                flatten(item, path, depth + 1, out);
                path.truncate(len);
            }
        }
        // A tag that is a number (decimal fraction) is one; others (an
        // epoch time, a URI, ...) are looked through.
        Value::Tag(tag, inner) => match number(value) {
            Some(v) => out.push(Metric::new(path.clone(), v)),
            None if *tag != 4 => flatten(inner, path, depth + 1, out),
            None => {}
        },
        other => {
            if let Some(v) = number(other) {
                out.push(Metric::new(path.clone(), v));
            }
        }
    }
}

fn push_segment(path: &mut String, segment: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(segment);
}

/// A CBOR item as JSON, for people to read: byte strings as
/// `{"bytes": "<hex>"}`, tags as `{"tag": n, "value": ..}`, map keys that are
/// not text written as their JSON. Followed down to [`MAX_CBOR_NESTING`]
/// (the parser's own limit), so it cannot recurse without bound.
pub(super) fn to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Integer(i) => {
            let i = i128::from(*i);
            i64::try_from(i)
                .map(J::from)
                .unwrap_or_else(|_| J::from(i as f64))
        }
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .unwrap_or_else(|| J::String(f.to_string())),
        Value::Bool(b) => J::Bool(*b),
        Value::Null => J::Null,
        Value::Text(t) => J::String(t.clone()),
        Value::Bytes(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            serde_json::json!({ "bytes": hex })
        }
        Value::Array(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::Text(t) => t.clone(),
                        other => shortened(to_json(other).to_string()),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Tag(tag, inner) => serde_json::json!({ "tag": tag, "value": to_json(inner) }),
        _ => J::Null,
    }
}

/// How much of a map key that is not text is written out: such a key is
/// its JSON, and a key that is a map of map keys would otherwise grow
/// exponentially with the nesting (each level escapes the quotes of the one
/// inside; the fuzzer found 2 GiB from 100 bytes).
const MAX_KEY_CHARS: usize = 256;

fn shortened(mut key: String) -> String {
    if let Some((cut, _)) = key.char_indices().nth(MAX_KEY_CHARS) {
        key.truncate(cut);
        key.push('…');
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_are_maps_of_map_keys_stay_short() {
        // 40 maps, each the key of the next: {{{..: 4}: 4}: 4}
        let mut value = Value::Integer(4.into());
        for _ in 0..40 {
            value = Value::Map(vec![(value, Value::Integer(4.into()))]);
        }
        let json = to_json(&Value::Map(vec![(value, Value::Null)]));
        let key = json.as_object().unwrap().keys().next().unwrap().clone();
        assert!(
            key.chars().count() <= MAX_KEY_CHARS + 1,
            "{} chars",
            key.len()
        );
        assert!(key.starts_with("{\""));
    }

    fn pairs(payload: &[u8]) -> Vec<(String, f64)> {
        metrics(&parse(payload).expect("valid CBOR"))
            .into_iter()
            .map(|m| (m.name, m.value))
            .collect()
    }

    #[test]
    fn maps_and_arrays_are_flattened_by_path() {
        // {"temp": 21.5 (half float), "ok": true, "list": [1, -2], 7: 4(-1, 15)}
        let payload: &[u8] = &[
            0xa4, 0x64, b't', b'e', b'm', b'p', 0xf9, 0x4d, 0x60, 0x62, b'o', b'k', 0xf5, 0x64,
            b'l', b'i', b's', b't', 0x82, 0x01, 0x21, 0x07, 0xc4, 0x82, 0x20, 0x0f,
        ];
        assert_eq!(
            pairs(payload),
            [
                ("temp".into(), 21.5),
                ("ok".into(), 1.0),
                ("list.0".into(), 1.0),
                ("list.1".into(), -2.0),
                ("7".into(), 1.5),
            ]
        );
        // The self-described tag is only a marker; tag 1 (epoch time) is looked through.
        assert_eq!(
            pairs(&[0xd9, 0xd9, 0xf7, 0xa1, 0x61, b't', 0xc1, 0x1a, 0x65, 0x53, 0xf1, 0x00]),
            [("t".into(), 1_700_000_000.0)]
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(parse(&[0xa1, 0x01]).unwrap_err().contains("ends inside"));
        assert!(parse(&[0x01, 0x02])
            .unwrap_err()
            .contains("1 byte(s) follow"));
        assert!(parse(&[0x1c]).unwrap_err().starts_with("not valid CBOR"));
        let deep = [0x81u8; 100];
        assert!(parse(&deep).unwrap_err().contains("deeper than 64"));
    }

    /// Declared lengths of 2^64 - 1 items or bytes are not allocated.
    #[test]
    fn hostile_lengths_cost_nothing() {
        for major in [0x9bu8, 0xbb, 0x5b, 0x7b] {
            let mut p = vec![major];
            p.extend_from_slice(&[0xff; 8]);
            assert!(parse(&p).is_err(), "{major:#x}");
        }
    }

    #[test]
    fn non_finite_numbers_are_no_metric() {
        // [NaN, Infinity, 4(400, 1)]: 1e400 overflows f64.
        let payload: &[u8] = &[
            0x83, 0xf9, 0x7e, 0x00, 0xf9, 0x7c, 0x00, 0xc4, 0x82, 0x19, 0x01, 0x90, 0x01,
        ];
        assert!(pairs(payload).is_empty());
    }
}
