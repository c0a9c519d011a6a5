//! The inbound half of a WebSocket: decodes the request body into frames.
//!
//! The codec checks each frame's declared length against the limit before reading its
//! payload, so an oversize frame is refused (close 1009) without being buffered.

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
