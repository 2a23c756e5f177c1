//! A fault-injecting HTTP/1.1 proxy in front of a loopback registry, std only.
//!
//! Every request is read whole, matched against the [`Rule`]s, and either answered by the proxy
//! (an injected status, an HTML page, an auth challenge) or forwarded to the registry on a fresh
//! connection, whose whole answer is read and then sent on, damaged as the rule says (reset
//! mid-body, cut short, a byte flipped, delayed, trickled). The `Host` header is passed through,
//! so the registry's upload `Location`s point back at the proxy. Every request is logged with
//! what was done to it, so a test can check that its fault really fired.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// What to do to a request a [`Rule`] matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and a registry error envelope, without asking the registry.
    Status(u16),
    /// Forward; send the headers and the first `n` bytes of the body, then reset the connection.
    ResetAfter(usize),
    /// Forward; send only the first `n` bytes of the body, framed as if that were all of it.
    Truncate(usize),
    /// Forward; flip a byte in the middle of the response body.
    Corrupt,
    /// Forward with a byte of the request body flipped (an upload damaged on the way).
    CorruptRequest,
    /// Forward; wait this long before answering.
    Delay(Duration),
    /// Forward; send the body `chunk` bytes at a time with `pause` between.
    Trickle { chunk: usize, pause: Duration },
    /// Forward; send the headers and half the body, then go silent for this long and close.
    StallMidBody(Duration),
    /// Answer 200 with an HTML page (a captive portal, a proxy's maintenance page).
    Html,
    /// Answer 200 with this content type and body (a malformed manifest).
    Replace { content_type: &'static str, body: String },
    /// Answer 401 with a Bearer challenge whose realm is this proxy's `/token` (which grants a
    /// token every time: the registry just never accepts it).
    BearerChallenge,
    /// Answer 401 with a Basic challenge.
    BasicChallenge,
    /// Read the first half of the request body, then reset the connection.
    ResetRequest,
}

/// Which requests get a [`Fault`]: those whose method is `method` (`""`: any) and whose path
/// contains `path`, after the first `skip` of them, `times` times.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: &'static str,
    pub path: String,
    pub skip: usize,
    pub times: usize,
    pub fault: Fault,
}

impl Rule {
    /// `fault` for every request of `method` whose path contains `path`.
    pub fn always(method: &'static str, path: impl Into<String>, fault: Fault) -> Rule {
        Rule { method, path: path.into(), skip: 0, times: usize::MAX, fault }
    }

    /// `fault` for the first `times` such requests.
    pub fn first(times: usize, method: &'static str, path: impl Into<String>, fault: Fault) -> Rule {
        Rule { method, path: path.into(), skip: 0, times, fault }
    }
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub method: String,
    pub path: String,
    /// The request's `Range` header.
    pub range: Option<String>,
    /// The status sent (or that would have been, for a reset); 0 when the registry was unreachable.
    pub status: u16,
    pub fault: Option<Fault>,
}

impl Hit {
    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path.contains(path)
    }
}

#[derive(Debug)]
struct Shared {
    port: u16,
    upstream: u16,
    rules: Mutex<Vec<(Rule, usize)>>,
    log: Mutex<Vec<Hit>>,
    stop: AtomicBool,
}

impl Shared {
    /// The fault for this request, counting it against the rule that matched first.
    fn pick(&self, method: &str, path: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        for (rule, seen) in rules.iter_mut() {
            if (!rule.method.is_empty() && rule.method != method) || !path.contains(&rule.path) {
                continue;
            }
            *seen += 1;
            if *seen > rule.skip && *seen - rule.skip <= rule.times {
                return Some(rule.fault.clone());
            }
        }
        None
    }

    fn record(&self, hit: Hit) {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).push(hit);
    }
}

