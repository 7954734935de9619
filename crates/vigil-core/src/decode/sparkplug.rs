//! Sparkplug B payloads: the protobuf `Payload` message of the Eclipse
//! Sparkplug specification (`sparkplug_b.proto`), read field by field.
//!
//! Only what a monitor needs is kept: the payload's timestamp and sequence
//! number, and each metric's name, alias, timestamp, datatype and value as a
//! number (integers by their declared datatype, so a signed `Int8` stored in
//! the unsigned `int_value` reads back negative). Strings, bytes, datasets
//! and templates are skipped. Unknown fields are skipped as protobuf says.

use crate::time::Micros;

/// The most metrics read from one payload.
pub const MAX_SPARKPLUG_METRICS: usize = 4096;

/// A decoded Sparkplug B payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparkplugPayload {
    /// When it was sent, µs since the epoch (the payload carries ms).
    pub timestamp: Option<Micros>,
    /// Its sequence number (0–255).
    pub seq: Option<u64>,
    /// Its metrics.
    pub metrics: Vec<SparkplugMetric>,
}

/// One metric.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparkplugMetric {
    /// Its name (births always carry it; data messages may use the alias only).
    pub name: Option<String>,
    /// Its alias.
    pub alias: Option<u64>,
    /// When it was measured, µs since the epoch.
    pub timestamp: Option<Micros>,
    /// Its Sparkplug datatype (3 = Int32, 10 = Double, 11 = Boolean, ...).
    pub datatype: Option<u32>,
    /// Whether the value is explicitly null.
    pub is_null: bool,
    /// Its value as a number, when it is a number or a boolean.
    pub value: Option<f64>,
}

/// Sparkplug datatypes (the `DataType` enum of the specification).
mod datatype {
    pub const INT8: u32 = 1;
    pub const INT16: u32 = 2;
    pub const INT32: u32 = 3;
    pub const INT64: u32 = 4;
    pub const DATETIME: u32 = 13;
}

/// Decodes a Sparkplug B payload; the error says where it is malformed.
pub fn decode_sparkplug(payload: &[u8]) -> Result<SparkplugPayload, String> {
    let mut out = SparkplugPayload::default();
    let mut r = Reader::new(payload);
    while let Some((field, wire)) = r.tag()? {
        match (field, wire) {
            (1, 0) => out.timestamp = Some(millis(r.varint()?)),
            (2, 2) => {
                let bytes = r.bytes()?;
                if out.metrics.len() < MAX_SPARKPLUG_METRICS {
                    out.metrics.push(metric(bytes)?);
                }
            }
            (3, 0) => out.seq = Some(r.varint()?),
            _ => r.skip(wire)?,
        }
    }
    Ok(out)
}

fn metric(bytes: &[u8]) -> Result<SparkplugMetric, String> {
    let mut m = SparkplugMetric::default();
    let mut r = Reader::new(bytes);
    // Integers are interpreted once the datatype is known (it may come after).
    let mut int: Option<u64> = None;
    let mut long: Option<u64> = None;
    while let Some((field, wire)) = r.tag()? {
        match (field, wire) {
            (1, 2) => {
                m.name = Some(
                    String::from_utf8(r.bytes()?.to_vec())
                        .map_err(|_| "a metric name is not UTF-8".to_owned())?,
                )
            }
            (2, 0) => m.alias = Some(r.varint()?),
            (3, 0) => m.timestamp = Some(millis(r.varint()?)),
            (4, 0) => m.datatype = Some(r.varint()? as u32),
            (7, 0) => m.is_null = r.varint()? != 0,
            (10, 0) => int = Some(r.varint()?),
            (11, 0) => long = Some(r.varint()?),
            (12, 5) => m.value = Some(f64::from(f32::from_le_bytes(r.fixed::<4>()?))),
            (13, 1) => m.value = Some(f64::from_le_bytes(r.fixed::<8>()?)),
            (14, 0) => m.value = Some(if r.varint()? != 0 { 1.0 } else { 0.0 }),
            _ => r.skip(wire)?,
        }
    }
    let dt = m.datatype.unwrap_or(0);
    if let Some(v) = int {
        let v = v as u32;
        m.value = Some(match dt {
            datatype::INT8 => f64::from(v as u8 as i8),
            datatype::INT16 => f64::from(v as u16 as i16),
            datatype::INT32 => f64::from(v as i32),
            _ => f64::from(v),
        });
    }
    if let Some(v) = long {
        m.value = match dt {
            datatype::INT64 => Some(v as i64 as f64),
            datatype::DATETIME => None, // a time, not a reading
            _ => Some(v as f64),
        };
    }
    if m.is_null || m.value.is_some_and(|v| !v.is_finite()) {
        m.value = None;
    }
    Ok(m)
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

    fn tag(&mut self) -> Result<Option<(u64, u8)>, String> {
        if self.at >= self.bytes.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = tag >> 3;
        if field == 0 {
            return Err(format!("field number 0 at byte {}", self.at));
        }
        Ok(Some((field, (tag & 7) as u8)))
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
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
            .ok_or_else(|| format!("a field claims {len} bytes, more than the payload has"))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let s = self
            .bytes
            .get(self.at..self.at + N)
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
            w => Err(format!("unsupported protobuf wire type {w}")),
        }
    }
}

