//! SenML (RFC 8428): a pack of records, in JSON (section 5) or in CBOR
//! with integer labels (section 6).
//!
//! Base fields (`bn`, `bt`, `bu`, `bv`) apply to their record and to the
//! records after it until changed (section 4). Each record that has a value
//! is resolved (section 4.6) into one reading:
//!
//! - name: `bn` + `n`;
//! - value: `bv` + `v`, or `vb` as 1/0; `vs` and `vd` are not numbers and
//!   give no reading; a record with only a sum (`s`) gives none either;
//! - unit: `u`, else `bu`;
//! - time: `bt` + `t` (a missing one counts as 0). A sum of 2^28 s or more is
//!   an absolute time (seconds since the epoch) and becomes the reading's
//!   `at`; a smaller one (negative ones too) is relative to "now" (4.5.3),
//!   and with no clock here such a reading gets `at: None`, which the engine
//!   reads as the message's arrival time. So `{"t": -5}` alone is "now",
//!   but `{"bt": 1.276020076001e9}, {"t": -5}` is 1276020071.001 s.
//!
//! Deciding what is SenML: an array of objects (maps) whose known labels
//! have the types of the RFC, with at least one record carrying a value or
//! a sum, each such record having a non-empty name, and exactly one value
//! field per record. Anything else is not SenML and is read as plain JSON or
//! CBOR instead, so `[{"t": 1700000000, "v": 3}]` (no name) stays JSON. A
//! label ending in `_` that is not understood, or a version (`bver`) newer
//! than 10, makes the pack unusable, as section 4.4 requires. The name
//! character set of 4.5.1 is not enforced: names are kept as sent.

use ciborium::value::Value as Cbor;
use serde_json::Value as Json;

use super::{cbor, Metric, MAX_METRICS_PER_PAYLOAD};
use crate::time::Micros;

/// Times below this many seconds are relative to "now" (RFC 8428, 4.5.3).
const RELATIVE_LIMIT: f64 = 268_435_456.0; // 2^28
/// Absolute times from here on (year 2262) do not fit µs in an `i64`.
const TIME_LIMIT: f64 = 9_223_372_036.0;
/// The SenML version of RFC 8428; newer packs must not be used (4.4).
const VERSION: f64 = 10.0;

/// One record's fields as sent (before base values are applied).
#[derive(Default)]
struct Record<'a> {
    bn: Option<&'a str>,
    bt: Option<f64>,
    bu: Option<&'a str>,
    bv: Option<f64>,
    bver: Option<f64>,
    n: Option<&'a str>,
    u: Option<&'a str>,
    t: Option<f64>,
    value: Option<Value>,
    /// How many value fields (`v`, `vs`, `vb`, `vd`) it has.
    values: usize,
    has_sum: bool,
}

/// A record's value, as far as a number can be made of it.
#[derive(Clone, Copy)]
enum Value {
    Number(f64),
    Boolean(bool),
    /// `vs` or `vd`.
    NotNumeric,
}

/// Applies base fields record by record (RFC 8428, 4.6).
struct Resolver {
    bn: String,
    bt: f64,
    bu: Option<String>,
    bv: f64,
    measured: bool,
    out: Vec<Metric>,
}

impl Resolver {
    fn new() -> Resolver {
        Resolver {
            bn: String::new(),
            bt: 0.0,
            bu: None,
            bv: 0.0,
            measured: false,
            out: Vec::new(),
        }
    }

    /// Takes record number `index` (from 1), in pack order.
    fn record(&mut self, index: usize, r: Record<'_>) -> Result<(), String> {
        if let Some(version) = r.bver {
            if version > VERSION {
                return Err(format!(
                    "SenML version {version} is newer than {VERSION}, the one understood"
                ));
            }
        }
        if let Some(bn) = r.bn {
            bn.clone_into(&mut self.bn);
        }
        if let Some(bt) = r.bt {
            self.bt = bt;
        }
        if let Some(bu) = r.bu {
            self.bu = Some(bu.to_owned());
        }
        if let Some(bv) = r.bv {
            self.bv = bv;
        }
        if r.values > 1 {
            return Err(format!("record {index} has more than one value field"));
        }
        if r.value.is_none() && !r.has_sum {
            return Ok(()); // only base fields (RFC 8428, 5.1.7)
        }
        self.measured = true;
        let n = r.n.unwrap_or("");
        if self.bn.is_empty() && n.is_empty() {
            return Err(format!("record {index} has a value but no name"));
        }
        let value = match r.value {
            Some(Value::Number(v)) => self.bv + v,
            Some(Value::Boolean(b)) => f64::from(u8::from(b)),
            Some(Value::NotNumeric) | None => return Ok(()),
        };
        if !value.is_finite() || self.out.len() >= MAX_METRICS_PER_PAYLOAD {
            return Ok(());
        }
        let time = self.bt + r.t.unwrap_or(0.0);
        let at = (RELATIVE_LIMIT..TIME_LIMIT)
            .contains(&time)
            .then(|| (time * 1e6).round() as Micros);
        self.out.push(Metric {
            name: format!("{}{n}", self.bn),
            value,
            unit: r.u.map(str::to_owned).or_else(|| self.bu.clone()),
            at,
        });
        Ok(())
    }

