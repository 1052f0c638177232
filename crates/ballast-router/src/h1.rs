//! HTTP/1.1 on the wire, as far as a proxy needs it: message heads parsed in place (the raw
//! head is kept and headers are ranges into it, so a request costs no header map and no
//! per-header allocation), message framing by RFC 9112 §6, a chunked-coding decoder, and head
//! writers.
//!
//! Both sides of the router speak through this module: [`crate::serve`] reads client requests
//! with it and [`crate::upstream`] reads upstream responses.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use http::Method;

/// Largest message head accepted, in bytes.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted in one head.
const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (with extensions) or trailer section accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H1Error {
    /// The head is not valid HTTP/1.x.
    #[error("malformed message head: {0}")]
    Head(String),
    /// The head is larger than [`MAX_HEAD`] or has too many fields.
    #[error("message head too large (more than {MAX_HEAD} bytes or {MAX_HEADERS} fields)")]
    HeadTooLarge,
    /// The message's length cannot be determined safely (RFC 9112 §6.3).
    #[error("ambiguous or invalid message length: {0}")]
    Framing(&'static str),
    /// A transfer coding other than chunked.
    #[error("unsupported transfer coding")]
    UnsupportedCoding,
    /// The chunked body is malformed.
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
}

/// Header fields of a parsed head: ranges into its raw bytes.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    raw: Bytes,
    fields: Vec<(Range<usize>, Range<usize>)>,
}

impl Fields {
    /// Every field, in order, as (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .map(|(n, v)| (&self.raw[n.clone()], &self.raw[v.clone()]))
    }

    /// The first value of `name` (case-insensitive).
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Every value of `name`.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Whether a comma-separated field (e.g. `Connection`) lists `token`.
    #[must_use]
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name).any(|v| {
            v.split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    }
}

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The request target as sent (origin form: path and query), in `fields`' raw bytes.
    target: Range<usize>,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor: u8,
    /// The header fields.
    pub fields: Fields,
}

impl RequestHead {
    /// The request target as sent (origin form: path and query).
    #[must_use]
    pub fn target(&self) -> &str {
        // Checked to be text when parsed.
        std::str::from_utf8(&self.fields.raw[self.target.clone()]).unwrap_or("/")
    }

    /// The path part of the target.
    #[must_use]
    pub fn path(&self) -> &str {
        let t = self.target();
        t.split_once('?').map_or(t, |(p, _)| p)
    }

    /// The query, without `?`.
    #[must_use]
    pub fn query(&self) -> Option<&str> {
        self.target().split_once('?').map(|(_, q)| q)
    }

    /// Whether the client wants the connection kept open after this exchange.
    #[must_use]
    pub fn keep_alive(&self) -> bool {
        keep_alive(self.minor, &self.fields)
    }

    /// How the request body is framed (RFC 9112 §6.3: a request without either field has none).
    ///
    /// # Errors
    /// Both `Transfer-Encoding` and `Content-Length`, a coding other than chunked, or an
    /// invalid length.
    pub fn framing(&self) -> Result<Framing, H1Error> {
        message_framing(&self.fields, true)
    }
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// The reason phrase, in `fields`' raw bytes.
    reason: Range<usize>,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor: u8,
    /// The header fields.
    pub fields: Fields,
}

impl ResponseHead {
    /// The reason phrase.
    #[must_use]
    pub fn reason(&self) -> &str {
        std::str::from_utf8(&self.fields.raw[self.reason.clone()]).unwrap_or("")
    }

    /// How the body of this response to a `method` request is framed.
    ///
    /// # Errors
    /// Conflicting or invalid length fields.
    pub fn framing(&self, method: &Method) -> Result<Framing, H1Error> {
        if *method == Method::HEAD || self.status < 200 || self.status == 204 || self.status == 304 {
            return Ok(Framing::Length(0));
        }
        message_framing(&self.fields, false)
    }

    /// Whether the upstream allows another request on this connection.
    #[must_use]
    pub fn keep_alive(&self) -> bool {
        keep_alive(self.minor, &self.fields)
    }
}

fn keep_alive(minor: u8, fields: &Fields) -> bool {
    if minor >= 1 {
        !fields.has_token("connection", "close")
    } else {
        fields.has_token("connection", "keep-alive")
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0: no body).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
}

