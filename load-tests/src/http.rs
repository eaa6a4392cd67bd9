//! A small HTTP/1.1 keep-alive client and connection pool: enough for the REST calls of PROTOCOL.md,
//! light on CPU so the measuring tool does not eat the server's cores, and able to bind a chosen local
//! address like the sockets do.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::ws::tcp_connect;

/// Largest response body read.
const MAX_BODY: usize = 32 * 1024 * 1024;

#[derive(Debug)]
pub enum HttpError {
    Connect(io::Error),
    Io(io::Error),
    Timeout,
    Parse(&'static str),
}

impl HttpError {
    pub fn kind(&self) -> String {
        match self {
            HttpError::Connect(e) => format!("http_connect_{:?}", e.kind()).to_lowercase(),
            HttpError::Io(e) => format!("http_io_{:?}", e.kind()).to_lowercase(),
            HttpError::Timeout => "http_timeout".into(),
            HttpError::Parse(w) => format!("http_parse_{w}"),
        }
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Connect(e) => write!(f, "connect failed: {e}"),
            HttpError::Io(e) => write!(f, "i/o error: {e}"),
            HttpError::Timeout => write!(f, "timed out"),
            HttpError::Parse(w) => write!(f, "bad response: {w}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// A response: status, the headers the tool looks at, and the body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    close: bool,
}

impl Response {
    /// The body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            anyhow::anyhow!(
                "HTTP {}: unexpected body ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            )
        })
    }

    /// The `error` code of an error body, if there is one.
    pub fn error_code(&self) -> Option<String> {
        serde_json::from_slice::<scan2order_schema::wire::ErrorBody>(&self.body)
            .ok()
            .map(|b| b.error)
    }
}

/// One keep-alive connection.
pub struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl HttpConn {
    pub async fn connect(addr: SocketAddr, bind: Option<IpAddr>) -> Result<HttpConn, HttpError> {
        let stream = tcp_connect(addr, bind).await.map_err(HttpError::Connect)?;
        Ok(HttpConn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one request and reads its response.
    pub async fn request(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, HttpError> {
        let mut req = Vec::with_capacity(256 + body.map_or(0, <[u8]>::len));
        req.extend_from_slice(method.as_bytes());
        req.push(b' ');
        req.extend_from_slice(path.as_bytes());
        req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        req.extend_from_slice(host.as_bytes());
        req.extend_from_slice(b"\r\n");
        for (k, v) in headers {
            req.extend_from_slice(k.as_bytes());
            req.extend_from_slice(b": ");
            req.extend_from_slice(v.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        if let Some(b) = body {
            req.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
            req.extend_from_slice(b.len().to_string().as_bytes());
            req.extend_from_slice(b"\r\n\r\n");
            req.extend_from_slice(b);
        } else {
            req.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&req).await.map_err(HttpError::Io)?;
        self.read_response(method == "HEAD").await
    }

    async fn fill(&mut self) -> Result<(), HttpError> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.map_err(HttpError::Io)?;
        if n == 0 {
            return Err(HttpError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            )));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn read_response(&mut self, head: bool) -> Result<Response, HttpError> {
        let header_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > 64 * 1024 {
                return Err(HttpError::Parse("headers_too_long"));
            }
            self.fill().await?;
        };
        let (status, length, chunked, close) = {
            let mut hdrs = [httparse::EMPTY_HEADER; 48];
            let mut resp = httparse::Response::new(&mut hdrs);
            match resp.parse(&self.buf[..header_end]) {
                Ok(httparse::Status::Complete(_)) => {}
                _ => return Err(HttpError::Parse("headers")),
            }
            let mut length = None;
            let mut chunked = false;
            let mut close = false;
            for h in resp.headers.iter() {
                let v = String::from_utf8_lossy(h.value);
                if h.name.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.to_ascii_lowercase().contains("chunked");
                } else if h.name.eq_ignore_ascii_case("connection") {
                    close = v.eq_ignore_ascii_case("close");
                }
            }
            (resp.code.unwrap_or(0), length, chunked, close)
        };
        self.buf.drain(..header_end);
        let no_body = head || status == 204 || status == 304 || (100..200).contains(&status);
        let body = if no_body {
            Vec::new()
        } else if chunked {
            self.read_chunked().await?
        } else if let Some(len) = length {
            if len > MAX_BODY {
                return Err(HttpError::Parse("body_too_big"));
            }
            while self.buf.len() < len {
                self.fill().await?;
            }
            self.buf.drain(..len).collect()
        } else {
            // Read to the end of the connection.
            loop {
                match self.fill().await {
                    Ok(()) => {}
                    Err(HttpError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e),
                }
                if self.buf.len() > MAX_BODY {
                    return Err(HttpError::Parse("body_too_big"));
                }
            }
            std::mem::take(&mut self.buf)
        };
        Ok(Response {
            status,
            body,
            close: close || (length.is_none() && !chunked && !no_body),
        })
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>, HttpError> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                self.fill().await?;
            };
            let size_str = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| HttpError::Parse("chunk_size"))?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers end with an empty line.
                loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        self.buf.drain(..i + 2);
                        if i == 0 {
                            return Ok(body);
                        }
                    } else {
                        self.fill().await?;
                    }
                }
            }
            if body.len() + size > MAX_BODY {
                return Err(HttpError::Parse("body_too_big"));
            }
            while self.buf.len() < size + 2 {
                self.fill().await?;
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }
}