    fn finish(self) -> Result<Vec<Metric>, String> {
        if !self.measured {
            return Err("no record has a value or a sum".into());
        }
        Ok(self.out)
    }
}

/// The readings of a SenML pack in JSON, or why the JSON is not one.
pub(super) fn from_json(pack: &Json) -> Result<Vec<Metric>, String> {
    let records = pack
        .as_array()
        .ok_or("a SenML pack is a JSON array of records")?;
    let mut resolver = Resolver::new();
    for (i, record) in records.iter().enumerate() {
        let index = i + 1;
        let fields = record
            .as_object()
            .ok_or_else(|| format!("record {index} is not a JSON object"))?;
        let mut r = Record::default();
        for (label, v) in fields {
            let wrong = |kind: &str| format!("record {index}: \"{label}\" is not a {kind}");
            let text = || v.as_str().ok_or_else(|| wrong("string"));
            let number = || v.as_f64().ok_or_else(|| wrong("number"));
            match label.as_str() {
                "bn" => r.bn = Some(text()?),
                "bt" => r.bt = Some(number()?),
                "bu" => r.bu = Some(text()?),
                "bv" => r.bv = Some(number()?),
                "bs" | "s" => {
                    number()?;
                    r.has_sum |= label == "s";
                }
                "bver" => r.bver = Some(number()?),
                "n" => r.n = Some(text()?),
                "u" => r.u = Some(text()?),
                "v" => r.set(Value::Number(number()?)),
                "vs" | "vd" => {
                    text()?;
                    r.set(Value::NotNumeric);
                }
                "vb" => r.set(Value::Boolean(v.as_bool().ok_or_else(|| wrong("boolean"))?)),
                "t" => r.t = Some(number()?),
                "ut" => {
                    number()?;
                }
                other => must_understand(index, other)?,
            }
        }
        resolver.record(index, r)?;
    }
    resolver.finish()
}

/// The readings of a SenML pack in CBOR, or why the CBOR is not one.
pub(super) fn from_cbor(pack: &Cbor) -> Result<Vec<Metric>, String> {
    let records = pack
        .as_array()
        .ok_or("a SenML pack is a CBOR array of records")?;
    let mut resolver = Resolver::new();
    for (i, record) in records.iter().enumerate() {
        let index = i + 1;
        let fields = record
            .as_map()
            .ok_or_else(|| format!("record {index} is not a CBOR map"))?;
        let mut r = Record::default();
        for (label, v) in fields {
            let label = match label {
                Cbor::Integer(l) => i128::from(*l),
                Cbor::Text(t) => {
                    must_understand(index, t)?; // extensions use text labels (section 6)
                    continue;
                }
                _ => {
                    return Err(format!(
                        "record {index} has a label that is neither an integer nor text"
                    ))
                }
            };
            let wrong = |kind: &str| format!("record {index}: label {label} is not a {kind}");
            let text = || v.as_text().ok_or_else(|| wrong("text string"));
            let number = || cbor::number(v).ok_or_else(|| wrong("finite number"));
            match label {
                -2 => r.bn = Some(text()?),
                -3 => r.bt = Some(number()?),
                -4 => r.bu = Some(text()?),
                -5 => r.bv = Some(number()?),
                -6 | 5 => {
                    number()?;
                    r.has_sum |= label == 5;
                }
                -1 => match v.as_integer().map(i128::from) {
                    Some(version) if version > 0 => r.bver = Some(version as f64),
                    _ => return Err(wrong("positive integer")),
                },
                0 => r.n = Some(text()?),
                1 => r.u = Some(text()?),
                2 => r.set(Value::Number(number()?)),
                3 => {
                    text()?;
                    r.set(Value::NotNumeric);
                }
                8 => {
                    v.as_bytes().ok_or_else(|| wrong("byte string"))?;
                    r.set(Value::NotNumeric);
                }
                4 => r.set(Value::Boolean(v.as_bool().ok_or_else(|| wrong("boolean"))?)),
                6 => r.t = Some(number()?),
                7 => {
                    number()?;
                }
                other => return Err(format!("record {index}: {other} is not a SenML label")),
            }
        }
        resolver.record(index, r)?;
    }
    resolver.finish()
}

