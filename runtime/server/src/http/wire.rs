//! The connections the API is served on: every answer has the JSON error
//! shape, even those hyper gives itself.
//!
//! hyper answers a request it cannot parse before any router sees it: a
//! URL over 65,534 bytes (its fixed limit, the most an `http::Uri` holds,
//! whatever the header size allowed) gets `414`, headers over its buffer
//! `431`, a malformed head `400`, each with an empty body, and the
//! connection is closed. [`JsonListener`] accepts TCP connections as axum
//! does and wraps each in [`JsonErrors`], which recognises such an answer
//! as hyper writes it (one of those statuses, no `content-type`: every
//! answer of the router is JSON and has one) and writes the JSON error in
//! its place. The rewrite looks only at the start of a write, where hyper
//! puts a response head; its automatic answers are written when no other
//! response is in progress.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::serve::Listener;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The API's TCP listener: connections come wrapped in [`JsonErrors`].
#[derive(Debug)]
pub struct JsonListener(pub TcpListener);

impl Listener for JsonListener {
    type Io = JsonErrors<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = Listener::accept(&mut self.0).await;
        (JsonErrors::new(tcp), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// Where a connection is in replacing one of hyper's answers.
#[derive(Debug)]
enum Rewrite {
    /// Nothing replaced: writes pass through.
    Watching,
    /// Writing `bytes` (from `written`) in place of hyper's `claimed`
    /// bytes of head.
    Writing {
        bytes: Vec<u8>,
        written: usize,
        claimed: usize,
    },
    /// Replaced (hyper closes the connection next): writes pass through.
    Done,
}

/// A connection whose bodiless parse-error answers from hyper are
/// rewritten as JSON errors.
#[derive(Debug)]
pub struct JsonErrors<T> {
    inner: T,
    rewrite: Rewrite,
}

impl<T> JsonErrors<T> {
    pub fn new(inner: T) -> Self {
        JsonErrors {
            inner,
            rewrite: Rewrite::Watching,
        }
    }
}

/// The JSON answer that replaces hyper's head at the start of `buf`, and
/// the length of that head; `None` when `buf` does not start with one.
fn replacement(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let (status, code, message) = if buf.starts_with(b"HTTP/1.1 414 ") {
        (
            "414 URI Too Long",
            "uri_too_long",
            "the request's URL is over 65534 bytes, the most this server reads: send long parameters in the request body",
        )
    } else if buf.starts_with(b"HTTP/1.1 431 ") {
        (
            "431 Request Header Fields Too Large",
            "headers_too_large",
            "the request's head (request line and headers) is over the about 400 KiB this server reads: send fewer or shorter headers",
        )
    } else if buf.starts_with(b"HTTP/1.1 400 ") {
        (
            "400 Bad Request",
            "bad_request",
            "the request is not valid HTTP/1.1: its request line or a header could not be parsed",
        )
    } else {
        return None;
    };
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    if head.contains("\r\ncontent-type:") || !head.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let body =
        json!({ "error": { "code": code, "message": message, "details": null } }).to_string();
    let mut answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body.as_bytes());
    Some((answer, end))
}

impl<T: AsyncWrite + Unpin> JsonErrors<T> {
    /// Writes the pending replacement; then reports hyper's head written.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Rewrite::Writing {
            bytes,
            written,
            claimed,
        } = &mut self.rewrite
        else {
            return Poll::Ready(Ok(0));
        };
        while *written < bytes.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        let claimed = *claimed;
        self.rewrite = Rewrite::Done;
        Poll::Ready(Ok(claimed))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Rewrite::Watching = this.rewrite
            && let Some((bytes, claimed)) = replacement(buf)
        {
            this.rewrite = Rewrite::Writing {
                bytes,
                written: 0,
                claimed,
            };
        }
        match this.rewrite {
            Rewrite::Writing { .. } => this.drain(cx),
            _ => Pin::new(&mut this.inner).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // hyper puts a response head in the first buffer it writes.
        let first = bufs.iter().find(|b| !b.is_empty());
        let rewriting = matches!(self.rewrite, Rewrite::Writing { .. })
            || matches!(self.rewrite, Rewrite::Watching)
                && first.is_some_and(|b| replacement(b).is_some());
        match first {
            Some(first) if rewriting => self.poll_write(cx, first),
            _ => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_error_heads_are_replaced() {
        let hyper_head = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: now\r\n\r\n";
        let (answer, claimed) = replacement(hyper_head).unwrap();
        assert_eq!(claimed, hyper_head.len());
        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 "), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "uri_too_long");
        // The router's own answers (JSON, with a content-type) pass.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert!(replacement(ours).is_none());
        assert!(replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        // A head cut short is left alone.
        assert!(replacement(b"HTTP/1.1 431 Request Header").is_none());
    }
}
