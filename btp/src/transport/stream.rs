//! The byte stream under a websocket (plain TCP, or TLS as client or server) and the websocket settings.
//!
//! One stream type for all three cases keeps the link code monomorphic (one copy of the socket tasks).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

use super::{WS_READ_BUFFER_BYTES, WS_WRITE_BUFFER_BYTES};
use crate::oer::MAX_FRAME_BYTES;

/// A TCP stream, possibly wrapped in TLS.
pub(crate) enum BtpStream {
    /// `ws://` either way.
    Plain(TcpStream),
    /// `wss://`, we dialled.
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// `wss://`, we accepted.
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// A websocket over a [`BtpStream`].
pub(crate) type WsStream = WebSocketStream<BtpStream>;

/// Websocket limits: messages up to one BTP frame, a small read buffer, and writes buffered until the writer
/// flushes (so the frames it queues together leave in one `send`).
pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

impl AsyncRead for BtpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BtpStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BtpStream::ClientTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            BtpStream::ServerTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BtpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BtpStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            BtpStream::ClientTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            BtpStream::ServerTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BtpStream::Plain(s) => Pin::new(s).poll_flush(cx),
            BtpStream::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            BtpStream::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BtpStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            BtpStream::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            BtpStream::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
