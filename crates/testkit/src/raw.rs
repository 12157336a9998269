//! A deliberately mute WebSocket client over a bare TCP stream: it performs
//! the upgrade, then never answers pings and never sends a close — what a
//! half-open or frozen connection looks like to the server.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug)]
pub struct MuteSocket {
    tcp: TcpStream,
    buffer: Vec<u8>,
}

impl MuteSocket {
    /// Upgrades `/ws?token=…` and returns once the 101 response is read.
    pub async fn connect(addr: SocketAddr, token: &str) -> anyhow::Result<Self> {
        let mut tcp = TcpStream::connect(addr).await?;
        let request = format!(
            "GET /ws?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await?;
        let mut socket = Self {
            tcp,
            buffer: Vec::new(),
        };
        let deadline = tokio::time::Instant::now() + crate::WAIT;
        let end = loop {
            if let Some(end) = socket.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            socket.fill(deadline).await?;
        };
        let head = String::from_utf8_lossy(&socket.buffer[..end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            bail!("upgrade refused: {head}");
        }
        socket.buffer.drain(..end);
        Ok(socket)
    }

    async fn fill(&mut self, deadline: tokio::time::Instant) -> anyhow::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk))
            .await
            .context("timed out reading from the server")??;
        if n == 0 {
            bail!("the server closed the connection without a close frame");
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Writes `bytes` as they are: a frame the client library would never
    /// send (unmasked, reserved bits set, a bad opcode).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.tcp.write_all(bytes).await?;
        Ok(())
    }

    /// Reads server frames (unmasked) until a close frame; returns its code.
    pub async fn close_code(&mut self) -> anyhow::Result<u16> {
        // One deadline: the server's pings keep coming until it closes.
        let deadline = tokio::time::Instant::now() + crate::WAIT;
        loop {
            if self.buffer.len() >= 2 {
                let opcode = self.buffer[0] & 0x0f;
                let (len, header) = match self.buffer[1] & 0x7f {
                    126 if self.buffer.len() >= 4 => (
                        usize::from(u16::from_be_bytes([self.buffer[2], self.buffer[3]])),
                        4,
                    ),
                    126 | 127 => {
                        self.fill(deadline).await?;
                        continue;
                    }
                    len => (usize::from(len), 2),
                };
                if self.buffer.len() >= header + len {
                    let payload: Vec<u8> = self.buffer.drain(..header + len).skip(header).collect();
                    if opcode == 0x8 {
                        anyhow::ensure!(payload.len() >= 2, "close frame without a code");
                        return Ok(u16::from_be_bytes([payload[0], payload[1]]));
                    }
                    continue;
                }
            }
            self.fill(deadline).await?;
        }
    }
}
