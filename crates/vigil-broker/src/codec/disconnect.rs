//! DISCONNECT (MQTT 3.1.1 section 3.14, MQTT 5 section 3.14): read from a
//! client to learn how it left, written by the front door to tell an MQTT 5
//! client why it is being closed.

use bytes::{BufMut, Bytes, BytesMut};
use vigil_core::{MqttVersion, UserProperty};

use super::properties::{property_id as id, user_property, Collector, PropertyValue as V};
use super::wire::{self, Reader};
use super::{is_v5, CodecError};

const PACKET: &str = "DISCONNECT";

/// A DISCONNECT packet, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// MQTT 5 reason code; 0 (normal disconnection) when absent and always
    /// in 3.1.1. 0x04 means "disconnect with will message": the client wants
    /// its will published although it said goodbye.
    pub reason_code: u8,
    /// MQTT 5 properties, raw, without their length prefix.
    pub properties_raw: Bytes,
}

/// The MQTT 5 DISCONNECT properties (section 3.14.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisconnectProperties {
    /// New session expiry interval, in seconds (client to server only).
    pub session_expiry_interval: Option<u32>,
    /// Human-readable reason.
    pub reason_string: Option<String>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Another server to use (server to client only).
    pub server_reference: Option<String>,
}

impl Disconnect {
    /// Parses a DISCONNECT from `body`, the packet after its fixed header.
    ///
    /// 3.1.1: the body must be empty. MQTT 5: empty (reason 0), a reason
    /// code alone, or a reason code and a property block; nothing after it.
    /// The reason code is not checked against the list of defined codes.
    pub fn parse(body: &[u8], version: MqttVersion) -> Result<Disconnect, CodecError> {
        let mut r = Reader::new(body, PACKET, "packet");
        if !is_v5(version) {
            if !r.is_empty() {
                return Err(CodecError::Malformed {
                    packet: PACKET,
                    reason: "an MQTT 3.1.1 DISCONNECT has no body, but this one has bytes after its fixed header",
                });
            }
            return Ok(Disconnect {
                reason_code: 0,
                properties_raw: Bytes::new(),
            });
        }
        if r.is_empty() {
            return Ok(Disconnect {
                reason_code: 0,
                properties_raw: Bytes::new(),
            });
        }
        let reason_code = r.u8("reason code")?;
        if r.is_empty() {
            return Ok(Disconnect {
                reason_code,
                properties_raw: Bytes::new(),
            });
        }
        let raw = r.property_block("properties")?;
        r.expect_end("properties")?;
        collect(raw)?;
        Ok(Disconnect {
            reason_code,
            properties_raw: Bytes::copy_from_slice(raw),
        })
    }

    /// The MQTT 5 properties, parsed (default when there are none).
    pub fn properties_v5(&self) -> Result<DisconnectProperties, CodecError> {
        collect(&self.properties_raw)
    }
}

fn collect(raw: &[u8]) -> Result<DisconnectProperties, CodecError> {
    let c = Collector {
        packet: PACKET,
        scope: "properties",
    };
    let mut out = DisconnectProperties::default();
    for p in c.iter(raw) {
        let p = p?;
        match (p.id, p.value) {
            (id::SESSION_EXPIRY_INTERVAL, V::FourByteInt(v)) => {
                c.once(&mut out.session_expiry_interval, v, &p)?
            }
            (id::REASON_STRING, V::Utf8(v)) => c.once(&mut out.reason_string, v.to_owned(), &p)?,
            (id::USER_PROPERTY, V::Utf8Pair(k, v)) => out.user_properties.push(user_property(k, v)),
            (id::SERVER_REFERENCE, V::Utf8(v)) => {
                c.once(&mut out.server_reference, v.to_owned(), &p)?
            }
            _ => return Err(c.not_allowed(&p)),
        }
    }
    Ok(out)
}

