//! PUBLISH (MQTT 3.1.1 section 3.3, MQTT 5 section 3.3): the packet the front
//! door sees most, parsed to observe it and then forwarded as it came.

use bytes::{BufMut, Bytes, BytesMut};
use vigil_core::{MqttVersion, UserProperty};

use super::properties::{property_id as id, user_property, Collector, PropertyValue as V};
use super::wire::{self, Reader};
use super::{is_v5, CodecError};

const PACKET: &str = "PUBLISH";

/// A PUBLISH packet, parsed. The payload and raw properties share memory
/// with the packet; only the topic (and any MQTT 5 string properties) are
/// copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// A redelivery of an earlier attempt (QoS 1 and 2 only).
    pub dup: bool,
    /// 0, 1 or 2.
    pub qos: u8,
    /// The publisher asks the broker to retain the message.
    pub retain: bool,
    /// The topic name. Empty only in MQTT 5 when a topic alias stands for it
    /// (see [`PublishProperties::topic_alias`]).
    pub topic: String,
    /// Packet identifier (never 0), present for QoS 1 and 2.
    pub packet_id: Option<u16>,
    /// The payload, every byte of it.
    pub payload: Bytes,
    /// MQTT 5 properties, parsed (default before MQTT 5).
    pub properties: PublishProperties,
    /// MQTT 5 properties, raw, without their length prefix; this is what
    /// [`Publish::encode`] writes (`properties` is a read-only view).
    pub properties_raw: Bytes,
}

/// The MQTT 5 PUBLISH properties (section 3.3.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// 0: the payload is unspecified bytes; 1: UTF-8 (not checked here).
    pub payload_format_indicator: Option<u8>,
    /// Seconds the message lives.
    pub message_expiry_interval: Option<u32>,
    /// A number standing for the topic on this connection (never 0).
    pub topic_alias: Option<u16>,
    /// Topic for a response.
    pub response_topic: Option<String>,
    /// Correlation data for a response.
    pub correlation_data: Option<Bytes>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Identifiers of the subscriptions that matched (server to client only;
    /// never 0).
    pub subscription_identifiers: Vec<u32>,
    /// MIME type of the payload.
    pub content_type: Option<String>,
}

/// Splits PUBLISH flags into DUP, QoS and RETAIN, rejecting QoS 3 and DUP on
/// QoS 0 (MQTT-3.3.1-2 in both versions: "The DUP flag MUST be set to 0 for
/// all QoS 0 messages").
pub(crate) fn check_flags(flags: u8) -> Result<(bool, u8, bool), CodecError> {
    let dup = flags & 0b1000 != 0;
    let qos = (flags >> 1) & 0b11;
    let retain = flags & 0b0001 != 0;
    if qos == 3 {
        return Err(CodecError::InvalidQos {
            packet: PACKET,
            field: "QoS",
        });
    }
    if dup && qos == 0 {
        return Err(CodecError::Malformed {
            packet: PACKET,
            reason: "the DUP flag is set on a QoS 0 message",
        });
    }
    Ok((dup, qos, retain))
}

