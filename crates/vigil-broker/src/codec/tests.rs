//! Tests across the codec: framing, truncation at every offset, and a few
//! thousand pseudo-random inputs to every parser.

use bytes::{Bytes, BytesMut};

use super::*;

const V4: MqttVersion = MqttVersion::V311;
const V5: MqttVersion = MqttVersion::V5;

/// Every hand-written valid packet in the module's tests, with the version it
/// is valid for.
fn samples() -> Vec<(&'static [u8], MqttVersion)> {
    vec![
        (connect::tests::V311_MINIMAL, V4),
        (connect::tests::V5_FULL, V5),
        (publish::tests::V4_QOS0, V4),
        (publish::tests::V4_QOS1, V4),
        (publish::tests::V5_QOS1, V5),
        (connack::tests::V5_PROPS, V5),
        (&[0x20, 0x02, 0x01, 0x00], V4),
        (subscribe::tests::V4_TWO, V4),
        (subscribe::tests::V5_ONE, V5),
        (&[0xE0, 0x01, 0x8E], V5),
        (&[0xE0, 0x00], V4),
        (&PINGREQ, V4),
    ]
}

#[test]
fn frame_header_lengths() {
    assert_eq!(parse_frame_header(&[]), Ok(None));
    assert_eq!(parse_frame_header(&[0x30]), Ok(None));
    assert_eq!(parse_frame_header(&[0x30, 0x80]), Ok(None));
    assert_eq!(parse_frame_header(&[0x30, 0x80, 0x80, 0x80]), Ok(None));
    let h = parse_frame_header(&PINGREQ).expect("ok").expect("some");
    assert_eq!(
        h,
        FrameHeader {
            packet_type: packet_type::PINGREQ,
            flags: 0,
            header_len: 2,
            remaining_len: 0
        }
    );
    assert_eq!(h.total_len(), 2);
    let h = parse_frame_header(&[0x3B, 0xC1, 0x02, 0xAA])
        .expect("ok")
        .expect("some");
    assert_eq!(
        (h.packet_type, h.flags, h.header_len, h.remaining_len),
        (3, 0xB, 3, 321)
    );
    let h = parse_frame_header(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F])
        .expect("ok")
        .expect("some");
    assert_eq!((h.header_len, h.remaining_len), (5, MAX_REMAINING_LENGTH));
    // A fifth length byte: an error as soon as the fourth says "more".
    assert_eq!(
        parse_frame_header(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF]),
        Err(CodecError::RemainingLengthTooLong)
    );
    assert_eq!(
        parse_frame_header(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
        Err(CodecError::RemainingLengthTooLong)
    );
    assert_eq!(
        parse_frame_header(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01])
            .unwrap_err()
            .to_string(),
        "the packet's remaining length field runs past 4 bytes, which MQTT does not allow"
    );
    assert_eq!(
        parse_frame_header(&[0x0F, 0x00]),
        Err(CodecError::ReservedPacketType { first: 0x0F })
    );
}

