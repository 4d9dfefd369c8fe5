//! `multipart/form-data` uploads: text fields, bytes, files and streams, sent with
//! [`RequestBuilder::multipart`](crate::RequestBuilder::multipart).
//!
//! The encoding is [`mpart_async`]'s streaming writer: a file or a stream part is read as the
//! request is sent, never held whole in memory. A form made only of text and bytes parts is encoded
//! at once into one replayable body, so a retry sends it again; a form with a file or a stream is
//! sent once, like any streaming body (see [`RequestBuilder::body_stream`](crate::RequestBuilder::body_stream)).
//!
//! ```
//! use integration_client::multipart::{Form, Part};
//! # use integration_client::{Client, ResponseBody};
//! # use integration_core::Body;
//! # use http_body_util::BodyExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let upstream = tower::service_fn(|request: http::Request<Body>| async move {
//! #     let (parts, body) = request.into_parts();
//! #     let body = body.collect().await?.to_bytes();
//! #     assert!(parts.headers["content-type"].to_str()?.starts_with("multipart/form-data; boundary="));
//! #     let text = String::from_utf8(body.to_vec())?;
//! #     assert!(text.contains("name=\"title\"\r\n\r\nQ3 report\r\n"));
//! #     assert!(text.contains("filename=\"q3.csv\"\r\nContent-Type: text/csv\r\n\r\nregion,total\n"));
//! #     Ok::<_, integration_core::BoxError>(http::Response::new(ResponseBody::from("ok")))
//! # });
//! # let client = Client::from_service("files", "https://files.example/", upstream)?;
//! let form = Form::new()
//!     .text("title", "Q3 report")
//!     .part("file", Part::bytes(&b"region,total\n"[..]).file_name("q3.csv").mime_str("text/csv")?);
//!
//! let response = client.api("files")?.post("/upload").multipart(form).send().await?;
//! assert_eq!(response.status(), 200);
//! # Ok(())
//! # }
//! ```
//!
//! Field names and file names are escaped as the HTML standard's form encoding does (`"`, CR and LF
//! become `%22`, `%0D`, `%0A`), so a name cannot break out of its header.

use std::fmt;
use std::path::Path;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt as _, StreamExt as _, TryStreamExt as _};
use http::HeaderValue;
use integration_core::{Body, BoxError, Error, ErrorKind};
use mpart_async::client::MultipartRequest;

/// The streams a form is made of, boxed: one type for text, bytes, files and the caller's streams.
type PartStream = Pin<Box<dyn futures_core::Stream<Item = Result<Bytes, BoxError>> + Send + Sync>>;

/// A `multipart/form-data` form: named [`Part`]s, in order.
#[derive(Default)]
#[must_use]
pub struct Form {
    parts: Vec<(String, Part)>,
}

impl fmt::Debug for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Form").field("parts", &self.parts).finish()
    }
}

impl Form {
    /// An empty form.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a text field.
    pub fn text(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.part(name, Part::text(value))
    }

    /// Adds a part.
    pub fn part(mut self, name: impl Into<String>, part: Part) -> Self {
        self.parts.push((name.into(), part));
        self
    }

    /// Adds the file at `path` (opened now, read while the request is sent), named after the file,
    /// its content type guessed from the extension.
    ///
    /// # Errors
    ///
    /// The I/O error of opening the file.
    pub async fn file(
        self,
        name: impl Into<String>,
        path: impl AsRef<Path>,
    ) -> std::io::Result<Self> {
        Ok(self.part(name, Part::file(path).await?))
    }

    /// True when every part is in memory (text or bytes): the encoded form is then replayable.
    fn is_in_memory(&self) -> bool {
        self.parts
            .iter()
            .all(|(_, part)| matches!(part.data, Data::Text(_) | Data::Bytes(_)))
    }

