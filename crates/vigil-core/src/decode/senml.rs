//! SenML (RFC 8428) in JSON and in CBOR, and plain CBOR.
//!
//! A SenML pack is an array of records; base fields (`bn`, `bt`, `bu`, `bv`)
//! apply to the records that follow until changed. A record's name is
//! `bn + n`, its time `bt + t`, its unit `u` or else `bu`, its value
//! `bv + v` (or `vb` as 1/0; `vs` and `vd` are not numbers). Times below
//! 2^28 s are relative to "now" (RFC 8428, section 4.5.3): without a clock
//! here, such a reading keeps `at: None` and takes its message's arrival time.

use ciborium::value::Value as Cbor;
use serde_json::Value as Json;

use super::{Metric, MAX_JSON_DEPTH, MAX_METRICS_PER_PAYLOAD};
use crate::time::Micros;

/// Times below this many seconds are relative (RFC 8428, 4.5.3).
const RELATIVE_LIMIT: f64 = 268_435_456.0; // 2^28

/// One SenML record's fields, whatever the encoding.
#[derive(Default)]
struct Record {
    bn: Option<String>,
    bt: Option<f64>,
    bu: Option<String>,
    bv: Option<f64>,
    n: Option<String>,
    u: Option<String>,
    v: Option<f64>,
    vb: Option<bool>,
    t: Option<f64>,
    /// A field that makes it SenML (any of the above, `vs`, `vd`, `s`, `bver`).
    senml: bool,
}

/// Resolves a pack of records into readings.
fn resolve(records: impl Iterator<Item = Record>) -> Vec<Metric> {
    let (mut bn, mut bt, mut bu, mut bv) = (String::new(), 0.0, None::<String>, 0.0);
    let mut out = Vec::new();
    for r in records {
        if let Some(x) = r.bn {
            bn = x;
        }
        if let Some(x) = r.bt {
            bt = x;
        }
        if let Some(x) = r.bu {
            bu = Some(x);
        }
        if let Some(x) = r.bv {
            bv = x;
        }
        let value = match (r.v, r.vb) {
            (Some(v), _) => Some(bv + v),
            (None, Some(b)) => Some(if b { 1.0 } else { 0.0 }),
            (None, None) if r.bv.is_some() && r.n.is_some() => Some(bv),
            _ => None,
        };
        let Some(value) = value.filter(|v| v.is_finite()) else {
            continue;
        };
        let time = bt + r.t.unwrap_or(0.0);
        let at = (time.is_finite() && time.abs() >= RELATIVE_LIMIT && time.abs() < 1e13)
            .then_some((time * 1e6) as Micros);
        out.push(Metric {
            name: format!("{bn}{}", r.n.as_deref().unwrap_or("")),
            value,
            unit: r.u.or_else(|| bu.clone()),
            at,
        });
        if out.len() >= MAX_METRICS_PER_PAYLOAD {
            break;
        }
    }
    out
}

/// Readings of a SenML pack in JSON, or `None` if the JSON is not SenML.
pub(super) fn senml_json(value: &Json) -> Option<Vec<Metric>> {
    let records = value.as_array()?;
    if records.is_empty() {
        return None;
    }
    let mut parsed = Vec::with_capacity(records.len().min(MAX_METRICS_PER_PAYLOAD));
    for r in records {
        let o = r.as_object()?;
        let mut rec = Record::default();
        for (k, v) in o {
            let known = matches!(
                k.as_str(),
                "bn" | "bt"
                    | "bu"
                    | "bv"
                    | "bs"
                    | "bver"
                    | "n"
                    | "u"
                    | "v"
                    | "vs"
                    | "vb"
                    | "vd"
                    | "s"
                    | "t"
                    | "ut"
            );
            if !known {
                // RFC 8428: labels ending in `_` must be understood; others may be ignored.
                if k.ends_with('_') {
                    return None;
                }
                continue;
            }
            rec.senml = true;
            match k.as_str() {
                "bn" => rec.bn = Some(v.as_str()?.to_owned()),
                "bt" => rec.bt = Some(v.as_f64()?),
                "bu" => rec.bu = Some(v.as_str()?.to_owned()),
                "bv" => rec.bv = Some(v.as_f64()?),
                "n" => rec.n = Some(v.as_str()?.to_owned()),
                "u" => rec.u = Some(v.as_str()?.to_owned()),
                "v" => rec.v = Some(v.as_f64()?),
                "vb" => rec.vb = Some(v.as_bool()?),
                "t" => rec.t = Some(v.as_f64()?),
                _ => {}
            }
        }
        if !rec.senml {
            return None;
        }
        parsed.push(rec);
    }
    Some(resolve(parsed.into_iter()))
}

