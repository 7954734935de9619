//! CONNECT (MQTT 3.1 and 3.1.1 section 3.1, MQTT 5 section 3.1): the one
//! packet the front door parses whole and re-encodes, with its keepalive and
//! login replaced.

use bytes::{BufMut, Bytes, BytesMut};
use vigil_core::{MqttVersion, UserProperty};

use super::properties::{property_id as id, user_property, Collector, PropertyValue as V};
use super::wire::{self, Reader};
use super::CodecError;

const PACKET: &str = "CONNECT";

/// A CONNECT packet, parsed. Byte fields share memory with the packet.
///
/// `Debug` shows the password's length, never its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Connect {
    /// "MQTT" (levels 4 and 5) or "MQIsdp" (level 3, MQTT 3.1).
    pub protocol_name: String,
    /// Protocol level: 3 (MQTT 3.1), 4 (3.1.1) or 5.
    pub level: u8,
    /// Clean session (3.1.1) / clean start (5).
    pub clean_start: bool,
    /// Keepalive in seconds; 0 turns it off.
    pub keepalive: u16,
    /// MQTT 5 CONNECT properties, raw, without their length prefix; empty for
    /// levels 3 and 4. See [`Connect::properties_v5`].
    pub properties: Bytes,
    /// Client identifier; may be empty (the server then assigns one).
    pub client_id: String,
    /// The last will, when the client gave one.
    pub will: Option<Will>,
    /// User name, when the user name flag is set.
    pub username: Option<String>,
    /// Password, when the password flag is set.
    pub password: Option<Bytes>,
}

/// A client's last will: the message the server publishes on its behalf
/// when it goes away without a clean DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic to publish to.
    pub topic: String,
    /// The message.
    pub payload: Bytes,
    /// QoS to publish with (0, 1 or 2).
    pub qos: u8,
    /// Whether to publish it retained.
    pub retain: bool,
    /// MQTT 5 will properties, raw, without their length prefix; empty
    /// before MQTT 5. See [`Will::properties_v5`].
    pub properties: Bytes,
}

/// The MQTT 5 CONNECT properties (section 3.1.2.11).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectProperties {
    /// Seconds the session outlives the connection (absent = 0).
    pub session_expiry_interval: Option<u32>,
    /// How many QoS 1/2 messages the client takes at once (never 0).
    pub receive_maximum: Option<u16>,
    /// The largest packet the client accepts (never 0).
    pub maximum_packet_size: Option<u32>,
    /// How many topic aliases the client accepts from the server.
    pub topic_alias_maximum: Option<u16>,
    /// Whether the client asks for response information in the CONNACK.
    pub request_response_information: Option<bool>,
    /// Whether the client accepts reason strings and user properties on
    /// failures.
    pub request_problem_information: Option<bool>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Enhanced authentication method.
    pub authentication_method: Option<String>,
    /// Enhanced authentication data (only with a method).
    pub authentication_data: Option<Bytes>,
}

/// The MQTT 5 will properties (section 3.1.3.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WillProperties {
    /// Seconds the server waits before publishing the will.
    pub will_delay_interval: Option<u32>,
    /// 0: the payload is unspecified bytes; 1: UTF-8.
    pub payload_format_indicator: Option<u8>,
    /// Seconds the will message lives.
    pub message_expiry_interval: Option<u32>,
    /// MIME type of the payload.
    pub content_type: Option<String>,
    /// Topic for a response.
    pub response_topic: Option<String>,
    /// Correlation data for a response.
    pub correlation_data: Option<Bytes>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("protocol_name", &self.protocol_name)
            .field("level", &self.level)
            .field("clean_start", &self.clean_start)
            .field("keepalive", &self.keepalive)
            .field("properties", &self.properties)
            .field("client_id", &self.client_id)
            .field("will", &self.will)
            .field("username", &self.username)
            .field(
                "password",
                &self
                    .password
                    .as_ref()
                    .map(|p| format!("<{} bytes>", p.len())),
            )
            .finish()
    }
}

