//! Requests and responses as Vigil uses them, over coap-lite's `Packet`.

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The methods a technician can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// Read.
    Get,
    /// Process (create, trigger).
    Post,
    /// Replace.
    Put,
    /// Remove.
    Delete,
}

impl Method {
    fn request_type(self) -> RequestType {
        match self {
            Method::Get => RequestType::Get,
            Method::Post => RequestType::Post,
            Method::Put => RequestType::Put,
            Method::Delete => RequestType::Delete,
        }
    }
}

/// A request to one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The path, `/a/b` (`/` and the empty path are the root).
    pub path: String,
    /// Query parameters (`Uri-Query`), each `name=value`.
    pub query: Vec<String>,
    /// The payload (PUT and POST).
    pub payload: Vec<u8>,
    /// The payload's content format.
    pub content_format: Option<u16>,
}

impl Request {
    /// `GET path`.
    pub fn get(path: &str) -> Request {
        Request {
            method: Method::Get,
            path: path.to_owned(),
            query: Vec::new(),
            payload: Vec::new(),
            content_format: None,
        }
    }

    /// The packet, without message id and type (the endpoint sets those).
    pub(crate) fn packet(&self, token: &[u8]) -> Packet {
        let mut p = Packet::new();
        p.header.code = MessageClass::Request(self.method.request_type());
        p.set_token(token.to_vec());
        for segment in self.path.split('/').filter(|s| !s.is_empty()) {
            p.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
        }
        if let Some(cf) = self.content_format {
            p.add_option(CoapOption::ContentFormat, uint(u32::from(cf)));
        }
        for q in &self.query {
            p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
        }
        p.payload = self.payload.clone();
        p
    }
}

/// A response, whole (block-wise transfers already joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Who answered.
    pub peer: SocketAddr,
    /// The response code, `class << 5 | detail` (0x45 is 2.05 Content).
    pub code: u8,
    /// Content-Format, when given.
    pub content_format: Option<u16>,
    /// Max-Age in seconds, when given (RFC 7252 default: 60).
    pub max_age: Option<u32>,
    /// Observe sequence number (notifications and observe registrations).
    pub observe: Option<u32>,
    /// The payload, every byte.
    pub payload: Vec<u8>,
    /// Only the first block of a larger representation (a multicast answer
    /// is never followed up block by block; ask the peer directly for the rest).
    pub partial: bool,
}

impl Response {
    /// The code as CoAP writes it: `2.05`.
    pub fn code_text(&self) -> String {
        code_text(self.code)
    }

    /// 2.xx.
    pub fn is_success(&self) -> bool {
        self.code >> 5 == 2
    }

    pub(crate) fn from_packet(peer: SocketAddr, p: &Packet, payload: Vec<u8>) -> Response {
        Response {
            peer,
            code: u8::from(p.header.code),
            content_format: option_uint(p, CoapOption::ContentFormat)
                .and_then(|v| u16::try_from(v).ok()),
            max_age: option_uint(p, CoapOption::MaxAge),
            observe: option_uint(p, CoapOption::Observe),
            partial: Block::of(p).is_some_and(|b| b.more),
            payload,
        }
    }
}

/// `2.05` for 0x45, with the name RFC 7252 gives it when it has one.
pub fn code_text(code: u8) -> String {
    format!("{}.{:02}", code >> 5, code & 0x1f)
}

/// An option's value as an unsigned integer (RFC 7252 §3.2: big-endian,
/// leading zeros dropped, at most 4 bytes); `None` when absent or longer.
pub(crate) fn option_uint(p: &Packet, option: CoapOption) -> Option<u32> {
    let v = p.get_first_option(option)?;
    if v.len() > 4 {
        return None;
    }
    Some(v.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b)))
}

/// The minimal encoding of an unsigned option value.
pub(crate) fn uint(v: u32) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

/// A Block2 option: block number, more flag, size exponent (RFC 7959).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    pub num: u32,
    pub more: bool,
    pub szx: u8,
}

impl Block {
    pub fn of(p: &Packet) -> Option<Block> {
        let v = option_uint(p, CoapOption::Block2)?;
        let szx = (v & 0x7) as u8;
        (szx < 7).then_some(Block {
            num: v >> 4,
            more: v & 0x8 != 0,
            szx,
        })
    }

    pub fn encode(self) -> Vec<u8> {
        uint(self.num << 4 | u32::from(self.more) << 3 | u32::from(self.szx))
    }
}

/// An empty message (ACK or RST) for a message id.
pub(crate) fn empty(kind: MessageType, message_id: u16) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(kind);
    p.header.code = MessageClass::Empty;
    p.header.message_id = message_id;
    p.to_bytes().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_integers_and_blocks_round_trip() {
        assert_eq!(uint(0), Vec::<u8>::new());
        assert_eq!(uint(60), vec![60]);
        assert_eq!(uint(0x1_0000), vec![1, 0, 0]);
        let b = Block {
            num: 3,
            more: true,
            szx: 6,
        };
        let mut p = Packet::new();
        p.add_option(CoapOption::Block2, b.encode());
        assert_eq!(Block::of(&p), Some(b));
        assert_eq!(code_text(0x45), "2.05");
        assert_eq!(code_text(0x84), "4.04");
    }
}