/// Readings of a SenML pack in CBOR (integer labels, RFC 8428 section 6),
/// or `None` if the CBOR is not SenML.
fn senml_cbor(value: &Cbor) -> Option<Vec<Metric>> {
    let records = value.as_array()?;
    if records.is_empty() {
        return None;
    }
    let mut parsed = Vec::new();
    for r in records {
        let map = r.as_map()?;
        let mut rec = Record::default();
        for (k, v) in map {
            let label = i64::try_from(k.as_integer()?).ok()?;
            rec.senml = true;
            match label {
                -2 => rec.bn = Some(v.as_text()?.to_owned()),
                -3 => rec.bt = Some(number(v)?),
                -4 => rec.bu = Some(v.as_text()?.to_owned()),
                -5 => rec.bv = Some(number(v)?),
                0 => rec.n = Some(v.as_text()?.to_owned()),
                1 => rec.u = Some(v.as_text()?.to_owned()),
                2 => rec.v = Some(number(v)?),
                4 => rec.vb = Some(v.as_bool()?),
                6 => rec.t = Some(number(v)?),
                -1 | -6 | 3 | 5 | 7 | 8 => {}
                _ => return None,
            }
        }
        parsed.push(rec);
    }
    Some(resolve(parsed.into_iter()))
}

fn number(v: &Cbor) -> Option<f64> {
    match v {
        Cbor::Integer(i) => Some(i128::from(*i) as f64),
        Cbor::Float(f) => Some(*f),
        _ => None,
    }
}

/// What a CBOR payload holds.
pub(super) enum CborReadings {
    /// A SenML pack.
    Senml(Vec<Metric>),
    /// Any other CBOR: numbers flattened by path like JSON.
    Plain(Vec<Metric>),
}

/// Decodes a whole payload as CBOR (one item, nothing after it).
pub(super) fn cbor(payload: &[u8]) -> Result<CborReadings, String> {
    let mut reader = payload;
    let value: Cbor =
        ciborium::de::from_reader_with_recursion_limit(&mut reader, MAX_JSON_DEPTH * 4)
            .map_err(|e| format!("not valid CBOR: {e}"))?;
    if !reader.is_empty() {
        return Err(format!("{} byte(s) after the CBOR item", reader.len()));
    }
    if let Some(m) = senml_cbor(&value) {
        return Ok(CborReadings::Senml(m));
    }
    let mut out = Vec::new();
    flatten(&value, &mut String::new(), 0, &mut out);
    Ok(CborReadings::Plain(out))
}

