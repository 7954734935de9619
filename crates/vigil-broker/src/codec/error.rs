//! What can be wrong with a packet, in words.

/// A packet that cannot be framed or parsed. Every variant's message is a
/// sentence a person can act on, naming the packet and the field.
///
/// `packet` is the packet's name ("CONNECT"); `scope` says which length bounds
/// the field ("packet", "properties", "will properties"); `field` names the
/// field as the specification does, in lower case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The remaining-length field of a fixed header has a continuation bit on
    /// its fourth byte.
    #[error("the packet's remaining length field runs past 4 bytes, which MQTT does not allow")]
    RemainingLengthTooLong,

    /// The first byte has packet type 0, which MQTT reserves.
    #[error("packet type 0 is reserved: first byte 0x{first:02X} does not start an MQTT packet")]
    ReservedPacketType {
        /// The offending first byte.
        first: u8,
    },

    /// A packet is larger than the limit the caller set.
    #[error("{packet} of {len} bytes is larger than the maximum of {max} bytes")]
    PacketTooLarge {
        /// Packet name.
        packet: &'static str,
        /// Its total length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// The flag nibble of the fixed header is not the one MQTT requires.
    #[error("{packet}: fixed header flags are 0x{flags:X} but MQTT requires 0x{expected:X}")]
    InvalidFlags {
        /// Packet name.
        packet: &'static str,
        /// The flags found.
        flags: u8,
        /// The flags MQTT requires for this packet type.
        expected: u8,
    },

    /// The data ends in the middle of a fixed-size field.
    #[error("{packet}: ran out of bytes reading the {field}")]
    Truncated {
        /// Packet name.
        packet: &'static str,
        /// The field being read.
        field: &'static str,
    },

    /// A length prefix claims more bytes than are left.
    #[error(
        "{packet}: {field} length {len} runs past the end of the {scope} (only {left} bytes left)"
    )]
    LengthPastEnd {
        /// Packet name.
        packet: &'static str,
        /// What bounds the field: "packet", "properties", "will properties".
        scope: &'static str,
        /// The field whose length is wrong.
        field: &'static str,
        /// The length it claims.
        len: usize,
        /// The bytes actually left.
        left: usize,
    },

    /// A variable byte integer inside a packet takes more than 4 bytes.
    #[error("{packet}: the {field} is a variable byte integer longer than 4 bytes")]
    VarIntTooLong {
        /// Packet name.
        packet: &'static str,
        /// The field being read.
        field: &'static str,
    },

    /// A UTF-8 string field is not valid UTF-8.
    #[error("{packet}: the {field} is not valid UTF-8")]
    InvalidUtf8 {
        /// Packet name.
        packet: &'static str,
        /// The field.
        field: &'static str,
    },

    /// A UTF-8 string field contains U+0000, which MQTT forbids.
    #[error("{packet}: the {field} contains the null character U+0000")]
    NullCharacter {
        /// Packet name.
        packet: &'static str,
        /// The field.
        field: &'static str,
    },

    /// Bytes are left over after the last field of a packet.
    #[error("{packet}: {count} unexpected bytes after the {after}")]
    TrailingBytes {
        /// Packet name.
        packet: &'static str,
        /// The last field that was expected.
        after: &'static str,
        /// How many bytes follow it.
        count: usize,
    },

    /// A QoS field holds 3.
    #[error("{packet}: the {field} is 3, which is not a valid QoS")]
    InvalidQos {
        /// Packet name.
        packet: &'static str,
        /// The field ("QoS", "will QoS", "subscription options").
        field: &'static str,
    },

    /// CONNECT names a protocol other than "MQTT" or "MQIsdp".
    #[error(
        "CONNECT: unknown protocol name {0:?} (expected \"MQTT\", or \"MQIsdp\" for MQTT 3.1)"
    )]
    InvalidProtocolName(String),

    /// CONNECT asks for a protocol level this codec does not speak (or one
    /// that does not go with its protocol name). MQTT wants a CONNACK with
    /// "unacceptable protocol version" in answer.
    #[error("CONNECT: protocol level {0} is not supported (supported: 3 named \"MQIsdp\", 4 and 5 named \"MQTT\")")]
    UnsupportedProtocolLevel(u8),

    /// An MQTT 5 property identifier that the specification does not define.
    #[error("{packet}: unknown property identifier 0x{id:02X} in the {scope}")]
    UnknownProperty {
        /// Packet name.
        packet: &'static str,
        /// Which property block.
        scope: &'static str,
        /// The identifier found.
        id: u32,
    },

    /// A known MQTT 5 property in a packet that may not carry it.
    #[error("{packet}: the {name} property (0x{id:02X}) is not allowed in the {scope}")]
    PropertyNotAllowed {
        /// Packet name.
        packet: &'static str,
        /// Which property block.
        scope: &'static str,
        /// The identifier.
        id: u8,
        /// The property's name.
        name: &'static str,
    },

    /// An MQTT 5 property that may appear once appears again.
    #[error("{packet}: the {name} property appears more than once in the {scope}")]
    DuplicateProperty {
        /// Packet name.
        packet: &'static str,
        /// Which property block.
        scope: &'static str,
        /// The property's name.
        name: &'static str,
    },

    /// An MQTT 5 property holds a value the specification forbids (a receive
    /// maximum of 0, a payload format indicator of 7, ...).
    #[error("{packet}: the {name} property has the invalid value {value}")]
    InvalidPropertyValue {
        /// Packet name.
        packet: &'static str,
        /// The property's name.
        name: &'static str,
        /// The value found.
        value: u32,
    },

    /// Any other malformed packet; the reason says what.
    #[error("{packet}: {reason}")]
    Malformed {
        /// Packet name.
        packet: &'static str,
        /// What is wrong.
        reason: &'static str,
    },

    /// A well-formed packet that breaks a rule of the protocol (MQTT 5 calls
    /// these "protocol errors"); the reason says which.
    #[error("{packet}: {reason}")]
    ProtocolError {
        /// Packet name.
        packet: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

impl CodecError {
    /// The MQTT 5 reason code that reports this error to the peer (in a
    /// CONNACK or DISCONNECT): 0x81 malformed packet, 0x82 protocol error,
    /// 0x84 unsupported protocol version, 0x95 packet too large.
    pub fn reason_code(&self) -> u8 {
        match self {
            CodecError::UnsupportedProtocolLevel(_) | CodecError::InvalidProtocolName(_) => 0x84,
            CodecError::PacketTooLarge { .. } => 0x95,
            CodecError::ProtocolError { .. }
            | CodecError::DuplicateProperty { .. }
            | CodecError::InvalidPropertyValue { .. } => 0x82,
            _ => 0x81,
        }
    }
}