/// The proxy: a listener on a free loopback port and a thread per connection. Stops accepting
/// when dropped.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy for the registry on `127.0.0.1:<upstream>`.
    pub fn start(upstream: u16, rules: Vec<Rule>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let shared = Arc::new(Shared {
            port: listener.local_addr().unwrap().port(),
            upstream,
            rules: Mutex::new(rules.into_iter().map(|r| (r, 0)).collect()),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let accept = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if accept.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let shared = accept.clone();
                std::thread::spawn(move || {
                    // A broken client connection ends its thread; that is what faults do.
                    let _ = serve(conn, &shared);
                });
            }
        });
        Proxy { shared }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.shared.port)
    }

    /// `127.0.0.1:<port>/<name_tag>`.
    pub fn reference(&self, name_tag: &str) -> String {
        format!("{}/{name_tag}", self.host())
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Hit> {
        self.shared.log.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The requests that got a fault.
    pub fn faulted(&self) -> Vec<Hit> {
        self.log().into_iter().filter(|h| h.fault.is_some()).collect()
    }

    /// The log, one line a request, for assertion messages.
    pub fn describe(&self) -> String {
        self.log()
            .iter()
            .map(|h| {
                let range = h.range.as_deref().map(|r| format!(" [Range {r}]")).unwrap_or_default();
                let fault = h.fault.as_ref().map(|f| format!(" <- {f:?}")).unwrap_or_default();
                format!("  {} {}{range} -> {}{fault}", h.method, h.path, h.status)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.shared.port));
    }
}

/// A request or response head: the first line and the header fields.
#[derive(Debug)]
struct Head {
    line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

/// Reads a head; `None` at a clean end of stream before it.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let first = line.trim_end().to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "end of stream in a header"));
        }
        let field = line.trim_end();
        if field.is_empty() {
            break;
        }
        if let Some((k, v)) = field.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Ok(Some(Head { line: first, headers }))
}

/// Reads a chunked body to its end (trailers dropped).
fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size, 16).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if size == 0 {
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        line.clear();
        r.read_line(&mut line)?;
    }
}

/// Resets `conn` (SO_LINGER 0, then close): the peer sees ECONNRESET, not a clean end.
fn reset(conn: TcpStream) {
    let linger = nix::libc::linger { l_onoff: 1, l_linger: 0 };
    let _ = nix::sys::socket::setsockopt(&conn, nix::sys::socket::sockopt::Linger, &linger);
    drop(conn);
}

/// A response to send: status, headers (without framing ones) and body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// For HEAD: the Content-Length the registry gave.
    head_length: Option<String>,
}

impl Response {
    fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
            head_length: None,
        }
    }

    fn head_bytes(&self, length: usize) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        let length = self.head_length.clone().unwrap_or_else(|| length.to_string());
        out.push_str(&format!("Content-Length: {length}\r\n\r\n"));
        out.into_bytes()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

const HOP_BY_HOP: [&str; 5] = ["connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"];