/// The framing of a message (RFC 9112 §6.3). A request with neither field has no body, and
/// a request's final coding must be chunked; a response without either lasts until the close.
fn message_framing(fields: &Fields, request: bool) -> Result<Framing, H1Error> {
    let mut te_seen = false;
    let mut chunked_last = false;
    for v in fields.get_all("transfer-encoding") {
        for coding in v.split(|b| *b == b',') {
            let c = coding.trim_ascii();
            if c.is_empty() {
                continue;
            }
            te_seen = true;
            chunked_last = c.eq_ignore_ascii_case(b"chunked");
        }
    }
    let mut length: Option<u64> = None;
    for v in fields.get_all("content-length") {
        // A list of identical values is tolerated (RFC 9110 §8.6); anything else is refused.
        for part in v.split(|b| *b == b',') {
            let n = parse_length(part.trim_ascii()).ok_or(H1Error::Framing("invalid Content-Length"))?;
            match length {
                Some(l) if l != n => return Err(H1Error::Framing("conflicting Content-Length values")),
                _ => length = Some(n),
            }
        }
    }
    if te_seen {
        if length.is_some() {
            return Err(H1Error::Framing("both Transfer-Encoding and Content-Length"));
        }
        return match (chunked_last, request) {
            (true, _) => Ok(Framing::Chunked),
            (false, true) => Err(H1Error::UnsupportedCoding),
            (false, false) => Ok(Framing::UntilClose),
        };
    }
    Ok(match (length, request) {
        (Some(n), _) => Framing::Length(n),
        (None, true) => Framing::Length(0),
        (None, false) => Framing::UntilClose,
    })
}

fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Where `part` (a slice of `buf`) lies in `buf`.
fn range_of(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

fn fields_of(buf: &[u8], headers: &[httparse::Header<'_>]) -> Vec<(Range<usize>, Range<usize>)> {
    headers
        .iter()
        .map(|h| (range_of(buf, h.name.as_bytes()), range_of(buf, h.value)))
        .collect()
}

/// The length of a head `httparse` found complete; `None` while it is incomplete (and the
/// buffered `len` bytes are within the limit).
fn head_len(parsed: httparse::Result<usize>, len: usize) -> Result<Option<usize>, H1Error> {
    match parsed {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => Ok(Some(n)),
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            Err(H1Error::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) if len > MAX_HEAD => Err(H1Error::HeadTooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(H1Error::Head(e.to_string())),
    }
}

/// Parses a request head at the start of `buf`; on success the head's bytes are taken off it.
/// `Ok(None)`: incomplete (read more).
///
/// # Errors
/// A malformed or oversized head.
pub fn parse_request(buf: &mut BytesMut) -> Result<Option<RequestHead>, H1Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let Some(n) = head_len(req.parse(buf), buf.len())? else {
        return Ok(None);
    };
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| H1Error::Head("invalid method".to_owned()))?;
    let path = req.path.unwrap_or_default();
    let origin_form = path.starts_with('/') || (method == Method::OPTIONS && path == "*");
    if !origin_form {
        return Err(H1Error::Head(
            "the request target must be a path (origin form)".to_owned(),
        ));
    }
    let target = range_of(buf, path.as_bytes());
    let minor = req.version.unwrap_or(1);
    let fields = fields_of(buf, req.headers);
    let raw = buf.split_to(n).freeze();
    Ok(Some(RequestHead {
        method,
        target,
        minor,
        fields: Fields { raw, fields },
    }))
}

/// Parses a response head at the start of `buf`; on success the head's bytes are taken off it.
/// `Ok(None)`: incomplete (read more).
///
/// # Errors
/// A malformed or oversized head.
pub fn parse_response(buf: &mut BytesMut) -> Result<Option<ResponseHead>, H1Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let Some(n) = head_len(resp.parse(buf), buf.len())? else {
        return Ok(None);
    };
    let status = resp.code.unwrap_or(0);
    let reason = resp.reason.map_or(0..0, |r| range_of(buf, r.as_bytes()));
    let minor = resp.version.unwrap_or(1);
    let fields = fields_of(buf, resp.headers);
    let raw = buf.split_to(n).freeze();
    Ok(Some(ResponseHead {
        status,
        reason,
        minor,
        fields: Fields { raw, fields },
    }))
}

