//! A streaming `multipart/form-data` reader (RFC 7578) with a bound on everything it holds.
//!
//! It reads the body one chunk at a time and never reads ahead: the only bytes it keeps
//! are a part's header block (at most [`MultipartLimits::header_bytes`]), the preamble
//! before the first boundary (at most [`MAX_PREAMBLE_BYTES`]), and the tail of a chunk that
//! could be the start of a boundary. A part's content is handed out as it arrives. The
//! number of parts and the bytes of the whole body are bounded too, and any input, however
//! malformed, ends in an error, never a panic (a property test feeds it arbitrary bytes).
//!
//! The form library of the HTTP framework buffered without limit while looking for a
//! boundary or the end of a part's headers, and panicked on some bodies; this replaces it
//! for `/upload`.

use std::pin::Pin;

use actix_web::http::header::{ContentDisposition, HeaderValue};
use actix_web::mime;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

/// Bytes before the first boundary that are skipped (RFC 2046 allows a preamble; browsers
/// send none).
pub const MAX_PREAMBLE_BYTES: usize = 1024;

/// Longest boundary (RFC 2046 §5.1.1: 1 to 70 characters).
pub const MAX_BOUNDARY_LEN: usize = 70;

/// What a form may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultipartLimits {
    /// Longest header block of one part (`MULTIPART_MAX_HEADER_BYTES`).
    pub header_bytes: usize,
    /// Most parts (`MULTIPART_MAX_PARTS`).
    pub parts: usize,
    /// Most bytes in all the parts that are not files, together (`MULTIPART_MAX_FIELD_BYTES`).
    pub field_bytes: usize,
    /// Most bytes in the whole body.
    pub body_bytes: u64,
}

/// Why a form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    /// The body is not a well-formed form.
    #[error("malformed multipart body: {0}")]
    Malformed(String),
    /// A limit was passed.
    #[error("{0}")]
    TooLarge(String),
    /// The body ended early or could not be read.
    #[error("the upload was cut short: {0}")]
    Incomplete(String),
    /// The body arrived too slowly (see [`crate::body_deadline`]).
    #[error("{0}")]
    TimedOut(String),
}

impl From<actix_web::error::PayloadError> for MultipartError {
    fn from(e: actix_web::error::PayloadError) -> Self {
        if crate::error::is_body_timeout(&e) {
            Self::TimedOut(e.to_string())
        } else {
            Self::Incomplete(e.to_string())
        }
    }
}

impl From<std::convert::Infallible> for MultipartError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}

/// The boundary named by a `Content-Type: multipart/form-data; boundary=...` header.
pub fn boundary_of(content_type: Option<&HeaderValue>) -> Result<String, MultipartError> {
    let malformed = |m: &str| MultipartError::Malformed(m.to_owned());
    let value = content_type
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| malformed("expected Content-Type: multipart/form-data; boundary=..."))?;
    let mime: mime::Mime = value
        .parse()
        .map_err(|_| malformed("the Content-Type is not a media type"))?;
    if mime.type_() != mime::MULTIPART || mime.subtype() != mime::FORM_DATA {
        return Err(malformed("expected Content-Type: multipart/form-data"));
    }
    let boundary = mime
        .get_param(mime::BOUNDARY)
        .map(|b| b.as_str().to_owned())
        .ok_or_else(|| malformed("the Content-Type has no boundary"))?;
    let valid = !boundary.is_empty()
        && boundary.len() <= MAX_BOUNDARY_LEN
        && boundary.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        && !boundary.ends_with(' ');
    if valid {
        Ok(boundary)
    } else {
        Err(malformed(
            "the boundary must be 1-70 printable ASCII characters",
        ))
    }
}

/// A part's name, file name and content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The form field's name.
    pub name: String,
    /// The file name the client gave, if it is a file.
    pub filename: Option<String>,
}

enum State {
    /// Looking for the first boundary.
    Preamble,
    /// After a boundary line: a part's headers follow.
    Headers,
    /// In a part's content.
    Content,
    /// After the closing boundary.
    Done,
}

/// The body stream a reader takes.
pub type BodyStream<E> = Pin<Box<dyn Stream<Item = Result<Bytes, E>>>>;

