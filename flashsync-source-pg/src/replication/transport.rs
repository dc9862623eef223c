//! Our own replication connection: TCP or Unix socket, optional TLS
//! (`sslmode`), startup in `replication=database` mode, password / MD5 /
//! SCRAM-SHA-256 authentication, simple queries, and the CopyBoth stream.
//!
//! Message encoding and SCRAM come from `postgres-protocol`; framing is ours
//! because the stream must be read in a cancellation-safe way (a
//! `select!` over "more bytes arrived", "an ack is due" and "the consumer
//! has room") and because `postgres-protocol` does not know `CopyBothResponse`.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flashsync_core::{SourceError, SourceErrorKind};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::conninfo::{ConnInfo, Host};
use crate::error::{kind_for_sqlstate, protocol};
use crate::session;
use crate::tls;

/// Byte streams the transport runs over (TCP, Unix socket, TLS over TCP).
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One backend message.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) tag: u8,
    pub(crate) body: Bytes,
}

/// A connection speaking the frontend/backend protocol.
pub(crate) struct WireConn {
    io: Box<dyn Io>,
    rbuf: BytesMut,
    max_message: usize,
}

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

fn io_err(step: &str, e: std::io::Error) -> SourceError {
    SourceError::connection(format!("{step}: {e}"))
}

fn encode_err(e: std::io::Error) -> SourceError {
    SourceError::new(SourceErrorKind::Other, format!("cannot encode message: {e}"))
}

impl WireConn {
    /// Connects, negotiates TLS, authenticates and waits for the server to
    /// be ready, then pins the session settings.
    pub(crate) async fn connect(
        info: &ConnInfo,
        application_name: &str,
        max_message: usize,
    ) -> Result<WireConn, SourceError> {
        let timeout = info.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let what = format!("replication connection to {}:{} as {}", info.host, info.port, info.user);
        let mut conn = tokio::time::timeout(timeout, Self::open(info, application_name, max_message))
            .await
            .map_err(|_| SourceError::connection(format!("{what}: timed out after {timeout:?}")))?
            .map_err(|e| SourceError::new(e.kind, format!("{what}: {}", e.message)))?;
        conn.simple_query(&session::set_statement()).await?;
        Ok(conn)
    }