/// A SenML pack in CBOR as JSON for people: the pack as
/// [`cbor::to_json`] gives it, with each record's integer labels (RFC 8428,
/// section 6) written as their JSON names.
pub(super) fn readable(pack: &Cbor) -> Option<Json> {
    let mut json = cbor::to_json(pack);
    for record in json.as_array_mut()? {
        if let Some(fields) = record.as_object_mut() {
            *fields = std::mem::take(fields)
                .into_iter()
                .map(|(k, v)| (json_label(&k).map_or(k, str::to_owned), v))
                .collect();
        }
    }
    Some(json)
}

/// The JSON name of a CBOR label, as [`cbor::to_json`] writes it (`"-2"`).
fn json_label(label: &str) -> Option<&'static str> {
    Some(match label.parse::<i8>().ok()? {
        -1 => "bver",
        -2 => "bn",
        -3 => "bt",
        -4 => "bu",
        -5 => "bv",
        -6 => "bs",
        0 => "n",
        1 => "u",
        2 => "v",
        3 => "vs",
        4 => "vb",
        5 => "s",
        6 => "t",
        7 => "ut",
        8 => "vd",
        _ => return None,
    })
}

impl Record<'_> {
    fn set(&mut self, value: Value) {
        self.value = Some(value);
        self.values += 1;
    }
}

