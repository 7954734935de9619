//! SUBSCRIBE (MQTT 3.1.1 section 3.8, MQTT 5 section 3.8): read to learn what
//! a client listens to; forwarded as it came.

use bytes::{BufMut, Bytes, BytesMut};
use vigil_core::{MqttVersion, UserProperty};

use super::properties::{property_id as id, user_property, Collector, PropertyValue as V};
use super::wire::{self, Reader};
use super::{is_v5, CodecError};

const PACKET: &str = "SUBSCRIBE";

/// A SUBSCRIBE packet, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier (never 0).
    pub packet_id: u16,
    /// The topic filters, in order (at least one).
    pub filters: Vec<SubscriptionFilter>,
    /// MQTT 5 properties, raw, without their length prefix.
    pub properties_raw: Bytes,
}

/// One topic filter and its subscription options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionFilter {
    /// The topic filter (may hold wildcards; see [`valid_topic_filter`]).
    pub filter: String,
    /// The options byte: QoS in bits 0-1; MQTT 5 also no local (bit 2),
    /// retain as published (bit 3) and retain handling (bits 4-5).
    pub options: u8,
}

impl SubscriptionFilter {
    /// The maximum QoS asked for (0, 1 or 2).
    pub fn qos(&self) -> u8 {
        self.options & 0b11
    }

    /// MQTT 5: do not send the client its own messages.
    pub fn no_local(&self) -> bool {
        self.options & 0b0100 != 0
    }

    /// MQTT 5: keep the RETAIN flag as published.
    pub fn retain_as_published(&self) -> bool {
        self.options & 0b1000 != 0
    }

    /// MQTT 5: 0 send retained messages on subscribe, 1 only for a new
    /// subscription, 2 never.
    pub fn retain_handling(&self) -> u8 {
        (self.options >> 4) & 0b11
    }
}

/// The MQTT 5 SUBSCRIBE properties (section 3.8.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeProperties {
    /// Identifier the server puts on messages matching these filters (never 0).
    pub subscription_identifier: Option<u32>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl Subscribe {
    /// Parses a SUBSCRIBE from the low nibble of its first byte (`flags`,
    /// which must be `0b0010`) and `body`, the packet after its fixed header.
    ///
    /// Errors: wrong flags; packet identifier 0; no topic filter; an empty
    /// filter or one that is not valid UTF-8 or holds U+0000; reserved option
    /// bits set; QoS 3; MQTT 5 retain handling 3 or no local on a shared
    /// subscription; any MQTT 5 property error. Where the wildcards sit is
    /// not checked ([`valid_topic_filter`] does): MQTT answers a bad filter in
    /// the SUBACK rather than treating the packet as malformed.
    pub fn parse(flags: u8, body: Bytes, version: MqttVersion) -> Result<Subscribe, CodecError> {
        super::expect_flags(PACKET, flags & 0x0F, 0b0010)?;
        let mut r = Reader::new(&body, PACKET, "packet");
        let packet_id = match r.u16("packet identifier")? {
            0 => return Err(malformed("packet identifier 0 is not allowed")),
            id => id,
        };
        let properties_raw = if is_v5(version) {
            let raw = r.property_block("properties")?;
            collect(raw)?;
            wire::sub_bytes(&body, raw)
        } else {
            Bytes::new()
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.utf8("topic filter")?;
            if filter.is_empty() {
                return Err(malformed("a topic filter is empty"));
            }
            let options = r.u8("subscription options")?;
            let reserved = if is_v5(version) {
                0b1100_0000
            } else {
                0b1111_1100
            };
            if options & reserved != 0 {
                return Err(malformed(
                    "reserved bits of the subscription options are set",
                ));
            }
            let sub = SubscriptionFilter {
                filter: filter.to_owned(),
                options,
            };
            if sub.qos() == 3 {
                return Err(CodecError::InvalidQos {
                    packet: PACKET,
                    field: "QoS in the subscription options",
                });
            }
            if sub.retain_handling() == 3 {
                return Err(protocol_error(
                    "retain handling is 3, which is not a valid value",
                ));
            }
            if sub.no_local() && filter.starts_with("$share/") {
                return Err(protocol_error("no local is set on a shared subscription"));
            }
            filters.push(sub);
        }
        if filters.is_empty() {
            return Err(protocol_error("it has no topic filter"));
        }
        Ok(Subscribe {
            packet_id,
            filters,
            properties_raw,
        })
    }

    /// The MQTT 5 properties, parsed (default before MQTT 5).
    pub fn properties_v5(&self) -> Result<SubscribeProperties, CodecError> {
        collect(&self.properties_raw)
    }

    /// Appends the whole SUBSCRIBE packet, fixed header included:
    /// `encode(parse(x)) == x` for a well-formed `x`.
    pub fn encode(&self, version: MqttVersion, out: &mut BytesMut) {
        let mut len = 2 + self
            .filters
            .iter()
            .map(|f| wire::str_len(&f.filter) + 1)
            .sum::<usize>();
        if is_v5(version) {
            len += wire::block_len(&self.properties_raw);
        }
        super::put_fixed_header(out, 0x82, len);
        out.put_u16(self.packet_id);
        if is_v5(version) {
            wire::put_block(out, &self.properties_raw);
        }
        for f in &self.filters {
            wire::put_str(out, &f.filter);
            out.put_u8(f.options);
        }
    }
}

