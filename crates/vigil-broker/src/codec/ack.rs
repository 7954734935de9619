//! Acknowledgements the front door writes itself, for what it refuses
//! (PUBACK, PUBREC and PUBCOMP for a dropped PUBLISH; SUBACK for refused
//! filters), and the SUBACK it reads to merge its refusals into the router's.

use bytes::{BufMut, Bytes, BytesMut};

use super::wire::Reader;
use super::{is_v5, packet_type, put_fixed_header, CodecError, MqttVersion};

/// A whole PUBACK, PUBREC or PUBCOMP (`kind`, a [`packet_type`]) for
/// `packet_id`; MQTT 5 also carries `reason` (0x87 not authorized, say).
pub fn publish_ack(kind: u8, packet_id: u16, reason: u8, version: MqttVersion) -> Bytes {
    let mut out = BytesMut::with_capacity(5);
    let v5 = is_v5(version) && reason != 0;
    put_fixed_header(&mut out, kind << 4, if v5 { 3 } else { 2 });
    out.put_u16(packet_id);
    if v5 {
        out.put_u8(reason);
    }
    out.freeze()
}

/// A SUBACK as the router sent it: enough to put refusals back in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The SUBSCRIBE it answers.
    pub packet_id: u16,
    /// MQTT 5 properties, raw, without their length prefix.
    pub properties_raw: Bytes,
    /// One return/reason code per filter, in order.
    pub codes: Vec<u8>,
}

impl SubAck {
    /// Parses a SUBACK body (after the fixed header).
    pub fn parse(body: &[u8], version: MqttVersion) -> Result<SubAck, CodecError> {
        let mut r = Reader::new(body, "SUBACK", "packet");
        let packet_id = r.u16("packet identifier")?;
        let properties_raw = if is_v5(version) {
            Bytes::copy_from_slice(r.property_block("properties")?)
        } else {
            Bytes::new()
        };
        Ok(SubAck {
            packet_id,
            properties_raw,
            codes: r.rest().to_vec(),
        })
    }

    /// The whole packet.
    pub fn encode(&self, version: MqttVersion) -> Bytes {
        let props = if is_v5(version) {
            super::remaining_length_len(self.properties_raw.len()) + self.properties_raw.len()
        } else {
            0
        };
        let remaining = 2 + props + self.codes.len();
        let mut out = BytesMut::with_capacity(remaining + 5);
        put_fixed_header(&mut out, packet_type::SUBACK << 4, remaining);
        out.put_u16(self.packet_id);
        if is_v5(version) {
            super::encode_remaining_length(self.properties_raw.len(), &mut out);
            out.put_slice(&self.properties_raw);
        }
        out.put_slice(&self.codes);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_carry_a_reason_only_in_mqtt5() {
        assert_eq!(
            &publish_ack(packet_type::PUBACK, 7, 0x87, MqttVersion::V5)[..],
            &[0x40, 3, 0, 7, 0x87]
        );
        assert_eq!(
            &publish_ack(packet_type::PUBACK, 7, 0x87, MqttVersion::V311)[..],
            &[0x40, 2, 0, 7]
        );
        assert_eq!(
            &publish_ack(packet_type::PUBCOMP, 1, 0, MqttVersion::V5)[..],
            &[0x70, 2, 0, 1]
        );
    }

    #[test]
    fn a_suback_survives_a_round_trip() {
        for (version, body) in [
            (MqttVersion::V311, vec![0u8, 9, 1, 0x80]),
            (MqttVersion::V5, vec![0u8, 9, 3, 0x1F, 0, 0, 1, 0x87]),
        ] {
            let s = SubAck::parse(&body, version).unwrap();
            assert_eq!(s.packet_id, 9);
            let whole = s.encode(version);
            assert_eq!(&whole[2..], &body[..]);
            assert_eq!(whole[0], 0x90);
        }
    }
}
