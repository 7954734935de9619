//! Sparkplug B payloads: the protobuf `Payload` message of Eclipse Tahu's
//! `sparkplug_b.proto` (Sparkplug 3.0), read field by field with no code
//! generation.
//!
//! Field numbers, as in that file. `Payload`: timestamp 1, metrics 2, seq 3,
//! uuid 4, body 5. `Metric`: name 1, alias 2, timestamp 3, datatype 4,
//! is_historical 5, is_transient 6, is_null 7, metadata 8, properties 9, and
//! the value, one of int_value 10 (uint32), long_value 11 (uint64),
//! float_value 12, double_value 13, boolean_value 14, string_value 15,
//! bytes_value 16, dataset_value 17, template_value 18, extension_value 19.
//! `PropertySet`: keys 1, values 2; `PropertyValue`: string_value 8.
//!
//! What a monitor needs is kept: the payload's timestamp and sequence
//! number, and each metric's name, alias, timestamp, datatype, flags, unit
//! (the `engUnit` property) and value. Integers are read by their datatype:
//! Int8/16/32 travel in the unsigned `int_value` as their two's complement
//! (so `-5` as Int8 arrives as 251 or 4294967291) and Int64 in
//! `long_value`, so they read back negative; unsigned types read as they
//! are. Data messages usually leave the datatype out (it was given at
//! birth): [`SparkplugValue::number`] takes the datatype learned then.
//! Strings, bytes, datasets and templates are no number. Unknown fields are
//! skipped, as protobuf says; for the value, the last field wins (oneof).

use super::{Decoded, Metric, PayloadKind, MAX_METRICS_PER_PAYLOAD};
use crate::time::Micros;

/// The most metrics read from one payload; the rest are skipped, still
/// checked for well-formedness.
pub const MAX_SPARKPLUG_METRICS: usize = 4096;

/// A decoded Sparkplug B payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparkplugPayload {
    /// When it was sent, µs since the epoch (the payload carries ms).
    pub timestamp: Option<Micros>,
    /// Its sequence number (0–255 for births and data; absent in deaths
    /// and commands).
    pub seq: Option<u64>,
    /// Its metrics, in payload order.
    pub metrics: Vec<SparkplugMetric>,
}

impl SparkplugPayload {
    /// The payload as JSON, for people to read (names, aliases, datatypes,
    /// values, units, flags).
    pub fn to_json(&self) -> serde_json::Value {
        let metrics: Vec<serde_json::Value> = self
            .metrics
            .iter()
            .map(|m| {
                let raw = match m.raw {
                    Some(SparkplugValue::Int(v)) => serde_json::json!(v),
                    Some(SparkplugValue::Long(v)) => serde_json::json!(v),
                    Some(SparkplugValue::Float(v)) => serde_json::json!(v),
                    Some(SparkplugValue::Double(v)) => serde_json::json!(v),
                    Some(SparkplugValue::Boolean(v)) => serde_json::json!(v),
                    Some(SparkplugValue::Other) => serde_json::json!("(not a number)"),
                    None => serde_json::Value::Null,
                };
                serde_json::json!({
                    "name": m.name, "alias": m.alias, "timestamp": m.timestamp,
                    "datatype": m.datatype, "value": m.value, "raw": raw, "unit": m.unit,
                    "is_historical": m.is_historical, "is_transient": m.is_transient,
                    "is_null": m.is_null,
                })
            })
            .collect();
        serde_json::json!({ "timestamp": self.timestamp, "seq": self.seq, "metrics": metrics })
    }
}

/// One metric of a Sparkplug B payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparkplugMetric {
    /// Its name (births always carry it; data messages may send the alias
    /// only).
    pub name: Option<String>,
    /// Its alias.
    pub alias: Option<u64>,
    /// When it was measured, µs since the epoch.
    pub timestamp: Option<Micros>,
    /// Its Sparkplug datatype (see [`datatype`]); usually only in births.
    pub datatype: Option<u32>,
    /// Historical data: a past value, not the current one.
    pub is_historical: bool,
    /// Transient data: not meant to be stored by the receiver.
    pub is_transient: bool,
    /// The value is explicitly null.
    pub is_null: bool,
    /// Its engineering unit, from the `engUnit` (or `engUnits`) property.
    pub unit: Option<String>,
    /// The value as sent, `None` when it has none or is null.
    pub raw: Option<SparkplugValue>,
    /// The value as a number, read with this metric's own datatype (see
    /// [`SparkplugValue::number`]); `None` when it is null, not a number,
    /// or not finite.
    pub value: Option<f64>,
}