/// The NCMD payload that asks an edge node to send its births again
/// (`Node Control/Rebirth` = true), stamped `timestamp_ms`.
pub fn rebirth_request(timestamp_ms: u64) -> Vec<u8> {
    encode::payload_without_seq(
        timestamp_ms,
        &[encode::metric(Some("Node Control/Rebirth"), None, 11, 1.0)],
    )
}

/// Encoding: the rebirth request, and payloads for tests.
pub(crate) mod encode {
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

    /// A metric: (name, alias, datatype, value).
    pub(crate) fn metric(
        name: Option<&str>,
        alias: Option<u64>,
        datatype: u32,
        value: f64,
    ) -> Vec<u8> {
        let mut m = Vec::new();
        if let Some(n) = name {
            tag(&mut m, 1, 2);
            varint(&mut m, n.len() as u64);
            m.extend_from_slice(n.as_bytes());
        }
        if let Some(a) = alias {
            tag(&mut m, 2, 0);
            varint(&mut m, a);
        }
        tag(&mut m, 4, 0);
        varint(&mut m, u64::from(datatype));
        match datatype {
            1..=3 | 5..=7 => {
                tag(&mut m, 10, 0);
                varint(&mut m, u64::from(value as i64 as u32));
            }
            4 | 8 => {
                tag(&mut m, 11, 0);
                varint(&mut m, value as i64 as u64);
            }
            9 => {
                tag(&mut m, 12, 5);
                m.extend_from_slice(&(value as f32).to_le_bytes());
            }
            11 => {
                tag(&mut m, 14, 0);
                varint(&mut m, u64::from(value != 0.0));
            }
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

    /// A payload with a timestamp (ms), a seq and metrics.
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

    #[test]
    fn payloads_round_trip_with_signed_types() {
        let p = encode::payload(
            1_700_000_000_123,
            7,
            &[
                encode::metric(Some("bdSeq"), None, 8, 3.0),
                encode::metric(Some("Temperature"), Some(1), 10, 21.5),
                encode::metric(Some("Offset"), Some(2), 1, -5.0),
                encode::metric(Some("Counter"), Some(3), 4, -70_000.0),
                encode::metric(Some("Pump"), Some(4), 11, 1.0),
                encode::metric(None, Some(5), 9, 0.5),
            ],
        );
        let d = decode_sparkplug(&p).unwrap();
        assert_eq!(d.timestamp, Some(1_700_000_000_123_000));
        assert_eq!(d.seq, Some(7));
        let values: Vec<_> = d
            .metrics
            .iter()
            .map(|m| (m.name.as_deref(), m.alias, m.value))
            .collect();
        assert_eq!(
            values,
            [
                (Some("bdSeq"), None, Some(3.0)),
                (Some("Temperature"), Some(1), Some(21.5)),
                (Some("Offset"), Some(2), Some(-5.0)),
                (Some("Counter"), Some(3), Some(-70_000.0)),
                (Some("Pump"), Some(4), Some(1.0)),
                (None, Some(5), Some(0.5)),
            ]
        );
    }

    #[test]
    fn the_rebirth_request_reads_back() {
        let d = decode_sparkplug(&rebirth_request(1_700_000_000_000)).unwrap();
        assert_eq!(d.seq, None);
        assert_eq!(d.metrics.len(), 1);
        assert_eq!(d.metrics[0].name.as_deref(), Some("Node Control/Rebirth"));
        assert_eq!(
            (d.metrics[0].datatype, d.metrics[0].value),
            (Some(11), Some(1.0))
        );
    }

    #[test]
    fn malformed_payloads_are_errors_in_words() {
        assert!(decode_sparkplug(&[0x12, 0x05, 0x01])
            .unwrap_err()
            .contains("claims 5 bytes"));
        assert!(decode_sparkplug(&[0x08, 0xff])
            .unwrap_err()
            .contains("ends inside"));
        assert!(decode_sparkplug(&[0x0b])
            .unwrap_err()
            .contains("wire type 3"));
        assert!(decode_sparkplug(&[0x00])
            .unwrap_err()
            .contains("field number 0"));
        assert_eq!(decode_sparkplug(&[]).unwrap(), SparkplugPayload::default());
    }

    /// The stable twin of the `sparkplug` fuzz target.
    #[test]
    fn random_payloads_never_panic() {
        let seed = encode::payload(
            1,
            2,
            &[
                encode::metric(Some("a"), Some(1), 10, 1.0),
                encode::metric(Some("b"), None, 3, -1.0),
            ],
        );
        let mut rng = crate::testing::Rng::new(0xDEAD_BEEF_1234_5678);
        for _ in 0..20_000 {
            let mut p = seed.clone();
            crate::testing::mutate(&mut p, &mut rng, 4);
            if let Ok(d) = decode_sparkplug(&p) {
                assert!(d.metrics.iter().all(|m| m.value.is_none_or(f64::is_finite)));
            }
        }
    }
}
