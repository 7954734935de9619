//! A client's byte stream, whether it came over TCP or WebSocket, with or
//! without TLS.
//!
//! MQTT over WebSocket carries the same bytes in binary messages, and a message
//! boundary means nothing to MQTT: the front door reads both as one stream of
//! bytes and writes each chunk it forwards as one binary message.

use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// TCP inside TLS.
pub(crate) type TlsTcp = tokio_rustls::server::TlsStream<TcpStream>;

/// The half of a client connection the front door reads from.
pub(crate) enum ClientReader {
    Tcp(OwnedReadHalf),
    Tls(ReadHalf<TlsTcp>),
    Ws(SplitStream<WebSocketStream<TcpStream>>),
    Wss(SplitStream<WebSocketStream<TlsTcp>>),
}

/// The half of a client connection the front door writes to.
pub(crate) enum ClientWriter {
    Tcp(OwnedWriteHalf),
    Tls(WriteHalf<TlsTcp>),
    Ws(SplitSink<WebSocketStream<TcpStream>, Message>),
    Wss(SplitSink<WebSocketStream<TlsTcp>, Message>),
}

pub(crate) fn split_tcp(stream: TcpStream) -> (ClientReader, ClientWriter) {
    let (r, w) = stream.into_split();
    (ClientReader::Tcp(r), ClientWriter::Tcp(w))
}

pub(crate) fn split_tls(stream: TlsTcp) -> (ClientReader, ClientWriter) {
    let (r, w) = tokio::io::split(stream);
    (ClientReader::Tls(r), ClientWriter::Tls(w))
}

pub(crate) fn split_ws(stream: WebSocketStream<TcpStream>) -> (ClientReader, ClientWriter) {
    let (w, r) = stream.split();
    (ClientReader::Ws(r), ClientWriter::Ws(w))
}

pub(crate) fn split_wss(stream: WebSocketStream<TlsTcp>) -> (ClientReader, ClientWriter) {
    let (w, r) = stream.split();
    (ClientReader::Wss(r), ClientWriter::Wss(w))
}

/// The smallest read buffer a connection holds, each way.
const READ_ROOM: usize = 4 * 1024;

/// Makes room in `buf` for the next read. Most devices send a packet of a
/// few hundred bytes now and then: 4 KiB is plenty, and 1,000 connections
/// hold 8 MiB of read buffers (both ways) rather than the 125 MiB that
/// 64 KiB each way cost. A larger packet, or a link that reads faster than it
/// forwards, grows the buffer: room for as much again as it holds. Whatever
/// was forwarded is reclaimed in place once its bytes are written.
pub(crate) fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_ROOM / 4 {
        buf.reserve(READ_ROOM.max(buf.len()));
    }
}

async fn read_ws<S: AsyncRead + AsyncWrite + Unpin>(
    r: &mut SplitStream<WebSocketStream<S>>,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    loop {
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
            Some(Ok(Message::Text(_))) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a text WebSocket message: MQTT over WebSocket must use binary messages",
                ))
            }
            // Pings are answered by tungstenite itself.
            Some(Ok(_)) => continue,
        }
    }
}

impl ClientReader {
    /// Appends what arrives to `buf`; `Ok(0)` means the client closed.
    /// Cancel-safe: nothing is lost if the future is dropped before it resolves.
    pub(crate) async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            ClientReader::Tcp(r) => {
                make_room(buf);
                r.read_buf(buf).await
            }
            ClientReader::Tls(r) => {
                make_room(buf);
                r.read_buf(buf).await
            }
            ClientReader::Ws(r) => read_ws(r, buf).await,
            ClientReader::Wss(r) => read_ws(r, buf).await,
        }
    }
}

impl ClientWriter {
    /// Writes one chunk of whole MQTT packets.
    pub(crate) async fn write(&mut self, data: Bytes) -> io::Result<()> {
        match self {
            ClientWriter::Tcp(w) => w.write_all(&data).await,
            ClientWriter::Tls(w) => {
                w.write_all(&data).await?;
                w.flush().await
            }
            ClientWriter::Ws(w) => w
                .send(Message::Binary(data))
                .await
                .map_err(io::Error::other),
            ClientWriter::Wss(w) => w
                .send(Message::Binary(data))
                .await
                .map_err(io::Error::other),
        }
    }

    /// Closes the connection politely (TCP FIN, WebSocket close frame).
    pub(crate) async fn close(&mut self) {
        let _ = match self {
            ClientWriter::Tcp(w) => w.shutdown().await,
            ClientWriter::Tls(w) => w.shutdown().await,
            ClientWriter::Ws(w) => w.close().await.map_err(io::Error::other),
            ClientWriter::Wss(w) => w.close().await.map_err(io::Error::other),
        };
    }
}