/// A metric's value field as it was on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SparkplugValue {
    /// `int_value` (uint32): Int8, Int16, Int32, UInt8, UInt16, UInt32.
    Int(u32),
    /// `long_value` (uint64): Int64, UInt64, DateTime.
    Long(u64),
    /// `float_value`.
    Float(f32),
    /// `double_value`.
    Double(f64),
    /// `boolean_value`.
    Boolean(bool),
    /// A string, bytes, dataset, template or extension: not a number.
    Other,
}

/// Sparkplug datatypes (the `DataType` enum of the specification).
pub mod datatype {
    /// Signed 8-bit integer, in `int_value`.
    pub const INT8: u32 = 1;
    /// Signed 16-bit integer, in `int_value`.
    pub const INT16: u32 = 2;
    /// Signed 32-bit integer, in `int_value`.
    pub const INT32: u32 = 3;
    /// Signed 64-bit integer, in `long_value`.
    pub const INT64: u32 = 4;
    /// Unsigned 8-bit integer, in `int_value`.
    pub const UINT8: u32 = 5;
    /// Unsigned 16-bit integer, in `int_value`.
    pub const UINT16: u32 = 6;
    /// Unsigned 32-bit integer, in `int_value`.
    pub const UINT32: u32 = 7;
    /// Unsigned 64-bit integer, in `long_value`.
    pub const UINT64: u32 = 8;
    /// 32-bit float, in `float_value`.
    pub const FLOAT: u32 = 9;
    /// 64-bit float, in `double_value`.
    pub const DOUBLE: u32 = 10;
    /// Boolean, in `boolean_value`.
    pub const BOOLEAN: u32 = 11;
    /// String, in `string_value`.
    pub const STRING: u32 = 12;
    /// Milliseconds since the epoch, in `long_value`: a time, not a reading.
    pub const DATETIME: u32 = 13;
}

impl SparkplugValue {
    /// The value as a number, read as `datatype` says (the metric's own,
    /// or the one its birth declared). Signed integer types are taken from
    /// their two's complement; DateTime, strings and the like give `None`,
    /// as does a value that is not finite.
    pub fn number(self, datatype: Option<u32>) -> Option<f64> {
        use datatype::*;
        let v = match (self, datatype) {
            (_, Some(DATETIME)) | (SparkplugValue::Other, _) => return None,
            (SparkplugValue::Int(v), Some(INT8)) => f64::from(v as u8 as i8),
            (SparkplugValue::Int(v), Some(INT16)) => f64::from(v as u16 as i16),
            (SparkplugValue::Int(v), Some(INT32 | INT64)) => f64::from(v as i32),
            (SparkplugValue::Int(v), _) => f64::from(v),
            (SparkplugValue::Long(v), Some(INT8)) => f64::from(v as u8 as i8),
            (SparkplugValue::Long(v), Some(INT16)) => f64::from(v as u16 as i16),
            (SparkplugValue::Long(v), Some(INT32)) => f64::from(v as u32 as i32),
            (SparkplugValue::Long(v), Some(INT64)) => v as i64 as f64,
            (SparkplugValue::Long(v), _) => v as f64,
            (SparkplugValue::Float(v), _) => f64::from(v),
            (SparkplugValue::Double(v), _) => v,
            (SparkplugValue::Boolean(b), _) => f64::from(u8::from(b)),
        };
        v.is_finite().then_some(v)
    }

    /// The value as an unsigned integer, when it is one (a `bdSeq`).
    pub fn unsigned(self) -> Option<u64> {
        match self {
            SparkplugValue::Int(v) => Some(u64::from(v)),
            SparkplugValue::Long(v) => Some(v),
            _ => None,
        }
    }
}

/// Decodes a Sparkplug B payload; the error says in words where it is
/// malformed.
pub fn decode_sparkplug(payload: &[u8]) -> Result<SparkplugPayload, String> {
    let mut out = SparkplugPayload::default();
    let mut r = Reader::new(payload);
    let mut index = 0usize;
    while let Some((field, wire)) = r.tag()? {
        match (field, wire) {
            (1, 0) => out.timestamp = Some(millis(r.varint()?)),
            (2, 2) => {
                index += 1;
                let m = metric(r.bytes()?).map_err(|e| format!("metric {index}: {e}"))?;
                if out.metrics.len() < MAX_SPARKPLUG_METRICS {
                    out.metrics.push(m);
                }
            }
            (3, 0) => out.seq = Some(r.varint()?),
            (1..=3, _) => return Err(wrong_wire("payload", field, wire)),
            _ => r.skip(wire)?,
        }
    }
    Ok(out)
}

