//! MQTT packet framing, and the few packets the front door reads or writes.
//!
//! # Why this exists
//!
//! Vigil's front door sits between every client and rumqttd's router. It has
//! to find packet boundaries in both directions, read a handful of packets
//! (CONNECT, CONNACK, PUBLISH, DISCONNECT, SUBSCRIBE), rewrite one (the CONNECT,
//! whose keepalive and login are replaced by Vigil's own), and write a few of
//! its own (refusing CONNACKs, a DISCONNECT with a reason code, PINGREQ).
//!
//! Everything else is forwarded **byte for byte, never re-encoded**. A parse
//! followed by an encode is a chance to change what the client said (a
//! property dropped, a length written differently, a field this codec does not
//! know about lost). Forwarding the original bytes makes the front door
//! invisible for every packet it does not need to change, and it is also the
//! fastest thing to do: finding a boundary is reading at most five bytes, and
//! handing on a frame is a [`Bytes`] slice of the read buffer.
//!
//! # Rules this module keeps
//!
//! - Parsers never panic, whatever the input: every malformed input is a
//!   [`CodecError`] whose message says what is wrong in words ("CONNECT: client
//!   id length 300 runs past the end of the packet (only 4 bytes left)").
//! - Parsers never copy a payload: payloads, passwords and raw property blocks
//!   are [`Bytes::slice`]s of the buffer they were read from. Only the short
//!   strings (topic, client id, user name, string properties) become
//!   `String`s, and CONNACK and DISCONNECT, which are parsed from a borrowed
//!   `&[u8]`, copy their few property bytes.
//! - Parsers follow MQTT 3.1.1 (OASIS, 2014) and MQTT 5.0 (OASIS, 2019) for
//!   field order, flag bits, property identifiers and types. UTF-8 strings are
//!   checked: invalid UTF-8 and U+0000 are errors.
//! - `encode(parse(x)) == x` for every well-formed `x` (one whose variable
//!   byte integers use the fewest bytes, as MQTT 5 requires).
//!
//! MQTT 3.1 (protocol name "MQIsdp", level 3) is accepted in CONNECT; after the
//! CONNECT its packets are those of 3.1.1, so the rest of this module knows
//! only [`MqttVersion::V311`] and [`MqttVersion::V5`].

mod ack;
mod connack;
mod connect;
mod disconnect;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod properties;
mod publish;
mod subscribe;
mod wire;

#[cfg(test)]
mod tests;

use bytes::{BufMut, Bytes, BytesMut};
pub use vigil_core::MqttVersion;

pub use ack::{publish_ack, SubAck};
pub use connack::{v311_connack_code, ConnAck, ConnAckProperties, Refusal};
pub use connect::{Connect, ConnectProperties, Will, WillProperties};
pub use disconnect::{
    disconnect_reason, disconnect_v5, disconnect_v5_with_reason_string, Disconnect,
    DisconnectProperties,
};
pub use error::CodecError;
pub use properties::{
    property_id, property_name, split_property_block, with_user_property, without_property,
    without_user_property, Properties, Property, PropertyValue,
};
pub use publish::{publish_packet_id, Publish, PublishProperties};
pub use subscribe::{
    unsubscribe_filters, valid_topic_filter, Subscribe, SubscribeProperties, SubscriptionFilter,
};

/// A whole PINGREQ packet, as the front door sends it to the router on a
/// quiet client's behalf.
pub const PINGREQ: [u8; 2] = [0xC0, 0x00];

/// A whole PINGRESP packet.
pub const PINGRESP: [u8; 2] = [0xD0, 0x00];