#[test]
fn remaining_length_encoding() {
    let cases: [(usize, &[u8]); 8] = [
        (0, &[0x00]),
        (127, &[0x7F]),
        (128, &[0x80, 0x01]),
        (16_383, &[0xFF, 0x7F]),
        (16_384, &[0x80, 0x80, 0x01]),
        (2_097_151, &[0xFF, 0xFF, 0x7F]),
        (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
        (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
    ];
    for (len, bytes) in cases {
        let mut out = BytesMut::new();
        encode_remaining_length(len, &mut out);
        assert_eq!(&out[..], bytes, "{len}");
        assert_eq!(remaining_length_len(len), bytes.len());
        let mut packet = vec![0x30];
        packet.extend_from_slice(bytes);
        let h = parse_frame_header(&packet).expect("ok").expect("some");
        assert_eq!(h.remaining_len, len);
    }
}

#[test]
fn flag_rules() {
    let check = |first: u8| {
        FrameHeader {
            packet_type: first >> 4,
            flags: first & 0xF,
            header_len: 2,
            remaining_len: 0,
        }
        .validate_flags()
    };
    for ok in [
        0x10, 0x20, 0x30, 0x32, 0x34, 0x3B, 0x3D, 0x31, 0x40, 0x50, 0x62, 0x70, 0x82, 0x90, 0xA2,
        0xB0, 0xC0, 0xD0, 0xE0, 0xF0,
    ] {
        assert!(check(ok).is_ok(), "0x{ok:02X}");
    }
    for bad in [
        0x11, 0x21, 0x36, 0x38, 0x39, 0x60, 0x80, 0x83, 0xA0, 0xC1, 0xE2, 0xF1,
    ] {
        assert!(check(bad).is_err(), "0x{bad:02X}");
    }
    assert_eq!(
        check(0x80).unwrap_err().to_string(),
        "SUBSCRIBE: fixed header flags are 0x0 but MQTT requires 0x2"
    );
    assert_eq!(
        check(0x36).unwrap_err().to_string(),
        "PUBLISH: the QoS is 3, which is not a valid QoS"
    );
}

#[test]
fn next_frame_cuts_without_copying() {
    let mut stream = BytesMut::new();
    stream.extend_from_slice(publish::tests::V4_QOS1);
    stream.extend_from_slice(&PINGREQ);
    stream.extend_from_slice(&publish::tests::V4_QOS0[..4]);
    let start = stream.as_ptr();

    let f = next_frame(&mut stream, 1024).expect("ok").expect("a frame");
    assert_eq!(f.header.packet_type, packet_type::PUBLISH);
    assert_eq!(&f.bytes[..], publish::tests::V4_QOS1);
    assert_eq!(
        f.bytes.as_ptr(),
        start,
        "the frame is the read buffer, not a copy"
    );
    let p = Publish::parse(f.header.flags, f.body(), V4).expect("parses");
    assert_eq!(&p.payload[..], b"hi");

    let f = next_frame(&mut stream, 1024).expect("ok").expect("a frame");
    assert_eq!(&f.bytes[..], &PINGREQ);
    assert!(f.body().is_empty());

    // Half a packet: nothing is consumed.
    assert_eq!(next_frame(&mut stream, 1024), Ok(None));
    assert_eq!(stream.len(), 4);
    stream.extend_from_slice(&publish::tests::V4_QOS0[4..]);
    let f = next_frame(&mut stream, 1024).expect("ok").expect("a frame");
    assert_eq!(&f.bytes[..], publish::tests::V4_QOS0);
    assert!(stream.is_empty());

    // Too large: refused from the header alone.
    let mut big = BytesMut::from(&[0x30, 0x80, 0x80, 0x01][..]);
    assert_eq!(
        next_frame(&mut big, 1024).unwrap_err().to_string(),
        "PUBLISH of 16388 bytes is larger than the maximum of 1024 bytes"
    );
}

/// Where a body cut short still makes a valid (different) packet: the end of
/// a PUBLISH payload, a SUBSCRIBE filter boundary, a DISCONNECT's optional
/// parts. Everything else must be an error.
#[test]
fn truncated_at_every_offset() {
    for (packet, version) in samples() {
        let h = parse_frame_header(packet).expect("ok").expect("some");
        assert_eq!(h.total_len(), packet.len());
        for cut in 0..packet.len() {
            let prefix = &packet[..cut];
            // Framing never yields a frame from a prefix.
            let mut stream = BytesMut::from(prefix);
            assert_eq!(
                next_frame(&mut stream, usize::MAX),
                Ok(None),
                "{packet:02X?} cut at {cut}"
            );
            assert_eq!(stream.len(), cut, "nothing consumed");
            let _ = fuzzing::exercise(prefix);

            let Some(body) = packet.get(h.header_len..cut) else {
                continue;
            };
            let body_bytes = Bytes::copy_from_slice(body);
            let result: Result<(), CodecError> = match h.packet_type {
                packet_type::CONNECT => Connect::parse(body_bytes).map(drop),
                packet_type::CONNACK => ConnAck::parse(body, version).map(drop),
                packet_type::PUBLISH => {
                    // Only a shorter payload is still valid.
                    let r = Publish::parse(h.flags, body_bytes, version);
                    let full = Publish::parse(
                        h.flags,
                        Bytes::copy_from_slice(&packet[h.header_len..]),
                        version,
                    )
                    .expect("the whole packet parses");
                    let payload_start = packet.len() - full.payload.len();
                    assert_eq!(
                        r.is_ok(),
                        cut >= payload_start,
                        "{packet:02X?} cut at {cut}"
                    );
                    continue;
                }
                packet_type::SUBSCRIBE => {
                    let r = Subscribe::parse(h.flags, body_bytes, version);
                    if let Ok(s) = &r {
                        let full = Subscribe::parse(
                            h.flags,
                            Bytes::copy_from_slice(&packet[h.header_len..]),
                            version,
                        )
                        .expect("the whole packet parses");
                        assert!(s.filters.len() < full.filters.len());
                    }
                    continue;
                }
                packet_type::DISCONNECT => {
                    // E0 01 8E cut to E0 01 is a valid empty body.
                    assert!(disconnect_reason(body, version).is_ok());
                    continue;
                }
                _ => continue,
            };
            assert!(result.is_err(), "{packet:02X?} cut at {cut} parsed");
        }
        assert!(fuzzing::exercise(packet) > 0, "{packet:02X?} parses");
    }
}

/// A tiny deterministic generator (xorshift64*), since proptest is not
/// available.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

/// Thousands of inputs to every parser, both versions: pure noise, noise
/// behind a plausible fixed header, and valid packets with a few bytes
/// changed, inserted or removed (which reach far deeper than noise). The
/// same function the fuzz target runs; it asserts no panic and that whatever
/// parses re-encodes to the same thing.
#[test]
fn random_inputs_never_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let samples = samples();
    let mut parsed_somewhere = 0usize;
    for round in 0..20_000 {
        let input: Vec<u8> = match round % 4 {
            0 => (0..rng.below(64)).map(|_| rng.byte()).collect(),
            1 => {
                let len = rng.below(48);
                let mut v = vec![rng.byte() | 0x10];
                let mut enc = BytesMut::new();
                encode_remaining_length(len, &mut enc);
                v.extend_from_slice(&enc);
                v.extend((0..len).map(|_| rng.byte()));
                v
            }
            _ => {
                let (packet, _) = samples[rng.below(samples.len())];
                let mut v = packet.to_vec();
                for _ in 0..=rng.below(3) {
                    if v.is_empty() {
                        break;
                    }
                    let at = rng.below(v.len());
                    match rng.below(4) {
                        0 => v[at] = rng.byte(),
                        1 => v[at] ^= 1 << rng.below(8),
                        2 => v.insert(at, rng.byte()),
                        _ => {
                            v.remove(at);
                        }
                    }
                }
                v
            }
        };
        // Count how often the inputs still parse somewhere: a sign the test
        // reaches past the first checks.
        if fuzzing::exercise(&input) > 0 {
            parsed_somewhere += 1;
        }
    }
    eprintln!("{parsed_somewhere} of 20000 random inputs parsed somewhere");
    assert!(
        parsed_somewhere > 3_000,
        "only {parsed_somewhere} inputs parsed; the generator is too noisy"
    );
}

#[test]
fn error_messages_are_sentences() {
    let e = Connect::parse(Bytes::from_static(&[
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x01, 0x2C,
    ]))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "CONNECT: client id length 300 runs past the end of the packet (only 0 bytes left)"
    );
    assert_eq!(e.reason_code(), 0x81);
    assert_eq!(CodecError::UnsupportedProtocolLevel(9).reason_code(), 0x84);
}

