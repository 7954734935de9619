//! CONNACK (MQTT 3.1.1 section 3.2, MQTT 5 section 3.2): read from the router
//! to learn whether a client got in, and written by the front door to refuse
//! one.

use bytes::{BufMut, Bytes, BytesMut};
use vigil_core::{MqttVersion, UserProperty};

use super::properties::{property_id as id, user_property, Collector, PropertyValue as V};
use super::wire::{self, Reader};
use super::{is_v5, CodecError};

const PACKET: &str = "CONNACK";

/// A CONNACK packet, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// The server resumed a session it kept for this client id.
    pub session_present: bool,
    /// The 3.1.1 return code or MQTT 5 reason code: 0 is success.
    pub code: u8,
    /// MQTT 5 properties, raw, without their length prefix; empty before
    /// MQTT 5. See [`ConnAck::properties_v5`].
    pub properties_raw: Bytes,
}

/// The MQTT 5 CONNACK properties (section 3.2.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAckProperties {
    /// Seconds the server keeps the session (overrides the client's).
    pub session_expiry_interval: Option<u32>,
    /// How many QoS 1/2 messages the server takes at once (never 0).
    pub receive_maximum: Option<u16>,
    /// Highest QoS the server supports (0 or 1; absent = 2).
    pub maximum_qos: Option<u8>,
    /// Whether the server supports retained messages.
    pub retain_available: Option<bool>,
    /// The largest packet the server accepts (never 0).
    pub maximum_packet_size: Option<u32>,
    /// The client id the server assigned (the client sent an empty one).
    pub assigned_client_identifier: Option<String>,
    /// How many topic aliases the server accepts.
    pub topic_alias_maximum: Option<u16>,
    /// Human-readable diagnostics.
    pub reason_string: Option<String>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Whether the server supports wildcard subscriptions.
    pub wildcard_subscription_available: Option<bool>,
    /// Whether the server supports subscription identifiers.
    pub subscription_identifiers_available: Option<bool>,
    /// Whether the server supports shared subscriptions.
    pub shared_subscription_available: Option<bool>,
    /// The keepalive the client must use instead of its own, in seconds.
    pub server_keep_alive: Option<u16>,
    /// Basis for response topics.
    pub response_information: Option<String>,
    /// Another server to use.
    pub server_reference: Option<String>,
    /// Enhanced authentication method.
    pub authentication_method: Option<String>,
    /// Enhanced authentication data.
    pub authentication_data: Option<Bytes>,
}

impl ConnAck {
    /// Parses a CONNACK from `body`, the packet after its fixed header.
    ///
    /// Errors: the reserved bits 7..1 of the acknowledge flags set, a missing
    /// field, bytes after the last field, any MQTT 5 property error (see
    /// [`ConnAck::properties_v5`]; MQTT 5 requires the property length even
    /// when there are none). The code is not checked against the list of
    /// defined codes.
    pub fn parse(body: &[u8], version: MqttVersion) -> Result<ConnAck, CodecError> {
        let mut r = Reader::new(body, PACKET, "packet");
        let flags = r.u8("acknowledge flags")?;
        if flags & 0xFE != 0 {
            return Err(CodecError::Malformed {
                packet: PACKET,
                reason: "reserved bits of the acknowledge flags are set",
            });
        }
        let (code, last) = if is_v5(version) {
            (r.u8("reason code")?, "properties")
        } else {
            (r.u8("return code")?, "return code")
        };
        let properties_raw = if is_v5(version) {
            let raw = r.property_block("properties")?;
            collect(raw, None)?;
            Bytes::copy_from_slice(raw)
        } else {
            Bytes::new()
        };
        r.expect_end(last)?;
        Ok(ConnAck {
            session_present: flags & 1 != 0,
            code,
            properties_raw,
        })
    }

    /// Whether the server accepted the client (code 0).
    pub fn is_accepted(&self) -> bool {
        self.code == 0
    }