/// Sends the request to the registry on a new connection and reads its whole answer.
fn forward(upstream: u16, head: &Head, body: &[u8], is_head: bool) -> io::Result<Response> {
    let mut conn = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut out = format!("{}\r\n", head.line);
    for (k, v) in &head.headers {
        if !HOP_BY_HOP.contains(&k.to_ascii_lowercase().as_str()) {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    let method = head.line.split(' ').next().unwrap_or_default();
    if !body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH") {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("Connection: close\r\n\r\n");
    conn.write_all(out.as_bytes())?;
    conn.write_all(body)?;
    let mut r = BufReader::new(conn);
    let resp = read_head(&mut r)?.ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no answer"))?;
    let status = resp.line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(502);
    let body = if is_head || status == 204 || status == 304 {
        Vec::new()
    } else if resp.chunked() {
        read_chunked(&mut r)?
    } else if let Some(len) = resp.get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        body
    } else {
        let mut body = Vec::new();
        r.read_to_end(&mut body)?;
        body
    };
    let head_length = if is_head { resp.get("content-length").map(str::to_owned) } else { None };
    let headers =
        resp.headers.into_iter().filter(|(k, _)| !HOP_BY_HOP.contains(&k.to_ascii_lowercase().as_str())).collect();
    Ok(Response { status, headers, body, head_length })
}

fn envelope(code: &str, message: &str) -> String {
    format!(r#"{{"errors":[{{"code":"{code}","message":"{message}","detail":null}}]}}"#)
}

/// Serves one client connection, request after request, until it closes or a fault ends it.
fn serve(conn: TcpStream, shared: &Shared) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    while let Some(head) = read_head(&mut reader)? {
        let mut parts = head.line.split(' ');
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let is_head = method == "HEAD";
        let fault = if path.starts_with("/token") { None } else { shared.pick(&method, &path) };
        let hit = |status, fault: &Option<Fault>| Hit {
            method: method.clone(),
            path: path.clone(),
            range: head.get("range").map(str::to_owned),
            status,
            fault: fault.clone(),
        };

        if let Some(Fault::ResetRequest) = fault {
            let len: usize = head.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            let mut part = vec![0; len / 2];
            let _ = reader.read_exact(&mut part);
            shared.record(hit(0, &fault));
            reset(conn);
            return Ok(());
        }
        let mut body = if head.chunked() {
            read_chunked(&mut reader)?
        } else {
            let len = head.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body)?;
            body
        };
        if fault == Some(Fault::CorruptRequest) && !body.is_empty() {
            let mid = body.len() / 2;
            body[mid] ^= 0xff;
        }

        let mut response = match &fault {
            _ if path.starts_with("/token") => {
                Response::new(200, "application/json", r#"{"token":"fault-proxy-token","expires_in":300}"#)
            }
            Some(Fault::Status(code)) => {
                Response::new(*code, "application/json", envelope("UNAVAILABLE", "injected by the fault proxy"))
            }
            Some(Fault::Html) => Response::new(
                200,
                "text/html; charset=utf-8",
                "<!DOCTYPE html>\n<html><head><title>Scheduled maintenance</title></head>\
                 <body><h1>We will be back soon</h1></body></html>\n",
            ),
            Some(Fault::Replace { content_type, body }) => Response::new(200, content_type, body.as_bytes()),
            Some(Fault::BearerChallenge) => {
                let mut r = Response::new(401, "application/json", envelope("UNAUTHORIZED", "authentication required"));
                let realm = format!("http://127.0.0.1:{}/token", shared.port);
                r.headers.push(("WWW-Authenticate".into(), format!(r#"Bearer realm="{realm}",service="fault-proxy""#)));
                r
            }
            Some(Fault::BasicChallenge) => {
                let mut r = Response::new(401, "application/json", envelope("UNAUTHORIZED", "authentication required"));
                r.headers.push(("WWW-Authenticate".into(), r#"Basic realm="fault-proxy""#.into()));
                r
            }
            _ => match forward(shared.upstream, &head, &body, is_head) {
                Ok(r) => r,
                Err(e) => {
                    shared.record(hit(0, &fault));
                    return Err(e);
                }
            },
        };
        if is_head {
            response.body.clear();
        }
        shared.record(hit(response.status, &fault));

        let body = &response.body;
        match fault {
            Some(Fault::ResetAfter(n)) => {
                conn.write_all(&response.head_bytes(body.len()))?;
                conn.write_all(&body[..n.min(body.len())])?;
                conn.flush()?;
                // Let the client read the bytes first: a reset discards what it has not read
                // yet (generous, for a loaded machine).
                std::thread::sleep(Duration::from_millis(300));
                reset(conn);
                return Ok(());
            }
            Some(Fault::StallMidBody(pause)) => {
                conn.write_all(&response.head_bytes(body.len()))?;
                conn.write_all(&body[..body.len() / 2])?;
                conn.flush()?;
                std::thread::sleep(pause);
                return Ok(());
            }
            Some(Fault::Truncate(n)) => {
                let n = n.min(body.len());
                conn.write_all(&response.head_bytes(n))?;
                conn.write_all(&body[..n])?;
            }
            Some(Fault::Corrupt) => {
                let mut body = body.clone();
                if !body.is_empty() {
                    let mid = body.len() / 2;
                    body[mid] ^= 0xff;
                }
                conn.write_all(&response.head_bytes(body.len()))?;
                conn.write_all(&body)?;
            }
            Some(Fault::Delay(pause)) => {
                std::thread::sleep(pause);
                conn.write_all(&response.head_bytes(body.len()))?;
                conn.write_all(body)?;
            }
            Some(Fault::Trickle { chunk, pause }) => {
                conn.write_all(&response.head_bytes(body.len()))?;
                for piece in body.chunks(chunk.max(1)) {
                    conn.write_all(piece)?;
                    conn.flush()?;
                    std::thread::sleep(pause);
                }
            }
            _ => {
                conn.write_all(&response.head_bytes(body.len()))?;
                conn.write_all(body)?;
            }
        }
        conn.flush()?;
    }
    Ok(())
}
