//! A minimal HTTP/1.1 codec: enough for the service's JSON API (server and client) and for
//! etcd's JSON gateway. Requests carry their body with `Content-Length` (chunked request
//! bodies are refused); responses are read with `Content-Length`, `chunked`, or up to EOF.
//! The client sends one request per connection (`Connection: close`).
//!
//! Limits: headers ≤ 16 KiB, bodies ≤ [`MAX_BODY`]; no TLS, no proxies, no redirects.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest response body the client accepts (etcd range answers can be large).
pub const MAX_BODY: usize = 16 << 20;
/// Largest request body the server accepts (every API request is small).
pub const MAX_REQUEST_BODY: usize = 1 << 20;
const MAX_HEADERS: usize = 16 << 10;

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent (`/objects?after=3`).
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Path without the query.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    /// Decoded query parameters.
    pub fn query(&self) -> Vec<(String, String)> {
        let Some((_, q)) = self.target.split_once('?') else {
            return Vec::new();
        };
        q.split('&')
            .filter(|s| !s.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    /// Whether the client wants the connection kept open after the response.
    pub fn keep_alive(&self) -> bool {
        !self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Header fields, in the order received.
type Headers = Vec<(String, String)>;

/// Reads the start line and header lines up to the empty line. `Ok(None)` on EOF before any
/// byte.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<(String, Headers)>> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut total = first.len();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("connection closed inside the header"));
        }
        total += line.len();
        if total > MAX_HEADERS {
            return Err(bad("header too large"));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').ok_or_else(|| bad(format!("bad header line {line:?}")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(Some((first.trim_end_matches(['\r', '\n']).to_string(), headers)))
}

fn content_length(headers: &[(String, String)], max: usize) -> io::Result<Option<usize>> {
    match header(headers, "content-length") {
        None => Ok(None),
        Some(v) => {
            let n: usize = v.parse().map_err(|_| bad("bad Content-Length"))?;
            if n > max {
                return Err(bad(format!("body of {n} bytes, more than {max}")));
            }
            Ok(Some(n))
        }
    }
}

fn read_exact_body(r: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut body = vec![0; n];
    r.read_exact(&mut body)?;
    Ok(body)
}

/// Reads one request. `Ok(None)` when the peer closed the connection between requests.
pub fn read_request(r: &mut impl BufRead) -> io::Result<Option<Request>> {
    let Some((line, headers)) = read_head(r)? else {
        return Ok(None);
    };
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad(format!("bad request line {line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("unsupported version {version:?}")));
    }
    if header(&headers, "transfer-encoding").is_some() {
        return Err(bad("chunked request bodies are not supported"));
    }
    let body = match content_length(&headers, MAX_REQUEST_BODY)? {
        Some(n) => read_exact_body(r, n)?,
        None => Vec::new(),
    };
    Ok(Some(Request { method: method.to_string(), target: target.to_string(), headers, body }))
}

/// The reason phrase of the statuses this crate uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "Status",
    }
}

/// Writes a JSON response.
pub fn write_response(w: &mut impl Write, status: u16, body: &[u8], keep_alive: bool) -> io::Result<()> {
    write_typed_response(w, status, "application/json", body, keep_alive)
}

/// Writes a response with a body of `content_type`.
pub fn write_typed_response(
    w: &mut impl Write,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        reason(status),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    w.write_all(head.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or("");
        let n = usize::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
        if body.len() + n > MAX_BODY {
            return Err(bad("body too large"));
        }
        if n == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut t = String::new();
                if r.read_line(&mut t)? == 0 || t.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + n, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        r.read_exact(&mut crlf)?;
    }
}

/// Sends one request to `host:port` and returns (status, body).
pub fn call(
    addr: &str,
    method: &str,
    target: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<(u16, Vec<u8>)> {
    let sa = addr.to_socket_addrs()?.next().ok_or_else(|| bad(format!("{addr}: no address")))?;
    let stream = TcpStream::connect_timeout(&sa, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let body = body.unwrap_or_default();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str("\r\n");
    let mut w = &stream;
    w.write_all(req.as_bytes())?;
    w.write_all(body)?;
    w.flush()?;
    let mut r = BufReader::new(&stream);
    let (line, headers) = read_head(&mut r)?.ok_or_else(|| bad("no response"))?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let body = if header(&headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        read_chunked(&mut r)?
    } else if let Some(n) = content_length(&headers, MAX_BODY)? {
        read_exact_body(&mut r, n)?
    } else {
        let mut b = Vec::new();
        r.take(MAX_BODY as u64 + 1).read_to_end(&mut b)?;
        if b.len() > MAX_BODY {
            return Err(bad("body too large"));
        }
        b
    };
    Ok((status, body))
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes and `+` (as space). Invalid escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_round_trip() {
        for s in ["a b/c?d=e&f", "ümlaut", "100%", "%zz", "x%4"] {
            assert_eq!(percent_decode(&percent_encode(s)), s);
        }
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("a+b%2Fc"), "a b/c");
    }

    #[test]
    fn chunked_bodies_decode() {
        let raw = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        assert_eq!(read_chunked(&mut &raw[..]).unwrap(), b"hello world");
    }

    #[test]
    fn requests_parse() {
        let raw = b"POST /objects?name=a%20b&limit=3 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
        let r = read_request(&mut &raw[..]).unwrap().unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path(), "/objects");
        assert_eq!(r.query(), vec![("name".into(), "a b".into()), ("limit".into(), "3".into())]);
        assert_eq!(r.body, b"{}");
        assert!(r.keep_alive());
    }
}