    /// Appends the whole CONNACK packet, fixed header included:
    /// `encode(parse(x)) == x` for a well-formed `x`. Properties are written
    /// for MQTT 5 only.
    pub fn encode(&self, version: MqttVersion, out: &mut BytesMut) {
        let len = if is_v5(version) {
            2 + wire::block_len(&self.properties_raw)
        } else {
            2
        };
        super::put_fixed_header(out, 0x20, len);
        out.put_u8(u8::from(self.session_present));
        out.put_u8(self.code);
        if is_v5(version) {
            wire::put_block(out, &self.properties_raw);
        }
    }

    /// This CONNACK with an Assigned Client Identifier (MQTT 5) added: the
    /// front door names a client that connected without an id, and tells it
    /// the name.
    pub fn with_assigned_client_id(&self, client_id: &str) -> ConnAck {
        self.with_property(id::ASSIGNED_CLIENT_IDENTIFIER, |out| {
            wire::put_str(out, client_id)
        })
    }

    /// This CONNACK saying how many topic aliases the client may set (MQTT
    /// 5), in place of what the router said: the front door resolves them.
    pub fn with_topic_alias_maximum(&self, maximum: u16) -> ConnAck {
        self.with_property(id::TOPIC_ALIAS_MAXIMUM, |out| out.put_u16(maximum))
    }

    /// This CONNACK with property `property_id` (written by `value`) in
    /// place of any it had.
    fn with_property(&self, property_id: u8, value: impl FnOnce(&mut BytesMut)) -> ConnAck {
        let others = super::properties::without_property(&self.properties_raw, property_id, PACKET)
            .unwrap_or_else(|_| self.properties_raw.clone());
        let mut properties = BytesMut::with_capacity(others.len() + 8);
        properties.extend_from_slice(&others);
        properties.put_u8(property_id);
        value(&mut properties);
        ConnAck {
            properties_raw: properties.freeze(),
            ..self.clone()
        }
    }

    /// The MQTT 5 CONNACK properties, parsed. Empty (default) before MQTT 5.
    ///
    /// Errors: an unknown identifier or one CONNACK may not carry, a
    /// property repeated that may appear once, a value MQTT forbids (receive
    /// maximum or maximum packet size 0, flags other than 0/1).
    pub fn properties_v5(&self) -> Result<ConnAckProperties, CodecError> {
        collect(&self.properties_raw, Some(&self.properties_raw))
    }
}

