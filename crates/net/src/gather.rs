//! [`Gather`]: a connection's write buffer that gives its memory back.
//!
//! tungstenite can gather frames itself (`write_buffer_size`), but its buffer keeps the largest
//! capacity it ever reached, so every joined connection would keep the size of its join's
//! burst (the snapshot) for as long as it stays. The server turns tungstenite's buffering off
//! and puts this under it instead: writes are gathered until a flush (the server flushes when a
//! connection's queue runs empty), or until `limit` bytes, and once everything is written out
//! the buffer is freed. A burst of small frames still goes out in few writes; an idle connection
//! holds no write buffer at all.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Gathers writes to `inner` up to `limit` bytes; flushing writes them out and frees the buffer.
/// With `limit` 0 every write goes straight through.
pub struct Gather<S> {
    inner: S,
    buf: Vec<u8>,
    /// Bytes of `buf` already written to `inner`.
    written: usize,
    limit: usize,
}

impl<S> Gather<S> {
    pub fn new(inner: S, limit: usize) -> Gather<S> {
        Gather { inner, buf: Vec::new(), written: 0, limit }
    }

    /// Capacity of the buffer (tests: zero once flushed).
    pub fn buffered_capacity(&self) -> usize {
        self.buf.capacity()
    }
}

impl<S: AsyncWrite + Unpin> Gather<S> {
    /// Writes out everything gathered, then frees the buffer.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Gather<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gather<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.buf.len() + data.len() > this.limit {
            ready!(this.poll_write_out(cx))?;
            if data.len() > this.limit {
                return Pin::new(&mut this.inner).poll_write(cx, data);
            }
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_are_gathered_until_a_flush_and_the_buffer_is_freed_after_it() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut g = Gather::new(near, 8 * 1024);
        g.write_all(b"one ").await.unwrap();
        g.write_all(b"two").await.unwrap();
        // Nothing reached the socket yet: one write for the burst.
        let mut probe = [0u8; 16];
        let nothing = tokio::time::timeout(std::time::Duration::from_millis(20), far.read(&mut probe)).await;
        assert!(nothing.is_err(), "gathered, not written");
        assert!(g.buffered_capacity() > 0);
        g.flush().await.unwrap();
        assert_eq!(g.buffered_capacity(), 0, "an idle connection keeps no write buffer");
        let n = far.read(&mut probe).await.unwrap();
        assert_eq!(&probe[..n], b"one two");
    }

    #[tokio::test]
    async fn a_burst_past_the_limit_is_written_out_without_waiting_for_a_flush() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut g = Gather::new(near, 10);
        g.write_all(b"0123456789").await.unwrap();
        g.write_all(b"abc").await.unwrap(); // over the limit: the first ten go out
        let mut got = [0u8; 10];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"0123456789");
        // Larger than the limit: straight through.
        g.write_all(&[b'x'; 32]).await.unwrap();
        let mut rest = vec![0u8; 3 + 32];
        far.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest[..3], b"abc");
        assert!(g.buffered_capacity() == 0);
    }

    #[tokio::test]
    async fn with_no_limit_every_write_goes_straight_through() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut g = Gather::new(near, 0);
        g.write_all(b"now").await.unwrap();
        let mut got = [0u8; 3];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"now");
        assert_eq!(g.buffered_capacity(), 0);
    }
}