    /// The `Content-Type` header value and the encoded body: bytes (replayable) when every part is
    /// in memory, a stream (sent once) otherwise.
    pub(crate) fn into_body(self) -> (HeaderValue, Body) {
        let in_memory = self.is_in_memory();
        let mut request: MultipartRequest<PartStream> = MultipartRequest::default();
        for (name, part) in self.parts {
            part.add_to(&mut request, &name);
        }
        let content_type = format!("multipart/form-data; boundary={}", request.get_boundary());
        let content_type =
            HeaderValue::from_str(&content_type).expect("the boundary is alphanumeric");
        let boundary = request.get_boundary().to_owned();
        if in_memory {
            // Every part is ready at once: the writer never waits, so it is drained here.
            let mut encoded = BytesMut::new();
            let mut request = request;
            while let Some(Some(chunk)) = request.next().now_or_never() {
                encoded.extend_from_slice(&chunk.expect("in-memory parts do not fail"));
            }
            if encoded.is_empty() {
                // No part at all: the closing delimiter alone.
                encoded.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            }
            return (content_type, Body::from(encoded.freeze()));
        }
        let frames = request.map_ok(http_body::Frame::data);
        (
            content_type,
            Body::streaming(http_body_util::StreamBody::new(frames)),
        )
    }
}

/// One part of a [`Form`]: text, bytes, a file or a stream, with an optional file name and content
/// type.
///
/// A part that is not plain text is sent with a `filename` (the one given, the file's own name, or
/// else the field's name) and a `Content-Type` (the one given, the one guessed from a file's
/// extension, or else `application/octet-stream`). A text part given a file name or a content type is
/// sent the same way.
#[must_use]
pub struct Part {
    data: Data,
    file_name: Option<String>,
    content_type: Option<String>,
}

enum Data {
    Text(String),
    Bytes(Bytes),
    Stream(PartStream),
}

impl fmt::Debug for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the content: a form may carry personal data.
        let kind = match &self.data {
            Data::Text(_) => "text",
            Data::Bytes(_) => "bytes",
            Data::Stream(_) => "stream",
        };
        f.debug_struct("Part")
            .field("kind", &kind)
            .field("file_name", &self.file_name)
            .field("content_type", &self.content_type)
            .finish()
    }
}

impl Part {
    fn new(data: Data) -> Self {
        Self {
            data,
            file_name: None,
            content_type: None,
        }
    }

    /// A text value.
    pub fn text(value: impl Into<String>) -> Self {
        Self::new(Data::Text(value.into()))
    }

    /// Bytes, held in memory.
    pub fn bytes(bytes: impl Into<Bytes>) -> Self {
        Self::new(Data::Bytes(bytes.into()))
    }

    /// A stream of bytes, read while the request is sent (the form is then sent once, never
    /// retried).
    pub fn stream<S, E>(stream: S) -> Self
    where
        S: futures_core::Stream<Item = Result<Bytes, E>> + Send + Sync + 'static,
        E: Into<BoxError> + 'static,
    {
        Self::new(Data::Stream(Box::pin(stream.map_err(Into::into))))
    }

    /// The file at `path`, opened now and read while the request is sent, named after the file, its
    /// content type guessed from the extension.
    ///
    /// # Errors
    ///
    /// The I/O error of opening the file.
    pub async fn file(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref();
        let file = tokio::fs::File::open(path).await?;
        let mut part = Self::stream(tokio_util::io::ReaderStream::new(file));
        part.file_name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned());
        part.content_type = Some(
            mime_guess::from_path(path)
                .first_or_octet_stream()
                .essence_str()
                .to_owned(),
        );
        Ok(part)
    }

    /// Sets the file name sent with the part.
    pub fn file_name(mut self, name: impl Into<String>) -> Self {
        self.file_name = Some(name.into());
        self
    }

    /// Sets the part's content type.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Request`] when `mime` is not a `type/subtype` media type that fits in a header.
    pub fn mime_str(mut self, mime: &str) -> Result<Self, Error> {
        let valid = mime
            .split_once('/')
            .is_some_and(|(kind, subtype)| !kind.trim().is_empty() && !subtype.trim().is_empty())
            && HeaderValue::from_str(mime).is_ok()
            && !mime.contains(['\r', '\n']);
        if !valid {
            return Err(Error::new(ErrorKind::Request)
                .with_message(format!("`{mime}` is not a media type (type/subtype)")));
        }
        self.content_type = Some(mime.to_owned());
        Ok(self)
    }

    fn add_to(self, request: &mut MultipartRequest<PartStream>, name: &str) {
        let name = escape(name);
        let stream: PartStream = match self.data {
            Data::Text(text) if self.file_name.is_none() && self.content_type.is_none() => {
                request.add_field(name, text);
                return;
            }
            Data::Text(text) => {
                Box::pin(futures_util::stream::once(
                    async move { Ok(Bytes::from(text)) },
                ))
            }
            Data::Bytes(bytes) => Box::pin(futures_util::stream::once(async move { Ok(bytes) })),
            Data::Stream(stream) => stream,
        };
        let file_name = self.file_name.map_or_else(|| name.clone(), |f| escape(&f));
        let content_type = self
            .content_type
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        request.add_stream(name, file_name, content_type, stream);
    }
}

