//! MQTT 5 properties (section 2.2.2): identifiers, types, and a reader shared
//! by every packet that carries them.

use vigil_core::UserProperty;

use super::wire::Reader;
use super::CodecError;

/// MQTT 5 property identifiers (table 2-4 of the specification).
pub mod property_id {
    /// Byte, PUBLISH and will: 0 = unspecified bytes, 1 = UTF-8.
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    /// Four-byte integer, PUBLISH and will: seconds.
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    /// UTF-8 string, PUBLISH and will.
    pub const CONTENT_TYPE: u8 = 0x03;
    /// UTF-8 string, PUBLISH and will.
    pub const RESPONSE_TOPIC: u8 = 0x08;
    /// Binary data, PUBLISH and will.
    pub const CORRELATION_DATA: u8 = 0x09;
    /// Variable byte integer, PUBLISH and SUBSCRIBE.
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    /// Four-byte integer, CONNECT, CONNACK and DISCONNECT: seconds.
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    /// UTF-8 string, CONNACK.
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    /// Two-byte integer, CONNACK: seconds.
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    /// UTF-8 string, CONNECT, CONNACK and AUTH.
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    /// Binary data, CONNECT, CONNACK and AUTH.
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    /// Byte, CONNECT: 0 or 1.
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    /// Four-byte integer, will: seconds.
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    /// Byte, CONNECT: 0 or 1.
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    /// UTF-8 string, CONNACK.
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    /// UTF-8 string, CONNACK and DISCONNECT.
    pub const SERVER_REFERENCE: u8 = 0x1C;
    /// UTF-8 string, CONNACK, the acknowledgements, DISCONNECT and AUTH.
    pub const REASON_STRING: u8 = 0x1F;
    /// Two-byte integer, CONNECT and CONNACK: not 0.
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    /// Two-byte integer, CONNECT and CONNACK.
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    /// Two-byte integer, PUBLISH: not 0.
    pub const TOPIC_ALIAS: u8 = 0x23;
    /// Byte, CONNACK: 0 or 1.
    pub const MAXIMUM_QOS: u8 = 0x24;
    /// Byte, CONNACK: 0 or 1.
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    /// UTF-8 string pair, every packet that has properties; may repeat.
    pub const USER_PROPERTY: u8 = 0x26;
    /// Four-byte integer, CONNECT and CONNACK: not 0.
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    /// Byte, CONNACK: 0 or 1.
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    /// Byte, CONNACK: 0 or 1.
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    /// Byte, CONNACK: 0 or 1.
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// The wire type of a property's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Byte,
    TwoByteInt,
    FourByteInt,
    VarInt,
    Utf8,
    Utf8Pair,
    Binary,
}

/// A property's type and name, or `None` for identifiers MQTT 5 does not
/// define.
fn describe(id: u8) -> Option<(Kind, &'static str)> {
    use property_id::*;
    Some(match id {
        PAYLOAD_FORMAT_INDICATOR => (Kind::Byte, "payload format indicator"),
        MESSAGE_EXPIRY_INTERVAL => (Kind::FourByteInt, "message expiry interval"),
        CONTENT_TYPE => (Kind::Utf8, "content type"),
        RESPONSE_TOPIC => (Kind::Utf8, "response topic"),
        CORRELATION_DATA => (Kind::Binary, "correlation data"),
        SUBSCRIPTION_IDENTIFIER => (Kind::VarInt, "subscription identifier"),
        SESSION_EXPIRY_INTERVAL => (Kind::FourByteInt, "session expiry interval"),
        ASSIGNED_CLIENT_IDENTIFIER => (Kind::Utf8, "assigned client identifier"),
        SERVER_KEEP_ALIVE => (Kind::TwoByteInt, "server keep alive"),
        AUTHENTICATION_METHOD => (Kind::Utf8, "authentication method"),
        AUTHENTICATION_DATA => (Kind::Binary, "authentication data"),
        REQUEST_PROBLEM_INFORMATION => (Kind::Byte, "request problem information"),
        WILL_DELAY_INTERVAL => (Kind::FourByteInt, "will delay interval"),
        REQUEST_RESPONSE_INFORMATION => (Kind::Byte, "request response information"),
        RESPONSE_INFORMATION => (Kind::Utf8, "response information"),
        SERVER_REFERENCE => (Kind::Utf8, "server reference"),
        REASON_STRING => (Kind::Utf8, "reason string"),
        RECEIVE_MAXIMUM => (Kind::TwoByteInt, "receive maximum"),
        TOPIC_ALIAS_MAXIMUM => (Kind::TwoByteInt, "topic alias maximum"),
        TOPIC_ALIAS => (Kind::TwoByteInt, "topic alias"),
        MAXIMUM_QOS => (Kind::Byte, "maximum QoS"),
        RETAIN_AVAILABLE => (Kind::Byte, "retain available"),
        USER_PROPERTY => (Kind::Utf8Pair, "user property"),
        MAXIMUM_PACKET_SIZE => (Kind::FourByteInt, "maximum packet size"),
        WILDCARD_SUBSCRIPTION_AVAILABLE => (Kind::Byte, "wildcard subscription available"),
        SUBSCRIPTION_IDENTIFIER_AVAILABLE => (Kind::Byte, "subscription identifier available"),
        SHARED_SUBSCRIPTION_AVAILABLE => (Kind::Byte, "shared subscription available"),
        _ => return None,
    })
}