/// The reason code of a client's DISCONNECT (`body` is the packet after its
/// fixed header): 0 when absent, and always 0 in 3.1.1. Errors as
/// [`Disconnect::parse`].
pub fn disconnect_reason(body: &[u8], version: MqttVersion) -> Result<u8, CodecError> {
    Disconnect::parse(body, version).map(|d| d.reason_code)
}

/// A whole MQTT 5 DISCONNECT with a reason code and no properties, e.g. 0x8B
/// server shutting down, 0x8D keep alive timeout, 0x8E session taken over,
/// 0x81 malformed packet, 0x95 packet too large. (MQTT 3.1.1 has no DISCONNECT
/// from server to client: there the server just closes the connection.)
pub fn disconnect_v5(reason_code: u8) -> Bytes {
    Bytes::copy_from_slice(&[0xE0, 0x01, reason_code])
}

/// A whole MQTT 5 DISCONNECT with a reason code and a reason string (a
/// human-readable explanation the client may log). The string is cut to
/// fit MQTT's 65,535 bytes.
pub fn disconnect_v5_with_reason_string(reason_code: u8, reason: &str) -> Bytes {
    let props_len = 1 + wire::str_len(reason);
    let remaining = 1 + super::remaining_length_len(props_len) + props_len;
    let mut out = BytesMut::new();
    super::put_fixed_header(&mut out, 0xE0, remaining);
    out.put_u8(reason_code);
    super::encode_remaining_length(props_len, &mut out);
    out.put_u8(id::REASON_STRING);
    wire::put_str(&mut out, reason);
    out.freeze()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const V4: MqttVersion = MqttVersion::V311;
    const V5: MqttVersion = MqttVersion::V5;

    #[test]
    fn written_by_the_front_door() {
        assert_eq!(&disconnect_v5(0x8E)[..], &[0xE0, 0x01, 0x8E]);
        assert_eq!(disconnect_reason(&disconnect_v5(0x95)[2..], V5), Ok(0x95));
        let with_reason = disconnect_v5_with_reason_string(0x8D, "keep alive");
        assert_eq!(
            &with_reason[..],
            &[
                0xE0, 0x0F, 0x8D, 0x0D, 0x1F, 0x00, 0x0A, b'k', b'e', b'e', b'p', b' ', b'a', b'l',
                b'i', b'v', b'e'
            ]
        );
        let d = Disconnect::parse(&with_reason[2..], V5).expect("parses");
        assert_eq!(d.reason_code, 0x8D);
        assert_eq!(
            d.properties_v5()
                .expect("properties")
                .reason_string
                .as_deref(),
            Some("keep alive")
        );
    }

    #[test]
    fn read_from_clients() {
        // 3.1.1: E0 00.
        assert_eq!(disconnect_reason(&[], V4), Ok(0));
        assert!(disconnect_reason(&[0x00], V4).is_err());
        // 5: no body, a reason code, a reason code with empty properties,
        // and with a session expiry interval.
        assert_eq!(disconnect_reason(&[], V5), Ok(0));
        assert_eq!(disconnect_reason(&[0x04], V5), Ok(0x04));
        assert_eq!(disconnect_reason(&[0x00, 0x00], V5), Ok(0x00));
        let d = Disconnect::parse(&[0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x0A], V5).expect("parses");
        assert_eq!(
            d.properties_v5()
                .expect("properties")
                .session_expiry_interval,
            Some(10)
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            disconnect_reason(&[0x00, 0x05, 0x11], V5)
                .unwrap_err()
                .to_string(),
            "DISCONNECT: properties length 5 runs past the end of the packet (only 1 bytes left)"
        );
        assert_eq!(
            disconnect_reason(&[0x00, 0x00, 0x00], V5)
                .unwrap_err()
                .to_string(),
            "DISCONNECT: 1 unexpected bytes after the properties"
        );
        assert!(matches!(
            disconnect_reason(&[0x00, 0x03, 0x23, 0x00, 0x01], V5),
            Err(CodecError::PropertyNotAllowed { .. })
        ));
    }
}