/// A name as the HTML standard's `multipart/form-data` encoding writes it in a header: `"`, CR and
/// LF percent-encoded, nothing else changed.
fn escape(name: &str) -> String {
    name.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn encode(form: Form) -> (String, Body) {
        let (content_type, body) = form.into_body();
        let boundary = content_type
            .to_str()
            .unwrap()
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap()
            .to_owned();
        (boundary, body)
    }

    #[tokio::test]
    async fn an_in_memory_form_is_encoded_once_and_replayable() {
        let form = Form::new()
            .text("a", "1")
            .part("b", Part::bytes(&b"\x00\x01"[..]).file_name("b.bin"));
        let (boundary, body) = encode(form).await;
        let bytes = body.as_bytes().expect("replayable").clone();
        let expected = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"b\"; filename=\"b.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n\x00\x01\r\n--{boundary}--\r\n"
        );
        assert_eq!(bytes, expected.as_bytes());
    }

    #[tokio::test]
    async fn a_streamed_part_makes_a_streaming_body_with_the_same_encoding() {
        let chunks = futures_util::stream::iter([
            Ok::<_, std::io::Error>(Bytes::from_static(b"he")),
            Ok(Bytes::from_static(b"llo")),
        ]);
        let form = Form::new().part("s", Part::stream(chunks).file_name("s.txt"));
        let (boundary, body) = encode(form).await;
        assert!(!body.is_replayable(), "a stream is sent once");
        let bytes = body.collect().await.unwrap().to_bytes();
        let expected = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"s\"; filename=\"s.txt\"\r\n\
             Content-Type: application/octet-stream\r\n\r\nhello\r\n--{boundary}--\r\n"
        );
        assert_eq!(bytes, expected.as_bytes());
    }

    #[tokio::test]
    async fn names_cannot_break_out_of_their_header() {
        let form = Form::new().part(
            "x\"\r\nX-Injected: 1",
            Part::bytes("v").file_name("evil\".txt\r\n"),
        );
        let (_, body) = encode(form).await;
        let text = String::from_utf8(body.as_bytes().unwrap().to_vec()).unwrap();
        assert!(text.contains("name=\"x%22%0D%0AX-Injected: 1\"; filename=\"evil%22.txt%0D%0A\""));
        assert!(!text.contains("\r\nX-Injected"));
    }

    #[tokio::test]
    async fn an_empty_form_is_the_closing_delimiter() {
        let (boundary, body) = encode(Form::new()).await;
        assert_eq!(
            body.as_bytes().unwrap(),
            format!("--{boundary}--\r\n").as_bytes()
        );
    }

    #[test]
    fn a_content_type_must_be_a_media_type() {
        assert!(
            Part::text("x")
                .mime_str("text/plain; charset=utf-8")
                .is_ok()
        );
        for bad in ["text", "/plain", "text/", "text/plain\r\nX: 1"] {
            assert!(Part::text("x").mime_str(bad).is_err(), "{bad:?}");
        }
    }
}