    async fn open(info: &ConnInfo, application_name: &str, max_message: usize) -> Result<WireConn, SourceError> {
        let io: Box<dyn Io> = match &info.host {
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", info.port));
                Box::new(
                    tokio::net::UnixStream::connect(&path).await.map_err(|e| io_err("connecting to Unix socket", e))?,
                )
            }
            Host::Tcp(host) => {
                let mut tcp =
                    TcpStream::connect((host.as_str(), info.port)).await.map_err(|e| io_err("connecting", e))?;
                let _ = tcp.set_nodelay(true);
                let tls =
                    tls::client_config(info).map_err(|e| SourceError::new(SourceErrorKind::Refused, e.to_string()))?;
                match tls {
                    None => Box::new(tcp),
                    Some(config) => {
                        let mut buf = BytesMut::new();
                        frontend::ssl_request(&mut buf);
                        tcp.write_all(&buf).await.map_err(|e| io_err("requesting TLS", e))?;
                        let answer = tcp.read_u8().await.map_err(|e| io_err("requesting TLS", e))?;
                        match answer {
                            b'S' => Box::new(
                                tls::handshake(config, host, tcp).await.map_err(|e| io_err("TLS handshake", e))?,
                            ),
                            b'N' if info.sslmode.requires_tls() => {
                                return Err(SourceError::new(
                                    SourceErrorKind::Refused,
                                    format!(
                                        "server does not accept TLS connections, but sslmode={}",
                                        info.sslmode.as_str()
                                    ),
                                ))
                            }
                            b'N' => Box::new(tcp),
                            other => {
                                return Err(protocol("requesting TLS", format!("unexpected answer byte {other:#04x}")))
                            }
                        }
                    }
                }
            }
        };
        let mut conn = WireConn { io, rbuf: BytesMut::with_capacity(64 * 1024), max_message };
        conn.startup(info, application_name).await?;
        Ok(conn)
    }

    async fn startup(&mut self, info: &ConnInfo, application_name: &str) -> Result<(), SourceError> {
        let app = info.application_name.as_deref().unwrap_or(application_name);
        let mut params: Vec<(&str, &str)> = vec![
            ("user", info.user.as_str()),
            ("database", info.dbname.as_str()),
            ("replication", "database"),
            ("application_name", app),
            ("client_encoding", "UTF8"),
        ];
        if let Some(o) = &info.options {
            params.push(("options", o.as_str()));
        }
        let mut buf = BytesMut::new();
        frontend::startup_message(params, &mut buf).map_err(encode_err)?;
        self.send(&buf).await?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let frame = self.next_frame().await?;
            match frame.tag {
                b'R' => {
                    let mut body = frame.body;
                    if body.len() < 4 {
                        return Err(protocol("authentication", "short message"));
                    }
                    let code = body.get_i32();
                    let password = || {
                        info.password.as_ref().map(|p| p.expose().as_bytes()).ok_or_else(|| {
                            SourceError::new(
                                SourceErrorKind::Refused,
                                "the server asks for a password but none was given",
                            )
                        })
                    };
                    let mut out = BytesMut::new();
                    match code {
                        0 => continue,
                        3 => frontend::password_message(password()?, &mut out).map_err(encode_err)?,
                        5 => {
                            if body.len() < 4 {
                                return Err(protocol("MD5 authentication", "short salt"));
                            }
                            let salt = [body[0], body[1], body[2], body[3]];
                            let hash =
                                postgres_protocol::authentication::md5_hash(info.user.as_bytes(), password()?, salt);
                            frontend::password_message(hash.as_bytes(), &mut out).map_err(encode_err)?;
                        }
                        10 => {
                            let offered = body.split(|&b| b == 0).any(|m| m == b"SCRAM-SHA-256");
                            if !offered {
                                return Err(SourceError::new(
                                    SourceErrorKind::Unsupported,
                                    "the server offers no SASL mechanism we support (need SCRAM-SHA-256)",
                                ));
                            }
                            let s = ScramSha256::new(password()?, ChannelBinding::unsupported());
                            frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out)
                                .map_err(encode_err)?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().ok_or_else(|| protocol("SCRAM", "continue before start"))?;
                            s.update(&body)
                                .map_err(|e| SourceError::new(SourceErrorKind::Refused, format!("SCRAM: {e}")))?;
                            frontend::sasl_response(s.message(), &mut out).map_err(encode_err)?;
                        }
                        12 => {
                            let s = scram.as_mut().ok_or_else(|| protocol("SCRAM", "final before start"))?;
                            s.finish(&body).map_err(|e| {
                                SourceError::new(
                                    SourceErrorKind::Refused,
                                    format!("SCRAM server signature rejected: {e}"),
                                )
                            })?;
                            continue;
                        }
                        other => {
                            return Err(SourceError::new(
                                SourceErrorKind::Unsupported,
                                format!("unsupported authentication method (code {other})"),
                            ))
                        }
                    }
                    self.send(&out).await?;
                }
                b'E' => return Err(server_error("authentication", &frame.body)),
                b'Z' => return Ok(()),
                // ParameterStatus, BackendKeyData, notices.
                b'S' | b'K' | b'N' => {}
                other => return Err(protocol("startup", format!("unexpected message {:?}", char::from(other)))),
            }
        }
    }

    /// A complete message already in the buffer, if any. Never waits.
    pub(crate) fn try_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.rbuf.len() < 5 {
            return Ok(None);
        }
        let tag = self.rbuf[0];
        let len = u32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len < 4 {
            return Err(protocol("reading", "message length below 4"));
        }
        if len - 4 > self.max_message {
            return Err(SourceError::new(
                SourceErrorKind::Unsupported,
                format!("server message of {} bytes exceeds the limit of {} bytes", len - 4, self.max_message),
            ));
        }
        if self.rbuf.len() < len + 1 {
            // Reserve only what is needed, after the length was checked.
            self.rbuf.reserve(len + 1 - self.rbuf.len());
            return Ok(None);
        }
        let mut msg = self.rbuf.split_to(len + 1);
        msg.advance(5);
        Ok(Some(Frame { tag, body: msg.freeze() }))
    }

    /// Reads more bytes into the buffer. Cancellation-safe: bytes are
    /// buffered only when the read completes.
    pub(crate) async fn fill(&mut self) -> Result<(), SourceError> {
        if self.rbuf.capacity() - self.rbuf.len() < 8192 {
            self.rbuf.reserve(64 * 1024);
        }
        let n = self.io.read_buf(&mut self.rbuf).await.map_err(|e| io_err("reading from server", e))?;
        if n == 0 {
            return Err(SourceError::connection("server closed the connection"));
        }
        Ok(())
    }

    /// The next message, reading as needed.
    pub(crate) async fn next_frame(&mut self) -> Result<Frame, SourceError> {
        loop {
            if let Some(f) = self.try_frame()? {
                return Ok(f);
            }
            self.fill().await?;
        }
    }

    /// Writes bytes and flushes, bounded in time.
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> Result<(), SourceError> {
        let write = async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        };
        tokio::time::timeout(WRITE_TIMEOUT, write)
            .await
            .map_err(|_| SourceError::connection("writing to server timed out"))?
            .map_err(|e| io_err("writing to server", e))
    }

    /// Sends one `CopyData` message.
    pub(crate) async fn send_copy_data(&mut self, payload: &[u8]) -> Result<(), SourceError> {
        let mut buf = BytesMut::with_capacity(payload.len() + 5);
        buf.put_u8(b'd');
        buf.put_u32(u32::try_from(payload.len() + 4).map_err(|_| protocol("CopyData", "too large"))?);
        buf.put_slice(payload);
        self.send(&buf).await
    }

    /// Runs a simple query; returns its rows as text (`None` for NULL).
    pub(crate) async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, SourceError> {
        let mut buf = BytesMut::new();
        frontend::query(sql, &mut buf).map_err(encode_err)?;
        self.send(&buf).await?;
        let mut rows = Vec::new();
        let mut failed = None;
        loop {
            let frame = self.next_frame().await?;
            match frame.tag {
                b'D' => rows.push(parse_data_row(frame.body)?),
                b'E' => failed = Some(server_error("query", &frame.body)),
                b'Z' => return failed.map_or(Ok(rows), Err),
                b'T' | b'C' | b'I' | b'N' | b'S' => {}
                other => return Err(protocol("query", format!("unexpected message {:?}", char::from(other)))),
            }
        }
    }

    /// Sends a command that answers with `CopyBothResponse` (e.g.
    /// `START_REPLICATION`) and waits for it.
    pub(crate) async fn start_copy_both(&mut self, sql: &str) -> Result<(), SourceError> {
        let mut buf = BytesMut::new();
        frontend::query(sql, &mut buf).map_err(encode_err)?;
        self.send(&buf).await?;
        let mut failed = None;
        loop {
            let frame = self.next_frame().await?;
            match frame.tag {
                b'W' if failed.is_none() => return Ok(()),
                b'E' => failed = Some(server_error("starting replication", &frame.body)),
                b'Z' => {
                    return Err(failed
                        .unwrap_or_else(|| protocol("starting replication", "server did not enter CopyBoth mode")))
                }
                b'N' | b'S' => {}
                other => {
                    return Err(protocol("starting replication", format!("unexpected message {:?}", char::from(other))))
                }
            }
        }
    }
}

