// Several conversations with the assistant, per identity: a list, one on
// screen, each with its own messages and so its own context for the model.
// A pure model (no I/O), like conversation.ts, which holds one of them.
//
// Where they are kept: in this browser's localStorage, as the single
// conversation was before. The gateway keeps no one-to-one history — it
// delivers, and forgets once the page acknowledged — so a server-side list
// would mean storing every answer's text on the server; rooms, which are
// shared, are the part kept server-side (docs/protocol.md §8).

import * as conv from "./conversation";

export type Thread = {
  id: string;
  /** Set by the person (rename), else taken from the first message. */
  title: string;
  /** When the person named it (ms since epoch); 0 while the title is automatic. */
  namedAt: number;
  createdAt: number;
  /** The last message sent in it (or its creation): the list's order. */
  updatedAt: number;
  conversation: conv.Conversation;
};

export type Conversations = {
  /** The one on screen. */
  active: string;
  threads: Record<string, Thread>;
  /**
   * Conversations deleted here and the ids of their messages: another tab's
   * copy does not bring them back, and late answers to them are dropped.
   */
  deleted: { threads: string[]; messages: string[] };
};

/** How many conversations are kept; beyond it the least recently used goes. */
export const THREAD_LIMIT = 50;
/** How many deleted conversations and messages are remembered. */
const DELETED_LIMIT = 1_000;
/** Titles taken from a first message are cut to this many characters. */
export const TITLE_CHARS = 48;
export const UNTITLED = "New conversation";

export function fresh(id: string, now: number): Conversations {
  return { active: id, threads: { [id]: thread(id, now) }, deleted: { threads: [], messages: [] } };
}

function thread(id: string, now: number, conversation = conv.emptyConversation): Thread {
  return { id, title: UNTITLED, namedAt: 0, createdAt: now, updatedAt: now, conversation };
}

/** The conversation on screen. */
export function activeThread(cs: Conversations): Thread {
  return cs.threads[cs.active] ?? thread(cs.active, 0);
}

/** The list, most recently used first. */
export function listed(cs: Conversations): Thread[] {
  return Object.values(cs.threads).sort((a, b) => b.updatedAt - a.updatedAt || b.createdAt - a.createdAt);
}

/** The conversation that holds message `id`, if any. */
export function threadOf(cs: Conversations, id: string): Thread | undefined {
  return Object.values(cs.threads).find((t) => id in t.conversation.messages);
}

/**
 * Opens a new, empty conversation — or the empty one on screen, rather than
 * piling up empty ones.
 */
export function created(cs: Conversations, id: string, now: number): Conversations {
  if (activeThread(cs).conversation.order.length === 0 && cs.threads[cs.active]) return cs;
  return bounded({ ...cs, active: id, threads: { ...cs.threads, [id]: thread(id, now) } });
}

/** Puts conversation `id` on screen. */
export function opened(cs: Conversations, id: string): Conversations {
  if (!cs.threads[id] || cs.active === id) return cs;
  return { ...cs, active: id };
}

/** Most characters in a title. */
export const TITLE_LIMIT = 100;

/** Gives conversation `id` a title of the person's choosing (a blank one changes nothing). */
export function renamed(cs: Conversations, id: string, title: string, now: number): Conversations {
  const t = cs.threads[id];
  const clean = title.replace(/\s+/g, " ").trim().slice(0, TITLE_LIMIT);
  if (!t || !clean || clean === t.title) return cs;
  return { ...cs, threads: { ...cs.threads, [id]: { ...t, title: clean, namedAt: now } } };
}

/**
 * Deletes conversation `id`; when it was on screen, the most recently used
 * other one takes its place (or a new empty one, `replacement`).
 */