/// Reads a form part by part: [`Multipart::next_part`], then [`Multipart::next_chunk`]
/// until it answers `None`.
pub struct Multipart<E> {
    body: BodyStream<E>,
    /// `\r\n--boundary`: what ends a part's content.
    delimiter: Vec<u8>,
    buf: BytesMut,
    state: State,
    limits: MultipartLimits,
    parts: usize,
    field_bytes: usize,
    body_bytes: u64,
    /// Whether the current part is a file (its bytes do not count as field bytes).
    in_file: bool,
    eof: bool,
}

impl<E: Into<MultipartError>> Multipart<E> {
    /// A reader of `body`, whose parts are separated by `boundary`.
    pub fn new(body: BodyStream<E>, boundary: &str, limits: MultipartLimits) -> Self {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        Self {
            body,
            delimiter,
            buf: BytesMut::new(),
            state: State::Preamble,
            limits,
            parts: 0,
            field_bytes: 0,
            body_bytes: 0,
            in_file: false,
            eof: false,
        }
    }

    /// Reads one more chunk of the body into the buffer; false at the end of the body.
    async fn fill(&mut self) -> Result<bool, MultipartError> {
        if self.eof {
            return Ok(false);
        }
        match self.body.next().await {
            Some(Ok(chunk)) => {
                self.body_bytes += chunk.len() as u64;
                if self.body_bytes > self.limits.body_bytes {
                    return Err(MultipartError::TooLarge(format!(
                        "the body is larger than the limit of {} bytes",
                        self.limits.body_bytes
                    )));
                }
                self.buf.extend_from_slice(&chunk);
                Ok(true)
            }
            Some(Err(e)) => Err(e.into()),
            None => {
                self.eof = true;
                Ok(false)
            }
        }
    }

    /// The next part's headers, skipping what is left of the current part; `None` after
    /// the closing boundary.
    pub async fn next_part(&mut self) -> Result<Option<Part>, MultipartError> {
        while matches!(self.state, State::Content) {
            self.next_chunk().await?;
        }
        if matches!(self.state, State::Preamble) {
            self.skip_preamble().await?;
        }
        if matches!(self.state, State::Done) {
            return Ok(None);
        }
        let part = self.read_headers().await?;
        self.parts += 1;
        if self.parts > self.limits.parts {
            return Err(MultipartError::TooLarge(format!(
                "a form may have at most {} parts",
                self.limits.parts
            )));
        }
        self.in_file = part.filename.is_some();
        self.state = State::Content;
        Ok(Some(part))
    }

    /// Finds the first boundary line, past at most [`MAX_PREAMBLE_BYTES`] of preamble.
    async fn skip_preamble(&mut self) -> Result<(), MultipartError> {
        // The first boundary may start the body, without the CRLF before it.
        let first = self.delimiter[2..].to_vec();
        loop {
            if let Some(at) = memchr::memmem::find(&self.buf, &first) {
                self.buf.advance(at + first.len());
                return self.after_boundary().await;
            }
            if self.buf.len() > MAX_PREAMBLE_BYTES + first.len() {
                return Err(MultipartError::Malformed(
                    "the body does not start with its boundary".into(),
                ));
            }
            if !self.fill().await? {
                return Err(MultipartError::Malformed("the body has no boundary".into()));
            }
        }
    }

    /// After a boundary: `--` closes the form; otherwise the rest of the line (transport
    /// padding) and its CRLF come before the next part's headers.
    async fn after_boundary(&mut self) -> Result<(), MultipartError> {
        loop {
            if self.buf.len() >= 2 && &self.buf[..2] == b"--" {
                self.state = State::Done;
                self.buf = BytesMut::new();
                return Ok(());
            }
            if let Some(end) = memchr::memmem::find(&self.buf, b"\r\n") {
                if self.buf[..end].iter().any(|b| !matches!(b, b' ' | b'\t')) {
                    return Err(MultipartError::Malformed(
                        "unexpected bytes after a boundary".into(),
                    ));
                }
                self.buf.advance(end + 2);
                self.state = State::Headers;
                return Ok(());
            }
            if self.buf.len() > MAX_BOUNDARY_LEN {
                return Err(MultipartError::Malformed(
                    "unexpected bytes after a boundary".into(),
                ));
            }
            if !self.fill().await? {
                return Err(MultipartError::Incomplete(
                    "the body ended after a boundary".into(),
                ));
            }
        }
    }

