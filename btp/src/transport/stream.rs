//! The byte stream under a websocket (plain TCP, or TLS as client or server) and the websocket settings.
//!
//! One stream type for all three cases keeps the socket code monomorphic (one copy of the socket tasks). An
//! accepted stream also watches what an unauthenticated client sends ([`PreauthGuard`]) until the listener
//! lifts the limit after a successful auth.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

use super::limits::{
    MAX_PREAUTH_BYTES, MAX_PREAUTH_FRAME_BYTES, WS_READ_BUFFER_BYTES, WS_WRITE_BUFFER_BYTES,
};
use crate::oer::MAX_FRAME_BYTES;

/// The transport under a [`BtpStream`].
enum Io {
    /// `ws://` either way.
    Plain(TcpStream),
    /// `wss://`, we dialled.
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// `wss://`, we accepted.
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// A TCP stream, possibly wrapped in TLS, with an optional limit on what the peer may send before auth.
pub(crate) struct BtpStream {
    io: Io,
    /// Set on accepted streams until the peer has authenticated.
    guard: Option<PreauthGuard>,
}

impl BtpStream {
    /// Plain TCP.
    pub(crate) fn plain(tcp: TcpStream) -> Self {
        BtpStream {
            io: Io::Plain(tcp),
            guard: None,
        }
    }

    /// TLS that we dialled.
    pub(crate) fn client_tls(tls: tokio_rustls::client::TlsStream<TcpStream>) -> Self {
        BtpStream {
            io: Io::ClientTls(Box::new(tls)),
            guard: None,
        }
    }

    /// TLS that we accepted.
    pub(crate) fn server_tls(tls: tokio_rustls::server::TlsStream<TcpStream>) -> Self {
        BtpStream {
            io: Io::ServerTls(Box::new(tls)),
            guard: None,
        }
    }

    /// Limits what the peer may send until [`lift_preauth_limit`](Self::lift_preauth_limit): at most
    /// [`MAX_PREAUTH_BYTES`] in all and no websocket frame larger than [`MAX_PREAUTH_FRAME_BYTES`]. A read
    /// that would pass either limit fails, which ends the websocket.
    pub(crate) fn with_preauth_limit(mut self) -> Self {
        self.guard = Some(PreauthGuard::new(
            MAX_PREAUTH_BYTES,
            MAX_PREAUTH_FRAME_BYTES,
        ));
        self
    }

    /// The peer authenticated: frames up to [`MAX_FRAME_BYTES`] from now on.
    pub(crate) fn lift_preauth_limit(&mut self) {
        self.guard = None;
    }
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

/// Why a [`PreauthGuard`] refused the bytes it was shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PreauthRefusal {
    /// More than the byte budget before auth.
    #[error("more than {0} bytes sent before auth")]
    TooManyBytes(usize),
    /// A websocket frame that declares a larger payload than allowed before auth.
    #[error("a {0}-byte websocket frame before auth")]
    FrameTooLarge(u64),
}

/// Checks the bytes an unauthenticated client sends, as they are read: the HTTP upgrade request, then the
/// websocket frames (RFC 6455 §5.2 headers are parsed only for their payload length).
///
/// The websocket library sizes its read buffer from a frame's declared length (up to [`MAX_FRAME_BYTES`]) and
/// zero-fills it before the payload arrives, so without this check every unauthenticated socket could make us
/// hold 1 MiB by sending a 10-byte header. Refusing the header as soon as it is read keeps an
/// unauthenticated socket at a few KiB.
#[derive(Debug)]
pub(crate) struct PreauthGuard {
    /// Bytes the client may send in all.
    max_bytes: usize,
    /// Bytes the client may still send.
    bytes_left: usize,
    /// Largest payload one frame may declare.
    max_frame_bytes: u64,
    state: GuardState,
}

#[derive(Debug)]
enum GuardState {
    /// In the HTTP upgrade request.
    Http { line_start: LineStart },
    /// In a frame header: the bytes read so far (a header is at most 14 bytes).
    Header { bytes: [u8; 14], len: usize },
    /// In a frame's payload: bytes still to come.
    Payload { left: u64 },
}

/// Where the HTTP request's reader is relative to the start of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineStart {
    /// Inside a line.
    No,
    /// Just after a line feed.
    Yes,
    /// After a line feed and a carriage return.
    AfterCr,
}

impl PreauthGuard {
    pub(crate) fn new(max_bytes: usize, max_frame_bytes: usize) -> Self {
        PreauthGuard {
            max_bytes,
            bytes_left: max_bytes,
            max_frame_bytes: u64::try_from(max_frame_bytes).unwrap_or(u64::MAX),
            state: GuardState::Http {
                line_start: LineStart::No,
            },
        }
    }