export function deleted(cs: Conversations, id: string, replacement: string, now: number): Conversations {
  const gone = cs.threads[id];
  if (!gone) return cs;
  const threads = { ...cs.threads };
  delete threads[id];
  const deletedNow = {
    threads: remember(cs.deleted.threads, [id]),
    messages: remember(cs.deleted.messages, gone.conversation.order),
  };
  let active = cs.active;
  if (active === id) {
    const next = listed({ ...cs, threads })[0];
    active = next ? next.id : replacement;
    if (!next) threads[replacement] = thread(replacement, now);
  }
  return { active, threads, deleted: deletedNow };
}

function remember(list: string[], more: string[]): string[] {
  return [...list, ...more].slice(-DELETED_LIMIT);
}

/** I sent `text` in the conversation on screen. */
export function submitted(cs: Conversations, id: string, text: string, now: number): Conversations {
  const t = activeThread(cs);
  const conversation = conv.submitted(t.conversation, id, text, now);
  const title = t.namedAt > 0 || t.conversation.order.length > 0 ? t.title : autoTitle(conversation);
  return bounded({ ...cs, threads: { ...cs.threads, [t.id]: { ...t, conversation, title, updatedAt: now } } });
}

/**
 * Applies `change` to the conversation holding message `id`. What the
 * gateway says about a message this page never sent (another device's, or
 * trimmed from history) lands in the conversation on screen, as before
 * there were several; about a message of a deleted conversation, nothing.
 */
export function about(cs: Conversations, id: string, change: (c: conv.Conversation) => conv.Conversation): Conversations {
  const t = threadOf(cs, id) ?? (cs.deleted.messages.includes(id) ? undefined : activeThread(cs));
  if (!t) return cs;
  const conversation = change(t.conversation);
  if (conversation === t.conversation) return cs;
  return { ...cs, threads: { ...cs.threads, [t.id]: { ...t, conversation } } };
}

/** Messages waiting to be (re)sent in any conversation, oldest first, with their conversation. */
export function pending(cs: Conversations): { message: conv.Message; thread: Thread }[] {
  return Object.values(cs.threads)
    .flatMap((thread) => conv.pending(thread.conversation).map((message) => ({ message, thread })))
    .sort((a, b) => a.message.createdAt - b.message.createdAt);
}

/** A title from the first message of mine: its first line, shortened. */
function autoTitle(c: conv.Conversation): string {
  const first = c.order.map((id) => c.messages[id]?.text).find((text): text is string => typeof text === "string");
  const line = first?.split("\n").find((l) => l.trim())?.replace(/\s+/g, " ").trim();
  if (!line) return UNTITLED;
  return line.length > TITLE_CHARS ? `${line.slice(0, TITLE_CHARS - 1)}…` : line;
}

/** Drops the least recently used conversations beyond the limit (never the one on screen). */
function bounded(cs: Conversations): Conversations {
  const all = listed(cs);
  if (all.length <= THREAD_LIMIT) return cs;
  const threads = { ...cs.threads };
  for (const t of all.slice(THREAD_LIMIT)) if (t.id !== cs.active) delete threads[t.id];
  return { ...cs, threads };
}

/**
 * Folds in what another tab of the same identity stored: conversations it
 * created appear, its messages join ours (conversation.ts decides per
 * message), the newer of two names wins, and what either deleted stays
 * deleted. Which conversation is on screen stays this tab's choice (when
 * the other deleted it: the most recently used, or a new one, `newId`).
 */
