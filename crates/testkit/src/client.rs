use crate::WAIT;
use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use protocol::amqp::{MessageStatus, ReceiptState};
use protocol::answer::ShownAnswer;
use protocol::ws::{ReplyFrame, ServerFrame};
use protocol::{MessageId, UserId};
use std::net::SocketAddr;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::http::HeaderMap;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A guest identity from `POST /api/session`.
#[derive(Debug, Clone)]
pub struct Guest {
    pub user_id: UserId,
    pub token: String,
}

/// Asks the gateway at `addr` for a new guest identity.
pub async fn guest_session(addr: SocketAddr) -> anyhow::Result<Guest> {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/api/session"))
        .send()
        .await?
        .error_for_status()?;
    let body: serde_json::Value = response.json().await?;
    Ok(Guest {
        user_id: UserId::parse(body["user_id"].as_str().context("no user_id")?.to_owned())?,
        token: body["token"].as_str().context("no token")?.to_owned(),
    })
}

/// A WebSocket chat client, as a browser would be: it acknowledges every
/// reply chunk it reads (unless built with [`ChatClient::without_acks`]).
/// `message_status` frames (advisory progress, which may come before or
/// after `accepted`), `room_receipt`s and `room_presence`s are set aside in
/// [`ChatClient::statuses`], [`ChatClient::receipts`] and
/// [`ChatClient::presences`] rather than returned by
/// [`ChatClient::next_frame`].
#[derive(Debug)]
pub struct ChatClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub user_id: UserId,
    acks: bool,
    /// Every `message_status` received, in order.
    pub statuses: Vec<(MessageId, MessageStatus)>,
    /// Every `room_receipt` received, in order: (member, seq, state).
    pub receipts: Vec<(UserId, u64, ReceiptState)>,
    /// Every `room_presence` received, in order: (member, still a member,
    /// online).
    pub presences: Vec<(UserId, bool, bool)>,
}

/// What ended a socket, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// A close frame with this code.
    Code(u16),
    /// The connection ended without a close frame.
    Abrupt,
}

impl ChatClient {
    /// Opens `/ws?token=…` and reads the `welcome` frame.
    pub async fn connect(addr: SocketAddr, token: &str) -> anyhow::Result<Self> {
        Self::connect_with(addr, Some(token), |_| {})
            .await
            .map(|(client, _)| client)
    }

    /// Opens `/ws` (with `?token=` when given), letting `adjust` add headers
    /// to the upgrade request; returns the client (welcome read) and the
    /// upgrade response.
    pub async fn connect_with(
        addr: SocketAddr,
        token: Option<&str>,
        adjust: impl FnOnce(&mut HeaderMap),
    ) -> anyhow::Result<(Self, Response)> {
        let url = match token {
            Some(token) => format!("ws://{addr}/ws?token={token}"),
            None => format!("ws://{addr}/ws"),
        };
        let mut request = url.into_client_request()?;
        adjust(request.headers_mut());
        let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .context("WebSocket connect timed out")??;
        let mut client = Self {
            ws,
            user_id: UserId::new_guest(),
            acks: true,
            statuses: Vec::new(),
            receipts: Vec::new(),
            presences: Vec::new(),
        };
        match client.next_frame().await? {
            ServerFrame::Welcome { user_id } => client.user_id = user_id,
            other => bail!("expected welcome, got {other:?}"),
        }
        Ok((client, response))
    }

    /// Sends a raw WebSocket frame (e.g. a text frame that is not UTF-8).
    pub async fn send_raw_frame(&mut self, frame: Frame) -> anyhow::Result<()> {
        self.ws.send(Message::Frame(frame)).await?;
        Ok(())
    }

    /// Stops acknowledging reply chunks (to test what happens without).
    pub fn without_acks(mut self) -> Self {
        self.acks = false;
        self
    }