/// A bounded pool of keep-alive connections to one server.
pub struct HttpPool {
    addr: SocketAddr,
    bind: Option<IpAddr>,
    pub host: String,
    idle: Mutex<Vec<HttpConn>>,
    permits: Semaphore,
    timeout: Duration,
}

impl HttpPool {
    pub fn new(
        addr: SocketAddr,
        bind: Option<IpAddr>,
        host: String,
        max_conns: usize,
        timeout: Duration,
    ) -> Arc<HttpPool> {
        Arc::new(HttpPool {
            addr,
            bind,
            host,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max_conns.max(1)),
            timeout,
        })
    }

    /// Runs one request on a pooled connection. `on_sent` is called right before the request is
    /// written, so latency clocks start after any wait for a free connection.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        on_sent: &mut (dyn FnMut() + Send),
    ) -> Result<Response, HttpError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| HttpError::Parse("pool_closed"))?;
        let pooled = self.idle.lock().ok().and_then(|mut v| v.pop());
        let (mut conn, fresh) = match pooled {
            Some(c) => (c, false),
            None => (HttpConn::connect(self.addr, self.bind).await?, true),
        };
        on_sent();
        let result = tokio::time::timeout(
            self.timeout,
            conn.request(method, &self.host, path, headers, body),
        )
        .await;
        let result = match result {
            Ok(r) => r,
            Err(_) => return Err(HttpError::Timeout),
        };
        match result {
            Ok(resp) => {
                if !resp.close {
                    if let Ok(mut v) = self.idle.lock() {
                        v.push(conn);
                    }
                }
                Ok(resp)
            }
            // A kept-alive connection the server closed meanwhile: retry once on a fresh one.
            Err(HttpError::Io(e)) if !fresh && e.kind() == io::ErrorKind::UnexpectedEof => {
                let mut conn = HttpConn::connect(self.addr, self.bind).await?;
                on_sent();
                let resp = tokio::time::timeout(
                    self.timeout,
                    conn.request(method, &self.host, path, headers, body),
                )
                .await
                .map_err(|_| HttpError::Timeout)??;
                if !resp.close {
                    if let Ok(mut v) = self.idle.lock() {
                        v.push(conn);
                    }
                }
                Ok(resp)
            }
            Err(e) => Err(e),
        }
    }

    /// A request without a latency callback.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, HttpError> {
        self.request(method, path, headers, body, &mut || {}).await
    }
}