// Connect flags (section 3.1.2.3).
const RESERVED: u8 = 0x01;
const CLEAN_START: u8 = 0x02;
const WILL: u8 = 0x04;
const WILL_QOS_SHIFT: u8 = 3;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USERNAME: u8 = 0x80;

impl Connect {
    /// Parses a CONNECT from `body`, the packet after its fixed header
    /// (exactly `remaining_len` bytes). The fixed header's flags must be 0;
    /// check them with [`FrameHeader::validate_flags`](super::FrameHeader::validate_flags).
    ///
    /// Everything is checked, MQTT 5 properties included, so
    /// [`Connect::properties_v5`] and [`Connect::will_properties_v5`] cannot
    /// fail on a `Connect` this returned. An unknown protocol level is
    /// [`CodecError::UnsupportedProtocolLevel`], which MQTT answers with a
    /// CONNACK ([`Refusal::UnsupportedProtocolVersion`](super::Refusal)).
    ///
    /// Not checked here, because MQTT answers them with a CONNACK rather than
    /// treating them as malformed: an empty client id with a persistent
    /// session (3.1.1), a client id longer than 23 characters.
    pub fn parse(body: Bytes) -> Result<Connect, CodecError> {
        let mut r = Reader::new(&body, PACKET, "packet");
        let name = r.utf8("protocol name")?;
        if name != "MQTT" && name != "MQIsdp" {
            return Err(CodecError::InvalidProtocolName(short(name)));
        }
        let level = r.u8("protocol level")?;
        if !matches!((name, level), ("MQTT", 4 | 5) | ("MQIsdp", 3)) {
            return Err(CodecError::UnsupportedProtocolLevel(level));
        }
        let v5 = level == 5;

        let flags = r.u8("connect flags")?;
        if flags & RESERVED != 0 {
            return Err(malformed("the reserved bit 0 of the connect flags is set"));
        }
        let will_flag = flags & WILL != 0;
        let will_qos = (flags >> WILL_QOS_SHIFT) & 0b11;
        let will_retain = flags & WILL_RETAIN != 0;
        if !will_flag && (will_qos != 0 || will_retain) {
            return Err(malformed(
                "will QoS or will retain is set without the will flag",
            ));
        }
        if will_qos == 3 {
            return Err(CodecError::InvalidQos {
                packet: PACKET,
                field: "will QoS",
            });
        }
        let has_username = flags & USERNAME != 0;
        let has_password = flags & PASSWORD != 0;
        if has_password && !has_username && !v5 {
            return Err(malformed(
                "the password flag is set without the user name flag (only MQTT 5 allows that)",
            ));
        }

        let keepalive = r.u16("keep alive")?;
        let properties = if v5 {
            wire::sub_bytes(&body, r.property_block("properties")?)
        } else {
            Bytes::new()
        };
        let client_id = r.utf8("client id")?.to_owned();
        let mut last = "client id";

        let will = if will_flag {
            let properties = if v5 {
                wire::sub_bytes(&body, r.property_block("will properties")?)
            } else {
                Bytes::new()
            };
            let topic = r.utf8("will topic")?;
            if topic.is_empty() {
                return Err(protocol_error("the will topic is empty"));
            }
            if wire::has_wildcard(topic) {
                return Err(protocol_error(
                    "the will topic contains a wildcard (+ or #)",
                ));
            }
            let payload = wire::sub_bytes(&body, r.binary("will payload")?);
            last = "will payload";
            Some(Will {
                topic: topic.to_owned(),
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if has_username {
            last = "user name";
            Some(r.utf8("user name")?.to_owned())
        } else {
            None
        };
        let password = if has_password {
            last = "password";
            Some(wire::sub_bytes(&body, r.binary("password")?))
        } else {
            None
        };
        r.expect_end(last)?;

        let connect = Connect {
            protocol_name: name.to_owned(),
            level,
            clean_start: flags & CLEAN_START != 0,
            keepalive,
            properties,
            client_id,
            will,
            username,
            password,
        };
        if v5 {
            connect.properties_v5()?;
            connect.will_properties_v5()?;
        }
        Ok(connect)
    }

    /// The version packets after this CONNECT use: MQTT 3.1 and 3.1.1 are
    /// [`MqttVersion::V311`], level 5 is [`MqttVersion::V5`].
    pub fn version(&self) -> MqttVersion {
        if self.level == 5 {
            MqttVersion::V5
        } else {
            MqttVersion::V311
        }
    }

    /// Bytes after the fixed header that [`Connect::encode`] writes.
    pub fn remaining_len(&self) -> usize {
        let v5 = self.level == 5;
        let mut len = wire::str_len(&self.protocol_name) + 1 + 1 + 2;
        if v5 {
            len += wire::block_len(&self.properties);
        }
        len += wire::str_len(&self.client_id);
        if let Some(will) = &self.will {
            if v5 {
                len += wire::block_len(&will.properties);
            }
            len += wire::str_len(&will.topic) + wire::bin_len(&will.payload);
        }
        if let Some(username) = &self.username {
            len += wire::str_len(username);
        }
        if let Some(password) = &self.password {
            len += wire::bin_len(password);
        }
        len
    }

    /// Appends the whole CONNECT packet, fixed header included.
    ///
    /// `encode(parse(x)) == x` for a well-formed `x`. Flags come from the
    /// fields: the user name and password flags from whether they are
    /// `Some`, the will flags from `will` (its QoS masked to 2 bits).
    /// Properties are written only at level 5. A string or binary field
    /// longer than 65,535 bytes cannot be encoded; only a caller can build
    /// one, and it is cut to 65,535 bytes.
    pub fn encode(&self, out: &mut BytesMut) {
        let v5 = self.level == 5;
        super::put_fixed_header(out, 0x10, self.remaining_len());
        wire::put_str(out, &self.protocol_name);
        out.put_u8(self.level);
        let mut flags = 0;
        if self.clean_start {
            flags |= CLEAN_START;
        }
        if let Some(will) = &self.will {
            flags |= WILL | ((will.qos & 0b11) << WILL_QOS_SHIFT);
            if will.retain {
                flags |= WILL_RETAIN;
            }
        }
        if self.password.is_some() {
            flags |= PASSWORD;
        }
        if self.username.is_some() {
            flags |= USERNAME;
        }
        out.put_u8(flags);
        out.put_u16(self.keepalive);
        if v5 {
            wire::put_block(out, &self.properties);
        }
        wire::put_str(out, &self.client_id);
        if let Some(will) = &self.will {
            if v5 {
                wire::put_block(out, &will.properties);
            }
            wire::put_str(out, &will.topic);
            wire::put_bin(out, &will.payload);
        }
        if let Some(username) = &self.username {
            wire::put_str(out, username);
        }
        if let Some(password) = &self.password {
            wire::put_bin(out, password);
        }
    }

    /// The MQTT 5 CONNECT properties, parsed. Empty (default) before MQTT 5.
    ///
    /// Errors: an unknown identifier or one CONNECT may not carry (malformed,
    /// as MQTT says), a property repeated that may appear once, a value MQTT
    /// forbids (receive maximum or maximum packet size 0, request flags other
    /// than 0/1), authentication data without a method.
    pub fn properties_v5(&self) -> Result<ConnectProperties, CodecError> {
        let c = Collector {
            packet: PACKET,
            scope: "properties",
        };
        let mut out = ConnectProperties::default();
        for p in c.iter(&self.properties) {
            let p = p?;
            match (p.id, p.value) {
                (id::SESSION_EXPIRY_INTERVAL, V::FourByteInt(v)) => {
                    c.once(&mut out.session_expiry_interval, v, &p)?
                }
                (id::RECEIVE_MAXIMUM, V::TwoByteInt(v)) => {
                    c.once(&mut out.receive_maximum, c.nonzero(&p, v)?, &p)?
                }
                (id::MAXIMUM_PACKET_SIZE, V::FourByteInt(v)) => {
                    c.once(&mut out.maximum_packet_size, c.nonzero(&p, v)?, &p)?
                }
                (id::TOPIC_ALIAS_MAXIMUM, V::TwoByteInt(v)) => {
                    c.once(&mut out.topic_alias_maximum, v, &p)?
                }
                (id::REQUEST_RESPONSE_INFORMATION, V::Byte(v)) => {
                    c.once(&mut out.request_response_information, c.flag(&p, v)?, &p)?
                }
                (id::REQUEST_PROBLEM_INFORMATION, V::Byte(v)) => {
                    c.once(&mut out.request_problem_information, c.flag(&p, v)?, &p)?
                }
                (id::USER_PROPERTY, V::Utf8Pair(k, v)) => {
                    out.user_properties.push(user_property(k, v))
                }
                (id::AUTHENTICATION_METHOD, V::Utf8(v)) => {
                    c.once(&mut out.authentication_method, v.to_owned(), &p)?
                }
                (id::AUTHENTICATION_DATA, V::Binary(v)) => c.once(
                    &mut out.authentication_data,
                    self.properties.slice_ref(v),
                    &p,
                )?,
                _ => return Err(c.not_allowed(&p)),
            }
        }
        if out.authentication_data.is_some() && out.authentication_method.is_none() {
            return Err(protocol_error(
                "authentication data is given without an authentication method",
            ));
        }
        Ok(out)
    }

    /// The MQTT 5 will properties, parsed. Empty (default) without a will or
    /// before MQTT 5. Errors as for [`Will::properties_v5`].
    pub fn will_properties_v5(&self) -> Result<WillProperties, CodecError> {
        match &self.will {
            Some(will) => will.properties_v5(),
            None => Ok(WillProperties::default()),
        }
    }
}

impl Will {
    /// The MQTT 5 will properties, parsed. Empty (default) before MQTT 5.
    ///
    /// Errors: an unknown identifier or one a will may not carry, a property
    /// repeated that may appear once, a payload format indicator other than
    /// 0/1, a response topic with wildcards.
    pub fn properties_v5(&self) -> Result<WillProperties, CodecError> {
        let c = Collector {
            packet: PACKET,
            scope: "will properties",
        };
        let mut out = WillProperties::default();
        for p in c.iter(&self.properties) {
            let p = p?;
            match (p.id, p.value) {
                (id::WILL_DELAY_INTERVAL, V::FourByteInt(v)) => {
                    c.once(&mut out.will_delay_interval, v, &p)?
                }
                (id::PAYLOAD_FORMAT_INDICATOR, V::Byte(v)) => {
                    c.flag(&p, v)?;
                    c.once(&mut out.payload_format_indicator, v, &p)?
                }
                (id::MESSAGE_EXPIRY_INTERVAL, V::FourByteInt(v)) => {
                    c.once(&mut out.message_expiry_interval, v, &p)?
                }
                (id::CONTENT_TYPE, V::Utf8(v)) => {
                    c.once(&mut out.content_type, v.to_owned(), &p)?
                }
                (id::RESPONSE_TOPIC, V::Utf8(v)) => {
                    if wire::has_wildcard(v) {
                        return Err(protocol_error(
                            "the will's response topic contains a wildcard (+ or #)",
                        ));
                    }
                    c.once(&mut out.response_topic, v.to_owned(), &p)?
                }
                (id::CORRELATION_DATA, V::Binary(v)) => {
                    c.once(&mut out.correlation_data, self.properties.slice_ref(v), &p)?
                }
                (id::USER_PROPERTY, V::Utf8Pair(k, v)) => {
                    out.user_properties.push(user_property(k, v))
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

/// At most 64 bytes of `s` (cut at a character boundary), for error messages.
fn short(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::codec::parse_frame_header;

    /// Splits a whole packet into its header and body, checking the header.
    fn body_of(packet: &[u8], packet_type: u8) -> Bytes {
        let h = parse_frame_header(packet)
            .expect("header")
            .expect("complete header");
        assert_eq!(h.packet_type, packet_type);
        assert_eq!(
            h.total_len(),
            packet.len(),
            "remaining length matches the bytes"
        );
        Bytes::copy_from_slice(&packet[h.header_len..])
    }

    fn encode(c: &Connect) -> Vec<u8> {
        let mut out = BytesMut::new();
        c.encode(&mut out);
        out.to_vec()
    }

    /// MQTT 3.1.1, clean session, keepalive 60, client id "a", nothing else.
    pub(crate) const V311_MINIMAL: &[u8] = &[
        0x10, 0x0D, // CONNECT, remaining length 13
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
        0x04, // level 4
        0x02, // flags: clean session
        0x00, 0x3C, // keepalive 60
        0x00, 0x01, b'a', // client id
    ];

    /// MQTT 5 with properties, a will (QoS 1, retained, with properties) and
    /// a login.
    pub(crate) const V5_FULL: &[u8] = &[
        0x10, 0x40, // CONNECT, remaining length 64
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, // "MQTT" level 5
        0xEE, // user name, password, will retain, will QoS 1, will, clean start
        0x00, 0x1E, // keepalive 30
        0x0F, // properties: 15 bytes
        0x11, 0x00, 0x00, 0x00, 0x78, // session expiry interval 120
        0x21, 0x00, 0x14, // receive maximum 20
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property k=v
        0x00, 0x03, b'd', b'e', b'v', // client id "dev"
        0x0C, // will properties: 12 bytes
        0x18, 0x00, 0x00, 0x00, 0x05, // will delay interval 5
        0x03, 0x00, 0x04, b't', b'e', b'x', b't', // content type "text"
        0x00, 0x03, b'l', b'w', b't', // will topic "lwt"
        0x00, 0x03, b'b', b'y', b'e', // will payload "bye"
        0x00, 0x04, b'u', b's', b'e', b'r', // user name "user"
        0x00, 0x02, b'p', b'w', // password "pw"
    ];

    /// MQTT 3.1 ("MQIsdp", level 3) with a login.
    const V31_LOGIN: &[u8] = &[
        0x10, 0x1A, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0xC2, 0x00, 0x0A, 0x00,
        0x02, b'i', b'd', 0x00, 0x02, b'u', b'1', 0x00, 0x04, 0x00, 0xFF, b'x', b'y',
    ];

    #[test]
    fn minimal_v311() {
        let c = Connect::parse(body_of(V311_MINIMAL, 1)).expect("parses");
        assert_eq!(c.protocol_name, "MQTT");
        assert_eq!(c.level, 4);
        assert_eq!(c.version(), MqttVersion::V311);
        assert!(c.clean_start);
        assert_eq!(c.keepalive, 60);
        assert_eq!(c.client_id, "a");
        assert!(c.properties.is_empty());
        assert_eq!((c.will, c.username, c.password), (None, None, None));
        let c = Connect::parse(body_of(V311_MINIMAL, 1)).expect("parses");
        assert_eq!(encode(&c), V311_MINIMAL);
        assert_eq!(c.remaining_len(), 13);
        assert_eq!(
            c.properties_v5().expect("empty"),
            ConnectProperties::default()
        );
    }

    #[test]
    fn v5_with_properties_will_and_login() {
        let c = Connect::parse(body_of(V5_FULL, 1)).expect("parses");
        assert_eq!(c.level, 5);
        assert_eq!(c.version(), MqttVersion::V5);
        assert!(c.clean_start);
        assert_eq!(c.keepalive, 30);
        assert_eq!(c.client_id, "dev");
        assert_eq!(c.username.as_deref(), Some("user"));
        assert_eq!(c.password.as_deref(), Some(&b"pw"[..]));
        let props = c.properties_v5().expect("properties");
        assert_eq!(
            props,
            ConnectProperties {
                session_expiry_interval: Some(120),
                receive_maximum: Some(20),
                user_properties: vec![UserProperty {
                    name: "k".into(),
                    value: "v".into()
                }],
                ..Default::default()
            }
        );
        let will = c.will.as_ref().expect("will");
        assert_eq!(will.topic, "lwt");
        assert_eq!(&will.payload[..], b"bye");
        assert_eq!(will.qos, 1);
        assert!(will.retain);
        let wp = c.will_properties_v5().expect("will properties");
        assert_eq!(wp.will_delay_interval, Some(5));
        assert_eq!(wp.content_type.as_deref(), Some("text"));
        assert_eq!(encode(&c), V5_FULL);
        // The password never shows in Debug output.
        let debug = format!("{c:?}");
        assert!(
            debug.contains("<2 bytes>") && !debug.contains("pw\""),
            "{debug}"
        );
    }

    #[test]
    fn v31_login_round_trip() {
        let c = Connect::parse(body_of(V31_LOGIN, 1)).expect("parses");
        assert_eq!(
            (c.protocol_name.as_str(), c.level, c.version()),
            ("MQIsdp", 3, MqttVersion::V311)
        );
        assert_eq!(c.client_id, "id");
        assert_eq!(c.username.as_deref(), Some("u1"));
        assert_eq!(c.password.as_deref(), Some(&[0x00, 0xFF, b'x', b'y'][..]));
        assert_eq!(encode(&c), V31_LOGIN);
    }

    #[test]
    fn rewrite_keeps_everything_else() {
        let mut c = Connect::parse(body_of(V5_FULL, 1)).expect("parses");
        c.keepalive = 0;
        c.username = Some("vigil-internal".into());
        c.password = Some(Bytes::from_static(b"secret-secret"));
        let bytes = encode(&c);
        let again = Connect::parse(body_of(&bytes, 1)).expect("re-parses");
        assert_eq!(again, c);
        assert_eq!(
            again.properties,
            Connect::parse(body_of(V5_FULL, 1))
                .expect("parses")
                .properties
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        // Client id length 300 with 1 byte left.
        let body = [
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x01, 0x2C, b'a',
        ];
        let e = Connect::parse(Bytes::copy_from_slice(&body)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "CONNECT: client id length 300 runs past the end of the packet (only 1 bytes left)"
        );

        let mut bad = V311_MINIMAL[2..].to_vec();
        bad[7] = 0x03; // reserved bit
        let e = Connect::parse(Bytes::from(bad)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "CONNECT: the reserved bit 0 of the connect flags is set"
        );

        let mut bad = V311_MINIMAL[2..].to_vec();
        bad[6] = 6; // level 6
        assert_eq!(
            Connect::parse(Bytes::from(bad)).unwrap_err(),
            CodecError::UnsupportedProtocolLevel(6)
        );

        let mut bad = V311_MINIMAL[2..].to_vec();
        bad[6] = 3; // "MQTT" with level 3
        assert_eq!(
            Connect::parse(Bytes::from(bad)).unwrap_err(),
            CodecError::UnsupportedProtocolLevel(3)
        );

        let mut bad = V311_MINIMAL[2..].to_vec();
        bad[2] = b'X';
        assert_eq!(
            Connect::parse(Bytes::from(bad)).unwrap_err().to_string(),
            "CONNECT: unknown protocol name \"XQTT\" (expected \"MQTT\", or \"MQIsdp\" for MQTT 3.1)"
        );

        let mut bad = V311_MINIMAL[2..].to_vec();
        bad[7] = 0x12; // will QoS 2 without will flag
        assert!(matches!(
            Connect::parse(Bytes::from(bad)),
            Err(CodecError::Malformed { .. })
        ));

        let mut bad = V311_MINIMAL[2..].to_vec();
        bad[7] = 0x1E; // will flag with QoS 3
        assert_eq!(
            Connect::parse(Bytes::from(bad)).unwrap_err(),
            CodecError::InvalidQos {
                packet: "CONNECT",
                field: "will QoS"
            }
        );

        // Password without user name: an error in 3.1.1 ...
        let mut bad = V311_MINIMAL[2..].to_vec();
        bad[7] = 0x42;
        bad.extend_from_slice(&[0x00, 0x01, b'p']);
        let e = Connect::parse(Bytes::from(bad)).unwrap_err();
        assert!(
            e.to_string()
                .contains("password flag is set without the user name flag"),
            "{e}"
        );
        // ... allowed in 5.
        let v5 = [
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x42, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x01, b'p',
        ];
        let c = Connect::parse(Bytes::copy_from_slice(&v5)).expect("v5 password only");
        assert_eq!((c.username, c.password.as_deref()), (None, Some(&b"p"[..])));

        // Trailing bytes.
        let mut bad = V311_MINIMAL[2..].to_vec();
        bad.push(0);
        assert_eq!(
            Connect::parse(Bytes::from(bad)).unwrap_err().to_string(),
            "CONNECT: 1 unexpected bytes after the client id"
        );

        // Invalid UTF-8 and U+0000 in the client id.
        let mut bad = V311_MINIMAL[2..].to_vec();
        bad[12] = 0xFF;
        assert_eq!(
            Connect::parse(Bytes::from(bad)).unwrap_err().to_string(),
            "CONNECT: the client id is not valid UTF-8"
        );
        let mut bad = V311_MINIMAL[2..].to_vec();
        bad[12] = 0x00;
        assert_eq!(
            Connect::parse(Bytes::from(bad)).unwrap_err().to_string(),
            "CONNECT: the client id contains the null character U+0000"
        );
    }

    #[test]
    fn v5_property_errors() {
        let with_props = |props: &[u8]| {
            let mut b = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x00];
            b.push(u8::try_from(props.len()).expect("short"));
            b.extend_from_slice(props);
            b.extend_from_slice(&[0x00, 0x00]);
            Connect::parse(Bytes::from(b))
        };
        assert!(with_props(&[0x17, 0x01, 0x19, 0x00]).is_ok());
        assert_eq!(
            with_props(&[0x7F, 0x00]).unwrap_err().to_string(),
            "CONNECT: unknown property identifier 0x7F in the properties"
        );
        assert_eq!(
            with_props(&[0x23, 0x00, 0x01]).unwrap_err().to_string(),
            "CONNECT: the topic alias property (0x23) is not allowed in the properties"
        );
        assert_eq!(
            with_props(&[0x21, 0x00, 0x01, 0x21, 0x00, 0x02])
                .unwrap_err()
                .to_string(),
            "CONNECT: the receive maximum property appears more than once in the properties"
        );
        assert_eq!(
            with_props(&[0x21, 0x00, 0x00]).unwrap_err().to_string(),
            "CONNECT: the receive maximum property has the invalid value 0"
        );
        assert_eq!(
            with_props(&[0x17, 0x02]).unwrap_err().to_string(),
            "CONNECT: the request problem information property has the invalid value 2"
        );
        assert!(matches!(
            with_props(&[0x16, 0x00, 0x00]),
            Err(CodecError::ProtocolError { .. })
        ));
        assert_eq!(
            with_props(&[0x26, 0x00, 0x09, b'k']).unwrap_err().to_string(),
            "CONNECT: user property name length 9 runs past the end of the properties (only 1 bytes left)"
        );
        assert_eq!(
            with_props(&[0x11, 0x00]).unwrap_err().to_string(),
            "CONNECT: ran out of bytes reading the session expiry interval"
        );
        // A property length past the end of the packet.
        let b = [
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x00, 0x05, 0x11,
        ];
        assert_eq!(
            Connect::parse(Bytes::copy_from_slice(&b))
                .unwrap_err()
                .to_string(),
            "CONNECT: properties length 5 runs past the end of the packet (only 1 bytes left)"
        );
    }

    #[test]
    fn will_topic_rules() {
        // v3.1.1 CONNECT with a will on topic "a/#".
        let b = [
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03,
            b'a', b'/', b'#', 0x00, 0x00,
        ];
        let e = Connect::parse(Bytes::copy_from_slice(&b)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "CONNECT: the will topic contains a wildcard (+ or #)"
        );
        assert_eq!(e.reason_code(), 0x82);
    }
}
