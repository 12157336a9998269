// The original Node.js design, as a second benchmark reference (issue 7,
// scenario 5): one process runs a WebSocket server, publishes every message
// to `chat_queue`, answers it with a mocked reply like the seed demo's
// backend did, and routes the replies from ONE shared reply queue to the
// right user's sockets. It speaks just enough of Switchboard's socket
// protocol for `loadgen` to drive it (POST /api/session, /ws?token=…,
// `welcome`, `send`, `reply`; client `ack`s are ignored).
//
// The broker hops are kept as durable as Switchboard's and the plain-lapin
// reference's, so the comparison is about the design, not about guarantees:
// persistent messages, publisher confirms, manual acks, a quorum
// `chat_queue`, a durable classic reply queue. What the design lacks is
// what Switchboard adds: per-user queues (a reply waits for a user who is
// away), client acks, a responder tier of its own that scales apart.
//
//   AMQP_URL=… PORT=… PREFIX=… node server.mjs
import amqp from "amqplib";
import { randomUUID } from "node:crypto";
import http from "node:http";
import { WebSocketServer } from "ws";

const url = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672/%2f";
const port = Number(process.env.PORT ?? 5056);
const prefix = process.env.PREFIX ?? "";
const requests = `${prefix}chat_queue`;
const replies = `${prefix}chat_responses`;
const PREFETCH = 500;

// Without TCP_NODELAY each small frame can wait for a delayed ACK (~40 ms).
const connection = await amqp.connect(url, { noDelay: true });
const publisher = await connection.createConfirmChannel();
const worker = await connection.createConfirmChannel();
const listener = await connection.createChannel();
await publisher.assertQueue(requests, { durable: true, arguments: { "x-queue-type": "quorum" } });
await publisher.assertQueue(replies, { durable: true });

// The mocked model: one reply per message, like the seed demo's backend.
await worker.prefetch(PREFETCH);
await worker.consume(requests, (delivery) => {
  const request = JSON.parse(delivery.content.toString());
  const reply = {
    user: request.user,
    id: randomUUID(),
    in_reply_to: request.id,
    text: `You said: "${request.text}". This is a mocked answer.`,
  };
  worker.sendToQueue(replies, Buffer.from(JSON.stringify(reply)), { persistent: true }, (error) => {
    if (error) worker.nack(delivery);
    else worker.ack(delivery);
  });
});

// The shared reply queue: every reply of every user, routed here by user.
const sockets = new Map(); // user → Set<WebSocket>
await listener.prefetch(PREFETCH);
await listener.consume(replies, (delivery) => {
  const reply = JSON.parse(delivery.content.toString());
  const frame = JSON.stringify({
    type: "reply",
    id: reply.id,
    in_reply_to: reply.in_reply_to,
    seq: 0,
    text: reply.text,
    final: true,
  });
  for (const socket of sockets.get(reply.user) ?? []) socket.send(frame);
  listener.ack(delivery);
});

const server = http.createServer((request, response) => {
  if (request.method === "POST" && request.url === "/api/session") {
    response.writeHead(200, { "content-type": "application/json" });
    response.end(JSON.stringify({ token: randomUUID() }));
    return;
  }
  response.writeHead(404).end();
});
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
server.on("upgrade", (request, socket, head) => {
  const user = new URL(request.url, "http://x").searchParams.get("token");
  if (!user) return socket.destroy();
  wss.handleUpgrade(request, socket, head, (ws) => {
    socket.setNoDelay(true);
    if (!sockets.has(user)) sockets.set(user, new Set());
    sockets.get(user).add(ws);
    ws.on("close", () => {
      const mine = sockets.get(user);
      mine?.delete(ws);
      if (mine?.size === 0) sockets.delete(user);
    });
    ws.on("message", (data) => {
      let frame;
      try {
        frame = JSON.parse(data.toString());
      } catch {
        return;
      }
      if (frame.type !== "send") return;
      const body = Buffer.from(JSON.stringify({ user, id: frame.id, text: frame.text }));
      publisher.sendToQueue(requests, body, { persistent: true }, (error) => {
        ws.send(
          JSON.stringify(
            error
              ? { type: "error", code: "broker_unavailable", message: "not queued", id: frame.id }
              : { type: "accepted", id: frame.id },
          ),
        );
      });
    });
    ws.send(JSON.stringify({ type: "welcome", user_id: user }));
  });
});
server.listen(port, "127.0.0.1", () => console.log(`node baseline on 127.0.0.1:${port}`));

// A benchmark's queues are throwaway: delete them on the way out (the
// broker clean-up after a run knows Switchboard's names, not this queue).
const stop = async () => {
  server.close();
  for (const ws of wss.clients) ws.terminate();
  await publisher.deleteQueue(replies).catch(() => {});
  await publisher.deleteQueue(requests).catch(() => {});
  await connection.close().catch(() => {});
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
