// The conversation as the page shows it: a pure model, updated by what the
// user does and what the gateway says. No I/O here; see client.ts.

import { addChunk, noAnswer, type Answer } from "./answer";
import { MAX_CONTEXT_CHARS, MAX_CONTEXT_TURNS, type ErrorInfo, type MessageProgress, type ServerFrame, type Turn } from "./protocol";

/**
 * Where a message of mine is on its way to an answer: sending → queued
 * (RabbitMQ has it) → processing (a responder is on it) → answered; or
 * failed; or, after Stop, cancelling → cancelled.
 */
export type Status = "sending" | "queued" | "processing" | "cancelling" | "answered" | "cancelled" | "failed";

/** Statuses after which nothing more happens to a message. */
const FINISHED: ReadonlySet<Status> = new Set(["answered", "cancelled"]);

/** Statuses of a message the service has and has not finished answering. */
const IN_PROGRESS: ReadonlySet<Status> = new Set(["queued", "processing", "cancelling"]);

/** The answer to one of my messages (answer.ts has the rule it follows). */
export type Reply = { id: string } & Answer;

export type Message = {
  id: string;
  /** null for a reply to a message this page no longer knows (history trimmed). */
  text: string | null;
  status: Status;
  /** The last error about this message (kept while a retryable one is retried). */
  error: ErrorInfo | null;
  reply: Reply | null;
  createdAt: number;
};

export type Conversation = {
  order: string[];
  messages: Record<string, Message>;
};

export const emptyConversation: Conversation = { order: [], messages: {} };

/** How many messages are kept (and stored across reloads). */
export const HISTORY_LIMIT = 200;

function put(c: Conversation, message: Message): Conversation {
  const known = message.id in c.messages;
  const order = known ? c.order : [...c.order, message.id];
  return trim({ order, messages: { ...c.messages, [message.id]: message } });
}

/** Drops the oldest messages beyond the limit, but never one still to be sent. */
function trim(c: Conversation): Conversation {
  let excess = c.order.length - HISTORY_LIMIT;
  if (excess <= 0) return c;
  const messages = { ...c.messages };
  const order = c.order.filter((id) => {
    if (excess > 0 && messages[id]?.status !== "sending") {
      excess -= 1;
      delete messages[id];
      return false;
    }
    return true;
  });
  return { order, messages };
}

/** Whether copy `a` of a message is further along than copy `b`. */
function furtherAlong(a: Message, b: Message): boolean {
  const rank = (m: Message) =>
    ({ sending: 0, failed: 1, queued: 2, processing: 3, cancelling: 4, answered: 5, cancelled: 5 })[m.status];
  if (rank(a) !== rank(b)) return rank(a) > rank(b);
  const attempt = (m: Message) => m.reply?.attempt ?? 0;
  if (attempt(a) !== attempt(b)) return attempt(a) > attempt(b);
  const chunks = (m: Message) => Object.keys(m.reply?.chunks ?? {}).length;
  return chunks(a) > chunks(b);
}

/**
 * Folds in what another tab of the same user stored: its messages appear
 * here too, and a copy further along replaces ours. Messages the other tab
 * has not sent yet stay with it (only the tab that holds them sends them).
 */
export function merged(mine: Conversation, theirs: Conversation): Conversation {
  let changed = false;
  const messages = { ...mine.messages };
  for (const id of theirs.order) {
    const their = theirs.messages[id];
    if (!their) continue;
    const my = messages[id];
    if (my ? furtherAlong(their, my) : their.status !== "sending") {
      messages[id] = their;
      changed = true;
    }
  }
  if (!changed) return mine;
  const order = Object.values(messages)
    .sort((a, b) => a.createdAt - b.createdAt)
    .map((m) => m.id);
  return trim({ order, messages });
}

/** I sent a message: it shows at once, as sending. */
export function submitted(c: Conversation, id: string, text: string, now = Date.now()): Conversation {
  return put(c, { id, text, status: "sending", error: null, reply: null, createdAt: now });
}

/** RabbitMQ has it: sending → queued (never backwards). */
export function accepted(c: Conversation, id: string): Conversation {
  const m = c.messages[id];
  if (!m || (m.status !== "sending" && m.status !== "failed")) return c;
  return put(c, { ...m, status: m.reply?.complete ? "answered" : "queued", error: null });
}

/** A `message_status`: processing (a responder is on it) or cancelling. */
export function progressed(c: Conversation, id: string, status: MessageProgress): Conversation {
  const m = c.messages[id];
  if (!m || FINISHED.has(m.status) || m.status === "cancelling") return c;
  if (status === "processing" && m.status === "processing") return c;
  return put(c, { ...m, status, error: null });
}