/// Collects CONNACK properties; `src`, when given, is the buffer `raw` lies
/// in, for zero-copy authentication data (otherwise it is copied).
fn collect(raw: &[u8], src: Option<&Bytes>) -> Result<ConnAckProperties, CodecError> {
    let c = Collector {
        packet: PACKET,
        scope: "properties",
    };
    let mut out = ConnAckProperties::default();
    for p in c.iter(raw) {
        let p = p?;
        match (p.id, p.value) {
            (id::SESSION_EXPIRY_INTERVAL, V::FourByteInt(v)) => {
                c.once(&mut out.session_expiry_interval, v, &p)?
            }
            (id::RECEIVE_MAXIMUM, V::TwoByteInt(v)) => {
                c.once(&mut out.receive_maximum, c.nonzero(&p, v)?, &p)?
            }
            (id::MAXIMUM_QOS, V::Byte(v)) => {
                c.flag(&p, v)?;
                c.once(&mut out.maximum_qos, v, &p)?
            }
            (id::RETAIN_AVAILABLE, V::Byte(v)) => {
                c.once(&mut out.retain_available, c.flag(&p, v)?, &p)?
            }
            (id::MAXIMUM_PACKET_SIZE, V::FourByteInt(v)) => {
                c.once(&mut out.maximum_packet_size, c.nonzero(&p, v)?, &p)?
            }
            (id::ASSIGNED_CLIENT_IDENTIFIER, V::Utf8(v)) => {
                c.once(&mut out.assigned_client_identifier, v.to_owned(), &p)?
            }
            (id::TOPIC_ALIAS_MAXIMUM, V::TwoByteInt(v)) => {
                c.once(&mut out.topic_alias_maximum, v, &p)?
            }
            (id::REASON_STRING, V::Utf8(v)) => c.once(&mut out.reason_string, v.to_owned(), &p)?,
            (id::USER_PROPERTY, V::Utf8Pair(k, v)) => out.user_properties.push(user_property(k, v)),
            (id::WILDCARD_SUBSCRIPTION_AVAILABLE, V::Byte(v)) => {
                c.once(&mut out.wildcard_subscription_available, c.flag(&p, v)?, &p)?
            }
            (id::SUBSCRIPTION_IDENTIFIER_AVAILABLE, V::Byte(v)) => c.once(
                &mut out.subscription_identifiers_available,
                c.flag(&p, v)?,
                &p,
            )?,
            (id::SHARED_SUBSCRIPTION_AVAILABLE, V::Byte(v)) => {
                c.once(&mut out.shared_subscription_available, c.flag(&p, v)?, &p)?
            }
            (id::SERVER_KEEP_ALIVE, V::TwoByteInt(v)) => {
                c.once(&mut out.server_keep_alive, v, &p)?
            }
            (id::RESPONSE_INFORMATION, V::Utf8(v)) => {
                c.once(&mut out.response_information, v.to_owned(), &p)?
            }
            (id::SERVER_REFERENCE, V::Utf8(v)) => {
                c.once(&mut out.server_reference, v.to_owned(), &p)?
            }
            (id::AUTHENTICATION_METHOD, V::Utf8(v)) => {
                c.once(&mut out.authentication_method, v.to_owned(), &p)?
            }
            (id::AUTHENTICATION_DATA, V::Binary(v)) => {
                let data = match src {
                    Some(src) => wire::sub_bytes(src, v),
                    None => Bytes::copy_from_slice(v),
                };
                c.once(&mut out.authentication_data, data, &p)?
            }
            _ => return Err(c.not_allowed(&p)),
        }
    }
    Ok(out)
}

/// Why the front door refuses a client, mapped to the CONNACK code each MQTT
/// version has for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The protocol level is not supported. 3.1.1: 0x01; 5: 0x84.
    UnsupportedProtocolVersion,
    /// The client id is not acceptable. 3.1.1: 0x02; 5: 0x85.
    IdentifierRejected,
    /// The service is unavailable. 3.1.1: 0x03; 5: 0x88.
    ServerUnavailable,
    /// Bad user name or password. 3.1.1: 0x04; 5: 0x86.
    BadCredentials,
    /// Not authorized. 3.1.1: 0x05; 5: 0x87.
    NotAuthorized,
    /// The CONNECT is too large. 3.1.1 has no code (0x03 is sent); 5: 0x95.
    PacketTooLarge,
    /// The CONNECT is malformed. 3.1.1 has no code (0x03 is sent, though
    /// 3.1.1 says to close without a CONNACK); 5: 0x81.
    MalformedPacket,
    /// The CONNECT breaks a protocol rule. 3.1.1 has no code (0x03 is
    /// sent); 5: 0x82.
    ProtocolError,
    /// The server is busy. 3.1.1: 0x03; 5: 0x89.
    ServerBusy,
    /// The client is banned. 3.1.1: 0x05; 5: 0x8A.
    Banned,
    /// A quota is exceeded (e.g. too many connections). 3.1.1: 0x03; 5: 0x97.
    QuotaExceeded,
    /// The client connects too often. 3.1.1: 0x03; 5: 0x9F.
    ConnectionRateExceeded,
    /// Unspecified error. 3.1.1: 0x03; 5: 0x80.
    UnspecifiedError,
}

