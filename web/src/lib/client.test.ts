import { beforeEach, describe, expect, it } from "vitest";
import { ChatClient, type ClientEnv, type SocketLike } from "./client";
import { HISTORY_LIMIT, STORAGE_KEY, accepted, submitted, emptyConversation } from "./conversation";
import * as threads from "./conversations";

class FakeSocket implements SocketLike {
  onmessage: SocketLike["onmessage"] = null;
  onclose: SocketLike["onclose"] = null;
  onerror: SocketLike["onerror"] = null;
  sent: unknown[] = [];
  closed = false;
  constructor(
    public url: string,
    public protocols: string[],
  ) {}
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
  drop(code = 1006) {
    this.onclose?.({ code, reason: "" });
  }
}

type Timer = { fn: () => void; ms: number; cleared: boolean };

type Harness = {
  env: ClientEnv;
  sockets: FakeSocket[];
  timers: Timer[];
  sessions: number;
  /** What GET /api/session answers. */
  checkStatus: number;
  store: Map<string, string>;
  storageListeners: (() => void)[];
  /** Calls to the rooms API. */
  roomCalls: string[];
  roomsOff: boolean;
  /** The page's clock, in milliseconds. */
  clock: number;
};

function jwt(exp: number): string {
  return `h.${btoa(JSON.stringify({ sub: "g", exp })).replace(/=+$/, "")}.s`;
}

function harness(): Harness {
  const h: Harness = {
    sockets: [],
    timers: [],
    sessions: 0,
    checkStatus: 200,
    store: new Map(),
    storageListeners: [],
    roomCalls: [],
    roomsOff: false,
    clock: 1_000,
    env: undefined as never,
  };
  let ids = 0;
  h.env = {
    location: { protocol: "http:", host: "chat.test" },
    storage: {
      getItem: (k) => h.store.get(k) ?? null,
      setItem: (k, v) => void h.store.set(k, v),
      removeItem: (k) => void h.store.delete(k),
    },
    fetch: async (url, init) => {
      if (url.startsWith("/api/rooms")) {
        h.roomCalls.push(`${init?.method ?? "GET"} ${url}`);
        if (h.roomsOff) {
          return { ok: false, status: 404, json: async () => ({ code: "rooms_disabled", message: "rooms are turned off on this server", retryable: false }) };
        }
        return { ok: true, status: 200, json: async () => ({ rooms: [{ id: "R", name: "Team" }] }) };
      }
      if (init?.method === "POST") {
        h.sessions += 1;
        return { ok: true, status: 200, json: async () => ({ user_id: `g-${h.sessions}`, token: jwt(4_000_000_000 + h.sessions) }) };
      }
      return { ok: h.checkStatus === 200, status: h.checkStatus, json: async () => ({}) };
    },
    openSocket: (url, protocols) => {
      const s = new FakeSocket(url, protocols);
      h.sockets.push(s);
      return s;
    },
    setTimeout: (fn, ms) => {
      const timer = { fn, ms, cleared: false };
      h.timers.push(timer);
      return timer;
    },
    clearTimeout: (handle) => {
      (handle as Timer).cleared = true;
    },
    now: () => h.clock,
    newId: () => `m${++ids}`,
    backoff: { baseMs: 100, maxMs: 1_000, random: () => 0 },
    watchStorage: (_key, fn) => void h.storageListeners.push(fn),
  };
  return h;
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 0));
const last = (h: Harness) => h.sockets[h.sockets.length - 1]!;
const sends = (s: FakeSocket) => s.sent.filter((f) => (f as { type: string }).type === "send");
/** Fires the newest pending timer of `ms`. */
const fire = (h: Harness, ms: number) => {
  const timer = [...h.timers].reverse().find((t) => t.ms === ms && !t.cleared);
  if (!timer) throw new Error(`no pending ${ms} ms timer`);
  timer.cleared = true;
  timer.fn();
};
const welcome = (h: Harness, user = "g-1") => last(h).frame({ type: "welcome", user_id: user });

/** A client connected and welcomed. */
async function welcomed(): Promise<[Harness, ChatClient]> {
  const h = harness();
  const client = new ChatClient(h.env);
  client.start();
  await settle();
  welcome(h);
  return [h, client];
}
/** The gateway accepts message `id` and answers it with `text`, whole. */
const answer = (h: Harness, id: string, text: string) => {
  last(h).frame({ type: "accepted", id });
  last(h).frame({ type: "reply", id: `r-${id}`, in_reply_to: id, seq: 0, text, final: true });
};

