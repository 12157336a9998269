import { Fragment, useEffect, useLayoutEffect, useRef, useState, useSyncExternalStore, type FormEvent, type KeyboardEvent } from "react";
import type { ChatClient, ConnectionState } from "./lib/client";
import { canStop, isStreaming, type Message, type Status } from "./lib/conversation";
import { activeThread } from "./lib/conversations";
import { ConversationNav } from "./Conversations";
import { RoomNav, RoomPane } from "./Rooms";
import { RichText } from "./RichText";

const STATUS_LABEL: Record<Status, string> = {
  sending: "sending…",
  queued: "queued",
  processing: "processing",
  cancelling: "stopping…",
  answered: "answered",
  cancelled: "stopped",
  failed: "failed",
};

const CONNECTION_LABEL: Record<ConnectionState, string> = {
  connecting: "connecting…",
  connected: "connected",
  reconnecting: "reconnecting…",
  stopped: "disconnected",
};

export function App({ client }: { client: ChatClient }) {
  const snapshot = useSyncExternalStore(client.subscribe, client.getSnapshot);
  const { conversations, conversation, connection, userId, notice, brokerUp, rooms } = snapshot;
  const thread = activeThread(conversations);
  const messages = conversation.order
    .map((id) => conversation.messages[id])
    .filter((m): m is Message => m !== undefined);
  // "Edit" puts a message back in the composer.
  const [draft, setDraft] = useState<Draft | null>(null);
  const [draftFor, setDraftFor] = useState(conversations.active);
  if (draftFor !== conversations.active) {
    // A draft from Edit belongs to the conversation it came from.
    setDraftFor(conversations.active);
    setDraft(null);
  }
  // What was typed and not sent, per conversation, kept while switching.
  const unsent = useRef(new Map<string, string>());
  // On a phone the side list folds away behind a button.
  const [sideOpen, setSideOpen] = useState(false);
  const chosen = () => setSideOpen(false);

  return (
    <div className="app">
      <header className="bar">
        <button
          type="button"
          className="side-toggle"
          aria-expanded={sideOpen}
          aria-controls="side"
          onClick={() => setSideOpen(!sideOpen)}
        >
          Menu
        </button>
        <h1>Switchboard</h1>
        <p className="identity">
          You are <code data-testid="user-id">{userId ?? "…"}</code>
        </p>
        <p className={`connection connection-${connection}`} role="status" data-testid="connection">
          <span className="dot" aria-hidden="true" />
          {connection === "connected" && !brokerUp ? "connected — broker away" : CONNECTION_LABEL[connection]}
        </p>
      </header>
      {notice && (
        <div className="notice" role="alert" data-testid="notice">
          <span>{notice}</span>
          <button type="button" onClick={() => client.dismissNotice()} aria-label="Dismiss">
            ×
          </button>
        </div>
      )}
      <div className="layout">
        <aside id="side" className={sideOpen ? "side open" : "side"} aria-label="Conversations and rooms">
          <ConversationNav client={client} conversations={conversations} showing={rooms.active === null} onChosen={chosen} />
          <RoomNav client={client} rooms={rooms} onChosen={chosen} />
        </aside>
        <main className="main">
          {rooms.active !== null ? (
            <RoomPane client={client} rooms={rooms} me={userId} />
          ) : (
            // Keyed by conversation: a switch starts at the bottom, with an empty composer.
            <Fragment key={thread.id}>
              <h2 className="title" data-testid="conversation-title">
                {thread.title}
              </h2>
              <MessageList
                messages={messages}
                connected={connection === "connected"}
                onRetry={(id) => client.retry(id)}
                onStop={(id) => client.cancel(id)}
                onRegenerate={(text) => client.send(text)}
                onEdit={(text) => setDraft({ text, at: Date.now() })}
              />
              <Announcer messages={messages} />
              <Composer
                connected={connection === "connected"}
                pending={messages.filter((m) => m.status === "sending").length}
                failed={messages.filter((m) => m.status === "failed").length}
                onSend={(text) => client.send(text)}
                draft={draft}
                unsent={unsent.current.get(thread.id) ?? ""}
                onTyped={(text) => unsent.current.set(thread.id, text)}
              />
            </Fragment>
          )}
        </main>
      </div>
    </div>
  );
}

/** Text to put back in the composer (`at` makes each request new). */
type Draft = { text: string; at: number };

/**
 * Tells screen readers of each answer once, when it is whole — not every
 * chunk as it streams (the list itself is not a live region) — and not
 * the answers already there when a conversation is opened.
 */
function Announcer({ messages }: { messages: Message[] }) {
  const last = [...messages].reverse().find((m) => m.reply?.complete);
  const [there] = useState(last?.id);
  const said = last?.reply && last.id !== there ? `The assistant answered: ${last.reply.text}` : "";
  return (
    <p className="visually-hidden" aria-live="polite" data-testid="announcer">
      {said}
    </p>
  );
}

type MessageListProps = {
  messages: Message[];
  /** Stop is offered only while a cancel can be sent. */
  connected: boolean;
  onRetry: (id: string) => void;
  onStop: (id: string) => void;
  /** Ask the same again (a new message with the same text). */
  onRegenerate: (text: string) => void;
  /** Put my message back in the composer to change and send again. */
  onEdit: (text: string) => void;
};