    /// Looks at the next bytes the client sent.
    pub(crate) fn inspect(&mut self, data: &[u8]) -> Result<(), PreauthRefusal> {
        self.bytes_left = self
            .bytes_left
            .checked_sub(data.len())
            .ok_or(PreauthRefusal::TooManyBytes(self.max_bytes))?;
        let mut rest = data;
        while let Some((&byte, tail)) = rest.split_first() {
            match &mut self.state {
                GuardState::Http { line_start } => {
                    // The request ends with an empty line; like the HTTP parser, accept `\n` and `\r\n`.
                    let ended = match byte {
                        b'\n' if *line_start != LineStart::No => true,
                        b'\n' => {
                            *line_start = LineStart::Yes;
                            false
                        }
                        b'\r' if *line_start == LineStart::Yes => {
                            *line_start = LineStart::AfterCr;
                            false
                        }
                        _ => {
                            *line_start = LineStart::No;
                            false
                        }
                    };
                    if ended {
                        self.state = GuardState::Header {
                            bytes: [0; 14],
                            len: 0,
                        };
                    }
                    rest = tail;
                }
                GuardState::Header { bytes, len } => {
                    bytes[*len] = byte;
                    *len += 1;
                    rest = tail;
                    if let Some(payload) = declared_payload(&bytes[..*len]) {
                        if payload > self.max_frame_bytes {
                            return Err(PreauthRefusal::FrameTooLarge(payload));
                        }
                        self.state = if payload == 0 {
                            GuardState::Header {
                                bytes: [0; 14],
                                len: 0,
                            }
                        } else {
                            GuardState::Payload { left: payload }
                        };
                    }
                }
                GuardState::Payload { left } => {
                    let take = rest.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= take as u64;
                    rest = &rest[take..];
                    if *left == 0 {
                        self.state = GuardState::Header {
                            bytes: [0; 14],
                            len: 0,
                        };
                    }
                }
            }
        }
        Ok(())
    }
}

/// The payload length of a websocket frame whose header is `header` once it is complete, `None` while more
/// header bytes are needed (RFC 6455 §5.2: 7-bit length, or 126 + 16 bits, or 127 + 64 bits; then a 4-byte
/// mask key if the mask bit is set).
fn declared_payload(header: &[u8]) -> Option<u64> {
    let second = *header.get(1)?;
    let masked = second & 0x80 != 0;
    let (extended, short) = match second & 0x7f {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(u64::from(n))),
    };
    let needed = 2 + extended + if masked { 4 } else { 0 };
    if header.len() < needed {
        return None;
    }
    Some(match short {
        Some(n) => n,
        None => header[2..2 + extended]
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
    })
}

impl AsyncRead for BtpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::ClientTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::ServerTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        })?;
        if let Some(guard) = &mut this.guard {
            if let Err(refusal) = guard.inspect(&buf.filled()[before..]) {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, refusal)));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for BtpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::ClientTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::ServerTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &[u8] =
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n";

    /// A masked client frame header declaring `len` payload bytes.
    fn header(len: u64) -> Vec<u8> {
        let mut h = vec![0x82];
        match len {
            0..=125 => h.push(0x80 | len as u8),
            126..=0xffff => {
                h.push(0x80 | 126);
                h.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                h.push(0x80 | 127);
                h.extend_from_slice(&len.to_be_bytes());
            }
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    #[test]
    fn an_auth_sized_exchange_passes_byte_by_byte_and_at_once() {
        let mut stream = REQUEST.to_vec();
        for len in [60u64, 0, 200, 4096] {
            stream.extend(header(len));
            stream.extend(std::iter::repeat_n(0u8, len as usize));
        }
        let mut whole = PreauthGuard::new(16 * 1024, 4096);
        assert_eq!(whole.inspect(&stream), Ok(()));
        let mut bytewise = PreauthGuard::new(16 * 1024, 4096);
        for b in &stream {
            assert_eq!(bytewise.inspect(std::slice::from_ref(b)), Ok(()));
        }
    }

    #[test]
    fn a_large_frame_header_is_refused_before_its_payload() {
        for len in [4097u64, 70_000, 1 << 20, u64::MAX >> 1] {
            let mut guard = PreauthGuard::new(16 * 1024, 4096);
            assert_eq!(guard.inspect(REQUEST), Ok(()));
            // A small frame first, then the large header split over two reads.
            assert_eq!(guard.inspect(&header(10)), Ok(()));
            assert_eq!(guard.inspect(&[0; 10]), Ok(()));
            let h = header(len);
            let (a, b) = h.split_at(3);
            assert_eq!(guard.inspect(a), Ok(()), "{len}: incomplete header");
            assert_eq!(
                guard.inspect(b),
                Err(PreauthRefusal::FrameTooLarge(len)),
                "{len}"
            );
        }
    }

    #[test]
    fn bare_line_feeds_end_the_request_too() {
        let mut guard = PreauthGuard::new(16 * 1024, 4096);
        assert_eq!(guard.inspect(b"GET / HTTP/1.1\nHost: x\n\n"), Ok(()));
        assert_eq!(
            guard.inspect(&header(5000)),
            Err(PreauthRefusal::FrameTooLarge(5000))
        );
    }

    #[test]
    fn the_byte_budget_covers_the_request_and_small_frames() {
        let mut guard = PreauthGuard::new(1000, 4096);
        assert_eq!(guard.inspect(REQUEST), Ok(()));
        let mut refused = None;
        for _ in 0..100 {
            if let Err(e) = guard.inspect(&header(100)).and(guard.inspect(&[0; 100])) {
                refused = Some(e);
                break;
            }
        }
        assert_eq!(refused, Some(PreauthRefusal::TooManyBytes(1000)));
    }

    #[test]
    fn an_endless_request_line_runs_out_of_budget() {
        let mut guard = PreauthGuard::new(1000, 4096);
        assert_eq!(guard.inspect(&[b'A'; 1000]), Ok(()));
        assert!(guard.inspect(b"A").is_err());
    }
}