/// The NCMD payload that asks an edge node to send its births again
/// (`Node Control/Rebirth` = true), stamped `timestamp_ms`.
pub fn rebirth_request(timestamp_ms: u64) -> Vec<u8> {
    encode::payload_without_seq(
        timestamp_ms,
        &[encode::metric(
            Some("Node Control/Rebirth"),
            None,
            datatype::BOOLEAN,
            1.0,
        )],
    )
}

/// The payload of a message on a Sparkplug topic as the message inspector
/// shows it: kind `Sparkplug`, each numeric metric by its name (or `alias
/// N` when the payload names none), control metrics such as `bdSeq`
/// included. A payload that is not valid Sparkplug is described as what
/// it is otherwise, with the reason in [`Decoded::error`].
pub fn decoded(payload: &[u8]) -> Decoded {
    if payload.is_empty() {
        return Decoded::new(PayloadKind::Empty, Vec::new());
    }
    match decode_sparkplug(payload) {
        Ok(p) => {
            let metrics = p
                .metrics
                .iter()
                .filter_map(|m| {
                    let value = m.value?;
                    let name = match (&m.name, m.alias) {
                        (Some(name), _) => name.clone(),
                        (None, Some(alias)) => format!("alias {alias}"),
                        (None, None) => return None,
                    };
                    Some(Metric {
                        name,
                        value,
                        unit: m.unit.clone(),
                        at: m.timestamp.or(p.timestamp),
                    })
                })
                .take(MAX_METRICS_PER_PAYLOAD)
                .collect();
            Decoded::new(PayloadKind::Sparkplug, metrics)
        }
        Err(e) => Decoded {
            error: Some(format!("not a Sparkplug B payload: {e}")),
            ..super::decode_payload(payload)
        },
    }
}

fn metric(bytes: &[u8]) -> Result<SparkplugMetric, String> {
    let mut m = SparkplugMetric::default();
    let mut r = Reader::new(bytes);
    while let Some((field, wire)) = r.tag()? {
        match (field, wire) {
            (1, 2) => m.name = Some(utf8(r.bytes()?, "its name")?),
            (2, 0) => m.alias = Some(r.varint()?),
            (3, 0) => m.timestamp = Some(millis(r.varint()?)),
            // uint32 fields keep the low 32 bits of a longer varint.
            (4, 0) => m.datatype = Some(r.varint()? as u32),
            (5, 0) => m.is_historical = r.varint()? != 0,
            (6, 0) => m.is_transient = r.varint()? != 0,
            (7, 0) => m.is_null = r.varint()? != 0,
            (8, 2) => drop(r.bytes()?), // metadata
            (9, 2) => {
                if let Some(unit) = unit(r.bytes()?)? {
                    m.unit = Some(unit);
                }
            }
            (10, 0) => m.raw = Some(SparkplugValue::Int(r.varint()? as u32)),
            (11, 0) => m.raw = Some(SparkplugValue::Long(r.varint()?)),
            (12, 5) => m.raw = Some(SparkplugValue::Float(f32::from_le_bytes(r.fixed()?))),
            (13, 1) => m.raw = Some(SparkplugValue::Double(f64::from_le_bytes(r.fixed()?))),
            (14, 0) => m.raw = Some(SparkplugValue::Boolean(r.varint()? != 0)),
            (15..=19, 2) => {
                r.bytes()?;
                m.raw = Some(SparkplugValue::Other);
            }
            (1..=19, _) => return Err(wrong_wire("metric", field, wire)),
            _ => r.skip(wire)?,
        }
    }
    if m.is_null {
        m.raw = None;
    }
    m.value = m.raw.and_then(|v| v.number(m.datatype));
    Ok(m)
}

