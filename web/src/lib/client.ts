// The chat client behind the page: identity, the socket, reconnects and the
// outbox. React only renders its snapshots (see App.tsx); everything it
// touches in the browser comes in through `ClientEnv`, so tests drive it
// with fakes.

import { backoffDelay, defaultBackoff, type BackoffOptions } from "./backoff";
import * as conv from "./conversation";
import * as threads from "./conversations";
import { Pacer } from "./pacer";
import * as rooms from "./rooms";
import {
  CLOSE_TOKEN_EXPIRED,
  cancelFrame,
  parseServerFrame,
  readFrame,
  roomSendFrame,
  sendFrame,
  socketProtocols,
  socketUrl,
  tokenExpiry,
} from "./protocol";

/** What a REST call gave: its body, or its error (docs/protocol.md §3). */
type ApiAnswer = { ok: true; json: unknown } | { ok: false; code?: string; message: string };

export type ConnectionState = "connecting" | "connected" | "reconnecting" | "stopped";

export type Snapshot = {
  /** My conversations with the assistant, and the one on screen. */
  conversations: threads.Conversations;
  /** The one on screen. */
  conversation: conv.Conversation;
  connection: ConnectionState;
  userId: string | null;
  /** A problem the person should see (error bar); null when none. */
  notice: string | null;
  /** When the next reconnect attempt happens (ms since epoch), if waiting. */
  reconnectAt: number | null;
  /** Whether the gateway's link to the message broker is up (it says so). */
  brokerUp: boolean;
  /** Rooms I belong to, and the one on screen. */
  rooms: rooms.Rooms;
};

/** The part of a WebSocket the client uses. */
export interface SocketLike {
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

type HttpResponse = { ok: boolean; status: number; json(): Promise<unknown> };
type HttpInit = { method?: string; headers?: Record<string, string>; body?: string };

export type ClientEnv = {
  location: { protocol: string; host: string };
  storage: Pick<Storage, "getItem" | "setItem" | "removeItem">;
  fetch: (url: string, init?: HttpInit) => Promise<HttpResponse>;
  openSocket: (url: string, protocols: string[]) => SocketLike;
  setTimeout: (fn: () => void, ms: number) => unknown;
  clearTimeout: (handle: unknown) => void;
  now: () => number;
  newId: () => string;
  backoff: BackoffOptions;
  /** Calls `fn` when another tab changes `key` in storage. */
  watchStorage: (key: string, fn: () => void) => void;
};

export function browserEnv(): ClientEnv {
  return {
    location: window.location,
    storage: window.localStorage,
    fetch: (url, init) => window.fetch(url, init),
    openSocket: (url, protocols) => new WebSocket(url, protocols) as unknown as SocketLike,
    setTimeout: (fn, ms) => window.setTimeout(fn, ms),
    clearTimeout: (handle) => window.clearTimeout(handle as number),
    now: () => Date.now(),
    newId: () => crypto.randomUUID(),
    backoff: defaultBackoff,
    watchStorage: (key, fn) =>
      window.addEventListener("storage", (e) => {
        if (e.key === key) fn();
      }),
  };
}

const TOKEN_KEY = "switchboard.token";
const USER_KEY = "switchboard.user_id";

/** Delay before re-sending a message the gateway refused as retryable. */
const RESEND_DELAY_MS = 1_000;
/** The page pings this often while connected… */
const PING_INTERVAL_MS = 20_000;
/** …and drops a connection that stays silent this long after a ping. */
const PONG_TIMEOUT_MS = 10_000;
/** A token this close to its expiry is replaced before connecting. */
const EXPIRY_MARGIN_S = 60;

export class ChatClient {
  private snapshot: Snapshot;
  private listeners = new Set<() => void>();
  private socket: SocketLike | null = null;
  /** Ids sent on the current connection; a new connection resends the rest. */
  private sentHere = new Set<string>();
  /** Keeps the sends of one connection under the gateway's rate limit. */
  private pacer = new Pacer();
  /** Whether a paced flush is already scheduled. */
  private flushLater = false;
  private attempt = 0;
  private reconnectTimer: unknown = null;
  /** Timers that belong to the current connection; cleared when it ends. */
  private connectionTimers = new Set<unknown>();
  /** Bumped on every connect and stop, so a late async step can tell it is stale. */
  private generation = 0;
  private stopped = true;

