// The wire protocol as the browser sees it (docs/protocol.md is the reference).

export type ErrorInfo = { code: string; message: string; retryable: boolean };

export type ReplyFailure = { code: string; message: string };

export type ServerFrame =
  | { type: "welcome"; user_id: string }
  | { type: "accepted"; id: string }
  | {
      type: "reply";
      id: string;
      in_reply_to: string;
      seq: number;
      /** Which attempt at the answer (left out on the first): docs/protocol.md §3. */
      attempt?: number;
      text: string;
      final: boolean;
      /** Set on a final chunk when the request could not be answered. */
      error?: ReplyFailure;
      /** Set on the final chunk of an answer stopped by `cancel`. */
      cancelled?: boolean;
      /** Set when the assistant answers in a room. */
      room_id?: string;
    }
  | ({ type: "error"; id?: string } & ErrorInfo)
  | { type: "pong" }
  | { type: "status"; broker: "up" | "down" }
  | { type: "message_status"; id: string; status: MessageProgress }
  | { type: "room_message"; room_id: string; seq: number; id: string; from: string; text: string }
  | { type: "room_receipt"; room_id: string; user_id: string; seq: number; state: "delivered" | "read" }
  | { type: "room_presence"; room_id: string; user_id: string; member: boolean; online: boolean };

/** What `message_status` says of a message between `accepted` and its answer. */
export type MessageProgress = "processing" | "cancelling";

const isString = (v: unknown): v is string => typeof v === "string";

/**
 * Parses one text frame from the gateway. Returns null for anything that is
 * not a frame this client understands (newer servers may add types), so a
 * surprise never breaks the page.
 */
export function parseServerFrame(text: string): ServerFrame | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null) return null;
  const f = value as Record<string, unknown>;
  switch (f.type) {
    case "welcome":
      return isString(f.user_id) ? { type: "welcome", user_id: f.user_id } : null;
    case "accepted":
      return isString(f.id) ? { type: "accepted", id: f.id } : null;
    case "reply":
      if (
        isString(f.id) &&
        isString(f.in_reply_to) &&
        Number.isInteger(f.seq) &&
        (f.seq as number) >= 0 &&
        isString(f.text) &&
        typeof f.final === "boolean" &&
        (f.attempt === undefined || (Number.isSafeInteger(f.attempt) && (f.attempt as number) >= 0))
      ) {
        const failure = f.error as Record<string, unknown> | undefined;
        return {
          type: "reply",
          id: f.id,
          in_reply_to: f.in_reply_to,
          seq: f.seq as number,
          ...(f.attempt ? { attempt: f.attempt as number } : {}),
          text: f.text,
          final: f.final,
          ...(failure && isString(failure.code) && isString(failure.message)
            ? { error: { code: failure.code, message: failure.message } }
            : {}),
          ...(f.cancelled === true ? { cancelled: true } : {}),
          ...(isString(f.room_id) ? { room_id: f.room_id } : {}),
        };
      }
      return null;
    case "error":
      if (!isString(f.code) || !isString(f.message)) return null;
      return {
        type: "error",
        code: f.code,
        message: f.message,
        retryable: f.retryable === true,
        ...(isString(f.id) ? { id: f.id } : {}),
      };
    case "pong":
      return { type: "pong" };
    case "status":
      return f.broker === "up" || f.broker === "down" ? { type: "status", broker: f.broker } : null;
    case "room_message":
      return isString(f.room_id) && Number.isInteger(f.seq) && isString(f.id) && isString(f.from) && isString(f.text)
        ? { type: "room_message", room_id: f.room_id, seq: f.seq as number, id: f.id, from: f.from, text: f.text }
        : null;
    case "room_receipt":
      return isString(f.room_id) &&
        isString(f.user_id) &&
        Number.isInteger(f.seq) &&
        (f.state === "delivered" || f.state === "read")
        ? { type: "room_receipt", room_id: f.room_id, user_id: f.user_id, seq: f.seq as number, state: f.state }
        : null;
    case "room_presence":
      return isString(f.room_id) && isString(f.user_id) && typeof f.member === "boolean" && typeof f.online === "boolean"
        ? { type: "room_presence", room_id: f.room_id, user_id: f.user_id, member: f.member, online: f.online }
        : null;
    case "message_status":
      return isString(f.id) && (f.status === "processing" || f.status === "cancelling")
        ? { type: "message_status", id: f.id, status: f.status }
        : null;
    default:
      return null;
  }
}

/** One earlier turn of the conversation, sent as context with a message. */
export type Turn = { role: "user" | "assistant"; text: string };

/** The gateway's bounds on `context` (docs/protocol.md §2). */
export const MAX_CONTEXT_TURNS = 20;
export const MAX_CONTEXT_CHARS = 32_000;

export function sendFrame(id: string, text: string, context: Turn[] = []): string {
  return JSON.stringify(context.length > 0 ? { type: "send", id, text, context } : { type: "send", id, text });
}

/** A message to room `roomId`. */
export function roomSendFrame(id: string, text: string, roomId: string): string {
  return JSON.stringify({ type: "send", id, text, room_id: roomId });
}

/** I have seen room `roomId` up to message `seq`. */
export function readFrame(roomId: string, seq: number): string {
  return JSON.stringify({ type: "read", room_id: roomId, seq });
}

/** Stop generating the answer to message `id`. */
export function cancelFrame(id: string): string {
  return JSON.stringify({ type: "cancel", id });
}

/** The WebSocket URL for this page: same host, ws for http, wss for https. */
export function socketUrl(location: { protocol: string; host: string }): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

/**
 * The subprotocols to offer: the protocol itself, and the token. Browsers
 * cannot set headers on a WebSocket; a subprotocol keeps the token out of
 * URLs (and so out of proxy access logs). The server selects "switchboard".
 */
export function socketProtocols(token: string): string[] {
  return ["switchboard", `bearer.${token}`];
}

/** Close codes the page reacts to (docs/protocol.md §4). */
export const CLOSE_TOKEN_EXPIRED = 4001;

/** Seconds-since-epoch expiry of a JWT, or null if it cannot be read. */
export function tokenExpiry(token: string): number | null {
  const payload = token.split(".")[1];
  if (!payload) return null;
  try {
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    const exp = (JSON.parse(json) as { exp?: unknown }).exp;
    return typeof exp === "number" ? exp : null;
  } catch {
    return null;
  }
}