fn flatten(value: &Cbor, path: &mut String, depth: usize, out: &mut Vec<Metric>) {
    if out.len() >= MAX_METRICS_PER_PAYLOAD || depth > MAX_JSON_DEPTH {
        return;
    }
    let mut push = |v: f64, path: &str| {
        if v.is_finite() {
            out.push(Metric::new(path, v));
        }
    };
    match value {
        Cbor::Integer(_) | Cbor::Float(_) => {
            if let Some(v) = number(value) {
                push(v, path)
            }
        }
        Cbor::Bool(b) => push(if *b { 1.0 } else { 0.0 }, path),
        Cbor::Tag(_, inner) => flatten(inner, path, depth + 1, out),
        Cbor::Array(items) => {
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
        Cbor::Map(entries) => {
            for (k, v) in entries {
                let key = match k {
                    Cbor::Text(t) => t.clone(),
                    Cbor::Integer(i) => i128::from(*i).to_string(),
                    _ => continue,
                };
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key);
                flatten(v, path, depth + 1, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::{decode_payload, decode_with, PayloadKind};
    use super::*;

    fn triples(m: &[Metric]) -> Vec<(String, f64, Option<String>, Option<Micros>)> {
        m.iter()
            .map(|m| (m.name.clone(), m.value, m.unit.clone(), m.at))
            .collect()
    }

    /// What the example of RFC 8428, section 5.1.2 says, in either encoding.
    fn rfc_example_readings() -> Vec<(String, f64, Option<String>, Option<Micros>)> {
        let name = |n: &str| format!("urn:dev:ow:10e2073a01080063:{n}");
        vec![
            (name("voltage"), 120.1, Some("V".into()), None),
            (name("current"), 1.2, Some("A".into()), None),
        ]
    }

    /// RFC 8428, section 5.1.2: multiple data points with base name, time
    /// and units.
    #[test]
    fn rfc_8428_json_example_with_base_values() {
        let pack = br#"[
            {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
            {"n":"current","u":"A","v":1.2}
        ]"#;
        let d = decode_payload(pack);
        assert_eq!(d.kind, PayloadKind::Senml);
        assert_eq!(triples(&d.metrics), rfc_example_readings());
        // Section 5.1.3: base time, relative times, base unit.
        let pack = br#"[{"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,"bu":"A","bver":5,"n":"voltage","u":"V","v":120.1},
                        {"n":"current","t":-5,"v":1.2},{"n":"current","t":-4,"v":1.3}]"#;
        let d = decode_payload(pack);
        let m = triples(&d.metrics);
        assert_eq!(m[1].2.as_deref(), Some("A"), "bu applies where u is absent");
        assert_eq!(m[1].3, Some(1_276_020_071_001_000));
        assert_eq!(m[0].3, Some(1_276_020_076_001_000));
        // Relative to now: no time of its own.
        let d = decode_payload(br#"[{"n":"temp","t":-10,"v":21.5,"u":"Cel"}]"#);
        assert_eq!(d.metrics[0].at, None);
        // vb is a boolean reading; vs is not a number.
        let d = decode_payload(br#"[{"n":"door","vb":true},{"n":"label","vs":"hall"}]"#);
        assert_eq!(triples(&d.metrics), [("door".into(), 1.0, None, None)]);
    }

    /// RFC 8428, section 6: the CBOR encoding of the example of 5.1.2.
    #[test]
    fn rfc_8428_cbor_example() {
        let cbor: &[u8] = &[
            0x82, 0xa4, 0x21, 0x78, 0x1c, b'u', b'r', b'n', b':', b'd', b'e', b'v', b':', b'o',
            b'w', b':', b'1', b'0', b'e', b'2', b'0', b'7', b'3', b'a', b'0', b'1', b'0', b'8',
            b'0', b'0', b'6', b'3', b':', 0x00, 0x67, b'v', b'o', b'l', b't', b'a', b'g', b'e',
            0x01, 0x61, b'V', 0x02, 0xfb, 0x40, 0x5e, 0x06, 0x66, 0x66, 0x66, 0x66, 0x66, 0xa3,
            0x00, 0x67, b'c', b'u', b'r', b'r', b'e', b'n', b't', 0x01, 0x61, b'A', 0x02, 0xfb,
            0x3f, 0xf3, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33,
        ];
        let d = decode_payload(cbor);
        assert_eq!(d.kind, PayloadKind::Senml);
        assert_eq!(triples(&d.metrics), rfc_example_readings());
        let d = decode_with(cbor, Some("application/senml+cbor"));
        assert_eq!((d.kind, d.error), (PayloadKind::Senml, None));
    }

    #[test]
    fn plain_cbor_is_flattened_and_broken_cbor_flagged() {
        // {"temp": 21.5, "ok": true, "list": [1, 2]}
        let cbor: &[u8] = &[
            0xa3, 0x64, b't', b'e', b'm', b'p', 0xf9, 0x4d, 0x60, 0x62, b'o', b'k', 0xf5, 0x64,
            b'l', b'i', b's', b't', 0x82, 0x01, 0x02,
        ];
        let d = decode_payload(cbor);
        assert_eq!(d.kind, PayloadKind::Cbor);
        let names: Vec<_> = d
            .metrics
            .iter()
            .map(|m| (m.name.as_str(), m.value))
            .collect();
        assert_eq!(
            names,
            [
                ("temp", 21.5),
                ("ok", 1.0),
                ("list.0", 1.0),
                ("list.1", 2.0)
            ]
        );
        // A huge declared length must not allocate or panic.
        let d = decode_payload(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.kind, PayloadKind::Binary);
        let d = decode_with(&[0xa1, 0x01], Some("application/cbor"));
        assert!(d.error.unwrap().contains("not valid CBOR"));
        let d = decode_with(b"{oops", Some("application/json"));
        assert_eq!(d.kind, PayloadKind::Text);
        assert!(d.error.unwrap().contains("application/json"));
    }

    /// The stable twin of the `senml` fuzz target.
    #[test]
    fn random_cbor_never_panics() {
        let seed: &[u8] = &[
            0x82, 0xa2, 0x00, 0x61, b'a', 0x02, 0x01, 0xa2, 0x21, 0x61, b'b', 0x04, 0xf5,
        ];
        let mut rng = crate::testing::Rng::new(0x1234_5678_9ABC_DEF1);
        for _ in 0..20_000 {
            let mut p = seed.to_vec();
            crate::testing::mutate(&mut p, &mut rng, 4);
            let d = decode_payload(&p);
            assert!(d.metrics.iter().all(|m| m.value.is_finite()));
            assert!(d.metrics.len() <= MAX_METRICS_PER_PAYLOAD);
        }
    }
}
