// The chat client behind the page: identity, the socket, reconnects and the
// outbox. React only renders its snapshots (see App.tsx); everything it
// touches in the browser comes in through `ClientEnv`, so tests drive it
// with fakes.

import { backoffDelay, defaultBackoff, type BackoffOptions } from "./backoff";
import * as conv from "./conversation";
import { parseServerFrame, sendFrame, socketUrl } from "./protocol";

export type ConnectionState = "connecting" | "connected" | "reconnecting";

export type Snapshot = {
  conversation: conv.Conversation;
  connection: ConnectionState;
  userId: string | null;
  /** A problem the person should see (error bar); null when none. */
  notice: string | null;
  /** When the next reconnect attempt happens (ms since epoch), if waiting. */
  reconnectAt: number | null;
};

/** The part of a WebSocket the client uses. */
export interface SocketLike {
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type ClientEnv = {
  location: { protocol: string; host: string };
  storage: Pick<Storage, "getItem" | "setItem" | "removeItem">;
  fetch: (url: string, init?: { method?: string }) => Promise<{ ok: boolean; status: number; json(): Promise<unknown> }>;
  openSocket: (url: string) => SocketLike;
  setTimeout: (fn: () => void, ms: number) => unknown;
  clearTimeout: (handle: unknown) => void;
  now: () => number;
  newId: () => string;
  backoff: BackoffOptions;
};

export function browserEnv(): ClientEnv {
  return {
    location: window.location,
    storage: window.localStorage,
    fetch: (url, init) => window.fetch(url, init),
    openSocket: (url) => new WebSocket(url) as unknown as SocketLike,
    setTimeout: (fn, ms) => window.setTimeout(fn, ms),
    clearTimeout: (handle) => window.clearTimeout(handle as number),
    now: () => Date.now(),
    newId: () => crypto.randomUUID(),
    backoff: defaultBackoff,
  };
}

const TOKEN_KEY = "switchboard.token";
const USER_KEY = "switchboard.user_id";

/** Delay before re-sending a message the gateway refused as retryable. */
const RESEND_DELAY_MS = 1_000;

export class ChatClient {
  private snapshot: Snapshot;
  private listeners = new Set<() => void>();
  private socket: SocketLike | null = null;
  /** Ids sent on the current connection; a new connection resends the rest. */
  private sentHere = new Set<string>();
  private attempt = 0;
  private reconnectTimer: unknown = null;
  private stopped = true;

  constructor(private env: ClientEnv) {
    this.snapshot = {
      conversation: conv.load(env.storage),
      connection: "connecting",
      userId: env.storage.getItem(USER_KEY),
      notice: null,
      reconnectAt: null,
    };
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
    void this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.reconnectTimer !== null) this.env.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000, "page closed");
  }

  /** Shows the message at once and sends it now, or as soon as connected. */
  send(text: string): string {
    const id = this.env.newId();
    this.updateConversation(conv.submitted(this.snapshot.conversation, id, text, this.env.now()));
    this.flush();
    return id;
  }

  /** Sends a failed message again, with its original id. */
  retry(id: string): void {
    this.sentHere.delete(id);
    this.updateConversation(conv.retried(this.snapshot.conversation, id));
    this.flush();
  }

  dismissNotice(): void {
    this.update({ notice: null });
  }

  // --- internals
  private update(patch: Partial<Snapshot>): void {
    this.snapshot = { ...this.snapshot, ...patch };
    for (const listener of this.listeners) listener();
  }

  private updateConversation(conversation: conv.Conversation): void {
    if (conversation === this.snapshot.conversation) return;
    conv.save(this.env.storage, conversation);
    this.update({ conversation });
  }

  private async token(): Promise<string> {
    const stored = this.env.storage.getItem(TOKEN_KEY);
    if (stored) return stored;
    const response = await this.env.fetch("/api/session", { method: "POST" });
    if (!response.ok) throw new Error(`the server refused a session (HTTP ${response.status})`);
    const body = (await response.json()) as { user_id?: unknown; token?: unknown };
    if (typeof body.token !== "string" || typeof body.user_id !== "string") {
      throw new Error("the server sent a malformed session");
    }
    this.env.storage.setItem(TOKEN_KEY, body.token);
    this.env.storage.setItem(USER_KEY, body.user_id);
    this.update({ userId: body.user_id });
    return body.token;
  }

  private async connect(): Promise<void> {
    this.reconnectTimer = null;
    this.update({ reconnectAt: null });
    let token: string;
    try {
      token = await this.token();
    } catch {
      // The gateway is unreachable (or refusing): same as a lost socket.
      this.scheduleReconnect();
      return;
    }
    if (this.stopped) return;
    const socket = this.env.openSocket(socketUrl(this.env.location, token));
    this.socket = socket;
    socket.onmessage = (ev) => {
      if (this.socket === socket && typeof ev.data === "string") this.onFrame(ev.data);
    };
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.sentHere.clear();
      if (!this.stopped) this.scheduleReconnect();
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

  private onFrame(text: string): void {
    const frame = parseServerFrame(text);
    if (!frame) return; // something newer than this page understands
    const c = this.snapshot.conversation;
    switch (frame.type) {
      case "welcome":
        this.attempt = 0;
        this.env.storage.setItem(USER_KEY, frame.user_id);
        this.update({ connection: "connected", userId: frame.user_id, reconnectAt: null });
        this.flush();
        break;
      case "accepted":
        this.updateConversation(conv.accepted(c, frame.id));
        break;
      case "reply":
        // Acknowledge every chunk, repeats included: the gateway keeps it
        // for redelivery until we do.
        this.socket?.send(JSON.stringify({ type: "ack", id: frame.id, seq: frame.seq }));
        this.updateConversation(conv.replied(c, frame, this.env.now()));
        break;
      case "error":
        if (frame.id && frame.id in c.messages) {
          this.updateConversation(conv.refused(c, frame.id, frame));
          if (frame.retryable) this.resendLater(frame.id);
          else this.update({ notice: `Message not sent: ${frame.message}` });
        } else {
          this.update({ notice: frame.message });
        }
        break;
      case "pong":
        break;
    }
  }

  private resendLater(id: string): void {
    this.env.setTimeout(() => {
      this.sentHere.delete(id);
      this.flush();
    }, RESEND_DELAY_MS);
  }

  /** Sends every pending message not yet sent on this connection. */
  private flush(): void {
    const socket = this.socket;
    if (!socket || this.snapshot.connection !== "connected") return;
    for (const m of conv.pending(this.snapshot.conversation)) {
      if (this.sentHere.has(m.id) || m.text === null) continue;
      this.sentHere.add(m.id);
      socket.send(sendFrame(m.id, m.text));
    }
  }
}