  constructor(private env: ClientEnv) {
    const conversations = threads.load(env.storage, env.newId, env.now());
    this.snapshot = {
      conversations,
      conversation: threads.activeThread(conversations).conversation,
      connection: "stopped",
      userId: env.storage.getItem(USER_KEY),
      notice: null,
      reconnectAt: null,
      brokerUp: true,
      rooms: rooms.noRooms,
    };
    if (env.storage.getItem(threads.STORAGE_KEY) === null) {
      // Kept at once: a second tab opens the same first conversation, and
      // one kept before there were several is now the first of the list.
      threads.save(env.storage, conversations);
      env.storage.removeItem(conv.STORAGE_KEY);
    }
    env.watchStorage(threads.STORAGE_KEY, () => {
      const theirs = threads.load(env.storage, env.newId, env.now());
      this.updateConversations(threads.merged(this.snapshot.conversations, theirs, env.newId, env.now()), false);
    });
  }

  // --- for React (useSyncExternalStore)
  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getSnapshot = (): Snapshot => this.snapshot;

  // --- what the person does
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.update({ connection: "connecting" });
    void this.connect();
  }

  stop(): void {
    this.stopped = true;
    this.generation += 1;
    if (this.reconnectTimer !== null) this.env.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.endConnection();
    this.update({ connection: "stopped", reconnectAt: null });
  }

  /**
   * Shows the message at once, in the conversation on screen, and sends it
   * now or as soon as connected.
   */
  send(text: string): string {
    const id = this.env.newId();
    this.updateConversations(threads.submitted(this.snapshot.conversations, id, text, this.env.now()));
    this.flush();
    return id;
  }

  /** Sends a failed message again, with its original id. */
  retry(id: string): void {
    this.sentHere.delete(id);
    this.updateAbout(id, (c) => conv.retried(c, id));
    this.flush();
  }

  /** Stop generating the answer to message `id` (the Stop button). */
  cancel(id: string): void {
    const m = threads.threadOf(this.snapshot.conversations, id)?.conversation.messages[id];
    if (!m || !conv.canStop(m) || !this.socket || this.snapshot.connection !== "connected") return;
    this.socket.send(cancelFrame(id));
  }

  // --- conversations with the assistant (conversations.ts)

  /** Opens a new, empty conversation (or the empty one already there). */
  newConversation(): void {
    this.updateConversations(threads.created(this.snapshot.conversations, this.env.newId(), this.env.now()));
    this.updateRooms(rooms.opened(this.snapshot.rooms, null));
  }

  /** Puts a conversation on screen (leaving the room, if one was). */
  openConversation(id: string): void {
    this.updateConversations(threads.opened(this.snapshot.conversations, id));
    this.updateRooms(rooms.opened(this.snapshot.rooms, null));
  }

  renameConversation(id: string, title: string): void {
    this.updateConversations(threads.renamed(this.snapshot.conversations, id, title, this.env.now()));
  }

  /** Deletes a conversation; the answers still being written for it are stopped. */
  deleteConversation(id: string): void {
    const gone = this.snapshot.conversations.threads[id];
    if (!gone) return;
    if (this.socket && this.snapshot.connection === "connected") {
      for (const m of Object.values(gone.conversation.messages)) if (conv.canStop(m)) this.socket.send(cancelFrame(m.id));
    }
    this.updateConversations(threads.deleted(this.snapshot.conversations, id, this.env.newId(), this.env.now()));
  }

  // --- rooms (docs/protocol.md §8)

  /** Creates a room and opens it. */
  async createRoom(name: string): Promise<void> {
    const room = (await this.api("POST", "/api/rooms", { name })) as { id: string } | null;
    if (!room) return;
    await this.loadRooms();
    await this.openRoom(room.id);
  }

  /** Joins the room an invitation is for, and opens it. */
  async joinRoom(invite: string): Promise<void> {
    const room = (await this.api("POST", "/api/rooms/join", { invite_token: invite })) as { id: string } | null;
    if (!room) return;
    await this.loadRooms();
    await this.openRoom(room.id);
  }

  /** Leaves a room: its messages stop coming; back to the assistant. */
  async leaveRoom(id: string): Promise<void> {
    const token = this.env.storage.getItem(TOKEN_KEY);
    const response = await this.env
      .fetch(`/api/rooms/${id}/leave`, { method: "POST", headers: { authorization: `Bearer ${token ?? ""}` } })
      .catch(() => null);
    if (!response?.ok) {
      this.update({ notice: "Could not leave the room; try again." });
      return;
    }
    this.updateRooms(rooms.opened(this.snapshot.rooms, null));
    await this.loadRooms();
  }

