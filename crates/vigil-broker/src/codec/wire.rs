//! MQTT's data representations (section 1.5 of both specifications): reading
//! them without panicking, and writing them.

use bytes::{BufMut, Bytes, BytesMut};

use super::CodecError;

/// The longest string or binary field MQTT can carry (two-byte length).
pub(crate) const MAX_FIELD: usize = u16::MAX as usize;

/// A cursor over a packet body (or a property block) that turns every
/// shortfall into a [`CodecError`] naming the packet and the field.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    packet: &'static str,
    scope: &'static str,
}

impl<'a> Reader<'a> {
    /// `packet` and `scope` only label errors ("CONNECT", "packet").
    pub(crate) fn new(buf: &'a [u8], packet: &'static str, scope: &'static str) -> Self {
        Reader {
            rest: buf,
            packet,
            scope,
        }
    }

    pub(crate) fn packet(&self) -> &'static str {
        self.packet
    }

    pub(crate) fn scope(&self) -> &'static str {
        self.scope
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next `n` bytes; `Truncated` when fewer are left.
    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], CodecError> {
        let (head, tail) = self.rest.split_at_checked(n).ok_or(CodecError::Truncated {
            packet: self.packet,
            field,
        })?;
        self.rest = tail;
        Ok(head)
    }

    /// The next `len` bytes of a field whose length was just read;
    /// `LengthPastEnd` when fewer are left.
    pub(crate) fn take_len(
        &mut self,
        len: usize,
        field: &'static str,
    ) -> Result<&'a [u8], CodecError> {
        let left = self.rest.len();
        let (head, tail) = self
            .rest
            .split_at_checked(len)
            .ok_or(CodecError::LengthPastEnd {
                packet: self.packet,
                scope: self.scope,
                field,
                len,
                left,
            })?;
        self.rest = tail;
        Ok(head)
    }

    /// How many bytes are left.
    pub(crate) fn left(&self) -> usize {
        self.rest.len()
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, CodecError> {
        let (&b, tail) = self.rest.split_first().ok_or(CodecError::Truncated {
            packet: self.packet,
            field,
        })?;
        self.rest = tail;
        Ok(b)
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, CodecError> {
        let b = self.take(2, field)?;
        match *b {
            [hi, lo] => Ok(u16::from_be_bytes([hi, lo])),
            _ => Err(CodecError::Truncated {
                packet: self.packet,
                field,
            }),
        }
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        let b = self.take(4, field)?;
        match *b {
            [a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
            _ => Err(CodecError::Truncated {
                packet: self.packet,
                field,
            }),
        }
    }

    /// A variable byte integer (1 to 4 bytes, 7 bits each, least significant
    /// first).
    pub(crate) fn varint(&mut self, field: &'static str) -> Result<u32, CodecError> {
        let mut value = 0u32;
        for i in 0..4 {
            let b = self.u8(field)?;
            value |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::VarIntTooLong {
            packet: self.packet,
            field,
        })
    }

    /// Binary data: a two-byte length, then that many bytes.
    pub(crate) fn binary(&mut self, field: &'static str) -> Result<&'a [u8], CodecError> {
        let len = self.u16(field)?;
        self.take_len(usize::from(len), field)
    }

    /// A UTF-8 encoded string: a two-byte length, then that many bytes of
    /// UTF-8 without U+0000.
    pub(crate) fn utf8(&mut self, field: &'static str) -> Result<&'a str, CodecError> {
        let bytes = self.binary(field)?;
        check_utf8(bytes, self.packet, field)
    }

    /// An MQTT 5 property block: a variable byte integer length, then the
    /// properties (returned raw, without the length).
    pub(crate) fn property_block(&mut self, field: &'static str) -> Result<&'a [u8], CodecError> {
        let len_field = match field {
            "properties" => "properties length",
            "will properties" => "will properties length",
            _ => "property length",
        };
        let len = self.varint(len_field)?;
        // A u32 always fits a usize on the targets Rust supports for this
        // crate; saturate rather than assume.
        self.take_len(usize::try_from(len).unwrap_or(usize::MAX), field)
    }

    /// Errors when anything is left after the last field, `after`.
    pub(crate) fn expect_end(&self, after: &'static str) -> Result<(), CodecError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(CodecError::TrailingBytes {
                packet: self.packet,
                after,
                count: self.rest.len(),
            })
        }
    }
}

/// Checks a UTF-8 encoded string's bytes: valid UTF-8, no U+0000.
pub(crate) fn check_utf8<'a>(
    bytes: &'a [u8],
    packet: &'static str,
    field: &'static str,
) -> Result<&'a str, CodecError> {
    let s = std::str::from_utf8(bytes).map_err(|_| CodecError::InvalidUtf8 { packet, field })?;
    if bytes.contains(&0) {
        return Err(CodecError::NullCharacter { packet, field });
    }
    Ok(s)
}

/// A zero-copy `Bytes` for a sub-slice that a [`Reader`] over `src` returned.
pub(crate) fn sub_bytes(src: &Bytes, sub: &[u8]) -> Bytes {
    // `sub` always comes from a reader over `src`, so it lies within it.
    src.slice_ref(sub)
}

/// `s` cut to the 65,535 bytes a string field can carry, at a character
/// boundary. Only a caller-built value can be that long.
pub(crate) fn clamp_str(s: &str) -> &str {
    if s.len() <= MAX_FIELD {
        return s;
    }
    debug_assert!(
        false,
        "a string field of {} bytes is beyond MQTT's 65,535",
        s.len()
    );
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// `b` cut to the 65,535 bytes a binary field can carry.
pub(crate) fn clamp_bin(b: &[u8]) -> &[u8] {
    debug_assert!(
        b.len() <= MAX_FIELD,
        "a binary field of {} bytes is beyond MQTT's 65,535",
        b.len()
    );
    b.get(..MAX_FIELD).unwrap_or(b)
}

/// Bytes a string field takes on the wire (length prefix included).
pub(crate) fn str_len(s: &str) -> usize {
    2 + clamp_str(s).len()
}

/// Bytes a binary field takes on the wire (length prefix included).
pub(crate) fn bin_len(b: &[u8]) -> usize {
    2 + clamp_bin(b).len()
}

/// Writes a UTF-8 string field (cut at 65,535 bytes; see [`clamp_str`]).
pub(crate) fn put_str(out: &mut BytesMut, s: &str) {
    put_bin(out, clamp_str(s).as_bytes());
}

/// Writes a binary field (cut at 65,535 bytes).
pub(crate) fn put_bin(out: &mut BytesMut, b: &[u8]) {
    let b = clamp_bin(b);
    // `clamp_bin` guarantees the length fits.
    out.put_u16(u16::try_from(b.len()).unwrap_or(u16::MAX));
    out.put_slice(b);
}

/// Bytes a property block takes on the wire (length prefix included).
pub(crate) fn block_len(raw: &[u8]) -> usize {
    super::remaining_length_len(raw.len()) + raw.len()
}

/// Writes a property block: its variable byte integer length, then `raw`.
pub(crate) fn put_block(out: &mut BytesMut, raw: &[u8]) {
    super::encode_remaining_length(raw.len(), out);
    out.put_slice(raw);
}

/// Whether a topic name or filter contains a wildcard character.
pub(crate) fn has_wildcard(s: &str) -> bool {
    s.bytes().any(|b| b == b'+' || b == b'#')
}