    /// Reads a part's header block (up to its blank line) and its `Content-Disposition`.
    async fn read_headers(&mut self) -> Result<Part, MultipartError> {
        let end = loop {
            // A part with no headers starts with the blank line itself.
            if self.buf.starts_with(b"\r\n") {
                break 0;
            }
            if let Some(at) = memchr::memmem::find(&self.buf, b"\r\n\r\n") {
                break at + 2;
            }
            if self.buf.len() > self.limits.header_bytes {
                return Err(MultipartError::TooLarge(format!(
                    "a part's headers are longer than {} bytes",
                    self.limits.header_bytes
                )));
            }
            if !self.fill().await? {
                return Err(MultipartError::Incomplete(
                    "the body ended inside a part's headers".into(),
                ));
            }
        };
        if end > self.limits.header_bytes {
            return Err(MultipartError::TooLarge(format!(
                "a part's headers are longer than {} bytes",
                self.limits.header_bytes
            )));
        }
        let block = self.buf.split_to(end);
        self.buf.advance(2);
        let mut disposition = None;
        for line in block[..].split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            let colon = line.iter().position(|b| *b == b':').ok_or_else(|| {
                MultipartError::Malformed("a part's header line has no ':'".into())
            })?;
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            if name.eq_ignore_ascii_case(b"content-disposition") {
                let value = HeaderValue::from_bytes(value.trim_ascii()).map_err(|_| {
                    MultipartError::Malformed("a Content-Disposition is not a header value".into())
                })?;
                disposition = Some(ContentDisposition::from_raw(&value).map_err(|_| {
                    MultipartError::Malformed("a Content-Disposition cannot be read".into())
                })?);
            }
        }
        let disposition = disposition
            .ok_or_else(|| MultipartError::Malformed("a part has no Content-Disposition".into()))?;
        let name = disposition
            .get_name()
            .ok_or_else(|| MultipartError::Malformed("a part has no name".into()))?
            .to_owned();
        Ok(Part {
            name,
            filename: disposition.get_filename().map(str::to_owned),
        })
    }

    /// The next piece of the current part's content; `None` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, MultipartError> {
        if !matches!(self.state, State::Content) {
            return Ok(None);
        }
        loop {
            if let Some(at) = memchr::memmem::find(&self.buf, &self.delimiter) {
                let content = self.buf.split_to(at).freeze();
                self.buf.advance(self.delimiter.len());
                self.after_boundary().await?;
                if content.is_empty() {
                    return Ok(None);
                }
                return self.content(content).map(Some);
            }
            // All but what could be the start of a delimiter is content.
            let keep = self.delimiter.len() - 1;
            if self.buf.len() > keep {
                let content = self.buf.split_to(self.buf.len() - keep).freeze();
                return self.content(content).map(Some);
            }
            if !self.fill().await? {
                return Err(MultipartError::Incomplete(
                    "the body ended inside a part".into(),
                ));
            }
        }
    }

    /// Counts content of a field that is not a file against the field limit.
    fn content(&mut self, content: Bytes) -> Result<Bytes, MultipartError> {
        if !self.in_file {
            self.field_bytes += content.len();
            if self.field_bytes > self.limits.field_bytes {
                return Err(MultipartError::TooLarge(format!(
                    "the form's fields other than files hold more than {} bytes",
                    self.limits.field_bytes
                )));
            }
        }
        Ok(content)
    }

    /// Bytes held now (for tests of the memory bound).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use proptest::prelude::*;

    use super::*;

    const LIMITS: MultipartLimits = MultipartLimits {
        header_bytes: 1024,
        parts: 4,
        field_bytes: 256,
        body_bytes: 1 << 20,
    };

    fn reader(chunks: Vec<Vec<u8>>, boundary: &str) -> Multipart<Infallible> {
        let body = futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))));
        Multipart::new(Box::pin(body), boundary, LIMITS)
    }

    /// Every part with its content, or the error that ended the form.
    async fn read_all(
        mut m: Multipart<Infallible>,
    ) -> Result<Vec<(Part, Vec<u8>)>, MultipartError> {
        let mut parts = Vec::new();
        while let Some(part) = m.next_part().await? {
            let mut content = Vec::new();
            while let Some(chunk) = m.next_chunk().await? {
                content.extend_from_slice(&chunk);
            }
            parts.push((part, content));
        }
        Ok(parts)
    }

    fn form() -> Vec<u8> {
        b"--xyz\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
          --xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\
          Content-Type: text/plain\r\n\r\nline one\r\n--xy not yet\r\nend\r\n--xyz--\r\n"
            .to_vec()
    }

    #[actix_rt::test]
    async fn a_form_is_read_part_by_part_in_any_chunking() {
        let body = form();
        for size in [1, 2, 3, 7, 16, body.len()] {
            let chunks = body.chunks(size).map(<[u8]>::to_vec).collect();
            let parts = read_all(reader(chunks, "xyz")).await.unwrap();
            assert_eq!(parts.len(), 2, "chunks of {size}");
            assert_eq!(parts[0].0.name, "note");
            assert_eq!(parts[0].1, b"hello");
            assert_eq!(parts[1].0.filename.as_deref(), Some("a.txt"));
            assert_eq!(parts[1].1, b"line one\r\n--xy not yet\r\nend");
        }
    }

    #[actix_rt::test]
    async fn refusals() {
        let err = |body: &[u8], boundary: &str| {
            let m = reader(vec![body.to_vec()], boundary);
            async move { read_all(m).await.unwrap_err() }
        };
        // No boundary ever, a boundary that never appears, a header block that never ends.
        assert!(matches!(err(b"", "a").await, MultipartError::Malformed(_)));
        assert!(matches!(
            err(b"\n", "a").await,
            MultipartError::Malformed(_)
        ));
        assert!(matches!(
            err(&vec![b'x'; 5000], "a").await,
            MultipartError::Malformed(_)
        ));
        let mut endless = b"--a\r\nContent-Disposition: form-data; name=\"f\"\r\n".to_vec();
        endless.extend(std::iter::repeat_n(b'h', 5000));
        assert!(matches!(
            err(&endless, "a").await,
            MultipartError::TooLarge(_)
        ));
        // Too many parts; too many field bytes; cut short.
        let many: Vec<u8> = (0..6)
            .flat_map(|i| {
                format!("--a\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nv\r\n")
                    .into_bytes()
            })
            .chain(b"--a--".to_vec())
            .collect();
        assert!(matches!(err(&many, "a").await, MultipartError::TooLarge(_)));
        let mut big = b"--a\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'v', 300));
        big.extend_from_slice(b"\r\n--a--");
        assert!(matches!(err(&big, "a").await, MultipartError::TooLarge(_)));
        let cut =
            b"--a\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\nabc";
        assert!(matches!(err(cut, "a").await, MultipartError::Incomplete(_)));
    }

    #[test]
    fn boundaries_come_from_the_content_type() {
        let ct = |s: &str| boundary_of(Some(&HeaderValue::from_str(s).unwrap()));
        assert_eq!(ct("multipart/form-data; boundary=abc").unwrap(), "abc");
        assert_eq!(ct("multipart/form-data; boundary=\"a b\"").unwrap(), "a b");
        assert!(ct("multipart/form-data").is_err());
        assert!(ct("application/json").is_err());
        assert!(ct(&format!("multipart/form-data; boundary={}", "b".repeat(71))).is_err());
        assert!(boundary_of(None).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary bytes in arbitrary chunks never panic, always end, and never make the
        /// reader hold more than its bounds allow.
        #[test]
        fn arbitrary_bodies_are_refused_or_read_within_bounds(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
            boundary in "[a-z0-9]{1,8}",
            prefix in proptest::sample::select(vec![0usize, 1, 2]),
        ) {
            let mut chunks = chunks;
            // Make some bodies look like forms, so deeper states are reached.
            match prefix {
                1 => chunks.insert(0, format!("--{boundary}\r\n").into_bytes()),
                2 => chunks.insert(0, format!("--{boundary}\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n").into_bytes()),
                _ => {}
            }
            let largest = chunks.iter().map(Vec::len).max().unwrap_or(0);
            let bound = LIMITS.header_bytes.max(MAX_PREAMBLE_BYTES + boundary.len() + 2)
                + largest + boundary.len() + 4;
            actix_rt::System::new().block_on(async move {
                let mut m = reader(chunks, &boundary);
                loop {
                    match m.next_part().await {
                        Ok(Some(_)) => loop {
                            prop_assert!(m.buffered() <= bound);
                            match m.next_chunk().await {
                                Ok(Some(_)) => {}
                                Ok(None) | Err(_) => break,
                            }
                        },
                        Ok(None) | Err(_) => break,
                    }
                    prop_assert!(m.buffered() <= bound);
                }
                Ok(())
            })?;
        }
    }
}