  /** Shows a room (its history, members and presence); null: the conversation. */
  async openRoom(id: string | null): Promise<void> {
    this.updateRooms(rooms.opened(this.snapshot.rooms, id));
    if (id === null) return;
    await this.refreshRoom(id);
    const history = (await this.api("GET", `/api/rooms/${id}/messages?after=0&limit=500`)) as {
      messages: { seq: number; id: string; from: string; text: string }[];
    } | null;
    let next = this.snapshot.rooms;
    for (const m of history?.messages ?? []) next = rooms.messageArrived(next, id, m);
    this.updateRooms(next);
    this.markRead(id);
  }

  /** Members, who is online, and a fresh invitation. */
  async refreshRoom(id: string): Promise<void> {
    const details = (await this.api("GET", `/api/rooms/${id}`)) as {
      name: string;
      members: rooms.Member[];
      invite_token: string;
    } | null;
    if (details) this.updateRooms(rooms.detailed(this.snapshot.rooms, id, details.name, details.members, details.invite_token));
  }

  /** Sends `text` to the room on screen. */
  sendToRoom(text: string): void {
    const room = this.snapshot.rooms.active;
    if (!room || !this.socket || this.snapshot.connection !== "connected") {
      this.update({ notice: "Not connected: the message was not sent to the room." });
      return;
    }
    this.socket.send(roomSendFrame(this.env.newId(), text, room));
  }

  private markRead(id: string): void {
    const last = this.snapshot.rooms.byId[id]?.messages.at(-1);
    if (last && this.socket && this.snapshot.connection === "connected") this.socket.send(readFrame(id, last.seq));
  }

  private async loadRooms(): Promise<void> {
    // Quietly: a failure here is not the user's doing.
    const answer = await this.call("GET", "/api/rooms");
    if (answer.ok) {
      const list = (answer.json as { rooms?: rooms.RoomSummary[] } | null)?.rooms;
      if (list) this.updateRooms(rooms.listed(this.snapshot.rooms, list));
    } else if (answer.code === "rooms_disabled") {
      this.updateRooms(rooms.turnedOff(this.snapshot.rooms));
    }
  }

  /** A call to the gateway's REST API with the token; null (and a notice) on failure. */
  private async api(method: string, path: string, body?: unknown): Promise<unknown> {
    const answer = await this.call(method, path, body);
    if (answer.ok) return answer.json;
    this.update({ notice: answer.message });
    return null;
  }