fn collect(raw: &[u8]) -> Result<SubscribeProperties, CodecError> {
    let c = Collector {
        packet: PACKET,
        scope: "properties",
    };
    let mut out = SubscribeProperties::default();
    for p in c.iter(raw) {
        let p = p?;
        match (p.id, p.value) {
            (id::SUBSCRIPTION_IDENTIFIER, V::VarInt(v)) => {
                c.once(&mut out.subscription_identifier, c.nonzero(&p, v)?, &p)?
            }
            (id::USER_PROPERTY, V::Utf8Pair(k, v)) => out.user_properties.push(user_property(k, v)),
            _ => return Err(c.not_allowed(&p)),
        }
    }
    Ok(out)
}

/// Whether `filter` is a well-formed topic filter (MQTT section 4.7): not
/// empty, `#` only as the whole last level, `+` only as a whole level, and a
/// shared subscription (`$share/{name}/{filter}`) with a non-empty name free
/// of wildcards and a non-empty filter.
pub fn valid_topic_filter(filter: &str) -> bool {
    let filter = match filter.strip_prefix("$share/") {
        Some(rest) => match rest.split_once('/') {
            Some((name, f)) if !name.is_empty() && !wire::has_wildcard(name) && !f.is_empty() => f,
            _ => return false,
        },
        None => filter,
    };
    if filter.is_empty() {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "#" if last => {}
            "+" => {}
            l if wire::has_wildcard(l) => return false,
            _ => {}
        }
    }
    true
}