describe("ChatClient", () => {
  let h: Harness;
  let client: ChatClient;
  beforeEach(async () => {
    h = harness();
    client = new ChatClient(h.env);
    client.start();
    await settle();
  });

  it("gets a guest session once and sends the token as a subprotocol, not in the URL", async () => {
    expect(h.sessions).toBe(1);
    expect(last(h).url).toBe("ws://chat.test/ws");
    expect(last(h).protocols).toEqual(["switchboard", `bearer.${h.store.get("switchboard.token")}`]);
    welcome(h);
    expect(client.getSnapshot().connection).toBe("connected");
    expect(client.getSnapshot().userId).toBe("g-1");
    // A reload: a new client with the same storage reuses the identity.
    const again = new ChatClient(h.env);
    again.start();
    await settle();
    expect(h.sessions).toBe(1);
  });

  it("queues messages typed while offline and sends them once connected, once", () => {
    client.send("early");
    expect(sends(last(h))).toEqual([]);
    expect(client.getSnapshot().conversation.messages.m2?.status).toBe("sending");
    welcome(h);
    expect(sends(last(h))).toEqual([{ type: "send", id: "m2", text: "early" }]);
    client.send("now");
    expect(sends(last(h))).toEqual([
      { type: "send", id: "m2", text: "early" },
      { type: "send", id: "m3", text: "now" },
    ]);
  });

  it("resends what was not accepted after a reconnect, with the same id", async () => {
    welcome(h);
    client.send("a");
    client.send("b");
    last(h).frame({ type: "accepted", id: "m2" });
    last(h).drop();
    await settle();
    expect(client.getSnapshot().connection).toBe("reconnecting");
    fire(h, 50);
    await settle();
    expect(h.sockets.length).toBe(2);
    welcome(h);
    expect(sends(last(h))).toEqual([{ type: "send", id: "m3", text: "b" }]);
  });

  it("backs off further on every failed attempt and starts over once connected", async () => {
    const delays: number[] = [];
    for (let i = 0; i < 4; i++) {
      last(h).drop();
      await settle();
      const pending = h.timers.filter((t) => !t.cleared);
      delays.push(pending[pending.length - 1]!.ms);
      fire(h, delays[i]!);
      await settle();
    }
    expect(delays).toEqual([50, 100, 200, 400]);
    welcome(h);
    last(h).drop();
    await settle();
    expect(h.timers.filter((t) => !t.cleared).at(-1)!.ms).toBe(50);
  });

  it("acknowledges every reply chunk, repeats included, and shows each once", () => {
    welcome(h);
    client.send("q");
    const chunk = { type: "reply", id: "r", in_reply_to: "m2", seq: 0, text: "hi", final: true };
    last(h).frame(chunk);
    last(h).frame(chunk);
    const acks = last(h).sent.filter((f) => (f as { type: string }).type === "ack");
    expect(acks).toEqual([
      { type: "ack", id: "r", seq: 0 },
      { type: "ack", id: "r", seq: 0 },
    ]);
    const m = client.getSnapshot().conversation.messages.m2;
    expect(m?.reply?.text).toBe("hi");
    expect(m?.status).toBe("answered");
  });

  it("retries a retryable refusal later and shows a final one", () => {
    welcome(h);
    client.send("q");
    last(h).frame({ type: "error", code: "broker_unavailable", message: "later", id: "m2", retryable: true });
    expect(client.getSnapshot().conversation.messages.m2?.status).toBe("sending");
    fire(h, 1_000);
    expect(sends(last(h)).length).toBe(2);
    last(h).frame({ type: "error", code: "text_too_long", message: "too long", id: "m2", retryable: false });
    expect(client.getSnapshot().conversation.messages.m2?.status).toBe("failed");
    expect(client.getSnapshot().notice).toContain("too long");
    client.retry("m2");
    expect(sends(last(h)).length).toBe(3);
  });

  it("does not send twice when a retry timer outlives its connection", async () => {
    welcome(h);
    client.send("q");
    last(h).frame({ type: "error", code: "broker_unavailable", message: "later", id: "m2", retryable: true });
    const resend = h.timers.find((t) => t.ms === 1_000)!;
    last(h).drop();
    await settle();
    fire(h, 50);
    await settle();
    welcome(h);
    expect(sends(last(h))).toEqual([{ type: "send", id: "m2", text: "q" }]);
    resend.fn(); // even if it fired anyway
    expect(sends(last(h))).toEqual([{ type: "send", id: "m2", text: "q" }]);
  });

  it("stops an answer: sends cancel, shows stopping, then stopped", () => {
    welcome(h);
    client.send("q");
    client.cancel("m2"); // not accepted yet: nothing to stop
    expect(last(h).sent.filter((f) => (f as { type: string }).type === "cancel")).toEqual([]);
    last(h).frame({ type: "accepted", id: "m2" });
    last(h).frame({ type: "message_status", id: "m2", status: "processing" });
    last(h).frame({ type: "reply", id: "r", in_reply_to: "m2", seq: 0, text: "hi", final: false });
    expect(client.getSnapshot().conversation.messages.m2?.status).toBe("processing");
    client.cancel("m2");
    expect(last(h).sent.filter((f) => (f as { type: string }).type === "cancel")).toEqual([{ type: "cancel", id: "m2" }]);
    last(h).frame({ type: "message_status", id: "m2", status: "cancelling" });
    expect(client.getSnapshot().conversation.messages.m2?.status).toBe("cancelling");
    last(h).frame({ type: "reply", id: "r", in_reply_to: "m2", seq: 1, text: "", final: true, cancelled: true });
    const m = client.getSnapshot().conversation.messages.m2;
    expect(m?.status).toBe("cancelled");
    expect(m?.reply?.text).toBe("hi");
  });

  it("takes nothing_to_cancel calmly: no notice, the answer goes on", () => {
    welcome(h);
    client.send("q");
    last(h).frame({ type: "accepted", id: "m2" });
    last(h).frame({ type: "message_status", id: "m2", status: "cancelling" });
    last(h).frame({ type: "error", code: "nothing_to_cancel", message: "not running", id: "m2", retryable: false });
    expect(client.getSnapshot().conversation.messages.m2?.status).toBe("processing");
    expect(client.getSnapshot().notice).toBeNull();
  });

  it("hides rooms, quietly, when the server has them turned off", async () => {
    h.roomsOff = true;
    welcome(h);
    await settle();
    expect(h.roomCalls).toContain("GET /api/rooms");
    expect(client.getSnapshot().rooms.off).toBe(true);
    expect(client.getSnapshot().notice).toBeNull();
  });

  it("lists my rooms once connected, acks room messages and marks the open room read", async () => {
    welcome(h);
    await settle();
    expect(h.roomCalls).toContain("GET /api/rooms");
    expect(client.getSnapshot().rooms.list).toEqual([{ id: "R", name: "Team" }]);
    last(h).frame({ type: "room_message", room_id: "R", seq: 1, id: "x1", from: "bob", text: "hi" });
    expect(last(h).sent).toContainEqual({ type: "ack", id: "x1", seq: 1 });
    expect(client.getSnapshot().rooms.byId.R?.messages.map((m) => m.text)).toEqual(["hi"]);
    await client.openRoom("R");
    expect(last(h).sent).toContainEqual({ type: "read", room_id: "R", seq: 1 });
    last(h).frame({ type: "room_receipt", room_id: "R", user_id: "bob", seq: 1, state: "read" });
    expect(client.getSnapshot().rooms.byId.R?.readUpTo).toEqual({ bob: 1 });
    client.sendToRoom("hello room");
    const sent = last(h).sent.at(-1) as { type: string; room_id: string; text: string };
    expect([sent.type, sent.room_id, sent.text]).toEqual(["send", "R", "hello room"]);
  });

  it("ignores an error about a message that was already accepted", () => {
    welcome(h);
    client.send("q");
    last(h).frame({ type: "accepted", id: "m2" });
    last(h).frame({ type: "error", code: "publish_timeout", message: "slow", id: "m2", retryable: true });
    expect(client.getSnapshot().conversation.messages.m2?.status).toBe("queued");
    expect(client.getSnapshot().notice).toBeNull();
    expect(h.timers.some((t) => t.ms === 1_000)).toBe(false);
  });

  it("replaces a token the gateway refuses, and says so", async () => {
    // The upgrade is refused (the browser sees only 1006) and the session
    // check confirms the token is dead.
    h.checkStatus = 401;
    last(h).drop();
    await settle();
    expect(client.getSnapshot().notice).toContain("no longer valid");
    fire(h, 50);
    await settle();
    expect(h.sessions).toBe(2);
    welcome(h, "g-2");
    expect(client.getSnapshot().userId).toBe("g-2");
  });

  it("keeps the token when the gateway is merely unreachable", async () => {
    h.checkStatus = 502;
    last(h).drop();
    await settle();
    fire(h, 50);
    await settle();
    expect(h.sessions).toBe(1);
    expect(client.getSnapshot().notice).toBeNull();
  });

  it("gets a new session when the socket closes because the token expired", async () => {
    welcome(h);
    last(h).drop(4001);
    await settle();
    expect(client.getSnapshot().notice).toContain("expired");
    fire(h, 50);
    await settle();
    expect(h.sessions).toBe(2);
  });

  it("drops a connection that stops answering pings", async () => {
    welcome(h);
    fire(h, 20_000);
    expect(last(h).sent.at(-1)).toEqual({ type: "ping" });
    fire(h, 10_000);
    expect(last(h).closed).toBe(true);
    await settle();
    expect(client.getSnapshot().connection).toBe("reconnecting");
  });

  it("keeps a connection that answers pings", () => {
    welcome(h);
    fire(h, 20_000);
    last(h).frame({ type: "pong" });
    fire(h, 10_000);
    expect(last(h).closed).toBe(false);
    expect(h.timers.some((t) => t.ms === 20_000 && !t.cleared)).toBe(true);
  });

  it("stops cleanly and starts again (back/forward cache)", async () => {
    welcome(h);
    client.stop();
    expect(last(h).closed).toBe(true);
    expect(client.getSnapshot().connection).toBe("stopped");
    expect(h.timers.every((t) => t.cleared || t.ms !== 20_000)).toBe(true);
    client.start();
    await settle();
    expect(h.sockets.length).toBe(2);
  });

  it("keeps its conversation across a reload", () => {
    welcome(h);
    client.send("remember");
    last(h).frame({ type: "accepted", id: "m2" });
    const reloaded = new ChatClient(h.env);
    expect(reloaded.getSnapshot().conversation.messages.m2?.status).toBe("queued");
  });

  it("shows what another tab of the same user stored", () => {
    const theirs = threads.submitted(threads.load(h.env.storage, h.env.newId, 5), "x1", "from the other tab", 5);
    threads.save(h.env.storage, threads.about(theirs, "x1", (c) => accepted(c, "x1")));
    for (const listener of h.storageListeners) listener();
    expect(client.getSnapshot().conversation.messages.x1?.status).toBe("queued");
    expect(h.store.has(threads.STORAGE_KEY)).toBe(true);
  });

  it("takes a conversation kept before there were several as the first of the list", () => {
    const before = harness();
    before.store.set(STORAGE_KEY, JSON.stringify(submitted(emptyConversation, "old", "kept from before", 5)));
    const reloaded = new ChatClient(before.env);
    const list = threads.listed(reloaded.getSnapshot().conversations);
    expect(list.map((t) => t.title)).toEqual(["kept from before"]);
    expect(reloaded.getSnapshot().conversation.messages.old?.text).toBe("kept from before");
    expect(before.store.has(STORAGE_KEY)).toBe(false);
    expect(before.store.has(threads.STORAGE_KEY)).toBe(true);
  });
});