  /** A call to the gateway's REST API with the token: its body, or its error's code and text. */
  private async call(method: string, path: string, body?: unknown): Promise<ApiAnswer> {
    const token = this.env.storage.getItem(TOKEN_KEY);
    try {
      const response = await this.env.fetch(path, {
        method,
        headers: { authorization: `Bearer ${token ?? ""}`, "content-type": "application/json" },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const json = await response.json().catch(() => null);
      if (response.ok) return { ok: true, json };
      const error = json as { code?: string; message?: string } | null;
      return { ok: false, code: error?.code, message: error?.message ?? `HTTP ${response.status}` };
    } catch {
      return { ok: false, message: "The service is unreachable; try again." };
    }
  }

  private updateRooms(next: rooms.Rooms): void {
    if (next !== this.snapshot.rooms) this.update({ rooms: next });
  }

  dismissNotice(): void {
    this.update({ notice: null });
  }

  // --- internals
  private update(patch: Partial<Snapshot>): void {
    this.snapshot = { ...this.snapshot, ...patch };
    for (const listener of this.listeners) listener();
  }

  private updateConversations(conversations: threads.Conversations, persist = true): void {
    if (conversations === this.snapshot.conversations) return;
    if (persist) threads.save(this.env.storage, conversations);
    this.update({ conversations, conversation: threads.activeThread(conversations).conversation });
  }

  /** Applies `change` to the conversation that holds message `id`. */
  private updateAbout(id: string, change: (c: conv.Conversation) => conv.Conversation): void {
    this.updateConversations(threads.about(this.snapshot.conversations, id, change));
  }

  private later(fn: () => void, ms: number): void {
    const handle = this.env.setTimeout(() => {
      this.connectionTimers.delete(handle);
      fn();
    }, ms);
    this.connectionTimers.add(handle);
  }

  /** Closes the current socket (if any) and forgets its timers and sends. */
  private endConnection(): void {
    for (const handle of this.connectionTimers) this.env.clearTimeout(handle);
    this.connectionTimers.clear();
    this.sentHere.clear();
    this.pacer = new Pacer();
    this.flushLater = false;
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000, "page closed");
  }

  private forgetIdentity(notice: string): void {
    this.env.storage.removeItem(TOKEN_KEY);
    this.env.storage.removeItem(USER_KEY);
    this.update({ userId: null, notice });
  }

  private async token(): Promise<string> {
    const stored = this.env.storage.getItem(TOKEN_KEY);
    const exp = stored ? tokenExpiry(stored) : null;
    if (stored && (exp === null || exp - EXPIRY_MARGIN_S > this.env.now() / 1000)) return stored;
    if (stored) this.forgetIdentity("Your session expired; you continue as a new guest.");
    const response = await this.env.fetch("/api/session", { method: "POST" });
    if (!response.ok) {
      const body = (await response.json().catch(() => ({}))) as { message?: unknown };
      throw new SessionRefused(typeof body.message === "string" ? body.message : `HTTP ${response.status}`);
    }
    const body = (await response.json()) as { user_id?: unknown; token?: unknown };
    if (typeof body.token !== "string" || typeof body.user_id !== "string") {
      throw new Error("the server sent a malformed session");
    }
    this.env.storage.setItem(TOKEN_KEY, body.token);
    this.env.storage.setItem(USER_KEY, body.user_id);
    this.update({ userId: body.user_id });
    return body.token;
  }

  /**
   * The socket closed before `welcome`: the gateway may be down, or it may
   * have refused the token (a browser sees a refused upgrade only as 1006).
   * Ask the session endpoint; a definite 401 means the token is dead.
   */
  private async checkToken(): Promise<void> {
    const token = this.env.storage.getItem(TOKEN_KEY);
    if (!token) return;
    try {
      const response = await this.env.fetch("/api/session", { headers: { Authorization: `Bearer ${token}` } });
      if (response.status === 401) {
        this.forgetIdentity("Your session is no longer valid; you continue as a new guest.");
      }
    } catch {
      // Unreachable: keep the token and retry with backoff.
    }
  }

  private async connect(): Promise<void> {
    const generation = ++this.generation;
    this.reconnectTimer = null;
    this.update({ reconnectAt: null });
    let token: string;
    try {
      token = await this.token();
    } catch (e) {
      if (generation !== this.generation) return;
      if (e instanceof SessionRefused) this.update({ notice: `Cannot start a session: ${e.message}` });
      this.scheduleReconnect();
      return;
    }
    if (generation !== this.generation || this.stopped) return;
    const socket = this.env.openSocket(socketUrl(this.env.location), socketProtocols(token));
    this.socket = socket;
    let welcomed = false;
    socket.onmessage = (ev) => {
      if (this.socket !== socket || typeof ev.data !== "string") return;
      if (this.onFrame(ev.data) === "welcome") welcomed = true;
    };
    socket.onclose = (ev) => {
      if (this.socket !== socket) return;
      this.endConnection();
      if (this.stopped) return;
      if (ev.code === CLOSE_TOKEN_EXPIRED) {
        this.forgetIdentity("Your session expired; you continue as a new guest.");
      }
      const check = welcomed ? Promise.resolve() : this.checkToken();
      void check.then(() => this.scheduleReconnect());
    };
    socket.onerror = () => {
      // A close event always follows; reconnecting is handled there.
    };
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer !== null) return;
    const delay = backoffDelay(this.attempt, this.env.backoff);
    this.attempt += 1;
    this.update({ connection: "reconnecting", reconnectAt: this.env.now() + delay });
    this.reconnectTimer = this.env.setTimeout(() => void this.connect(), delay);
  }

  /** Frames received so far, for the keep-alive. */
  private framesHeard = 0;

  /**
   * Pings while connected; a connection that stays silent after a ping is
   * dropped (a half-open connection would otherwise look connected forever).
   */
  private keepAlive(socket: SocketLike): void {
    this.later(() => {
      if (this.socket !== socket) return;
      const heard = this.framesHeard;
      socket.send(JSON.stringify({ type: "ping" }));
      this.later(() => {
        if (this.socket !== socket) return;
        if (this.framesHeard === heard) {
          socket.close(4002, "no answer to ping");
          socket.onclose?.({ code: 1006, reason: "no answer to ping" });
          return;
        }
        this.keepAlive(socket);
      }, PONG_TIMEOUT_MS);
    }, PING_INTERVAL_MS);
  }