#[test]
fn unsubscribe_filters_are_read_in_order_and_bad_ones_are_refused() {
    // packet id 7, (v5: properties: one user property a=b), filters "a/#", "x"
    let v4 = [0x00, 0x07, 0x00, 0x03, b'a', b'/', b'#', 0x00, 0x01, b'x'];
    assert_eq!(
        unsubscribe_filters(0b0010, &v4, V4).unwrap(),
        vec!["a/#".to_owned(), "x".to_owned()]
    );
    let mut v5 = vec![0x00, 0x07, 0x07, 0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b'];
    v5.extend_from_slice(&v4[2..]);
    assert_eq!(unsubscribe_filters(0b0010, &v5, V5).unwrap().len(), 2);
    let refused = |body: &[u8], version, flags| unsubscribe_filters(flags, body, version).is_err();
    assert!(refused(&v4, V4, 0), "reserved flags must be 0010");
    assert!(refused(&[0x00, 0x07], V4, 0b0010), "no filter");
    assert!(
        refused(&[0x00, 0x00, 0x00, 0x01, b'x'], V4, 0b0010),
        "packet id 0"
    );
    assert!(
        refused(&[0x00, 0x07, 0x00, 0x00], V4, 0b0010),
        "an empty filter"
    );
    // v5 with a property UNSUBSCRIBE may not have (subscription identifier).
    assert!(refused(
        &[0x00, 0x07, 0x02, 0x0B, 0x01, 0x00, 0x01, b'x'],
        V5,
        0b0010
    ));
}

#[test]
fn a_user_property_is_added_and_taken_off_leaving_the_others() {
    let mine = with_user_property(&[], "k", "v");
    let both = with_user_property(&with_user_property(&mine, "origin", "me"), "k2", "v2");
    let kept = without_user_property(&both, "origin", "PUBLISH").unwrap();
    assert_eq!(kept, with_user_property(&mine, "k2", "v2"));
    let names: Vec<_> = Properties::new(&kept, "PUBLISH")
        .map(|p| match p.unwrap().value {
            PropertyValue::Utf8Pair(name, _) => name.to_owned(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names, ["k", "k2"]);
}

#[test]
fn a_311_unsubscribe_in_mqtt5_words_parses_as_mqtt5() {
    let body = [0x00, 0x07, 0x00, 0x01, b'x'];
    let packet = with_empty_properties(0xA2, &body, 2);
    assert_eq!(
        &packet[..],
        &[0xA2, 0x06, 0x00, 0x07, 0x00, 0x00, 0x01, b'x']
    );
    assert_eq!(
        unsubscribe_filters(0b0010, &packet[2..], V5).unwrap(),
        ["x"]
    );
}

#[test]
fn mqtt5_connack_codes_have_their_311_counterparts() {
    assert_eq!(v311_connack_code(0x00), 0x00);
    assert_eq!(v311_connack_code(0x86), 0x04, "bad user name or password");
    assert_eq!(v311_connack_code(0x87), 0x05, "not authorized");
    assert_eq!(v311_connack_code(0x85), 0x02, "identifier rejected");
    assert_eq!(v311_connack_code(0x97), 0x03, "anything else: unavailable");
}
