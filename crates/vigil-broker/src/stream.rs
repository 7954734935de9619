//! A client's byte stream, whether it came over TCP or WebSocket.
//!
//! MQTT over WebSocket carries the same bytes in binary messages, and a message
//! boundary means nothing to MQTT: the front door reads both as one stream of
//! bytes and writes each chunk it forwards as one binary message.

use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

/// The half of a client connection the front door reads from.
pub(crate) enum ClientReader {
    Tcp(OwnedReadHalf),
    Ws(SplitStream<Ws>),
}

/// The half of a client connection the front door writes to.
pub(crate) enum ClientWriter {
    Tcp(OwnedWriteHalf),
    Ws(SplitSink<Ws, Message>),
}

pub(crate) fn split_tcp(stream: TcpStream) -> (ClientReader, ClientWriter) {
    let (r, w) = stream.into_split();
    (ClientReader::Tcp(r), ClientWriter::Tcp(w))
}

pub(crate) fn split_ws(stream: Ws) -> (ClientReader, ClientWriter) {
    let (w, r) = stream.split();
    (ClientReader::Ws(r), ClientWriter::Ws(w))
}

impl ClientReader {
    /// Appends what arrives to `buf`; `Ok(0)` means the client closed.
    /// Cancel-safe: nothing is lost if the future is dropped before it resolves.
    pub(crate) async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            ClientReader::Tcp(r) => {
                if buf.capacity() - buf.len() < 16 * 1024 {
                    buf.reserve(64 * 1024);
                }
                r.read_buf(buf).await
            }
            ClientReader::Ws(r) => loop {
                match r.next().await {
                    None => return Ok(0),
                    Some(Err(e)) => return Err(io::Error::other(e)),
                    Some(Ok(Message::Binary(data))) => {
                        if data.is_empty() {
                            continue;
                        }
                        buf.extend_from_slice(&data);
                        return Ok(data.len());
                    }
                    Some(Ok(Message::Close(_))) => return Ok(0),
                    Some(Ok(Message::Text(_))) => return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text WebSocket message: MQTT over WebSocket must use binary messages",
                    )),
                    // Pings are answered by tungstenite itself.
                    Some(Ok(_)) => continue,
                }
            },
        }
    }
}

impl ClientWriter {
    /// Writes one chunk of whole MQTT packets.
    pub(crate) async fn write(&mut self, data: Bytes) -> io::Result<()> {
        match self {
            ClientWriter::Tcp(w) => w.write_all(&data).await,
            ClientWriter::Ws(w) => w
                .send(Message::Binary(data))
                .await
                .map_err(io::Error::other),
        }
    }

    /// Closes the connection politely (TCP FIN, WebSocket close frame).
    pub(crate) async fn close(&mut self) {
        let _ = match self {
            ClientWriter::Tcp(w) => w.shutdown().await,
            ClientWriter::Ws(w) => w.close().await.map_err(io::Error::other),
        };
    }
}