/// Header fields a proxy never forwards (RFC 9110 §7.6.1), with the legacy `keep-alive` and
/// `proxy-connection`; fields named by `Connection` are dropped too (see [`forwardable`]).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Fields that `Connection` cannot make hop-by-hop: naming them there must not strip a
/// message of its framing or its host.
const NEVER_CONNECTION_NAMED: [&str; 3] = ["content-length", "transfer-encoding", "host"];

/// The fields of `fields` that are forwarded: not hop-by-hop, not named by `Connection` (except
/// the framing fields and `Host`), and not one of `also_drop` (lowercase names).
pub fn forwardable<'a>(
    fields: &'a Fields,
    also_drop: &'a [&'a str],
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
    let has_connection = fields.get("connection").is_some();
    fields.iter().filter(move |(name, _)| {
        let named = |list: &[&str]| list.iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes()));
        if named(&HOP_BY_HOP) || named(also_drop) {
            return false;
        }
        // The framing fields and `Host` are the router's to decide, whatever `Connection` says.
        !(has_connection
            && !named(&NEVER_CONNECTION_NAMED)
            && std::str::from_utf8(name).is_ok_and(|n| fields.has_token("connection", n)))
    })
}

/// Appends one header field.
pub fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends a decimal number.
pub fn put_u64(out: &mut Vec<u8>, n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut v = n;
    loop {
        i -= 1;
        // `v % 10` is below 10: the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        {
            tmp[i] = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Appends a status line.
pub fn put_status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    put_u64(out, u64::from(status));
    out.push(b' ');
    let reason = if reason.is_empty() {
        http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("")
    } else {
        reason
    };
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends one chunk of chunked coding (`data` must not be empty).
pub fn put_chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk of chunked coding (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// One step of a body being read.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// Some of the body's bytes.
    Data(Bytes),
    /// The body ended.
    End,
}

/// Reads a body off a connection's read buffer by its framing.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    UntilClose,
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers(usize),
    Done,
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`.
    #[must_use]
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        Self { state }
    }

    /// Whether the body was read to its end.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the body lasts until the connection closes.
    #[must_use]
    pub fn until_close(&self) -> bool {
        self.state == State::UntilClose
    }

    /// Takes the next piece off `buf`. `Ok(None)`: more bytes are needed.
    ///
    /// # Errors
    /// A malformed chunked body.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Piece>, H1Error> {
        loop {
            match self.state {
                State::Done => return Ok(Some(Piece::End)),
                State::Length(n) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Length(left)
                    };
                    return Ok(Some(Piece::Data(buf.split_to(take).freeze())));
                }
                State::UntilClose => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(Piece::Data(buf.split().freeze())));
                }
                State::ChunkSize => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(None);
                    };
                    let size = line.split(|b| *b == b';').next().unwrap_or_default().trim_ascii();
                    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
                        return Err(H1Error::Chunked("invalid chunk size"));
                    }
                    let n = std::str::from_utf8(size)
                        .ok()
                        .and_then(|s| u64::from_str_radix(s, 16).ok())
                        .ok_or(H1Error::Chunked("invalid chunk size"))?;
                    self.state = if n == 0 {
                        State::Trailers(0)
                    } else {
                        State::ChunkData(n)
                    };
                }
                State::ChunkData(n) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::ChunkDataEnd
                    } else {
                        State::ChunkData(left)
                    };
                    return Ok(Some(Piece::Data(buf.split_to(take).freeze())));
                }
                State::ChunkDataEnd => {
                    let Some(line) = take_line(buf, 2)? else {
                        return Ok(None);
                    };
                    if !line.is_empty() {
                        return Err(H1Error::Chunked("chunk data longer than its size"));
                    }
                    self.state = State::ChunkSize;
                }
                State::Trailers(seen) => {
                    let Some(line) = take_line(buf, MAX_TRAILERS)? else {
                        return Ok(None);
                    };
                    if line.is_empty() {
                        self.state = State::Done;
                    } else {
                        let seen = seen + line.len();
                        if seen > MAX_TRAILERS {
                            return Err(H1Error::Chunked("trailer section too large"));
                        }
                        // Trailer fields are not forwarded.
                        self.state = State::Trailers(seen);
                    }
                }
            }
        }
    }
}

/// Takes one line (without its CRLF or LF) off `buf`; `Ok(None)` when no line end is there yet.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, H1Error> {
    let Some(end) = buf.iter().take(max + 2).position(|b| *b == b'\n') else {
        return if buf.len() > max + 1 {
            Err(H1Error::Chunked("line too long"))
        } else {
            Ok(None)
        };
    };
    let mut line = buf.split_to(end + 1);
    line.truncate(end);
    if line.last() == Some(&b'\r') {
        line.truncate(end - 1);
    }
    Ok(Some(line.freeze()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn req(text: &str) -> Result<Option<RequestHead>, H1Error> {
        parse_request(&mut BytesMut::from(text))
    }

    #[test]
    fn request_heads_parse_with_fields_and_framing() {
        let mut buf = BytesMut::from(
            "POST /v1/x?a=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello",
        );
        let head = parse_request(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..], b"hello");
        assert_eq!(head.method, Method::POST);
        assert_eq!(head.path(), "/v1/x");
        assert_eq!(head.query(), Some("a=1"));
        assert_eq!(head.fields.get("host"), Some(&b"h"[..]));
        assert_eq!(head.fields.get_all("x-a").count(), 2);
        assert_eq!(head.framing().unwrap(), Framing::Length(5));
        assert!(head.keep_alive());
        assert!(req("GET / HTTP/1.1\r\nHost: h\r\n").unwrap().is_none());
        let h = req("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive());
        assert_eq!(h.framing().unwrap(), Framing::Length(0));
        let h = req("GET / HTTP/1.1\r\nConnection: Keep-Alive, close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive());
    }

    #[test]
    fn ambiguous_framing_and_bad_heads_are_refused() {
        let both = req("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(matches!(both.framing(), Err(H1Error::Framing(_))));
        let two = req("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(matches!(two.framing(), Err(H1Error::Framing(_))));
        let same = req("POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(same.framing().unwrap(), Framing::Length(3));
        let neg = req("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(neg.framing().is_err());
        let gzip = req("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(gzip.framing(), Err(H1Error::UnsupportedCoding));
        let chunked = req("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(chunked.framing().unwrap(), Framing::Chunked);
        assert!(matches!(req("GARBAGE\r\n\r\n"), Err(H1Error::Head(_))));
        assert!(matches!(
            req("GET http://x/ HTTP/1.1\r\n\r\n"),
            Err(H1Error::Head(_))
        ));
        let big = format!("GET / HTTP/1.1\r\nx: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(req(&big).unwrap_err(), H1Error::HeadTooLarge);
        let many: String = (0..200).map(|i| format!("x{i}: 1\r\n")).collect();
        assert_eq!(
            req(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err(),
            H1Error::HeadTooLarge
        );
    }

    #[test]
    fn response_framing_follows_the_method_and_status() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
        let h = parse_response(&mut buf).unwrap().unwrap();
        assert_eq!(h.framing(&Method::GET).unwrap(), Framing::Length(10));
        assert_eq!(h.framing(&Method::HEAD).unwrap(), Framing::Length(0));
        let mut buf = BytesMut::from("HTTP/1.0 200 OK\r\n\r\n");
        let h = parse_response(&mut buf).unwrap().unwrap();
        assert_eq!(h.framing(&Method::GET).unwrap(), Framing::UntilClose);
        assert!(!h.keep_alive());
        let mut buf = BytesMut::from("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n");
        let h = parse_response(&mut buf).unwrap().unwrap();
        assert_eq!(h.framing(&Method::GET).unwrap(), Framing::Length(0));
    }

    #[test]
    fn hop_by_hop_fields_are_not_forwarded() {
        let h = req("GET / HTTP/1.1\r\nConnection: keep-alive, x-private\r\nx-private: 1\r\nkeep-alive: timeout=5\r\ntransfer-encoding: chunked\r\nx-keep: yes\r\nhost: h\r\n\r\n")
            .unwrap()
            .unwrap();
        let kept: Vec<_> = forwardable(&h.fields, &["host"])
            .map(|(n, _)| n.to_vec())
            .collect();
        assert_eq!(kept, vec![b"x-keep".to_vec()]);
    }

    fn decode_all(framing: Framing, input: &[&str]) -> Result<(Vec<u8>, bool), H1Error> {
        let mut d = BodyDecoder::new(framing);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for part in input {
            buf.extend_from_slice(part.as_bytes());
            while let Some(p) = d.decode(&mut buf)? {
                match p {
                    Piece::Data(b) => out.extend_from_slice(&b),
                    Piece::End => return Ok((out, true)),
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire = "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for cut in 0..wire.len() {
            let (a, b) = wire.split_at(cut);
            let (out, done) = decode_all(Framing::Chunked, &[a, b]).unwrap();
            assert_eq!(out, b"hello world", "cut at {cut}");
            assert!(done);
        }
        assert!(decode_all(Framing::Chunked, &["zz\r\n"]).is_err());
        assert!(decode_all(Framing::Chunked, &["2\r\nabc\r\n"]).is_err());
        assert!(decode_all(Framing::Chunked, &["ffffffffffffffffff\r\n"]).is_err());
        let (out, done) = decode_all(Framing::Length(3), &["ab", "cdef"]).unwrap();
        assert_eq!((out.as_slice(), done), (&b"abc"[..], true));
        let (out, done) = decode_all(Framing::UntilClose, &["ab", "cd"]).unwrap();
        assert_eq!((out.as_slice(), done), (&b"abcd"[..], false));
    }

    #[test]
    fn numbers_and_chunks_are_written_plainly() {
        let mut v = Vec::new();
        put_u64(&mut v, 0);
        v.push(b' ');
        put_u64(&mut v, 1_234_567_890);
        assert_eq!(v, b"0 1234567890");
        let mut c = Vec::new();
        put_chunk(&mut c, b"hello world, this is a chunk!");
        assert_eq!(c, b"1d\r\nhello world, this is a chunk!\r\n");
        let mut s = Vec::new();
        put_status_line(&mut s, 404, "");
        assert_eq!(s, b"HTTP/1.1 404 Not Found\r\n");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_bytes_parse_to_a_head_an_error_or_a_wait(
                bytes in proptest::collection::vec(prop_oneof![any::<u8>(), Just(b'\r'), Just(b'\n'), Just(b':')], 0..512),
            ) {
                // Raw, and behind a valid request line so the field parsing is reached too.
                let mut behind_line = b"POST /x HTTP/1.1\r\n".to_vec();
                behind_line.extend_from_slice(&bytes);
                for input in [&bytes[..], &behind_line[..]] {
                    let mut buf = BytesMut::from(input);
                    if let Ok(Some(head)) = parse_request(&mut buf) {
                        prop_assert!(head.target().starts_with('/') || head.target() == "*");
                        let _ = head.framing();
                        let _ = head.keep_alive();
                        let _ = forwardable(&head.fields, &["host"]).count();
                    }
                }
                let mut buf = BytesMut::from(&bytes[..]);
                if let Ok(Some(head)) = parse_response(&mut buf) {
                    let _ = head.framing(&Method::GET);
                    let _ = head.reason();
                }
            }

            #[test]
            fn garbage_never_yields_more_than_it_was_given(
                bytes in proptest::collection::vec(any::<u8>(), 0..512),
                chunked in any::<bool>(),
            ) {
                let mut d = BodyDecoder::new(if chunked { Framing::Chunked } else { Framing::Length(100) });
                let mut buf = BytesMut::from(&bytes[..]);
                let mut out = 0usize;
                while let Ok(Some(Piece::Data(b))) = d.decode(&mut buf) {
                    out += b.len();
                }
                prop_assert!(out <= bytes.len());
            }

            #[test]
            fn chunked_bodies_survive_any_chunking_and_any_split(
                body in proptest::collection::vec(any::<u8>(), 0..2048),
                sizes in proptest::collection::vec(1usize..300, 1..20),
                cut in 0usize..4096,
            ) {
                let mut wire = Vec::new();
                let mut rest = &body[..];
                let mut i = 0;
                while !rest.is_empty() {
                    let n = sizes[i % sizes.len()].min(rest.len());
                    put_chunk(&mut wire, &rest[..n]);
                    rest = &rest[n..];
                    i += 1;
                }
                wire.extend_from_slice(LAST_CHUNK);
                let cut = cut.min(wire.len());
                let mut d = BodyDecoder::new(Framing::Chunked);
                let mut buf = BytesMut::new();
                let mut out = Vec::new();
                let mut ended = false;
                for part in [&wire[..cut], &wire[cut..]] {
                    buf.extend_from_slice(part);
                    while let Some(p) = d.decode(&mut buf).unwrap() {
                        match p {
                            Piece::Data(b) => out.extend_from_slice(&b),
                            Piece::End => { ended = true; break; }
                        }
                    }
                }
                prop_assert!(ended);
                prop_assert_eq!(out, body);
            }
        }
    }
}
