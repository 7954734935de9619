//! Support for the fuzz target (`fuzz/fuzz_targets/packets.rs`) and for the
//! random-input test that covers the same ground on stable Rust.
//!
//! Not part of the codec's API: hidden from the docs, stable only in that
//! both callers use it.

use bytes::{Bytes, BytesMut};
use vigil_core::MqttVersion;

use super::{
    disconnect_reason, next_frame, parse_frame_header, property_id, publish_packet_id,
    split_property_block, unsubscribe_filters, valid_topic_filter, with_user_property,
    without_property, without_user_property, ConnAck, Connect, Disconnect, FrameHeader, Properties,
    Publish, SubAck, Subscribe,
};

const VERSIONS: [MqttVersion; 2] = [MqttVersion::V311, MqttVersion::V5];

/// Runs every parser of the codec on `data`, for both MQTT versions:
///
/// - as a byte stream, cut into frames with [`next_frame`], each frame's body
///   given to every parser;
/// - as one packet body (the first byte supplying the flags), so the parsers
///   see inputs a frame header would not have let through.
///
/// Whatever parses is encoded again and must parse to the same value (and,
/// where no variable byte integer is involved, to the same bytes). It panics
/// only when the codec is wrong: parsers must return errors, not panic.
///
/// Returns how many parses succeeded, so a test can tell that its inputs
/// reach past the first checks.
pub fn exercise(data: &[u8]) -> usize {
    let mut parsed = 0;
    // Framing never panics and agrees with parse_frame_header.
    let header = parse_frame_header(data);
    if let Ok(Some(h)) = header {
        assert!((1..=15).contains(&h.packet_type));
        assert!((2..=5).contains(&h.header_len));
        assert!(h.remaining_len <= super::MAX_REMAINING_LENGTH);
        let _ = h.validate_flags();
        let _ = h.name();
    }
    let mut stream = BytesMut::from(data);
    while let Ok(Some(frame)) = next_frame(&mut stream, usize::MAX) {
        assert_eq!(frame.bytes.len(), frame.header.total_len());
        let _ = frame.header.validate_flags();
        parsed += every_parser(frame.header.flags, frame.body());
    }

    if let Some((&first, rest)) = data.split_first() {
        parsed += every_parser(first & 0x0F, Bytes::copy_from_slice(rest));
    }
    parsed
}

fn every_parser(flags: u8, body: Bytes) -> usize {
    let mut parsed = 0;
    if let Ok(c) = Connect::parse(body.clone()) {
        check_connect(&c, &body);
        parsed += 1;
    }
    for version in VERSIONS {
        if let Ok(p) = Publish::parse(flags, body.clone(), version) {
            check_publish(&p, version, &body);
            parsed += 1;
        }
        if let Ok(c) = ConnAck::parse(&body, version) {
            check_connack(&c, version, &body);
            parsed += 1;
        }
        if let Ok(d) = Disconnect::parse(&body, version) {
            assert!(d.properties_v5().is_ok());
            assert_eq!(disconnect_reason(&body, version), Ok(d.reason_code));
            parsed += 1;
        }
        // A SUBACK (merged with refusals by the front door) parses back to
        // itself once encoded.
        if let Ok(a) = SubAck::parse(&body, version) {
            let whole = a.encode(version);
            let h = parse_frame_header(&whole)
                .expect("an encoded SUBACK frames")
                .expect("whole");
            assert_eq!(
                SubAck::parse(&whole[h.header_len..], version),
                Ok(a.clone())
            );
            parsed += 1;
        }
        // SUBSCRIBE with the flags given, and with the only valid ones.
        let _ = Subscribe::parse(flags, body.clone(), version);
        if let Ok(s) = Subscribe::parse(0b0010, body.clone(), version) {
            check_subscribe(&s, version, &body);
            parsed += 1;
        }
    }
    // The property reader on its own, on the body and on a length-prefixed
    // block at its start.
    for p in Properties::new(&body, "FUZZ") {
        match p {
            Ok(p) => {
                let _ = p.name();
            }
            Err(e) => {
                let _ = e.to_string();
                let _ = e.reason_code();
            }
        }
    }
    if let Ok((block, rest)) = split_property_block(&body, "FUZZ") {
        assert!(
            block.len() + rest.len() < body.len(),
            "the length prefix takes at least one byte"
        );
        Properties::new(block, "FUZZ").for_each(drop);
        if let Ok(kept) = without_property(block, property_id::TOPIC_ALIAS, "FUZZ") {
            assert!(
                kept.len() <= block.len(),
                "dropping a property never adds bytes"
            );
        }
        if let Ok(kept) = without_user_property(block, "origin", "FUZZ") {
            assert!(kept.len() <= block.len());
            // Adding the property and taking it off again gives the same.
            let marked = with_user_property(block, "origin", "x");
            assert_eq!(
                without_user_property(&marked, "origin", "FUZZ").ok(),
                Some(kept)
            );
        }
    }
    for version in VERSIONS {
        if let Ok(filters) = unsubscribe_filters(flags, &body, version) {
            assert!(filters.iter().all(|f| !f.is_empty()) && !filters.is_empty());
            parsed += 1;
        }
    }
    if let Ok(s) = std::str::from_utf8(&body) {
        let _ = valid_topic_filter(s);
    }
    parsed
}