impl Refusal {
    /// The return code (3.1.1) or reason code (5) for this refusal.
    pub fn code(&self, version: MqttVersion) -> u8 {
        match version {
            MqttVersion::V311 => match self {
                Refusal::UnsupportedProtocolVersion => 0x01,
                Refusal::IdentifierRejected => 0x02,
                Refusal::BadCredentials => 0x04,
                Refusal::NotAuthorized | Refusal::Banned => 0x05,
                _ => 0x03,
            },
            MqttVersion::V5 => match self {
                Refusal::UnsupportedProtocolVersion => 0x84,
                Refusal::IdentifierRejected => 0x85,
                Refusal::ServerUnavailable => 0x88,
                Refusal::BadCredentials => 0x86,
                Refusal::NotAuthorized => 0x87,
                Refusal::PacketTooLarge => 0x95,
                Refusal::MalformedPacket => 0x81,
                Refusal::ProtocolError => 0x82,
                Refusal::ServerBusy => 0x89,
                Refusal::Banned => 0x8A,
                Refusal::QuotaExceeded => 0x97,
                Refusal::ConnectionRateExceeded => 0x9F,
                Refusal::UnspecifiedError => 0x80,
            },
        }
    }

    /// Whether MQTT 3.1.1 has a return code that says this; when it does not,
    /// [`Refusal::connack`] falls back to 0x03 "server unavailable".
    pub fn has_v311_code(&self) -> bool {
        matches!(
            self,
            Refusal::UnsupportedProtocolVersion
                | Refusal::IdentifierRejected
                | Refusal::ServerUnavailable
                | Refusal::BadCredentials
                | Refusal::NotAuthorized
        )
    }

    /// The refusal for a CONNECT that failed to parse: unsupported protocol
    /// version, protocol error, packet too large or malformed packet.
    pub fn for_error(error: &CodecError) -> Refusal {
        match error.reason_code() {
            0x84 => Refusal::UnsupportedProtocolVersion,
            0x82 => Refusal::ProtocolError,
            0x95 => Refusal::PacketTooLarge,
            _ => Refusal::MalformedPacket,
        }
    }

    /// The whole CONNACK packet refusing a client: session present 0, this
    /// refusal's code, and in MQTT 5 an empty property block.
    pub fn connack(&self, version: MqttVersion) -> Bytes {
        let code = self.code(version);
        match version {
            MqttVersion::V311 => Bytes::copy_from_slice(&[0x20, 0x02, 0x00, code]),
            MqttVersion::V5 => Bytes::copy_from_slice(&[0x20, 0x03, 0x00, code, 0x00]),
        }
    }
}

