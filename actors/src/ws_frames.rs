//! The inbound half of a WebSocket: decodes the request body into frames.
//!
//! A frame's declared length is checked against the limit as soon as its header has
//! arrived, before any of its payload is read: a frame over the limit is refused at once
//! (the session closes with 1009) and nothing more of it is buffered. (actix-http's codec
//! compares the length only once the whole frame has arrived, so it would buffer a frame
//! that declares 2^40 bytes for as long as the client keeps sending.) What this stream
//! holds is therefore at most one frame of the limit's size plus one read chunk.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_codec::Decoder;
use actix_http::error::PayloadError;
use actix_http::ws::{Codec, Frame, ProtocolError};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;

/// A request body as a stream of chunks.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>;

/// Frames decoded from a WebSocket request body.
pub struct WsFrames {
    body: BodyStream,
    codec: Codec,
    buf: BytesMut,
    max: usize,
    closed: bool,
}

impl WsFrames {
    /// Decodes `body`, refusing frames larger than `max_frame_bytes`.
    pub fn new(body: BodyStream, max_frame_bytes: usize) -> Self {
        Self {
            body,
            codec: Codec::new().max_size(max_frame_bytes),
            buf: BytesMut::new(),
            max: max_frame_bytes,
            closed: false,
        }
    }
}

/// The payload length a frame header at the start of `buf` declares, once enough of the
/// header has arrived (RFC 6455 §5.2: 7 bits, or 16 or 64 more).
pub fn declared_len(buf: &[u8]) -> Option<u64> {
    let len7 = buf.get(1)? & 0x7f;
    match len7 {
        126 => Some(u64::from(u16::from_be_bytes(
            buf.get(2..4)?.try_into().ok()?,
        ))),
        127 => Some(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)),
        n => Some(u64::from(n)),
    }
}

impl Stream for WsFrames {
    type Item = Result<Frame, ProtocolError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if declared_len(&this.buf).is_some_and(|n| n > this.max as u64) {
                this.closed = true;
                this.buf = BytesMut::new();
                return Poll::Ready(Some(Err(ProtocolError::Overflow)));
            }
            if !this.buf.is_empty() {
                match this.codec.decode(&mut this.buf) {
                    Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                    Ok(None) => {}
                    Err(e) => {
                        this.closed = true;
                        this.buf = BytesMut::new();
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
            if this.closed {
                return Poll::Ready(None);
            }
            match this.body.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.buf.extend_from_slice(&chunk),
                Poll::Ready(Some(Err(e))) => {
                    this.closed = true;
                    return Poll::Ready(Some(Err(ProtocolError::Io(std::io::Error::other(
                        e.to_string(),
                    )))));
                }
                Poll::Ready(None) => {
                    this.closed = true;
                    // Release the read buffer of an idle connection.
                    if this.buf.is_empty() {
                        this.buf = BytesMut::new();
                    }
                }
                Poll::Pending => {
                    if this.buf.is_empty() && this.buf.capacity() > 0 {
                        // Keep idle connections small: drop the spent read buffer.
                        this.buf = BytesMut::new();
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    /// A masked client frame (RFC 6455 §5.2).
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![0x80 | opcode];
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn frames_of(chunks: Vec<Vec<u8>>, max: usize) -> WsFrames {
        let body = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, PayloadError>(Bytes::from(c))),
        );
        WsFrames::new(Box::pin(body), max)
    }

    #[actix_rt::test]
    async fn frames_split_across_chunks_are_decoded() {
        let mut bytes = client_frame(0x1, b"hello");
        bytes.extend(client_frame(0x9, b"ping"));
        let (a, b) = bytes.split_at(3);
        let mut frames = frames_of(vec![a.to_vec(), b.to_vec()], 1024);
        assert!(matches!(frames.next().await, Some(Ok(Frame::Text(t))) if &t[..] == b"hello"));
        assert!(matches!(frames.next().await, Some(Ok(Frame::Ping(p))) if &p[..] == b"ping"));
        assert!(frames.next().await.is_none());
    }

    #[actix_rt::test]
    async fn a_frame_over_the_limit_is_refused_and_ends_the_stream() {
        let mut frames = frames_of(vec![client_frame(0x1, &[b'a'; 200])], 100);
        assert!(matches!(
            frames.next().await,
            Some(Err(ProtocolError::Overflow))
        ));
        assert!(frames.next().await.is_none());
    }

    #[actix_rt::test]
    async fn a_frame_declaring_too_much_is_refused_from_its_header() {
        // A header declaring 2^40 bytes, then a first piece of the payload: refused without
        // waiting for (or keeping) the rest.
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 40).to_be_bytes());
        header.extend_from_slice(&[0, 0, 0, 0]);
        let mut frames = frames_of(vec![header, vec![0; 4096]], 1 << 16);
        assert!(matches!(
            frames.next().await,
            Some(Err(ProtocolError::Overflow))
        ));
        assert_eq!(frames.buf.capacity(), 0);
        assert!(frames.next().await.is_none());
        assert_eq!(declared_len(&[0x81, 126, 1, 0]), Some(256));
        assert_eq!(declared_len(&[0x81, 127, 0]), None);
        assert_eq!(declared_len(&[0x81, 5]), Some(5));
    }

    proptest::proptest! {
        /// Arbitrary bytes in arbitrary chunks never panic, and the buffer never holds more
        /// than one frame of the limit plus one chunk.
        #[test]
        fn arbitrary_input_never_panics_or_overgrows(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), 0..30)
        ) {
            let largest = chunks.iter().map(Vec::len).max().unwrap_or(0);
            actix_rt::System::new().block_on(async move {
                let mut frames = frames_of(chunks, 256);
                while let Some(item) = frames.next().await {
                    proptest::prop_assert!(frames.buf.len() <= 256 + 14 + largest);
                    if item.is_err() {
                        break;
                    }
                }
                Ok(())
            })?;
        }
    }

    #[actix_rt::test]
    async fn an_unmasked_client_frame_is_a_protocol_error() {
        let mut frames = frames_of(vec![vec![0x81, 0x02, b'h', b'i']], 100);
        assert!(matches!(frames.next().await, Some(Err(_))));
    }
}