/// The header of an encoded packet, checked against its length.
fn header_of(encoded: &[u8], packet_type: u8) -> FrameHeader {
    let h = parse_frame_header(encoded)
        .ok()
        .flatten()
        .expect("an encoded packet has a header");
    assert_eq!(h.packet_type, packet_type);
    assert_eq!(
        h.total_len(),
        encoded.len(),
        "the remaining length matches what was written"
    );
    h
}

fn body_of(encoded: &BytesMut, h: &FrameHeader) -> Bytes {
    Bytes::copy_from_slice(encoded.get(h.header_len..).unwrap_or_default())
}

fn check_connect(c: &Connect, body: &Bytes) {
    assert!(c.properties_v5().is_ok(), "parse checked the properties");
    assert!(
        c.will_properties_v5().is_ok(),
        "parse checked the will properties"
    );
    let mut out = BytesMut::new();
    c.encode(&mut out);
    let h = header_of(&out, 1);
    assert_eq!(h.flags, 0);
    let again = Connect::parse(body_of(&out, &h)).expect("an encoded CONNECT parses");
    assert_eq!(&again, c);
    if c.level < 5 {
        assert_eq!(
            body_of(&out, &h),
            body,
            "without varints, encode(parse(x)) == x"
        );
    }
}

fn check_publish(p: &Publish, version: MqttVersion, body: &Bytes) {
    // The downstream path reads the packet id without parsing: it must
    // agree with the parser.
    assert_eq!(publish_packet_id(body).filter(|_| p.qos > 0), p.packet_id);
    let mut out = BytesMut::new();
    p.encode(version, &mut out);
    let h = header_of(&out, 3);
    assert!(h.validate_flags().is_ok());
    let again =
        Publish::parse(h.flags, body_of(&out, &h), version).expect("an encoded PUBLISH parses");
    assert_eq!(&again, p);
    if version == MqttVersion::V311 {
        assert_eq!(body_of(&out, &h), body);
    }
}

fn check_connack(c: &ConnAck, version: MqttVersion, body: &Bytes) {
    assert!(c.properties_v5().is_ok());
    let mut out = BytesMut::new();
    c.encode(version, &mut out);
    let h = header_of(&out, 2);
    let again = ConnAck::parse(&body_of(&out, &h), version).expect("an encoded CONNACK parses");
    assert_eq!(&again, c);
    if version == MqttVersion::V311 {
        assert_eq!(body_of(&out, &h), body);
    }
}

fn check_subscribe(s: &Subscribe, version: MqttVersion, body: &Bytes) {
    assert!(s.properties_v5().is_ok());
    assert!(!s.filters.is_empty());
    let mut out = BytesMut::new();
    s.encode(version, &mut out);
    let h = header_of(&out, 8);
    assert!(h.validate_flags().is_ok());
    let again =
        Subscribe::parse(h.flags, body_of(&out, &h), version).expect("an encoded SUBSCRIBE parses");
    assert_eq!(&again, s);
    if version == MqttVersion::V311 {
        assert_eq!(body_of(&out, &h), body);
    }
}