/// The largest remaining length MQTT can express (four variable-length bytes):
/// 268,435,455 bytes.
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// MQTT control packet types: the high nibble of a packet's first byte.
pub mod packet_type {
    /// Client asks to connect.
    pub const CONNECT: u8 = 1;
    /// Server answers a CONNECT.
    pub const CONNACK: u8 = 2;
    /// A message, in either direction.
    pub const PUBLISH: u8 = 3;
    /// QoS 1 acknowledgement.
    pub const PUBACK: u8 = 4;
    /// QoS 2, first acknowledgement.
    pub const PUBREC: u8 = 5;
    /// QoS 2, release.
    pub const PUBREL: u8 = 6;
    /// QoS 2, completion.
    pub const PUBCOMP: u8 = 7;
    /// Client subscribes.
    pub const SUBSCRIBE: u8 = 8;
    /// Server answers a SUBSCRIBE.
    pub const SUBACK: u8 = 9;
    /// Client unsubscribes.
    pub const UNSUBSCRIBE: u8 = 10;
    /// Server answers an UNSUBSCRIBE.
    pub const UNSUBACK: u8 = 11;
    /// Client asks whether the server is alive.
    pub const PINGREQ: u8 = 12;
    /// Server answers a PINGREQ.
    pub const PINGRESP: u8 = 13;
    /// Goodbye (client to server; in MQTT 5 also server to client).
    pub const DISCONNECT: u8 = 14;
    /// MQTT 5 enhanced authentication exchange.
    pub const AUTH: u8 = 15;

    /// The packet type's name as the specification spells it ("PUBLISH"),
    /// or "reserved" for 0 and anything above 15.
    pub fn name(packet_type: u8) -> &'static str {
        match packet_type {
            CONNECT => "CONNECT",
            CONNACK => "CONNACK",
            PUBLISH => "PUBLISH",
            PUBACK => "PUBACK",
            PUBREC => "PUBREC",
            PUBREL => "PUBREL",
            PUBCOMP => "PUBCOMP",
            SUBSCRIBE => "SUBSCRIBE",
            SUBACK => "SUBACK",
            UNSUBSCRIBE => "UNSUBSCRIBE",
            UNSUBACK => "UNSUBACK",
            PINGREQ => "PINGREQ",
            PINGRESP => "PINGRESP",
            DISCONNECT => "DISCONNECT",
            AUTH => "AUTH",
            _ => "reserved",
        }
    }
}

/// The fixed header of one packet: its type, its flags and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The packet type (high nibble of the first byte), 1..=15; see
    /// [`packet_type`].
    pub packet_type: u8,
    /// The flags (low nibble of the first byte). Only PUBLISH gives them a
    /// meaning; see [`FrameHeader::validate_flags`].
    pub flags: u8,
    /// Bytes taken by the fixed header itself: 1 + the length of the
    /// remaining-length field (1 to 4).
    pub header_len: usize,
    /// Bytes after the fixed header (the packet's "remaining length").
    pub remaining_len: usize,
}

impl FrameHeader {
    /// Bytes taken by the whole packet: `header_len + remaining_len`.
    pub fn total_len(&self) -> usize {
        self.header_len + self.remaining_len
    }

    /// The packet type's name ("PUBLISH").
    pub fn name(&self) -> &'static str {
        packet_type::name(self.packet_type)
    }

    /// Checks the flag nibble as MQTT requires: PUBREL, SUBSCRIBE and
    /// UNSUBSCRIBE carry `0b0010`, PUBLISH carries DUP/QoS/RETAIN (QoS 3 and
    /// DUP on a QoS 0 message are errors), every other type carries 0.
    ///
    /// [`parse_frame_header`] does not check this, so that finding boundaries
    /// stays separate from judging packets. AUTH (type 15) exists only in
    /// MQTT 5; rejecting it from a 3.1.1 client is the caller's business.
    pub fn validate_flags(&self) -> Result<(), CodecError> {
        match self.packet_type {
            packet_type::PUBLISH => publish::check_flags(self.flags).map(|_| ()),
            packet_type::PUBREL | packet_type::SUBSCRIBE | packet_type::UNSUBSCRIBE => {
                expect_flags(self.name(), self.flags, 0b0010)
            }
            _ => expect_flags(self.name(), self.flags, 0),
        }
    }
}

fn expect_flags(packet: &'static str, flags: u8, expected: u8) -> Result<(), CodecError> {
    if flags == expected {
        Ok(())
    } else {
        Err(CodecError::InvalidFlags {
            packet,
            flags,
            expected,
        })
    }
}