impl Publish {
    /// Parses a PUBLISH from the low nibble of its first byte (`flags`; higher
    /// bits are ignored) and `body`, the packet after its fixed header.
    ///
    /// Errors: QoS 3; DUP on QoS 0; a topic that is not valid UTF-8, holds
    /// U+0000 or a wildcard (`+`, `#`); an empty topic (allowed in MQTT 5
    /// only with a topic alias); packet identifier 0; any MQTT 5 property
    /// error (see [`PublishProperties`]).
    ///
    /// Subscription identifiers are accepted in both directions (MQTT allows
    /// them only from server to client). The payload is not checked against
    /// a payload format indicator of 1.
    pub fn parse(flags: u8, body: Bytes, version: MqttVersion) -> Result<Publish, CodecError> {
        let (dup, qos, retain) = check_flags(flags & 0x0F)?;
        let mut r = Reader::new(&body, PACKET, "packet");
        let topic = r.utf8("topic name")?;
        if wire::has_wildcard(topic) {
            return Err(protocol_error(
                "the topic name contains a wildcard (+ or #)",
            ));
        }
        let packet_id = if qos > 0 {
            match r.u16("packet identifier")? {
                0 => return Err(malformed("packet identifier 0 is not allowed")),
                id => Some(id),
            }
        } else {
            None
        };
        let (properties, properties_raw) = if is_v5(version) {
            let raw = r.property_block("properties")?;
            (
                PublishProperties::parse(raw, &body)?,
                wire::sub_bytes(&body, raw),
            )
        } else {
            (PublishProperties::default(), Bytes::new())
        };
        if topic.is_empty() {
            if !is_v5(version) {
                return Err(malformed("the topic name is empty"));
            }
            if properties.topic_alias.is_none() {
                return Err(protocol_error(
                    "the topic name is empty and there is no topic alias",
                ));
            }
        }
        let payload = wire::sub_bytes(&body, r.rest());
        Ok(Publish {
            dup,
            qos,
            retain,
            topic: topic.to_owned(),
            packet_id,
            payload,
            properties,
            properties_raw,
        })
    }

    /// Bytes after the fixed header that [`Publish::encode`] writes.
    pub fn remaining_len(&self, version: MqttVersion) -> usize {
        let mut len = wire::str_len(&self.topic) + self.payload.len();
        if self.qos > 0 {
            len += 2;
        }
        if is_v5(version) {
            len += wire::block_len(&self.properties_raw);
        }
        len
    }

    /// Appends the whole PUBLISH packet, fixed header included:
    /// `encode(parse(x)) == x` for a well-formed `x`.
    ///
    /// Writes `properties_raw` (MQTT 5 only), not `properties`. The QoS is
    /// masked to 2 bits; a QoS 1/2 message without a packet identifier gets 0
    /// (a caller bug either way).
    pub fn encode(&self, version: MqttVersion, out: &mut BytesMut) {
        let qos = self.qos & 0b11;
        let first = 0x30 | (u8::from(self.dup) << 3) | (qos << 1) | u8::from(self.retain);
        super::put_fixed_header(out, first, self.remaining_len(version));
        wire::put_str(out, &self.topic);
        if qos > 0 {
            out.put_u16(self.packet_id.unwrap_or(0));
        }
        if is_v5(version) {
            wire::put_block(out, &self.properties_raw);
        }
        out.put_slice(&self.payload);
    }

    /// Appends the whole PUBLISH packet in MQTT 5 with a property block
    /// made of `properties` (encoded properties, joined) in place of its own.
    pub fn encode_v5_with(&self, properties: &[&[u8]], out: &mut BytesMut) {
        let qos = self.qos & 0b11;
        let first = 0x30 | (u8::from(self.dup) << 3) | (qos << 1) | u8::from(self.retain);
        let block: usize = properties.iter().map(|p| p.len()).sum();
        let len = wire::str_len(&self.topic)
            + if qos > 0 { 2 } else { 0 }
            + super::remaining_length_len(block)
            + block
            + self.payload.len();
        out.reserve(len + 5);
        super::put_fixed_header(out, first, len);
        wire::put_str(out, &self.topic);
        if qos > 0 {
            out.put_u16(self.packet_id.unwrap_or(0));
        }
        super::encode_remaining_length(block, out);
        for p in properties {
            out.put_slice(p);
        }
        out.put_slice(&self.payload);
    }
}