/// The MQTT 3.1.1 CONNACK return code closest to an MQTT 5 reason code (the
/// front door speaks MQTT 5 to the router for 3.1.1 clients too).
pub fn v311_connack_code(v5: u8) -> u8 {
    match v5 {
        0x00 => 0x00,
        0x84 => 0x01,
        0x85 => 0x02,
        0x86 => 0x04,
        0x87 | 0x8A => 0x05,
        _ => 0x03,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const V4: MqttVersion = MqttVersion::V311;
    const V5: MqttVersion = MqttVersion::V5;

    fn round_trip(packet: &[u8], version: MqttVersion) -> ConnAck {
        assert_eq!(usize::from(packet[1]) + 2, packet.len());
        let c = ConnAck::parse(&packet[2..], version).expect("parses");
        let mut out = BytesMut::new();
        c.encode(version, &mut out);
        assert_eq!(&out[..], packet);
        c
    }

    /// 5: session present, success, assigned client id "abc", server keep
    /// alive 60.
    pub(crate) const V5_PROPS: &[u8] = &[
        0x20, 0x0C, 0x01, 0x00, 0x09, 0x12, 0x00, 0x03, b'a', b'b', b'c', 0x13, 0x00, 0x3C,
    ];

    #[test]
    fn v4() {
        let c = round_trip(&[0x20, 0x02, 0x00, 0x00], V4);
        assert!(c.is_accepted() && !c.session_present);
        let c = round_trip(&[0x20, 0x02, 0x01, 0x00], V4);
        assert!(c.session_present);
        let c = round_trip(&[0x20, 0x02, 0x00, 0x05], V4);
        assert_eq!(c.code, 5);
        assert!(!c.is_accepted());
    }

    #[test]
    fn v5() {
        let c = round_trip(&[0x20, 0x03, 0x00, 0x00, 0x00], V5);
        assert!(c.is_accepted());
        assert_eq!(
            c.properties_v5().expect("none"),
            ConnAckProperties::default()
        );
        let c = round_trip(V5_PROPS, V5);
        assert!(c.session_present);
        let p = c.properties_v5().expect("properties");
        assert_eq!(p.assigned_client_identifier.as_deref(), Some("abc"));
        assert_eq!(p.server_keep_alive, Some(60));
    }

    #[test]
    fn an_assigned_client_id_is_added_to_the_others() {
        let router = ConnAck::parse(&[0x00, 0x00, 0x03, 0x13, 0x00, 0x3C], V5).unwrap();
        let named = router.with_assigned_client_id("auto-0123");
        let mut out = BytesMut::new();
        named.encode(V5, &mut out);
        let back = ConnAck::parse(&out[2..], V5).unwrap();
        let p = back.properties_v5().unwrap();
        assert_eq!(p.assigned_client_identifier.as_deref(), Some("auto-0123"));
        assert_eq!(p.server_keep_alive, Some(60), "the router's own kept");
        assert!(back.is_accepted() && !back.session_present);

        // rumqttd says 4096; the front door says its own.
        let router = ConnAck::parse(&[0x00, 0x00, 0x03, 0x22, 0x10, 0x00], V5).unwrap();
        let p = router.with_topic_alias_maximum(64).properties_v5().unwrap();
        assert_eq!(p.topic_alias_maximum, Some(64), "replaced, not repeated");
    }

    #[test]
    fn errors() {
        assert_eq!(
            ConnAck::parse(&[0x02, 0x00], V4).unwrap_err().to_string(),
            "CONNACK: reserved bits of the acknowledge flags are set"
        );
        assert_eq!(
            ConnAck::parse(&[0x00, 0x00, 0x00], V4)
                .unwrap_err()
                .to_string(),
            "CONNACK: 1 unexpected bytes after the return code"
        );
        assert_eq!(
            ConnAck::parse(&[0x00, 0x00], V5).unwrap_err().to_string(),
            "CONNACK: ran out of bytes reading the properties length"
        );
        assert_eq!(
            ConnAck::parse(&[0x00], V4).unwrap_err().to_string(),
            "CONNACK: ran out of bytes reading the return code"
        );
        assert!(matches!(
            ConnAck::parse(&[0x00, 0x00, 0x02, 0x24, 0x02], V5),
            Err(CodecError::InvalidPropertyValue { value: 2, .. })
        ));
        assert!(matches!(
            ConnAck::parse(&[0x00, 0x00, 0x02, 0x17, 0x01], V5),
            Err(CodecError::PropertyNotAllowed { .. })
        ));
    }

    #[test]
    fn refusals() {
        let cases = [
            (Refusal::UnsupportedProtocolVersion, 0x01, 0x84),
            (Refusal::IdentifierRejected, 0x02, 0x85),
            (Refusal::ServerUnavailable, 0x03, 0x88),
            (Refusal::BadCredentials, 0x04, 0x86),
            (Refusal::NotAuthorized, 0x05, 0x87),
            (Refusal::PacketTooLarge, 0x03, 0x95),
            (Refusal::MalformedPacket, 0x03, 0x81),
            (Refusal::ServerBusy, 0x03, 0x89),
        ];
        for (refusal, v4, v5) in cases {
            assert_eq!(&refusal.connack(V4)[..], &[0x20, 0x02, 0x00, v4]);
            assert_eq!(&refusal.connack(V5)[..], &[0x20, 0x03, 0x00, v5, 0x00]);
            assert_eq!(
                ConnAck::parse(&refusal.connack(V5)[2..], V5)
                    .expect("parses")
                    .code,
                v5
            );
        }
        assert_eq!(
            Refusal::for_error(&CodecError::UnsupportedProtocolLevel(7)),
            Refusal::UnsupportedProtocolVersion
        );
        assert_eq!(
            Refusal::for_error(&CodecError::RemainingLengthTooLong),
            Refusal::MalformedPacket
        );
        assert!(
            Refusal::BadCredentials.has_v311_code() && !Refusal::PacketTooLarge.has_v311_code()
        );
    }
}