function MessageList({ messages, connected, onRetry, onStop, onRegenerate, onEdit }: MessageListProps) {
  const list = useRef<HTMLOListElement>(null);
  const pinned = useRef(true);
  // Follow the conversation while the reader is at the bottom; leave them
  // alone when they scrolled up to read.
  useLayoutEffect(() => {
    const el = list.current;
    if (el && pinned.current) el.scrollTop = el.scrollHeight;
  });
  const lastMine = [...messages].reverse().find((m) => m.text !== null)?.id;
  return (
    <ol
      className="messages"
      ref={list}
      aria-label="Conversation"
      onScroll={(e) => {
        const el = e.currentTarget;
        pinned.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
      }}
    >
      {messages.length === 0 && <li className="empty">Say something — the assistant answers.</li>}
      {messages.map((m) => (
        <li key={m.id} className="exchange" data-message-id={m.id}>
          {m.text !== null && (
            <div className="bubble mine" data-testid="my-message">
              <p className="text">{m.text}</p>
              {m.id === lastMine && m.status !== "sending" && (
                <button type="button" className="edit" data-testid="edit" onClick={() => onEdit(m.text ?? "")}>
                  Edit
                </button>
              )}
              <p className={`status status-${m.status}`} data-testid="status">
                {STATUS_LABEL[m.status]}
                {m.error && m.status !== "answered" && <span className="why"> — {m.error.message}</span>}
                {m.status === "failed" && (
                  <button type="button" className="retry" onClick={() => onRetry(m.id)}>
                    Retry
                  </button>
                )}
                {canStop(m) && connected && (
                  <button type="button" className="stop" data-testid="stop" onClick={() => onStop(m.id)}>
                    Stop
                  </button>
                )}
              </p>
            </div>
          )}
          {m.reply && (
            <div
              className="bubble assistant"
              data-testid="reply"
              data-complete={m.reply.complete}
              aria-busy={isStreaming(m)}
            >
              {m.reply.restarts ? (
                <p className="restarted" data-testid="restarted">
                  {isStreaming(m) ? "The answer restarted" : "The answer was restarted"} — a responder began it again,
                  and this is the new attempt.
                </p>
              ) : null}
              <div className="text" data-testid="reply-text">
                <RichText text={m.reply.text} />
                {isStreaming(m) && <span className="typing" aria-label="assistant is typing" />}
              </div>
              {m.status === "cancelled" && <p className="stopped">(stopped)</p>}
              {m.reply.complete && (
                <p className="actions">
                  <CopyButton text={m.reply.text} />
                  {m.text !== null && (
                    <button type="button" data-testid="regenerate" onClick={() => onRegenerate(m.text ?? "")}>
                      Regenerate
                    </button>
                  )}
                </p>
              )}
            </div>
          )}
          {!m.reply && (m.status === "queued" || m.status === "processing") && (
            <div className="bubble assistant waiting" aria-label="waiting for the assistant">
              <span className="typing" />
            </div>
          )}
        </li>
      ))}
    </ol>
  );
}

type ComposerProps = {
  connected: boolean;
  /** My messages not yet accepted by the server. */
  pending: number;
  failed: number;
  onSend: (text: string) => void;
  /** Text to edit, put here by an Edit button. */
  draft: Draft | null;
  /** What was typed here and not sent, when the conversation was last on screen. */
  unsent: string;
  onTyped: (text: string) => void;
};

function Composer({ connected, pending, failed, onSend, draft, unsent, onTyped }: ComposerProps) {
  const [text, setTextState] = useState(unsent);
  const setText = (next: string) => {
    setTextState(next);
    onTyped(next);
  };
  const input = useRef<HTMLTextAreaElement>(null);
  useEffect(() => input.current?.focus(), []);
  useEffect(() => {
    if (!draft) return;
    setText(draft.text);
    input.current?.focus();
  }, [draft]);

  const submit = (e?: FormEvent) => {
    e?.preventDefault();
    if (!text.trim()) return;
    onSend(text);
    setText("");
    input.current?.focus();
  };
  const onKeyDown = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) submit(e);
  };

  return (
    <form className="composer" onSubmit={submit}>
      <label htmlFor="message-input" className="visually-hidden">
        Message
      </label>
      <textarea
        id="message-input"
        ref={input}
        value={text}
        rows={2}
        maxLength={4000}
        placeholder={connected ? "Write a message — Enter to send, Shift+Enter for a new line" : "Offline — messages are sent when the connection is back"}
        onChange={(e) => setText(e.target.value)}
        onKeyDown={onKeyDown}
      />
      <div className="send">
        <button type="submit" disabled={!text.trim()} aria-describedby="send-state">
          Send
        </button>
        <span id="send-state" className={`send-state${failed > 0 ? " send-failed" : ""}`} data-testid="send-state">
          {sendState(connected, pending, failed)}
        </span>
      </div>
    </form>
  );
}

function sendState(connected: boolean, pending: number, failed: number): string {
  if (failed > 0) return `${failed} failed`;
  if (pending === 0) return "";
  return connected ? "sending…" : `${pending} waiting`;
}

/** Copies an answer's text (its Markdown source) to the clipboard. */
function CopyButton({ text }: { text: string }) {
  const [copied, setCopied] = useState(false);
  const copy = () => {
    void navigator.clipboard?.writeText(text).then(() => {
      setCopied(true);
      window.setTimeout(() => setCopied(false), 1500);
    });
  };
  return (
    <button type="button" data-testid="copy" onClick={copy}>
      {copied ? "Copied" : "Copy"}
    </button>
  );
}