/**
 * The gateway found nothing to cancel (the answer had ended, or it did not
 * know the message): a message still shown as cancelling goes back to
 * processing and finishes as it will.
 */
export function notCancelled(c: Conversation, id: string): Conversation {
  const m = c.messages[id];
  if (!m || m.status !== "cancelling") return c;
  return put(c, { ...m, status: "processing" });
}

/** Whether Stop makes sense: the service has it and is not done with it. */
export function canStop(m: Message): boolean {
  return m.status === "queued" || m.status === "processing";
}

/**
 * The gateway refused the message. A retryable refusal keeps it pending
 * (it is sent again, same id); any other marks it failed.
 */
export function refused(c: Conversation, id: string, error: ErrorInfo): Conversation {
  const m = c.messages[id];
  if (!m || (m.status !== "sending" && m.status !== "failed")) return c;
  return put(c, { ...m, status: error.retryable ? "sending" : "failed", error });
}

/** The person pressed retry on a failed message: pending again, same id. */
export function retried(c: Conversation, id: string): Conversation {
  const m = c.messages[id];
  if (!m || m.status !== "failed") return c;
  return put(c, { ...m, status: "sending", error: null });
}

/**
 * A reply chunk arrived: taken in by the attempt rule (answer.ts) — placed
 * by seq, a repeat changes nothing, a newer attempt replaces an older one.
 */
export function replied(
  c: Conversation,
  frame: Extract<ServerFrame, { type: "reply" }>,
  now = Date.now(),
): Conversation {
  if (frame.error) return unanswerable(c, frame.in_reply_to, frame.error, now);
  const m: Message = c.messages[frame.in_reply_to] ?? {
    id: frame.in_reply_to,
    text: null,
    status: "queued",
    error: null,
    reply: null,
    createdAt: now,
  };
  const reply: Reply = m.reply ?? { id: frame.id, ...noAnswer };
  const next = addChunk(reply, frame);
  if (next === reply) return c;
  const status: Status = next.complete
    ? next.cancelled ? "cancelled" : "answered"
    : next.cancelled || m.status === "cancelling" ? "cancelling" : "processing";
  return put(c, { ...m, reply: { ...next, id: reply.id }, status, error: null });
}

/**
 * The service gave up on the message (it could not be processed): final,
 * whatever was streamed before stays visible.
 */
function unanswerable(c: Conversation, id: string, failure: { code: string; message: string }, now: number): Conversation {
  const m: Message = c.messages[id] ?? { id, text: null, status: "failed", error: null, reply: null, createdAt: now };
  if (FINISHED.has(m.status) || (m.status === "failed" && m.error?.code === failure.code)) return c;
  return put(c, { ...m, status: "failed", error: { ...failure, retryable: false } });
}

/**
 * The turns before message `id` that a model should see: the most recent
 * answered exchanges (my message, the complete answer), oldest first,
 * within the gateway's bounds on count and length.
 */
export function contextFor(c: Conversation, id: string): Turn[] {
  const before = c.order.slice(0, Math.max(0, c.order.indexOf(id)));
  const turns: Turn[] = [];
  let chars = 0;
  for (const earlier of before.reverse()) {
    const m = c.messages[earlier];
    if (!m || m.text === null || m.status !== "answered" || !m.reply?.complete) continue;
    const size = m.text.length + m.reply.text.length;
    if (turns.length + 2 > MAX_CONTEXT_TURNS || chars + size > MAX_CONTEXT_CHARS) break;
    chars += size;
    turns.unshift({ role: "user", text: m.text }, { role: "assistant", text: m.reply.text });
  }
  return turns;
}

/** Messages waiting to be (re)sent, oldest first. */
export function pending(c: Conversation): Message[] {
  return c.order.map((id) => c.messages[id]).filter((m): m is Message => m?.status === "sending");
}

/** Whether an answer is streaming right now. */
export function isStreaming(m: Message): boolean {
  return IN_PROGRESS.has(m.status) && m.reply !== null && !m.reply.complete;
}

/**
 * Where the page kept its one conversation before there were several;
 * conversations.ts reads it once and moves it into its own list.
 */
export const STORAGE_KEY = "switchboard.conversation.v1";

export function load(storage: Pick<Storage, "getItem">): Conversation {
  try {
    const raw = storage.getItem(STORAGE_KEY);
    if (!raw) return emptyConversation;
    const parsed = JSON.parse(raw) as Conversation;
    if (!Array.isArray(parsed.order) || typeof parsed.messages !== "object") return emptyConversation;
    return parsed;
  } catch {
    return emptyConversation;
  }
}
