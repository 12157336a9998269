import { beforeEach, describe, expect, it } from "vitest";
import { ChatClient, type ClientEnv, type SocketLike } from "./client";

class FakeSocket implements SocketLike {
  onopen: SocketLike["onopen"] = null;
  onmessage: SocketLike["onmessage"] = null;
  onclose: SocketLike["onclose"] = null;
  onerror: SocketLike["onerror"] = null;
  sent: unknown[] = [];
  closed = false;
  constructor(public url: string) {}
  send(data: string) {
    this.sent.push(JSON.parse(data));
  }
  close() {
    this.closed = true;
  }
  // what the gateway does
  frame(f: object) {
    this.onmessage?.({ data: JSON.stringify(f) });
  }
  drop() {
    this.onclose?.({ code: 1006, reason: "" });
  }
}

type Harness = {
  env: ClientEnv;
  sockets: FakeSocket[];
  timers: { fn: () => void; ms: number }[];
  sessions: number;
  store: Map<string, string>;
};

function harness(): Harness {
  const h: Harness = { sockets: [], timers: [], sessions: 0, store: new Map(), env: undefined as never };
  let ids = 0;
  h.env = {
    location: { protocol: "http:", host: "chat.test" },
    storage: {
      getItem: (k) => h.store.get(k) ?? null,
      setItem: (k, v) => void h.store.set(k, v),
      removeItem: (k) => void h.store.delete(k),
    },
    fetch: async () => {
      h.sessions += 1;
      return { ok: true, status: 200, json: async () => ({ user_id: "g-1", token: "tok" }) };
    },
    openSocket: (url) => {
      const s = new FakeSocket(url);
      h.sockets.push(s);
      return s;
    },
    setTimeout: (fn, ms) => h.timers.push({ fn, ms }),
    clearTimeout: () => {},
    now: () => 0,
    newId: () => `m${++ids}`,
    backoff: { baseMs: 100, maxMs: 1_000, random: () => 0 },
  };
  return h;
}

const flushPromises = () => new Promise((resolve) => setTimeout(resolve, 0));
const last = (h: Harness) => h.sockets[h.sockets.length - 1]!;
const sends = (s: FakeSocket) => s.sent.filter((f) => (f as { type: string }).type === "send");

describe("ChatClient", () => {
  let h: Harness;
  let client: ChatClient;
  beforeEach(async () => {
    h = harness();
    client = new ChatClient(h.env);
    client.start();
    await flushPromises();
  });

  it("gets a guest session once, keeps the token, and connects with it", async () => {
    expect(h.sessions).toBe(1);
    expect(last(h).url).toBe("ws://chat.test/ws?token=tok");
    last(h).frame({ type: "welcome", user_id: "g-1" });
    expect(client.getSnapshot().connection).toBe("connected");
    expect(client.getSnapshot().userId).toBe("g-1");
    // A reload: a new client with the same storage reuses the identity.
    const again = new ChatClient(h.env);
    again.start();
    await flushPromises();
    expect(h.sessions).toBe(1);
    expect(last(h).url).toBe("ws://chat.test/ws?token=tok");
  });

  it("queues messages typed while offline and sends them once connected, once", () => {
    client.send("early");
    expect(sends(last(h))).toEqual([]);
    expect(client.getSnapshot().conversation.messages.m1?.status).toBe("sending");
    last(h).frame({ type: "welcome", user_id: "g-1" });
    expect(sends(last(h))).toEqual([{ type: "send", id: "m1", text: "early" }]);
    client.send("now");
    expect(sends(last(h))).toEqual([
      { type: "send", id: "m1", text: "early" },
      { type: "send", id: "m2", text: "now" },
    ]);
  });

  it("resends what was not accepted after a reconnect, with the same id", async () => {
    last(h).frame({ type: "welcome", user_id: "g-1" });
    client.send("a");
    client.send("b");
    last(h).frame({ type: "accepted", id: "m1" });
    last(h).drop();
    expect(client.getSnapshot().connection).toBe("reconnecting");
    expect(h.timers.at(-1)?.ms).toBe(50);
    h.timers.at(-1)!.fn();
    await flushPromises();
    expect(h.sockets.length).toBe(2);
    last(h).frame({ type: "welcome", user_id: "g-1" });
    expect(sends(last(h))).toEqual([{ type: "send", id: "m2", text: "b" }]);
  });

  it("backs off further on every failed attempt and starts over once connected", async () => {
    const delays: number[] = [];
    for (let i = 0; i < 4; i++) {
      last(h).drop();
      delays.push(h.timers.at(-1)!.ms);
      h.timers.at(-1)!.fn();
      await flushPromises();
    }
    expect(delays).toEqual([50, 100, 200, 400]);
    last(h).frame({ type: "welcome", user_id: "g-1" });
    last(h).drop();
    expect(h.timers.at(-1)!.ms).toBe(50);
  });

  it("acknowledges every reply chunk, repeats included, and shows each once", () => {
    last(h).frame({ type: "welcome", user_id: "g-1" });
    client.send("q");
    const chunk = { type: "reply", id: "r", in_reply_to: "m1", seq: 0, text: "hi", final: true };
    last(h).frame(chunk);
    last(h).frame(chunk);
    const acks = last(h).sent.filter((f) => (f as { type: string }).type === "ack");
    expect(acks).toEqual([
      { type: "ack", id: "r", seq: 0 },
      { type: "ack", id: "r", seq: 0 },
    ]);
    const m = client.getSnapshot().conversation.messages.m1;
    expect(m?.reply?.text).toBe("hi");
    expect(m?.status).toBe("answered");
  });

  it("retries a retryable refusal later and shows a final one", () => {
    last(h).frame({ type: "welcome", user_id: "g-1" });
    client.send("q");
    last(h).frame({ type: "error", code: "broker_unavailable", message: "later", id: "m1", retryable: true });
    expect(client.getSnapshot().conversation.messages.m1?.status).toBe("sending");
    h.timers.at(-1)!.fn();
    expect(sends(last(h))).toEqual([
      { type: "send", id: "m1", text: "q" },
      { type: "send", id: "m1", text: "q" },
    ]);
    last(h).frame({ type: "error", code: "text_too_long", message: "too long", id: "m1", retryable: false });
    expect(client.getSnapshot().conversation.messages.m1?.status).toBe("failed");
    expect(client.getSnapshot().notice).toContain("too long");
    client.retry("m1");
    expect(sends(last(h)).length).toBe(3);
  });

  it("keeps its conversation across a reload", () => {
    last(h).frame({ type: "welcome", user_id: "g-1" });
    client.send("remember");
    last(h).frame({ type: "accepted", id: "m1" });
    const reloaded = new ChatClient(h.env);
    expect(reloaded.getSnapshot().conversation.messages.m1?.status).toBe("queued");
  });
});