  private onFrame(text: string): string | null {
    this.framesHeard += 1;
    const frame = parseServerFrame(text);
    if (!frame) return null; // something newer than this page understands
    switch (frame.type) {
      case "welcome": {
        this.attempt = 0;
        this.env.storage.setItem(USER_KEY, frame.user_id);
        // The gateway says so if its broker link is down, right after this.
        this.update({ connection: "connected", userId: frame.user_id, reconnectAt: null, brokerUp: true });
        const socket = this.socket;
        if (socket) this.keepAlive(socket);
        this.flush();
        void this.loadRooms();
        break;
      }
      case "room_message": {
        // Acknowledge like a chunk: the gateway keeps it for redelivery until we do.
        this.socket?.send(JSON.stringify({ type: "ack", id: frame.id, seq: frame.seq }));
        const { room_id, seq, id, from, text: body } = frame;
        this.updateRooms(rooms.messageArrived(this.snapshot.rooms, room_id, { seq, id, from, text: body }));
        if (this.snapshot.rooms.active === room_id) this.markRead(room_id);
        break;
      }
      case "room_receipt":
        this.updateRooms(rooms.receiptArrived(this.snapshot.rooms, frame.room_id, frame.user_id, frame.seq, frame.state));
        break;
      case "room_presence":
        this.updateRooms(rooms.presenceChanged(this.snapshot.rooms, frame.room_id, frame.user_id, frame.member, frame.online));
        break;
      case "accepted":
        this.updateAbout(frame.id, (c) => conv.accepted(c, frame.id));
        break;
      case "reply":
        // Acknowledge every chunk, repeats included: the gateway keeps it
        // for redelivery until we do.
        this.socket?.send(JSON.stringify({ type: "ack", id: frame.id, seq: frame.seq }));
        if (frame.room_id) this.updateRooms(rooms.answerChunk(this.snapshot.rooms, frame.room_id, frame));
        else this.updateAbout(frame.in_reply_to, (c) => conv.replied(c, frame, this.env.now()));
        break;
      case "message_status":
        this.updateAbout(frame.id, (c) => conv.progressed(c, frame.id, frame.status));
        break;
      case "error": {
        const id = frame.id;
        if (frame.code === "nothing_to_cancel" && id) {
          // Harmless: the answer had ended (or was never known here).
          this.updateAbout(id, (c) => conv.notCancelled(c, id));
          break;
        }
        if (!id || !threads.threadOf(this.snapshot.conversations, id)) {
          this.update({ notice: frame.message });
          break;
        }
        const before = this.snapshot.conversations;
        this.updateAbout(id, (c) => conv.refused(c, id, frame));
        if (this.snapshot.conversations === before) break; // already queued or answered: nothing to do
        if (frame.retryable) this.resendLater(id);
        else this.update({ notice: `Message not sent: ${frame.message}` });
        break;
      }
      case "pong":
        break;
      case "status": {
        const up = frame.broker === "up";
        this.update({
          brokerUp: up,
          notice: up ? null : "The service is reconnecting to its message broker; messages are sent when it is back.",
        });
        if (up) this.flush();
        break;
      }
    }
    return frame.type;
  }

  /** Sends `id` again after a pause, on this connection only. */
  private resendLater(id: string): void {
    const socket = this.socket;
    this.later(() => {
      if (this.socket !== socket) return; // a new connection resends by itself
      this.sentHere.delete(id);
      this.flush();
    }, RESEND_DELAY_MS);
  }

  /** Sends every pending message not yet sent on this connection, paced:
   * beyond a burst, the rest follow as the gateway's rate limit allows. */
  private flush(): void {
    const socket = this.socket;
    if (!socket || this.snapshot.connection !== "connected" || !this.snapshot.brokerUp) return;
    for (const { message: m, thread } of threads.pending(this.snapshot.conversations)) {
      if (this.sentHere.has(m.id) || m.text === null) continue;
      const now = this.env.now();
      if (!this.pacer.take(now)) {
        if (!this.flushLater) {
          this.flushLater = true;
          this.later(() => {
            this.flushLater = false;
            this.flush();
          }, this.pacer.wait(now));
        }
        return;
      }
      this.sentHere.add(m.id);
      socket.send(sendFrame(m.id, m.text, conv.contextFor(thread.conversation, m.id)));
    }
  }
}

/** The gateway answered the session request with a refusal. */
class SessionRefused extends Error {}