/// Reads the fixed header of the packet at the start of `buf`.
///
/// `Ok(None)` means more bytes are needed to know the packet's length (`buf`
/// holds less than the whole fixed header). `Ok(Some(h))` does not mean the
/// whole packet has arrived: compare `buf.len()` with [`FrameHeader::total_len`].
///
/// Errors: the first byte has packet type 0 (reserved, never valid), or the
/// remaining length takes more than 4 bytes. Both mean the stream cannot be
/// framed any further and the connection must close.
pub fn parse_frame_header(buf: &[u8]) -> Result<Option<FrameHeader>, CodecError> {
    let Some((&first, rest)) = buf.split_first() else {
        return Ok(None);
    };
    let packet_type = first >> 4;
    if packet_type == 0 {
        return Err(CodecError::ReservedPacketType { first });
    }
    let mut remaining_len = 0usize;
    for (i, &byte) in rest.iter().take(4).enumerate() {
        remaining_len |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some(FrameHeader {
                packet_type,
                flags: first & 0x0F,
                header_len: 2 + i,
                remaining_len,
            }));
        }
    }
    if rest.len() >= 4 {
        Err(CodecError::RemainingLengthTooLong)
    } else {
        Ok(None)
    }
}

/// One whole packet cut from a read buffer by [`next_frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its fixed header.
    pub header: FrameHeader,
    /// Every byte of the packet, fixed header included: what to forward.
    pub bytes: Bytes,
}

impl Frame {
    /// The packet after its fixed header (`remaining_len` bytes), sharing
    /// memory with [`Frame::bytes`].
    pub fn body(&self) -> Bytes {
        self.bytes
            .slice(self.header.header_len.min(self.bytes.len())..)
    }
}

/// Cuts the next whole packet off the front of `buf`, without copying.
///
/// `Ok(None)`: the packet has not fully arrived; read more and call again
/// (nothing is consumed). A packet longer than `max_len` bytes in total is an
/// error as soon as its fixed header is known, so a client cannot make the
/// front door buffer a 256 MB packet before it is refused.
pub fn next_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, CodecError> {
    let Some(header) = parse_frame_header(buf)? else {
        return Ok(None);
    };
    let total = header.total_len();
    if total > max_len {
        return Err(CodecError::PacketTooLarge {
            packet: header.name(),
            len: total,
            max: max_len,
        });
    }
    if buf.len() < total {
        return Ok(None);
    }
    let bytes = buf.split_to(total).freeze();
    Ok(Some(Frame { header, bytes }))
}

/// A whole packet (first byte `first`) made of `body` with an empty MQTT 5
/// property block put in at `at`: a 3.1.1 UNSUBSCRIBE in MQTT 5 words, say.
pub fn with_empty_properties(first: u8, body: &[u8], at: usize) -> Bytes {
    let at = at.min(body.len());
    let mut out = BytesMut::with_capacity(body.len() + 5);
    put_fixed_header(&mut out, first, body.len() + 1);
    out.extend_from_slice(&body[..at]);
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&body[at..]);
    out.freeze()
}

/// Appends `len` as an MQTT variable byte integer (the remaining-length
/// encoding: 7 bits a byte, least significant first, 1 to 4 bytes).
///
/// Values above [`MAX_REMAINING_LENGTH`] cannot be expressed; they are a
/// caller bug (nothing this module parses is that long) and are written as
/// [`MAX_REMAINING_LENGTH`] (and trip a debug assertion).
pub fn encode_remaining_length(len: usize, out: &mut BytesMut) {
    debug_assert!(
        len <= MAX_REMAINING_LENGTH,
        "remaining length {len} is beyond MQTT's limit"
    );
    let mut value = len.min(MAX_REMAINING_LENGTH);
    loop {
        // Truncation is the point: the low 7 bits.
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

/// Bytes [`encode_remaining_length`] takes for `len`.
pub fn remaining_length_len(len: usize) -> usize {
    match len {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a fixed header: the first byte and the remaining length. Reserves
/// room for the whole packet first.
fn put_fixed_header(out: &mut BytesMut, first: u8, remaining_len: usize) {
    out.reserve(1 + remaining_length_len(remaining_len) + remaining_len);
    out.put_u8(first);
    encode_remaining_length(remaining_len, out);
}

/// Whether packets of `version` carry MQTT 5 fields (properties).
fn is_v5(version: MqttVersion) -> bool {
    version == MqttVersion::V5
}