    /// Sends raw text as one frame.
    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.ws.send(Message::binary(bytes)).await?;
        Ok(())
    }

    /// Sends `cancel` for message `id`.
    pub async fn cancel(&mut self, id: MessageId) -> anyhow::Result<()> {
        self.send_text(&protocol::ws::ClientFrame::Cancel { id }.to_json())
            .await
    }

    /// Sends a chat message with a fresh id and returns the id.
    pub async fn send_message(&mut self, text: &str) -> anyhow::Result<MessageId> {
        let id = MessageId::new_random();
        let frame = protocol::ws::ClientFrame::Send(protocol::ws::Message {
            id,
            text: text.to_owned(),
            context: Vec::new(),
            room_id: None,
        });
        self.send_text(&frame.to_json()).await?;
        Ok(id)
    }

    /// The next protocol frame (WebSocket pings and pongs are skipped).
    pub async fn next_frame(&mut self) -> anyhow::Result<ServerFrame> {
        // One deadline for the whole wait: the gateway's pings must not
        // restart it, or a frame that never comes is waited for forever.
        let deadline = tokio::time::Instant::now() + WAIT;
        self.frame_until(deadline, |_| false)
            .await?
            .ok_or_else(|| anyhow!("no frame"))
    }

    /// Reads until `done` holds for the advisory frames set aside (statuses
    /// and receipts), within [`WAIT`]; any other frame read meanwhile is
    /// returned in the list.
    pub async fn until_set_aside(
        &mut self,
        done: impl Fn(&Self) -> bool,
    ) -> anyhow::Result<Vec<ServerFrame>> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut others = Vec::new();
        while !done(self) {
            if let Some(frame) = self.frame_until(deadline, &done).await? {
                others.push(frame);
            }
        }
        Ok(others)
    }

    /// The next frame that is not set aside, or `None` once `done` holds
    /// after setting one aside.
    async fn frame_until(
        &mut self,
        deadline: tokio::time::Instant,
        done: impl Fn(&Self) -> bool,
    ) -> anyhow::Result<Option<ServerFrame>> {
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .context("timed out waiting for a frame")?
                .ok_or_else(|| anyhow!("socket closed"))??;
            match message {
                Message::Text(text) => {
                    let frame: ServerFrame = serde_json::from_str(&text)
                        .with_context(|| format!("not a server frame: {text}"))?;
                    let ack = match &frame {
                        ServerFrame::Reply(chunk) => Some((chunk.id, chunk.seq)),
                        ServerFrame::RoomMessage { id, seq, .. } => Some((
                            protocol::ReplyId::from(*id),
                            u32::try_from(*seq).unwrap_or(u32::MAX),
                        )),
                        _ => None,
                    };
                    if let (true, Some((id, seq))) = (self.acks, ack) {
                        let ack = protocol::ws::ClientFrame::Ack { id, seq };
                        self.send_text(&ack.to_json()).await?;
                    }
                    match frame {
                        ServerFrame::MessageStatus { id, status } => {
                            self.statuses.push((id, status));
                        }
                        ServerFrame::RoomReceipt {
                            user_id,
                            seq,
                            state,
                            ..
                        } => {
                            self.receipts.push((user_id, seq, state));
                        }
                        ServerFrame::RoomPresence {
                            user_id,
                            member,
                            online,
                            ..
                        } => {
                            self.presences.push((user_id, member, online));
                        }
                        frame => return Ok(Some(frame)),
                    }
                    if done(self) {
                        return Ok(None);
                    }
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => bail!("unexpected WebSocket message {other:?}"),
            }
        }
    }

    /// Waits for `accepted` for `id`; fails on any other frame first.
    pub async fn expect_accepted(&mut self, id: MessageId) -> anyhow::Result<()> {
        match self.next_frame().await? {
            ServerFrame::Accepted { id: got, .. } if got == id => Ok(()),
            other => bail!("expected accepted for {id}, got {other:?}"),
        }
    }

    /// Sends a message and waits for its `accepted`.
    pub async fn send_accepted(&mut self, text: &str) -> anyhow::Result<MessageId> {
        let id = self.send_message(text).await?;
        self.expect_accepted(id).await?;
        Ok(id)
    }

    /// Sends a message and reads its whole answer: a round trip.
    pub async fn ask(&mut self, text: &str) -> anyhow::Result<Vec<ReplyFrame>> {
        let id = self.send_accepted(text).await?;
        self.collect_reply(id).await
    }

    /// Reads reply chunks answering `id` until the final chunk of the newest
    /// attempt seen (or a failure), returning all of them as received
    /// (repeats and stale attempts included). Other frames are an error.
    pub async fn collect_reply(&mut self, id: MessageId) -> anyhow::Result<Vec<ReplyFrame>> {
        Ok(self.read_answer(id).await?.0)
    }

    /// Like [`ChatClient::collect_reply`], with the answer as shown from
    /// the chunks read here ([`ShownAnswer`]).
    pub async fn read_answer(
        &mut self,
        id: MessageId,
    ) -> anyhow::Result<(Vec<ReplyFrame>, ShownAnswer)> {
        let mut chunks = Vec::new();
        let mut answer = ShownAnswer::default();
        let mut newest = 0;
        loop {
            match self.next_frame().await? {
                ServerFrame::Reply(chunk) if chunk.in_reply_to == id => {
                    answer.add(&chunk);
                    newest = newest.max(chunk.attempt);
                    let done = chunk.error.is_some() || (chunk.r#final && chunk.attempt == newest);
                    chunks.push(chunk);
                    if done {
                        return Ok((chunks, answer));
                    }
                }
                other => bail!("while collecting the reply to {id}: unexpected {other:?}"),
            }
        }
    }

    /// Sends `ping` and returns every frame that arrived before the `pong`:
    /// a way to prove nothing else is pending on the socket.
    pub async fn frames_before_pong(&mut self) -> anyhow::Result<Vec<ServerFrame>> {
        self.send_text(r#"{"type":"ping"}"#).await?;
        let mut before = Vec::new();
        loop {
            match self.next_frame().await? {
                ServerFrame::Pong => return Ok(before),
                other => before.push(other),
            }
        }
    }

    /// Waits for the server to close the socket and reports how.
    pub async fn closed(&mut self) -> anyhow::Result<Closed> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .context("timed out waiting for the socket to close")?;
            match next {
                Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => {
                    return Ok(Closed::Code(code.into()));
                }
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return Ok(Closed::Abrupt),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Closes the socket as a browser tab would.
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.ws.close(None).await?;
        // Drain until the server acknowledges the close (one deadline).
        let deadline = tokio::time::Instant::now() + WAIT;
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, self.ws.next()).await {}
        Ok(())
    }
}