/// The `engUnit` (or `engUnits`) string of a `PropertySet`, if it has one.
fn unit(bytes: &[u8]) -> Result<Option<String>, String> {
    let mut r = Reader::new(bytes);
    let (mut keys, mut values) = (0usize, 0usize);
    let mut unit_key: Option<usize> = None;
    let mut strings: Vec<(usize, &[u8])> = Vec::new();
    while let Some((field, wire)) = r.tag()? {
        match (field, wire) {
            (1, 2) => {
                let key = r.bytes()?;
                if key.eq_ignore_ascii_case(b"engUnit") || key.eq_ignore_ascii_case(b"engUnits") {
                    unit_key = Some(keys);
                }
                keys += 1;
            }
            (2, 2) => {
                if let Some(s) = property_string(r.bytes()?)? {
                    strings.push((values, s));
                }
                values += 1;
            }
            (1 | 2, _) => return Err(wrong_wire("property set", field, wire)),
            _ => r.skip(wire)?,
        }
    }
    let Some(at) = unit_key else { return Ok(None) };
    match strings.iter().find(|(i, _)| *i == at) {
        Some((_, s)) => utf8(s, "its unit").map(Some),
        None => Ok(None),
    }
}

/// The `string_value` of a `PropertyValue`, if it has one.
fn property_string(bytes: &[u8]) -> Result<Option<&[u8]>, String> {
    let mut r = Reader::new(bytes);
    let mut s = None;
    while let Some((field, wire)) = r.tag()? {
        match (field, wire) {
            (8, 2) => s = Some(r.bytes()?),
            _ => r.skip(wire)?,
        }
    }
    Ok(s)
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
}

fn wrong_wire(message: &str, field: u64, wire: u8) -> String {
    format!("{message} field {field} has the wrong protobuf wire type ({wire})")
}

fn millis(ms: u64) -> Micros {
    (ms.min(i64::MAX as u64 / 1000) as i64) * 1000
}

/// A protobuf reader over a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    /// The next field's number and wire type; `None` at the end.
    fn tag(&mut self) -> Result<Option<(u64, u8)>, String> {
        if self.at >= self.bytes.len() {
            return Ok(None);
        }
        let start = self.at;
        let tag = self.varint()?;
        let field = tag >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(format!("invalid field number {field} at byte {start}"));
        }
        Ok(Some((field, (tag & 7) as u8)))
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.at) else {
                return Err("the payload ends inside a number".into());
            };
            self.at += 1;
            if shift == 63 && b > 1 {
                return Err("a number is longer than 64 bits".into());
            }
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a number is longer than 10 bytes".into())
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.varint()?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| self.at.checked_add(l))
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "a field claims {len} bytes, but only {} are left",
                    self.bytes.len() - self.at
                )
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let s = self
            .bytes
            .get(self.at..)
            .and_then(|rest| rest.get(..N))
            .ok_or_else(|| "the payload ends inside a number".to_owned())?;
        self.at += N;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.fixed::<8>().map(drop),
            2 => self.bytes().map(drop),
            5 => self.fixed::<4>().map(drop),
            w => Err(format!(
                "unsupported protobuf wire type {w} (groups are not used by Sparkplug)"
            )),
        }
    }
}

/// Encoding: the rebirth request, and payloads for tests. It writes the
/// same bytes as protobuf code generated from `sparkplug_b.proto` (checked
/// against such bytes in the tests below).
pub(crate) mod encode {
    use super::datatype;

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn tag(out: &mut Vec<u8>, field: u64, wire: u64) {
        varint(out, field << 3 | wire);
    }

    fn string(out: &mut Vec<u8>, field: u64, s: &str) {
        tag(out, field, 2);
        varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }

    /// A metric as a birth sends it: name (if any), alias (if any),
    /// datatype, and the value in the field that datatype uses.
    pub(crate) fn metric(
        name: Option<&str>,
        alias: Option<u64>,
        datatype: u32,
        value: f64,
    ) -> Vec<u8> {
        let mut m = Vec::new();
        if let Some(n) = name {
            string(&mut m, 1, n);
        }
        if let Some(a) = alias {
            tag(&mut m, 2, 0);
            varint(&mut m, a);
        }
        tag(&mut m, 4, 0);
        varint(&mut m, u64::from(datatype));
        m.extend(value_field(datatype, value));
        m
    }

    /// A metric as data messages usually send it: the alias and the value
    /// (in the field `datatype` uses), no name and no datatype.
    #[cfg(test)]
    pub(crate) fn by_alias(alias: u64, datatype: u32, value: f64) -> Vec<u8> {
        let mut m = Vec::new();
        tag(&mut m, 2, 0);
        varint(&mut m, alias);
        m.extend(value_field(datatype, value));
        m
    }