impl PublishProperties {
    /// Collects a PUBLISH property block. `src` is the buffer `raw` lies in,
    /// for zero-copy correlation data.
    fn parse(raw: &[u8], src: &Bytes) -> Result<PublishProperties, CodecError> {
        let c = Collector {
            packet: PACKET,
            scope: "properties",
        };
        let mut out = PublishProperties::default();
        for p in c.iter(raw) {
            let p = p?;
            match (p.id, p.value) {
                (id::PAYLOAD_FORMAT_INDICATOR, V::Byte(v)) => {
                    c.flag(&p, v)?;
                    c.once(&mut out.payload_format_indicator, v, &p)?
                }
                (id::MESSAGE_EXPIRY_INTERVAL, V::FourByteInt(v)) => {
                    c.once(&mut out.message_expiry_interval, v, &p)?
                }
                (id::TOPIC_ALIAS, V::TwoByteInt(v)) => {
                    c.once(&mut out.topic_alias, c.nonzero(&p, v)?, &p)?
                }
                (id::RESPONSE_TOPIC, V::Utf8(v)) => {
                    if wire::has_wildcard(v) {
                        return Err(protocol_error(
                            "the response topic contains a wildcard (+ or #)",
                        ));
                    }
                    c.once(&mut out.response_topic, v.to_owned(), &p)?
                }
                (id::CORRELATION_DATA, V::Binary(v)) => {
                    c.once(&mut out.correlation_data, wire::sub_bytes(src, v), &p)?
                }
                (id::USER_PROPERTY, V::Utf8Pair(k, v)) => {
                    out.user_properties.push(user_property(k, v))
                }
                (id::SUBSCRIPTION_IDENTIFIER, V::VarInt(v)) => {
                    out.subscription_identifiers.push(c.nonzero(&p, v)?)
                }
                (id::CONTENT_TYPE, V::Utf8(v)) => {
                    c.once(&mut out.content_type, v.to_owned(), &p)?
                }
                _ => return Err(c.not_allowed(&p)),
            }
        }
        Ok(out)
    }
}

fn malformed(reason: &'static str) -> CodecError {
    CodecError::Malformed {
        packet: PACKET,
        reason,
    }
}

fn protocol_error(reason: &'static str) -> CodecError {
    CodecError::ProtocolError {
        packet: PACKET,
        reason,
    }
}

