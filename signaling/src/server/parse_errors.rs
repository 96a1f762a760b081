//! The connection's byte stream, with the HTTP parser's automatic error
//! answers given the documented JSON body.
//!
//! When hyper cannot parse a request (bad syntax, a header value with
//! control bytes, a URI over 64 KiB, headers over its buffer) it answers
//! 400, 414 or 431 itself, with an empty body, and closes the connection;
//! the router never sees the request and hyper offers no hook to shape that
//! answer. It is recognisable on the wire: a 4xx head without
//! `content-type` and with `content-length: 0`, at the start of a write.
//! Every answer the routers give has a JSON body with a `content-type` (the
//! [`super::json_errors`] layer sees to that), and WebSocket frames never
//! start with `H`, so nothing else looks like it. Such a write is replaced by
//! the same status with an [`ErrorBody`](proto::signal::ErrorBody).
//!
//! The stream also holds the connection's slot of the listener's cap, so an
//! upgraded WebSocket (which keeps this stream) counts until it closes.

use prometheus::IntGauge;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

pub(crate) struct JsonParseErrors {
    inner: TcpStream,
    /// The replacement answer still to be written.
    pending: Vec<u8>,
    /// Set once the automatic answer was replaced: hyper closes the
    /// connection after it, anything it still writes is dropped.
    replaced: bool,
    /// The listener's slot for this connection, given back on drop.
    _slot: OwnedSemaphorePermit,
    /// `duet_http_connections{listener}`, decremented on drop.
    open: IntGauge,
}

impl JsonParseErrors {
    pub(crate) fn new(inner: TcpStream, slot: OwnedSemaphorePermit, open: IntGauge) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            replaced: false,
            _slot: slot,
            open,
        }
    }

    /// Writes out the replacement answer, if any.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    /// Takes over a write that is hyper's automatic error answer; returns
    /// whether it did.
    fn intercept(&mut self, cx: &mut Context<'_>, first: &[u8]) -> bool {
        let Some(status) = automatic_error_status(first) else {
            return false;
        };
        self.pending = json_answer(status);
        self.replaced = true;
        // Whatever does not go out now goes out on hyper's flush/shutdown.
        let _ = self.poll_pending(cx);
        true
    }
}

impl Drop for JsonParseErrors {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// The status of hyper's automatic parse-error answer, if `buf` starts with one.
fn automatic_error_status(buf: &[u8]) -> Option<u16> {
    if !(buf.starts_with(b"HTTP/1.1 4") || buf.starts_with(b"HTTP/1.0 4")) {
        return None;
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?.to_ascii_lowercase();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.get(9..12)?.parse().ok()?;
    let mut empty = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match name.trim() {
            "content-type" => return None,
            "content-length" => empty = value.trim() == "0",
            _ => {}
        }
    }
    (empty && matches!(status, 400 | 413 | 414 | 431)).then_some(status)
}

fn json_answer(status: u16) -> Vec<u8> {
    let (code, message) = match status {
        414 => ("uri_too_long", "the request URI is too long"),
        431 => ("headers_too_large", "the request headers are too large"),
        413 => ("payload_too_large", "request body too large"),
        _ => ("bad_request", "malformed HTTP request"),
    };
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Bad Request");
    let body = serde_json::json!({ "code": code, "message": message }).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl AsyncRead for JsonParseErrors {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for JsonParseErrors {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if this.replaced || this.intercept(cx, buf) {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let total = bufs.iter().map(|b| b.len()).sum();
        let first = bufs.iter().find(|b| !b.is_empty()).map(|b| &b[..]).unwrap_or(&[]);
        if this.replaced || this.intercept(cx, first) {
            return Poll::Ready(Ok(total));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_automatic_answers_are_recognised() {
        let auto =
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Mon, 07 Dec 2026 19:00:00 GMT\r\n\r\n";
        assert_eq!(automatic_error_status(auto), Some(414));
        let bad = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(automatic_error_status(bad), Some(400));
    }

    #[test]
    fn router_answers_and_frames_are_left_alone() {
        let json = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(automatic_error_status(json), None);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(automatic_error_status(ok), None);
        let with_body = b"HTTP/1.1 404 Not Found\r\ncontent-length: 12\r\n\r\n";
        assert_eq!(automatic_error_status(with_body), None);
        assert_eq!(automatic_error_status(b"\x81\x05hello"), None);
        assert_eq!(automatic_error_status(b"HTTP/1.1 400 Bad"), None);
    }

    #[test]
    fn replacement_is_a_complete_json_answer() {
        let a = String::from_utf8(json_answer(414)).unwrap_or_default();
        let (head, body) = a.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(v["code"], "uri_too_long");
    }
}