    /// `m` with an `engUnit` property.
    #[cfg(test)]
    pub(crate) fn with_unit(mut m: Vec<u8>, unit: &str) -> Vec<u8> {
        let mut value = Vec::new();
        tag(&mut value, 1, 0);
        varint(&mut value, u64::from(datatype::STRING));
        string(&mut value, 8, unit);
        let mut set = Vec::new();
        string(&mut set, 1, "engUnit");
        tag(&mut set, 2, 2);
        varint(&mut set, value.len() as u64);
        set.extend(value);
        tag(&mut m, 9, 2);
        varint(&mut m, set.len() as u64);
        m.extend(set);
        m
    }

    fn value_field(dt: u32, value: f64) -> Vec<u8> {
        use datatype::*;
        let mut m = Vec::new();
        match dt {
            INT8..=INT32 | UINT8..=UINT32 => {
                tag(&mut m, 10, 0);
                varint(&mut m, u64::from(value as i64 as u32));
            }
            INT64 | UINT64 | DATETIME => {
                tag(&mut m, 11, 0);
                varint(&mut m, value as i64 as u64);
            }
            FLOAT => {
                tag(&mut m, 12, 5);
                m.extend_from_slice(&(value as f32).to_le_bytes());
            }
            BOOLEAN => {
                tag(&mut m, 14, 0);
                varint(&mut m, u64::from(value != 0.0));
            }
            STRING => string(&mut m, 15, &value.to_string()),
            _ => {
                tag(&mut m, 13, 1);
                m.extend_from_slice(&value.to_le_bytes());
            }
        }
        m
    }

    /// A payload with a timestamp (ms) and metrics, and no seq (commands).
    pub(crate) fn payload_without_seq(timestamp_ms: u64, metrics: &[Vec<u8>]) -> Vec<u8> {
        let mut p = Vec::new();
        tag(&mut p, 1, 0);
        varint(&mut p, timestamp_ms);
        for m in metrics {
            tag(&mut p, 2, 2);
            varint(&mut p, m.len() as u64);
            p.extend_from_slice(m);
        }
        p
    }