describe("several conversations", () => {
  it("sends in the one on screen, answers land in their own, and each has its own context", async () => {
    const [h, client] = await welcomed();
    const first = client.getSnapshot().conversations.active;
    const a = client.send("about cats");
    answer(h, a, "cats purr");
    client.newConversation();
    const second = client.getSnapshot().conversations.active;
    expect(second).not.toBe(first);
    const b = client.send("about dogs");
    // B's context has nothing of A's.
    expect(sends(last(h)).at(-1)).toEqual({ type: "send", id: b, text: "about dogs" });
    const a2 = (() => {
      client.openConversation(first);
      return client.send("and kittens?");
    })();
    expect(sends(last(h)).at(-1)).toEqual({
      type: "send",
      id: a2,
      text: "and kittens?",
      context: [
        { role: "user", text: "about cats" },
        { role: "assistant", text: "cats purr" },
      ],
    });
    // B's answer arrives while A is on screen: it goes to B.
    answer(h, b, "dogs bark");
    expect(client.getSnapshot().conversation.messages[b]).toBeUndefined();
    expect(client.getSnapshot().conversations.threads[second]?.conversation.messages[b]?.reply?.text).toBe("dogs bark");
    // Kept across a reload, with titles from their first messages.
    const reloaded = new ChatClient(h.env);
    expect(threads.listed(reloaded.getSnapshot().conversations).map((t) => t.title)).toEqual(["about cats", "about dogs"]);
  });

  it("renames, and deletes a conversation: its answer is stopped and a late chunk of it is dropped", async () => {
    const [h, client] = await welcomed();
    const first = client.getSnapshot().conversations.active;
    const kept = client.send("keep me");
    client.newConversation();
    const doomed = client.getSnapshot().conversations.active;
    client.renameConversation(doomed, "  Scratch   pad ");
    expect(client.getSnapshot().conversations.threads[doomed]?.title).toBe("Scratch pad");
    const m = client.send("write a long story");
    last(h).frame({ type: "accepted", id: m });
    client.deleteConversation(doomed);
    expect(last(h).sent).toContainEqual({ type: "cancel", id: m });
    expect(client.getSnapshot().conversations.active).toBe(first);
    expect(Object.keys(client.getSnapshot().conversations.threads)).toEqual([first]);
    last(h).frame({ type: "reply", id: "late", in_reply_to: m, seq: 0, text: "once upon", final: false });
    expect(last(h).sent).toContainEqual({ type: "ack", id: "late", seq: 0 });
    expect(client.getSnapshot().conversation.messages[m]).toBeUndefined();
    expect(client.getSnapshot().conversation.messages[kept]?.text).toBe("keep me");
  });
});

