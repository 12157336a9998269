import { useEffect, useRef, useState, type KeyboardEvent } from "react";
import type { ChatClient } from "./lib/client";
import { listed, type Conversations } from "./lib/conversations";

type Props = {
  client: ChatClient;
  conversations: Conversations;
  /** Whether a conversation (not a room) is on screen. */
  showing: boolean;
  /** After a choice: on a phone, the list folds away. */
  onChosen: () => void;
};

/**
 * My conversations with the assistant: new, open, and for the one on
 * screen rename and delete — all with the keyboard too (Tab, Enter, Escape).
 */
export function ConversationNav({ client, conversations, showing, onChosen }: Props) {
  const [renaming, setRenaming] = useState<string | null>(null);
  const [confirming, setConfirming] = useState<string | null>(null);
  // Where keyboard focus goes back to once a rename or a delete is done.
  const buttons = useRef(new Map<string, HTMLButtonElement>());
  const [focusOn, setFocusOn] = useState<string | null>(null);
  useEffect(() => {
    if (focusOn === null) return;
    buttons.current.get(focusOn)?.focus();
    setFocusOn(null);
  }, [focusOn, conversations]);
  return (
    <nav className="side-section" aria-labelledby="conversations-heading">
      <h2 id="conversations-heading">Conversations</h2>
      <button
        type="button"
        className="new-conversation"
        data-testid="new-conversation"
        onClick={() => {
          client.newConversation();
          onChosen();
        }}
      >
        + New conversation
      </button>
      <ul className="side-list">
        {listed(conversations).map((t) => {
          const current = showing && t.id === conversations.active;
          return (
            <li key={t.id} className={current ? "current" : undefined} data-testid="conversation">
              {renaming === t.id ? (
                <RenameField
                  title={t.title}
                  onDone={(title) => {
                    if (title !== null) client.renameConversation(t.id, title);
                    setRenaming(null);
                    setFocusOn(t.id);
                  }}
                />
              ) : (
                <button
                  type="button"
                  ref={(el) => {
                    if (el) buttons.current.set(t.id, el);
                    else buttons.current.delete(t.id);
                  }}
                  className="side-item"
                  aria-current={current ? "page" : undefined}
                  onClick={() => {
                    client.openConversation(t.id);
                    onChosen();
                  }}
                >
                  {t.title}
                </button>
              )}
              {current && renaming !== t.id && (
                <span className="side-actions">
                  {confirming === t.id ? (
                    <>
                      <AutoFocusButton label={`Yes, delete “${t.title}”`} onClick={() => {
                        setConfirming(null);
                        client.deleteConversation(t.id);
                        setFocusOn(client.getSnapshot().conversations.active);
                      }}>
                        Yes, delete
                      </AutoFocusButton>
                      <button
                        type="button"
                        onClick={() => {
                          setConfirming(null);
                          setFocusOn(t.id);
                        }}
                      >
                        Keep
                      </button>
                    </>
                  ) : (
                    <>
                      <button type="button" aria-label={`Rename “${t.title}”`} onClick={() => setRenaming(t.id)}>
                        Rename
                      </button>
                      <button type="button" aria-label={`Delete “${t.title}”`} onClick={() => setConfirming(t.id)}>
                        Delete
                      </button>
                    </>
                  )}
                </span>
              )}
            </li>
          );
        })}
      </ul>
    </nav>
  );
}

/** The title, editable: Enter keeps it, Escape (or leaving the field) does not. */
function RenameField({ title, onDone }: { title: string; onDone: (title: string | null) => void }) {
  const [value, setValue] = useState(title);
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => input.current?.select(), []);
  const onKeyDown = (e: KeyboardEvent<HTMLInputElement>) => {
    if (e.key === "Enter") {
      e.preventDefault();
      onDone(value);
    } else if (e.key === "Escape") {
      e.preventDefault();
      onDone(null);
    }
  };
  return (
    <input
      ref={input}
      className="rename"
      aria-label="Conversation title"
      value={value}
      maxLength={100}
      onChange={(e) => setValue(e.target.value)}
      onKeyDown={onKeyDown}
      onBlur={() => onDone(null)}
      autoFocus
    />
  );
}

function AutoFocusButton({ label, onClick, children }: { label: string; onClick: () => void; children: string }) {
  const button = useRef<HTMLButtonElement>(null);
  useEffect(() => button.current?.focus(), []);
  return (
    <button type="button" ref={button} aria-label={label} className="danger" onClick={onClick}>
      {children}
    </button>
  );
}
