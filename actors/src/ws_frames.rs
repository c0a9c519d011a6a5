//! The inbound half of a WebSocket: decodes the request body into frames.
//!
//! actix-http's codec compares a frame's length with the limit only once the whole frame
//! has arrived: a frame over the limit is refused (close 1009), but after it was buffered.

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
    closed: bool,
}

impl WsFrames {
    /// Decodes `body`, refusing frames larger than `max_frame_bytes`.
    pub fn new(body: BodyStream, max_frame_bytes: usize) -> Self {
        Self {
            body,
            codec: Codec::new().max_size(max_frame_bytes),
            buf: BytesMut::new(),
            closed: false,
        }
    }
}

impl Stream for WsFrames {
    type Item = Result<Frame, ProtocolError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
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
    async fn an_unmasked_client_frame_is_a_protocol_error() {
        let mut frames = frames_of(vec![vec![0x81, 0x02, b'h', b'i']], 100);
        assert!(matches!(frames.next().await, Some(Err(_))));
    }
}