describe("history trimming", () => {
  it("never drops a message that is still to be sent", () => {
    let c = submitted(emptyConversation, "unsent", "x", 0);
    for (let i = 0; i < HISTORY_LIMIT + 3; i++) {
      c = submitted(c, `m${i}`, "x", i + 1);
      c = { ...c, messages: { ...c.messages, [`m${i}`]: { ...c.messages[`m${i}`]!, status: "answered" } } };
    }
    expect(c.messages.unsent?.status).toBe("sending");
    expect(c.order.length).toBe(HISTORY_LIMIT);
  });
});

describe("the broker link", () => {
  it("holds messages while the gateway's broker is away and sends them when it is back", async () => {
    const [h, client] = await welcomed();
    last(h).frame({ type: "status", broker: "down" });
    expect(client.getSnapshot().brokerUp).toBe(false);
    expect(client.getSnapshot().notice).toContain("reconnecting to its message broker");
    client.send("held");
    expect(sends(last(h))).toEqual([]);
    last(h).frame({ type: "status", broker: "up" });
    expect(sends(last(h))).toEqual([{ type: "send", id: "m2", text: "held" }]);
    expect(client.getSnapshot().notice).toBeNull();
  });

  it("sends many held messages at a pace the gateway's rate limit allows", async () => {
    const [h, client] = await welcomed();
    last(h).frame({ type: "status", broker: "down" });
    for (let n = 0; n < 45; n++) client.send(`held ${n}`);
    last(h).frame({ type: "status", broker: "up" });
    // A burst of 20, then 10 a second: never the gateway's 40 at once.
    expect(sends(last(h))).toHaveLength(20);
    h.clock += 100;
    fire(h, 100);
    expect(sends(last(h))).toHaveLength(21);
    // The bucket never holds more than the burst, however long the wait.
    h.clock += 2_400;
    fire(h, 100);
    expect(sends(last(h))).toHaveLength(41);
    h.clock += 400;
    fire(h, 100);
    expect(sends(last(h))).toHaveLength(45);
    // In order, each once.
    expect(sends(last(h)).map((f) => (f as { text: string }).text)).toEqual(
      Array.from({ length: 45 }, (_, n) => `held ${n}`),
    );
  });

  it("shows a request the service gave up on as failed, with what was streamed", async () => {
    const [h, client] = await welcomed();
    client.send("poison");
    last(h).frame({ type: "accepted", id: "m2" });
    last(h).frame({ type: "reply", id: "r", in_reply_to: "m2", seq: 0, text: "par", final: false });
    const failure = { code: "request_failed", message: "it failed on every attempt" };
    last(h).frame({ type: "reply", id: "r", in_reply_to: "m2", seq: 4294967295, text: "", final: true, error: failure });
    const m = client.getSnapshot().conversation.messages.m2!;
    expect(m.status).toBe("failed");
    expect(m.error?.message).toBe("it failed on every attempt");
    expect(m.reply?.text).toBe("par");
    expect(last(h).sent).toContainEqual({ type: "ack", id: "r", seq: 4294967295 });
  });
});