    /// A payload with a timestamp (ms), metrics and a seq.
    #[cfg(test)]
    pub(crate) fn payload(timestamp_ms: u64, seq: u64, metrics: &[Vec<u8>]) -> Vec<u8> {
        let mut p = payload_without_seq(timestamp_ms, metrics);
        tag(&mut p, 3, 0);
        varint(&mut p, seq);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// An NBIRTH made by Python protobuf code generated with protoc from
    /// Eclipse Tahu's `sparkplug_b.proto` (values set as Tahu's Java client
    /// sets them: Int8 -5 as the uint32 4294967291, Int64 -70000 as
    /// 2^64 - 70000), then an NDATA using aliases without datatypes.
    const TAHU_NBIRTH: &str = "0880d095ffbc31120b0a05626453657120085803121c0a144e6f646520436f6e74726f6c2f526562697274681000200b700012310a0b54656d706572617475726510011881d095ffbc3120094a120a07656e67556e69741207080c4203c2b043650000ac4112120a064f66667365741002200150fbffffff0f12180a07436f756e746572100320045890ddfbffffffffffff0112110a0653657269616c1004200c7a0341424312120a06557074696d65100520075080d0acf30e120f0a074e6f7468696e671006200a380112190a0850726573737572651007200a28016900000000000004401800";
    const TAHU_NDATA: &str = "08e8d795ffbc311208100250f9ffffff0f12071001650000b0411801";

    #[test]
    fn a_payload_reads_as_json_for_people() {
        let p = decode_sparkplug(&hex(TAHU_NBIRTH)).unwrap().to_json();
        assert_eq!(p["seq"], 0);
        let metrics = p["metrics"].as_array().unwrap();
        let named = |name: &str| metrics.iter().find(|m| m["name"] == name).unwrap();
        let temperature = named("Temperature");
        assert_eq!(temperature["unit"], "°C");
        assert_eq!(temperature["alias"], 1);
        assert!(temperature["value"].as_f64().unwrap() > 21.0);
        assert_eq!(named("Serial")["raw"], "(not a number)");
    }

    #[test]
    fn bytes_from_generated_protobuf_code() {
        let p = decode_sparkplug(&hex(TAHU_NBIRTH)).unwrap();
        assert_eq!(p.timestamp, Some(1_700_000_000_000_000));
        assert_eq!(p.seq, Some(0));
        let got: Vec<_> = p
            .metrics
            .iter()
            .map(|m| (m.name.as_deref().unwrap(), m.alias, m.datatype, m.value))
            .collect();
        assert_eq!(
            got,
            [
                ("bdSeq", None, Some(8), Some(3.0)),
                ("Node Control/Rebirth", Some(0), Some(11), Some(0.0)),
                ("Temperature", Some(1), Some(9), Some(21.5)),
                ("Offset", Some(2), Some(1), Some(-5.0)),
                ("Counter", Some(3), Some(4), Some(-70_000.0)),
                ("Serial", Some(4), Some(12), None),
                ("Uptime", Some(5), Some(7), Some(4_000_000_000.0)),
                ("Nothing", Some(6), Some(10), None),
                ("Pressure", Some(7), Some(10), Some(2.5)),
            ]
        );
        let temperature = &p.metrics[2];
        assert_eq!(temperature.unit.as_deref(), Some("°C"));
        assert_eq!(temperature.timestamp, Some(1_700_000_000_001_000));
        assert!(p.metrics[7].is_null && p.metrics[7].raw.is_none());
        assert!(p.metrics[8].is_historical);
        assert_eq!(p.metrics[0].raw.and_then(SparkplugValue::unsigned), Some(3));

        let d = decode_sparkplug(&hex(TAHU_NDATA)).unwrap();
        assert_eq!((d.seq, d.metrics.len()), (Some(1), 2));
        let offset = d.metrics[0].raw.unwrap();
        assert_eq!(
            d.metrics[0].value,
            Some(4_294_967_289.0),
            "no datatype: unsigned"
        );
        assert_eq!(
            offset.number(Some(datatype::INT8)),
            Some(-7.0),
            "as its birth said"
        );
        assert_eq!(d.metrics[1].value, Some(22.0));
    }

    #[test]
    fn the_test_encoder_writes_what_generated_code_writes() {
        let nbirth = hex(TAHU_NBIRTH);
        // The Offset metric (Int8 -5), as generated code wrote it.
        let offset = hex("0a064f66667365741002200150fbffffff0f");
        assert!(nbirth.windows(offset.len()).any(|w| w == offset));
        assert_eq!(encode::metric(Some("Offset"), Some(2), 1, -5.0), offset);
        assert_eq!(
            encode::payload(
                1_700_000_001_000,
                1,
                &[encode::by_alias(2, 1, -7.0), encode::by_alias(1, 9, 22.0)]
            ),
            hex(TAHU_NDATA)
        );
    }

    #[test]
    fn the_rebirth_request_reads_back() {
        let d = decode_sparkplug(&rebirth_request(1_700_000_000_000)).unwrap();
        assert_eq!(d.timestamp, Some(1_700_000_000_000_000));
        assert_eq!(d.seq, None);
        assert_eq!(d.metrics.len(), 1);
        assert_eq!(d.metrics[0].name.as_deref(), Some("Node Control/Rebirth"));
        assert_eq!(
            (d.metrics[0].datatype, d.metrics[0].value),
            (Some(datatype::BOOLEAN), Some(1.0))
        );
    }

    #[test]
    fn signed_and_unsigned_integers_by_datatype() {
        use datatype::*;
        let int = |v: u32, dt| SparkplugValue::Int(v).number(Some(dt));
        assert_eq!(int(251, INT8), Some(-5.0), "8-bit two's complement");
        assert_eq!(
            int(0xFFFF_FFFB, INT8),
            Some(-5.0),
            "sign-extended to 32 bits"
        );
        assert_eq!(int(0xFFFE, INT16), Some(-2.0));
        assert_eq!(int(0x8000_0000, INT32), Some(-2_147_483_648.0));
        assert_eq!(int(255, UINT8), Some(255.0));
        assert_eq!(int(0xFFFF_FFFF, UINT32), Some(4_294_967_295.0));
        let long = |v: u64, dt| SparkplugValue::Long(v).number(Some(dt));
        assert_eq!(long(u64::MAX, INT64), Some(-1.0));
        assert_eq!(long(u64::MAX, UINT64), Some(u64::MAX as f64));
        assert_eq!(
            long(1_700_000_000_000, DATETIME),
            None,
            "a time, not a reading"
        );
        assert_eq!(SparkplugValue::Boolean(true).number(None), Some(1.0));
        assert_eq!(SparkplugValue::Double(f64::NAN).number(None), None);
        assert_eq!(SparkplugValue::Other.number(Some(STRING)), None);
    }

    #[test]
    fn the_last_value_field_wins() {
        // int_value 7, then double_value 2.5 in the same metric.
        let mut m = encode::metric(Some("x"), None, 3, 7.0);
        m.extend([0x69]);
        m.extend(2.5f64.to_le_bytes());
        let p = decode_sparkplug(&encode::payload(1, 0, &[m])).unwrap();
        assert_eq!(p.metrics[0].value, Some(2.5));
    }

    #[test]
    fn malformed_payloads_are_errors_in_words() {
        let err = |p: &[u8]| decode_sparkplug(p).unwrap_err();
        assert_eq!(
            err(&[0x12, 0x05, 0x01]),
            "a field claims 5 bytes, but only 1 are left"
        );
        assert_eq!(err(&[0x08, 0xff]), "the payload ends inside a number");
        assert_eq!(
            err(&[0x0b]),
            "payload field 1 has the wrong protobuf wire type (3)"
        );
        assert!(err(&[0x33]).starts_with("unsupported protobuf wire type 3"));
        assert!(err(&[0x00]).contains("invalid field number 0"));
        assert!(err(&[0x0a, 0x00]).contains("payload field 1 has the wrong protobuf wire type (2)"));
        assert_eq!(
            err(&[0x12, 0x02, 0x0a, 0x05]),
            "metric 1: a field claims 5 bytes, but only 0 are left"
        );
        assert_eq!(
            err(&[0x12, 0x03, 0x0a, 0x01, 0xff]),
            "metric 1: its name is not UTF-8"
        );
        assert_eq!(decode_sparkplug(&[]).unwrap(), SparkplugPayload::default());
        // Unknown fields (uuid, body, extensions) are skipped.
        assert!(decode_sparkplug(&[0x22, 0x01, b'u', 0x2a, 0x00, 0x30, 0x01]).is_ok());
    }

    #[test]
    fn the_inspector_view() {
        let d = decoded(&hex(TAHU_NDATA));
        assert_eq!(d.kind, PayloadKind::Sparkplug);
        let names: Vec<_> = d
            .metrics
            .iter()
            .map(|m| (m.name.as_str(), m.value))
            .collect();
        assert_eq!(names, [("alias 2", 4_294_967_289.0), ("alias 1", 22.0)]);
        assert_eq!(d.metrics[0].at, Some(1_700_000_001_000_000));
        let d = decoded(br#"{"online": true}"#);
        assert_eq!(d.kind, PayloadKind::Json);
        assert!(d.error.unwrap().starts_with("not a Sparkplug B payload: "));
        assert_eq!(decoded(b"").kind, PayloadKind::Empty);
    }

    #[test]
    fn metrics_are_bounded() {
        let one = encode::metric(Some("m"), None, 10, 1.0);
        let many = vec![one; MAX_SPARKPLUG_METRICS + 10];
        let p = decode_sparkplug(&encode::payload(1, 0, &many)).unwrap();
        assert_eq!(p.metrics.len(), MAX_SPARKPLUG_METRICS);
        assert_eq!(
            decoded(&encode::payload(1, 0, &many)).metrics.len(),
            MAX_METRICS_PER_PAYLOAD
        );
    }

    /// The stable twin of the `sparkplug` fuzz target.
    #[test]
    fn random_payloads_never_panic() {
        let seeds = [
            hex(TAHU_NBIRTH),
            hex(TAHU_NDATA),
            encode::payload(
                1,
                2,
                &[encode::with_unit(
                    encode::metric(Some("a"), Some(1), 10, 1.0),
                    "V",
                )],
            ),
        ];
        let mut rng = crate::testing::Rng::new(0xDEAD_BEEF_1234_5678);
        for round in 0..30_000 {
            let mut p = seeds[round % seeds.len()].clone();
            crate::testing::mutate(&mut p, &mut rng, 4);
            if let Ok(d) = decode_sparkplug(&p) {
                assert!(d.metrics.iter().all(|m| m.value.is_none_or(f64::is_finite)));
            }
            let d = decoded(&p);
            assert!(d.metrics.len() <= MAX_METRICS_PER_PAYLOAD);
            assert!(d.metrics.iter().all(|m| m.value.is_finite()));
        }
    }
}