fn parse_data_row(mut body: Bytes) -> Result<Vec<Option<String>>, SourceError> {
    let bad = || protocol("query", "malformed DataRow");
    if body.len() < 2 {
        return Err(bad());
    }
    let n = body.get_u16();
    let mut out = Vec::with_capacity(usize::from(n).min(body.len()));
    for _ in 0..n {
        if body.len() < 4 {
            return Err(bad());
        }
        let len = body.get_i32();
        if len < 0 {
            out.push(None);
            continue;
        }
        let len = usize::try_from(len).map_err(|_| bad())?;
        if body.len() < len {
            return Err(bad());
        }
        let v = body.split_to(len);
        out.push(Some(String::from_utf8(v.to_vec()).map_err(|_| bad())?));
    }
    Ok(out)
}

/// An `ErrorResponse` body → [`SourceError`], classified by SQLSTATE.
pub(crate) fn server_error(step: &str, body: &[u8]) -> SourceError {
    let mut severity = "ERROR".to_owned();
    let mut code = String::new();
    let mut message = String::new();
    let mut detail = None;
    for field in body.split(|&b| b == 0).filter(|f| !f.is_empty()) {
        let (t, v) = (field[0], String::from_utf8_lossy(&field[1..]).into_owned());
        match t {
            b'V' => severity = v,
            b'C' => code = v,
            b'M' => message = v,
            b'D' => detail = Some(v),
            _ => {}
        }
    }
    let mut text = format!("{step}: {severity}: {message}");
    if let Some(d) = detail {
        text.push_str(&format!(" (detail: {d})"));
    }
    SourceError::new(kind_for_sqlstate(&code), text)
}