/// The packet id of a QoS 1 or 2 PUBLISH, read from its body (after the
/// topic) without parsing the rest; `None` if the body is too short.
pub fn publish_packet_id(body: &[u8]) -> Option<u16> {
    let topic_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let id = body.get(2 + topic_len..4 + topic_len)?;
    Some(u16::from_be_bytes([id[0], id[1]]))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::codec::{parse_frame_header, FrameHeader};

    const V4: MqttVersion = MqttVersion::V311;
    const V5: MqttVersion = MqttVersion::V5;

    fn parse_whole(packet: &[u8], version: MqttVersion) -> Result<Publish, CodecError> {
        let h: FrameHeader = parse_frame_header(packet)
            .expect("header")
            .expect("complete header");
        assert_eq!(h.packet_type, 3);
        assert_eq!(
            h.total_len(),
            packet.len(),
            "remaining length matches the bytes"
        );
        Publish::parse(
            h.flags,
            Bytes::copy_from_slice(&packet[h.header_len..]),
            version,
        )
    }

    fn round_trip(packet: &[u8], version: MqttVersion) -> Publish {
        let p = parse_whole(packet, version).expect("parses");
        let mut out = BytesMut::new();
        p.encode(version, &mut out);
        assert_eq!(&out[..], packet, "encode(parse(x)) == x");
        p
    }

    /// 3.1.1, QoS 0, topic "a/b", payload "hi".
    pub(crate) const V4_QOS0: &[u8] = &[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
    /// 3.1.1, QoS 1, packet id 10.
    pub(crate) const V4_QOS1: &[u8] = &[
        0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i',
    ];
    /// 3.1.1, QoS 2, DUP and RETAIN, packet id 0x1234, empty payload.
    const V4_QOS2: &[u8] = &[0x3D, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0x12, 0x34];
    /// 5, QoS 1, packet id 1, user property unit=C, content type
    /// application/json, payload "21.5".
    pub(crate) const V5_QOS1: &[u8] = &[
        0x32, 0x29, // PUBLISH QoS 1, remaining length 41
        0x00, 0x03, b'a', b'/', b'b', // topic
        0x00, 0x01, // packet id
        0x1D, // properties: 29 bytes
        0x26, 0x00, 0x04, b'u', b'n', b'i', b't', 0x00, 0x01, b'C', // user property
        0x03, 0x00, 0x10, b'a', b'p', b'p', b'l', b'i', b'c', b'a', b't', b'i', b'o', b'n', b'/',
        b'j', b's', b'o', b'n', // content type
        b'2', b'1', b'.', b'5', // payload
    ];
    /// 5, QoS 0, no properties.
    const V5_QOS0: &[u8] = &[0x30, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0x00, b'h', b'i'];
    /// 5, QoS 2, empty topic with topic alias 2, packet id 7, payload "x".
    const V5_QOS2_ALIAS: &[u8] = &[
        0x34, 0x09, 0x00, 0x00, 0x00, 0x07, 0x03, 0x23, 0x00, 0x02, b'x',
    ];

    #[test]
    fn v4_qos_0_1_2() {
        let p = round_trip(V4_QOS0, V4);
        assert_eq!(
            (p.dup, p.qos, p.retain, p.packet_id),
            (false, 0, false, None)
        );
        assert_eq!(p.topic, "a/b");
        assert_eq!(&p.payload[..], b"hi");
        assert!(p.properties_raw.is_empty());

        let p = round_trip(V4_QOS1, V4);
        assert_eq!((p.qos, p.packet_id), (1, Some(10)));
        assert_eq!(&p.payload[..], b"hi");

        let p = round_trip(V4_QOS2, V4);
        assert_eq!(
            (p.dup, p.qos, p.retain, p.packet_id),
            (true, 2, true, Some(0x1234))
        );
        assert!(p.payload.is_empty());
    }

    #[test]
    fn v5_with_user_properties_and_content_type() {
        let p = round_trip(V5_QOS1, V5);
        assert_eq!((p.qos, p.packet_id), (1, Some(1)));
        assert_eq!(p.topic, "a/b");
        assert_eq!(&p.payload[..], b"21.5");
        assert_eq!(
            p.properties.user_properties,
            vec![UserProperty {
                name: "unit".into(),
                value: "C".into()
            }]
        );
        assert_eq!(
            p.properties.content_type.as_deref(),
            Some("application/json")
        );
        assert_eq!(p.properties_raw.len(), 29);

        let p = round_trip(V5_QOS0, V5);
        assert_eq!(p.properties, PublishProperties::default());
        assert_eq!(&p.payload[..], b"hi");

        let p = round_trip(V5_QOS2_ALIAS, V5);
        assert_eq!(
            (p.topic.as_str(), p.properties.topic_alias, p.packet_id),
            ("", Some(2), Some(7))
        );
    }

    #[test]
    fn same_bytes_differ_by_version() {
        // Read as 3.1.1, the MQTT 5 property length byte is payload.
        let p = parse_whole(V5_QOS0, V4).expect("parses as 3.1.1");
        assert_eq!(&p.payload[..], b"\0hi");
    }

    #[test]
    fn flag_errors() {
        let e = Publish::parse(0b0110, Bytes::from_static(b"\x00\x01a\x00\x01"), V4).unwrap_err();
        assert_eq!(
            e.to_string(),
            "PUBLISH: the QoS is 3, which is not a valid QoS"
        );
        let e = Publish::parse(0b1000, Bytes::from_static(b"\x00\x01a"), V4).unwrap_err();
        assert_eq!(
            e.to_string(),
            "PUBLISH: the DUP flag is set on a QoS 0 message"
        );
        let h = parse_frame_header(&[0x36, 0x00])
            .expect("ok")
            .expect("some");
        assert!(h.validate_flags().is_err());
    }

    #[test]
    fn topic_errors() {
        let e = Publish::parse(0, Bytes::from_static(b"\x00\x02\xC3\x28"), V4).unwrap_err();
        assert_eq!(e.to_string(), "PUBLISH: the topic name is not valid UTF-8");
        let e = Publish::parse(0, Bytes::from_static(b"\x00\x02a\x00"), V4).unwrap_err();
        assert_eq!(
            e.to_string(),
            "PUBLISH: the topic name contains the null character U+0000"
        );
        let e = Publish::parse(0, Bytes::from_static(b"\x00\x03a/#"), V4).unwrap_err();
        assert_eq!(
            e.to_string(),
            "PUBLISH: the topic name contains a wildcard (+ or #)"
        );
        let e = Publish::parse(0, Bytes::from_static(b"\x00\x00hi"), V4).unwrap_err();
        assert_eq!(e.to_string(), "PUBLISH: the topic name is empty");
        let e = Publish::parse(0, Bytes::from_static(b"\x00\x00\x00hi"), V5).unwrap_err();
        assert_eq!(
            e.to_string(),
            "PUBLISH: the topic name is empty and there is no topic alias"
        );
        let e = Publish::parse(0b0010, Bytes::from_static(b"\x00\x01a\x00\x00"), V4).unwrap_err();
        assert_eq!(e.to_string(), "PUBLISH: packet identifier 0 is not allowed");
        let e = Publish::parse(0b0010, Bytes::from_static(b"\x00\x01a\x00"), V4).unwrap_err();
        assert_eq!(
            e.to_string(),
            "PUBLISH: ran out of bytes reading the packet identifier"
        );
    }

    #[test]
    fn property_errors() {
        let with_props = |props: &[u8]| {
            let mut b = vec![0x00, 0x01, b't'];
            b.push(u8::try_from(props.len()).expect("short"));
            b.extend_from_slice(props);
            Publish::parse(0, Bytes::from(b), V5)
        };
        let ok = with_props(&[
            0x01, 0x01, 0x02, 0, 0, 0, 9, 0x0B, 0x05, 0x0B, 0x80, 0x01, 0x09, 0x00, 0x01, 0xAA,
        ])
        .expect("parses");
        assert_eq!(ok.properties.payload_format_indicator, Some(1));
        assert_eq!(ok.properties.message_expiry_interval, Some(9));
        assert_eq!(ok.properties.subscription_identifiers, vec![5, 128]);
        assert_eq!(ok.properties.correlation_data.as_deref(), Some(&[0xAA][..]));
        assert!(matches!(
            with_props(&[0x23, 0x00, 0x00]),
            Err(CodecError::InvalidPropertyValue { value: 0, .. })
        ));
        assert!(matches!(
            with_props(&[0x01, 0x02]),
            Err(CodecError::InvalidPropertyValue { value: 2, .. })
        ));
        assert!(matches!(
            with_props(&[0x0B, 0x00]),
            Err(CodecError::InvalidPropertyValue { value: 0, .. })
        ));
        assert!(matches!(
            with_props(&[0x03, 0, 0, 0x03, 0, 0]),
            Err(CodecError::DuplicateProperty { .. })
        ));
        assert!(matches!(
            with_props(&[0x11, 0, 0, 0, 0]),
            Err(CodecError::PropertyNotAllowed { .. })
        ));
        assert!(matches!(
            with_props(&[0x08, 0, 1, b'+']),
            Err(CodecError::ProtocolError { .. })
        ));
        assert_eq!(
            with_props(&[0x0B, 0xFF, 0xFF, 0xFF, 0xFF])
                .unwrap_err()
                .to_string(),
            "PUBLISH: the subscription identifier is a variable byte integer longer than 4 bytes"
        );
        assert_eq!(
            with_props(&[0x80, 0x80, 0x80, 0x80])
                .unwrap_err()
                .to_string(),
            "PUBLISH: the property identifier is a variable byte integer longer than 4 bytes"
        );
        assert_eq!(
            with_props(&[0x80, 0x01]).unwrap_err().to_string(),
            "PUBLISH: unknown property identifier 0x80 in the properties"
        );
    }
}