/// RFC 8428, 4.4: unknown labels are ignored, unless they end in `_`.
fn must_understand(index: usize, label: &str) -> Result<(), String> {
    if label.ends_with('_') {
        return Err(format!(
            "record {index}: label \"{label}\" must be understood (RFC 8428, 4.4) and is not"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{decode_payload, decode_with, PayloadKind};
    use super::*;

    type Reading = (String, f64, Option<String>, Option<Micros>);

    fn readings(m: &[Metric]) -> Vec<Reading> {
        m.iter()
            .map(|m| (m.name.clone(), m.value, m.unit.clone(), m.at))
            .collect()
    }

    fn reading(name: &str, value: f64, unit: Option<&str>, at: Option<Micros>) -> Reading {
        (name.to_owned(), value, unit.map(str::to_owned), at)
    }

    fn senml(payload: &[u8]) -> Vec<Reading> {
        let d = decode_payload(payload);
        assert_eq!(
            d.kind,
            PayloadKind::Senml,
            "{}",
            String::from_utf8_lossy(payload)
        );
        readings(&d.metrics)
    }

    fn hex(dump: &str) -> Vec<u8> {
        let digits: Vec<u8> = dump.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    /// RFC 8428, 5.1.1 and the first example of 5.1.2.
    #[test]
    fn rfc_single_and_multiple_data_points() {
        assert_eq!(
            senml(br#"[{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}]"#),
            [reading(
                "urn:dev:ow:10e2073a01080063",
                23.1,
                Some("Cel"),
                None
            )]
        );
        assert_eq!(
            senml(
                br#"[
                {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
                {"n":"current","u":"A","v":1.2}
            ]"#
            ),
            [
                reading(
                    "urn:dev:ow:10e2073a01080063:voltage",
                    120.1,
                    Some("V"),
                    None
                ),
                reading("urn:dev:ow:10e2073a01080063:current", 1.2, Some("A"), None),
            ]
        );
    }

    /// The second example of 5.1.2: base time, relative times, base unit.
    fn rfc_5_1_2_readings() -> Vec<Reading> {
        let current = "urn:dev:ow:10e2073a0108006:current";
        let mut r = vec![reading(
            "urn:dev:ow:10e2073a0108006:voltage",
            120.1,
            Some("V"),
            Some(1_276_020_076_001_000),
        )];
        for (t, v) in [
            (-5, 1.2),
            (-4, 1.3),
            (-3, 1.4),
            (-2, 1.5),
            (-1, 1.6),
            (0, 1.7),
        ] {
            r.push(reading(
                current,
                v,
                Some("A"),
                Some(1_276_020_076_001_000 + t * 1_000_000),
            ));
        }
        r
    }

    #[test]
    fn rfc_base_time_relative_times_and_base_unit() {
        let pack = br#"[
            {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
             "bu":"A","bver":5,
             "n":"voltage","u":"V","v":120.1},
            {"n":"current","t":-5,"v":1.2},
            {"n":"current","t":-4,"v":1.3},
            {"n":"current","t":-3,"v":1.4},
            {"n":"current","t":-2,"v":1.5},
            {"n":"current","t":-1,"v":1.6},
            {"n":"current","v":1.7}
        ]"#;
        assert_eq!(senml(pack), rfc_5_1_2_readings());
    }

    /// RFC 8428, section 6: the CBOR dump of the same pack, byte for byte.
    #[test]
    fn rfc_cbor_example() {
        let cbor = hex("
            87 a7 21 78 1b 75 72 6e 3a 64 65 76 3a 6f 77 3a
            31 30 65 32 30 37 33 61 30 31 30 38 30 30 36 3a
            22 fb 41 d3 03 a1 5b 00 10 62 23 61 41 20 05 00
            67 76 6f 6c 74 61 67 65 01 61 56 02 fb 40 5e 06
            66 66 66 66 66 a3 00 67 63 75 72 72 65 6e 74 06
            24 02 fb 3f f3 33 33 33 33 33 33 a3 00 67 63 75
            72 72 65 6e 74 06 23 02 fb 3f f4 cc cc cc cc cc
            cd a3 00 67 63 75 72 72 65 6e 74 06 22 02 fb 3f
            f6 66 66 66 66 66 66 a3 00 67 63 75 72 72 65 6e
            74 06 21 02 f9 3e 00 a3 00 67 63 75 72 72 65 6e
            74 06 20 02 fb 3f f9 99 99 99 99 99 9a a3 00 67
            63 75 72 72 65 6e 74 06 00 02 fb 3f fb 33 33 33
            33 33 33");
        assert_eq!(cbor.len(), 0xc3);
        assert_eq!(senml(&cbor), rfc_5_1_2_readings());
        for content_type in ["application/senml+cbor", "application/cbor", "112"] {
            let d = decode_with(&cbor, Some(content_type));
            assert_eq!(
                (d.kind, d.error),
                (PayloadKind::Senml, None),
                "{content_type}"
            );
        }
    }

    /// 5.1.3: records with no name take the base name; the unit of each.
    #[test]
    fn rfc_multiple_measurements() {
        let r = senml(
            br#"[
            {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,"bu":"%RH","v":20},
            {"u":"lon","v":24.30621},
            {"u":"lat","v":60.07965},
            {"t":60,"v":20.3},
            {"u":"%EL","t":150,"v":98}
        ]"#,
        );
        let name = "urn:dev:ow:10e2073a01080063";
        assert_eq!(
            r,
            [
                reading(name, 20.0, Some("%RH"), Some(1_320_067_464_000_000)),
                reading(name, 24.30621, Some("lon"), Some(1_320_067_464_000_000)),
                reading(name, 60.07965, Some("lat"), Some(1_320_067_464_000_000)),
                reading(name, 20.3, Some("%RH"), Some(1_320_067_524_000_000)),
                reading(name, 98.0, Some("%EL"), Some(1_320_067_614_000_000)),
            ]
        );
    }

    /// 5.1.5 (values that are not numbers) and 5.1.7 (a record of base
    /// fields only; base value added to each value).
    #[test]
    fn rfc_data_types_and_base_only_records() {
        assert_eq!(
            senml(
                br#"[
                {"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
                {"n":"label","vs":"Machine Room"},
                {"n":"open","vb":false},
                {"n":"nfv-reader","vd":"aGkgCg"}
            ]"#
            ),
            [
                reading("urn:dev:ow:10e2073a01080063:temp", 23.1, Some("Cel"), None),
                reading("urn:dev:ow:10e2073a01080063:open", 0.0, None, None),
            ]
        );
        assert_eq!(
            senml(br#"[{"bn":"t:","bv":100},{"n":"a","v":1},{"n":"b","v":-1.5,"u":"/"}]"#),
            [
                reading("t:a", 101.0, None, None),
                reading("t:b", 98.5, Some("/"), None)
            ]
        );
    }

    /// Relative times stay relative (no clock here), negative ones too;
    /// a relative time added to an absolute base time is absolute.
    #[test]
    fn relative_times_have_no_time_of_their_own() {
        let r =
            senml(br#"[{"n":"a","t":-10,"v":1},{"n":"b","t":5,"v":2},{"n":"c","t":-3e8,"v":3}]"#);
        assert!(r.iter().all(|(_, _, _, at)| at.is_none()), "{r:?}");
        let r = senml(br#"[{"bt":1.7e9,"n":"a","t":-10,"v":1}]"#);
        assert_eq!(r[0].3, Some(1_699_999_990_000_000));
        let r = senml(br#"[{"n":"far","t":1e15,"v":1}]"#);
        assert_eq!(r[0].3, None, "beyond what µs in i64 can hold");
    }

    /// Arrays that only look like SenML are plain JSON.
    #[test]
    fn look_alikes_stay_json() {
        for payload in [
            &br#"[{"t":1700000000,"v":3}]"#[..],
            br#"[{"n":"a","value":3}]"#,
            br#"[{"n":"a","v":"3"}]"#,
            br#"[{"n":"a","v":1},2]"#,
            br#"[{"n":"a","v":1,"vb":true}]"#,
            br#"[]"#,
            br#"[{}]"#,
        ] {
            let d = decode_payload(payload);
            assert_eq!(
                d.kind,
                PayloadKind::Json,
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
        assert_eq!(
            decode_payload(br#"[{"t":1700000000,"v":3}]"#).metrics.len(),
            2,
            "flattened as JSON: 0.t and 0.v"
        );
    }

    #[test]
    fn versions_and_must_understand_labels() {
        let d = decode_with(
            br#"[{"bver":11,"n":"a","v":1}]"#,
            Some("application/senml+json"),
        );
        assert_eq!(
            d.error.as_deref(),
            Some("content type application/senml+json but not a SenML pack: SenML version 11 is newer than 10, the one understood")
        );
        let d = decode_with(
            br#"[{"n":"a","v":1,"x_":2}]"#,
            Some("application/senml+json"),
        );
        assert!(d.error.unwrap().contains("\"x_\" must be understood"));
        // An extension label without `_` is ignored.
        assert_eq!(
            senml(br#"[{"n":"a","v":1,"x":2}]"#),
            [reading("a", 1.0, None, None)]
        );
    }

    #[test]
    fn cbor_records_are_checked_like_json_ones() {
        // [{0: "a", 2: 4(-1, 215), "ext": 1}, {0: "b", 4: true, 1: "/"}]
        let pack =
            hex("82 a3 00 61 61 02 c4 82 20 18 d7 63 65 78 74 01 a3 00 61 62 04 f5 01 61 2f");
        assert_eq!(
            senml(&pack),
            [
                reading("a", 21.5, None, None),
                reading("b", 1.0, Some("/"), None)
            ]
        );
        // [{0: "a", 2: 1, 9: 0}]: 9 is no SenML label, so this is plain CBOR.
        let d = decode_with(
            &hex("81 a3 00 61 61 02 01 09 00"),
            Some("application/senml+cbor"),
        );
        assert_eq!(d.kind, PayloadKind::Cbor);
        assert_eq!(
            d.error.as_deref(),
            Some("content type application/senml+cbor but not a SenML pack: record 1: 9 is not a SenML label")
        );
    }

    #[test]
    fn hostile_packs_are_bounded() {
        let wide = format!("[{}]", vec![r#"{"n":"a","v":1}"#; 10_000].join(","));
        assert_eq!(senml(wide.as_bytes()).len(), MAX_METRICS_PER_PAYLOAD);
        let huge = br#"[{"n":"a","v":1e308,"bv":1e308}]"#;
        assert!(senml(huge).is_empty(), "an infinite sum is no reading");
    }

    /// The stable twin of the `senml` fuzz target: mutated packs in JSON
    /// and CBOR never panic and never give a non-finite or unbounded result.
    #[test]
    fn random_packs_never_panic() {
        let json = br#"[{"bn":"d:","bt":1.7e9,"bu":"A","bv":1,"n":"a","v":2,"t":-1},{"n":"b","vb":true},{"n":"c","vs":"x","s":3}]"#;
        let cbor =
            hex("82 a4 21 62 64 3a 22 1a 65 53 f1 00 00 61 61 02 f9 3e 00 a2 00 61 62 04 f5");
        let mut rng = crate::testing::Rng::new(0x1234_5678_9ABC_DEF1);
        for round in 0..30_000 {
            let mut p = if round % 2 == 0 {
                json.to_vec()
            } else {
                cbor.clone()
            };
            crate::testing::mutate(&mut p, &mut rng, 4);
            for d in [
                decode_payload(&p),
                decode_with(&p, Some("application/senml+json")),
                decode_with(&p, Some("application/senml+cbor")),
            ] {
                assert!(d.metrics.len() <= MAX_METRICS_PER_PAYLOAD);
                assert!(d.metrics.iter().all(|m| m.value.is_finite()), "{p:?}");
            }
        }
    }
}