/// The topic filters of an UNSUBSCRIBE body (MQTT 3.1.1 section 3.10, MQTT 5
/// section 3.10), in order; the packet is forwarded as it came.
pub fn unsubscribe_filters(
    flags: u8,
    body: &[u8],
    version: MqttVersion,
) -> Result<Vec<String>, CodecError> {
    const PACKET: &str = "UNSUBSCRIBE";
    let malformed = |reason| CodecError::Malformed {
        packet: PACKET,
        reason,
    };
    super::expect_flags(PACKET, flags & 0x0F, 0b0010)?;
    let mut r = Reader::new(body, PACKET, "packet");
    if r.u16("packet identifier")? == 0 {
        return Err(malformed("packet identifier 0 is not allowed"));
    }
    if is_v5(version) {
        let raw = r.property_block("properties")?;
        let c = Collector {
            packet: PACKET,
            scope: "properties",
        };
        for p in c.iter(raw) {
            let p = p?;
            if p.id != id::USER_PROPERTY {
                return Err(c.not_allowed(&p));
            }
        }
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.utf8("topic filter")?;
        if filter.is_empty() {
            return Err(malformed("a topic filter is empty"));
        }
        filters.push(filter.to_owned());
    }
    if filters.is_empty() {
        return Err(CodecError::ProtocolError {
            packet: PACKET,
            reason: "it has no topic filter",
        });
    }
    Ok(filters)
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const V4: MqttVersion = MqttVersion::V311;
    const V5: MqttVersion = MqttVersion::V5;

    /// 3.1.1: packet id 10, "a/b" QoS 1, "#" QoS 2.
    pub(crate) const V4_TWO: &[u8] = &[
        0x82, 0x0C, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x00, 0x01, b'#', 0x02,
    ];
    /// 5: packet id 11, subscription identifier 5, "a/+" with QoS 1, no local,
    /// retain as published, retain handling 2.
    pub(crate) const V5_ONE: &[u8] = &[
        0x82, 0x0B, 0x00, 0x0B, 0x02, 0x0B, 0x05, 0x00, 0x03, b'a', b'/', b'+', 0x2D,
    ];

    fn round_trip(packet: &[u8], version: MqttVersion) -> Subscribe {
        assert_eq!(usize::from(packet[1]) + 2, packet.len());
        let s = Subscribe::parse(
            packet[0] & 0x0F,
            Bytes::copy_from_slice(&packet[2..]),
            version,
        )
        .expect("parses");
        let mut out = BytesMut::new();
        s.encode(version, &mut out);
        assert_eq!(&out[..], packet);
        s
    }

    #[test]
    fn v4() {
        let s = round_trip(V4_TWO, V4);
        assert_eq!(s.packet_id, 10);
        assert_eq!(
            s.filters,
            vec![
                SubscriptionFilter {
                    filter: "a/b".into(),
                    options: 1
                },
                SubscriptionFilter {
                    filter: "#".into(),
                    options: 2
                }
            ]
        );
    }

    #[test]
    fn v5() {
        let s = round_trip(V5_ONE, V5);
        assert_eq!(s.packet_id, 11);
        assert_eq!(
            s.properties_v5()
                .expect("properties")
                .subscription_identifier,
            Some(5)
        );
        let f = &s.filters[0];
        assert_eq!(
            (
                f.filter.as_str(),
                f.qos(),
                f.no_local(),
                f.retain_as_published(),
                f.retain_handling()
            ),
            ("a/+", 1, true, true, 2)
        );
    }

    #[test]
    fn errors() {
        let body = Bytes::copy_from_slice(&V4_TWO[2..]);
        assert_eq!(
            Subscribe::parse(0, body.clone(), V4)
                .unwrap_err()
                .to_string(),
            "SUBSCRIBE: fixed header flags are 0x0 but MQTT requires 0x2"
        );
        // v5 options bits are reserved in 3.1.1.
        assert!(matches!(
            Subscribe::parse(2, Bytes::copy_from_slice(&[0, 1, 0, 1, b'a', 0x04]), V4),
            Err(CodecError::Malformed { .. })
        ));
        assert!(matches!(
            Subscribe::parse(2, Bytes::copy_from_slice(&[0, 1, 0, 1, b'a', 0x03]), V4),
            Err(CodecError::InvalidQos { .. })
        ));
        assert!(matches!(
            Subscribe::parse(2, Bytes::copy_from_slice(&[0, 1, 0, 0, 1, b'a', 0x30]), V5),
            Err(CodecError::ProtocolError { .. })
        ));
        assert_eq!(
            Subscribe::parse(2, Bytes::copy_from_slice(&[0, 1]), V4)
                .unwrap_err()
                .to_string(),
            "SUBSCRIBE: it has no topic filter"
        );
        assert_eq!(
            Subscribe::parse(2, Bytes::copy_from_slice(&[0, 1, 0, 1, b'a']), V4)
                .unwrap_err()
                .to_string(),
            "SUBSCRIBE: ran out of bytes reading the subscription options"
        );
        let shared_no_local = [&[0, 1, 0, 0, 10][..], b"$share/g/a", &[0x04]].concat();
        assert_eq!(
            Subscribe::parse(2, Bytes::from(shared_no_local), V5)
                .unwrap_err()
                .to_string(),
            "SUBSCRIBE: no local is set on a shared subscription"
        );
    }

    #[test]
    fn topic_filters() {
        for ok in [
            "a",
            "a/b",
            "#",
            "+",
            "a/+/b",
            "a/#",
            "+/+",
            "/",
            "$share/g/a/#",
            "sport/tennis/+",
        ] {
            assert!(valid_topic_filter(ok), "{ok}");
        }
        for bad in [
            "",
            "a#",
            "a/#/b",
            "a+",
            "+a/b",
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "#/",
        ] {
            assert!(!valid_topic_filter(bad), "{bad}");
        }
    }
}