/// The name of an MQTT 5 property ("content type"), or `None` for an
/// identifier the specification does not define.
pub fn property_name(id: u8) -> Option<&'static str> {
    describe(id).map(|(_, name)| name)
}

/// A property's value, borrowed from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyValue<'a> {
    /// A single byte.
    Byte(u8),
    /// A big-endian two-byte integer.
    TwoByteInt(u16),
    /// A big-endian four-byte integer.
    FourByteInt(u32),
    /// A variable byte integer.
    VarInt(u32),
    /// A UTF-8 string (checked).
    Utf8(&'a str),
    /// A UTF-8 string pair: name, value.
    Utf8Pair(&'a str, &'a str),
    /// Binary data.
    Binary(&'a [u8]),
}

/// One MQTT 5 property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Property<'a> {
    /// Its identifier; see [`property_id`].
    pub id: u8,
    /// Its value, of the type the identifier prescribes.
    pub value: PropertyValue<'a>,
}

impl Property<'_> {
    /// The property's name ("content type").
    pub fn name(&self) -> &'static str {
        property_name(self.id).unwrap_or("unknown")
    }
}

/// Iterates the properties of a property block (the bytes after its length
/// prefix). Each item is checked: a known identifier, a value of the right
/// type that fits, valid UTF-8. After the first error the iterator ends.
///
/// It checks the wire format only; whether a property may appear in a given
/// packet, or more than once, is for the packet's own property struct
/// ([`ConnectProperties`](super::ConnectProperties), ...) to decide.
pub struct Properties<'a> {
    reader: Reader<'a>,
    failed: bool,
}

impl<'a> Properties<'a> {
    /// Iterates `raw`; `packet` names the packet in error messages.
    pub fn new(raw: &'a [u8], packet: &'static str) -> Self {
        Self::with_scope(raw, packet, "properties")
    }

    pub(crate) fn with_scope(raw: &'a [u8], packet: &'static str, scope: &'static str) -> Self {
        Properties {
            reader: Reader::new(raw, packet, scope),
            failed: false,
        }
    }

    fn read(&mut self) -> Result<Property<'a>, CodecError> {
        let r = &mut self.reader;
        let raw_id = r.varint("property identifier")?;
        let described = u8::try_from(raw_id)
            .ok()
            .and_then(|id| describe(id).map(|d| (id, d)));
        let Some((id, (kind, name))) = described else {
            // Unknown identifiers cannot be skipped: their length is unknown.
            return Err(CodecError::UnknownProperty {
                packet: r.packet(),
                scope: r.scope(),
                id: raw_id,
            });
        };
        let value = match kind {
            Kind::Byte => PropertyValue::Byte(r.u8(name)?),
            Kind::TwoByteInt => PropertyValue::TwoByteInt(r.u16(name)?),
            Kind::FourByteInt => PropertyValue::FourByteInt(r.u32(name)?),
            Kind::VarInt => PropertyValue::VarInt(r.varint(name)?),
            Kind::Utf8 => PropertyValue::Utf8(r.utf8(name)?),
            Kind::Utf8Pair => PropertyValue::Utf8Pair(
                r.utf8("user property name")?,
                r.utf8("user property value")?,
            ),
            Kind::Binary => PropertyValue::Binary(r.binary(name)?),
        };
        Ok(Property { id, value })
    }
}

impl<'a> Iterator for Properties<'a> {
    type Item = Result<Property<'a>, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.reader.is_empty() {
            return None;
        }
        let item = self.read();
        self.failed = item.is_err();
        Some(item)
    }
}