export function merged(mine: Conversations, theirs: Conversations, newId: () => string, now: number): Conversations {
  const deletedThreads = union(mine.deleted.threads, theirs.deleted.threads);
  const deletedMessages = union(mine.deleted.messages, theirs.deleted.messages);
  const threads: Record<string, Thread> = {};
  for (const id of union(Object.keys(mine.threads), Object.keys(theirs.threads))) {
    if (deletedThreads.includes(id)) continue;
    const my = mine.threads[id];
    const their = theirs.threads[id];
    if (!my || !their) {
      threads[id] = (my ?? their) as Thread;
      continue;
    }
    const conversation = conv.merged(my.conversation, their.conversation);
    // A name given later wins; automatic titles: whichever tab saw a message.
    const naming = their.namedAt > my.namedAt || (my.namedAt === 0 && my.title === UNTITLED) ? their : my;
    threads[id] = {
      ...my,
      title: naming.title,
      namedAt: naming.namedAt,
      updatedAt: Math.max(my.updatedAt, their.updatedAt),
      conversation,
    };
  }
  dropStrays(threads);
  const unchanged =
    deletedThreads.length === mine.deleted.threads.length &&
    Object.keys(threads).length === Object.keys(mine.threads).length &&
    Object.entries(threads).every(([id, t]) => mine.threads[id] && sameThread(mine.threads[id], t));
  if (unchanged) return mine;
  let active = mine.active;
  if (!threads[active]) {
    active = listed({ ...mine, threads })[0]?.id ?? newId();
    threads[active] ??= thread(active, now);
  }
  return bounded({
    active,
    threads,
    deleted: { threads: deletedThreads.slice(-DELETED_LIMIT), messages: deletedMessages.slice(-DELETED_LIMIT) },
  });
}

/**
 * An answer that arrived here before the other tab's message did lands, as
 * a reply to an unknown message, in the conversation on screen; once the
 * message itself is in (in its own conversation, with its text), that stray
 * copy goes. The other tab's copy has every chunk too: it got them all.
 */
function dropStrays(threads: Record<string, Thread>): void {
  const home = new Map<string, string>();
  for (const t of Object.values(threads)) {
    for (const id of t.conversation.order) if (t.conversation.messages[id]?.text != null) home.set(id, t.id);
  }
  for (const t of Object.values(threads)) {
    const strays = t.conversation.order.filter((id) => {
      const where = home.get(id);
      return where !== undefined && where !== t.id && t.conversation.messages[id]?.text == null;
    });
    if (strays.length === 0) continue;
    const messages = { ...t.conversation.messages };
    for (const id of strays) delete messages[id];
    threads[t.id] = { ...t, conversation: { order: t.conversation.order.filter((id) => !strays.includes(id)), messages } };
  }
}

function sameThread(a: Thread, b: Thread): boolean {
  return a.conversation === b.conversation && a.title === b.title && a.namedAt === b.namedAt && a.updatedAt === b.updatedAt;
}

function union(a: string[], b: string[]): string[] {
  return [...new Set([...a, ...b])];
}

export const STORAGE_KEY = "switchboard.conversations.v2";

export function save(storage: Pick<Storage, "setItem">, cs: Conversations): void {
  try {
    storage.setItem(STORAGE_KEY, JSON.stringify(cs));
  } catch {
    // Full or unavailable storage only costs the history on reload.
  }
}

/**
 * What this browser kept; a page that kept one conversation (before there
 * were several) finds it as the first of the list.
 */
export function load(storage: Pick<Storage, "getItem">, newId: () => string, now: number): Conversations {
  try {
    const raw = storage.getItem(STORAGE_KEY);
    if (raw) {
      const parsed = JSON.parse(raw) as Conversations;
      if (isConversations(parsed)) return parsed;
    }
  } catch {
    // Unreadable: start afresh, as below.
  }
  const id = newId();
  const single = conv.load(storage);
  if (single.order.length === 0) return fresh(id, now);
  const first = single.messages[single.order[0] ?? ""]?.createdAt ?? now;
  const t: Thread = { ...thread(id, first, single), title: autoTitle(single), updatedAt: now };
  return { active: id, threads: { [id]: t }, deleted: { threads: [], messages: [] } };
}

function isConversations(v: Conversations): boolean {
  return (
    typeof v === "object" &&
    v !== null &&
    typeof v.active === "string" &&
    typeof v.threads === "object" &&
    v.threads !== null &&
    Object.values(v.threads).every((t) => Array.isArray(t?.conversation?.order) && typeof t.title === "string") &&
    Array.isArray(v.deleted?.threads) &&
    Array.isArray(v.deleted?.messages) &&
    v.active in v.threads
  );
}