/// `raw` (a property block without its length) without the properties whose
/// identifier is `drop`, the others byte for byte in their order.
pub fn without_property(
    raw: &[u8],
    drop: u8,
    packet: &'static str,
) -> Result<bytes::Bytes, CodecError> {
    keep_properties(raw, packet, |p| p.id != drop)
}

/// `raw` without the properties `keep` refuses, the others byte for byte.
fn keep_properties(
    raw: &[u8],
    packet: &'static str,
    keep: impl Fn(&Property<'_>) -> bool,
) -> Result<bytes::Bytes, CodecError> {
    let mut properties = Properties::new(raw, packet);
    let mut out = bytes::BytesMut::with_capacity(raw.len());
    let mut start = 0;
    while let Some(property) = properties.next() {
        let property = property?;
        let end = raw.len() - properties.reader.left();
        if keep(&property) {
            out.extend_from_slice(&raw[start..end]);
        }
        start = end;
    }
    Ok(out.freeze())
}

/// A property block (without its length) with the user property
/// `name`/`value` appended.
pub fn with_user_property(raw: &[u8], name: &str, value: &str) -> bytes::Bytes {
    let mut out = bytes::BytesMut::with_capacity(raw.len() + 5 + name.len() + value.len());
    out.extend_from_slice(raw);
    out.extend_from_slice(&[property_id::USER_PROPERTY]);
    super::wire::put_str(&mut out, name);
    super::wire::put_str(&mut out, value);
    out.freeze()
}

/// A property block (without its length) without the user properties
/// named `name`; the others stay, in order.
pub fn without_user_property(
    raw: &[u8],
    name: &str,
    packet: &'static str,
) -> Result<bytes::Bytes, CodecError> {
    keep_properties(
        raw,
        packet,
        |p| !matches!(p.value, PropertyValue::Utf8Pair(n, _) if n == name),
    )
}

/// Splits a length-prefixed property block off the front of `buf`: returns
/// the properties (without their length) and what follows them.
pub fn split_property_block<'a>(
    buf: &'a [u8],
    packet: &'static str,
) -> Result<(&'a [u8], &'a [u8]), CodecError> {
    let mut r = Reader::new(buf, packet, "packet");
    let block = r.property_block("properties")?;
    Ok((block, r.rest()))
}

/// Collects the properties of one block into a packet's property struct:
/// duplicate detection and the standard errors, shared by every packet.
pub(crate) struct Collector {
    pub(crate) packet: &'static str,
    pub(crate) scope: &'static str,
}

impl Collector {
    /// Iterates `raw` with this collector's labels.
    pub(crate) fn iter<'a>(&self, raw: &'a [u8]) -> Properties<'a> {
        Properties::with_scope(raw, self.packet, self.scope)
    }

    /// Stores a property that may appear at most once.
    pub(crate) fn once<T>(
        &self,
        slot: &mut Option<T>,
        value: T,
        p: &Property<'_>,
    ) -> Result<(), CodecError> {
        if slot.is_some() {
            return Err(CodecError::DuplicateProperty {
                packet: self.packet,
                scope: self.scope,
                name: p.name(),
            });
        }
        *slot = Some(value);
        Ok(())
    }

    /// The error for a property this block may not carry.
    pub(crate) fn not_allowed(&self, p: &Property<'_>) -> CodecError {
        CodecError::PropertyNotAllowed {
            packet: self.packet,
            scope: self.scope,
            id: p.id,
            name: p.name(),
        }
    }

    /// The error for a value the specification forbids.
    pub(crate) fn invalid(&self, p: &Property<'_>, value: u32) -> CodecError {
        CodecError::InvalidPropertyValue {
            packet: self.packet,
            name: p.name(),
            value,
        }
    }

    /// A byte that must be 0 or 1.
    pub(crate) fn flag(&self, p: &Property<'_>, value: u8) -> Result<bool, CodecError> {
        match value {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.invalid(p, u32::from(v))),
        }
    }

    /// An integer that must not be 0.
    pub(crate) fn nonzero<T: Copy + Into<u32>>(
        &self,
        p: &Property<'_>,
        value: T,
    ) -> Result<T, CodecError> {
        if value.into() == 0 {
            Err(self.invalid(p, 0))
        } else {
            Ok(value)
        }
    }
}

/// A user property, owned.
pub(crate) fn user_property(name: &str, value: &str) -> UserProperty {
    UserProperty {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}
