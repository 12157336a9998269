import { useState, type FormEvent } from "react";
import type { ChatClient } from "./lib/client";
import { deliveredTo, inviteLink, readBy, type Rooms } from "./lib/rooms";
import { RichText } from "./RichText";

/** My rooms, and a way to create one. */
export function RoomNav({ client, rooms, onChosen }: { client: ChatClient; rooms: Rooms; onChosen: () => void }) {
  const [name, setName] = useState("");
  const create = (e: FormEvent) => {
    e.preventDefault();
    if (!name.trim()) return;
    void client.createRoom(name.trim());
    setName("");
    onChosen();
  };
  if (rooms.off) return null;
  return (
    <nav className="side-section" aria-labelledby="rooms-heading">
      <h2 id="rooms-heading">Rooms</h2>
      <ul className="side-list">
        {rooms.list.map((room) => (
          <li key={room.id} className={rooms.active === room.id ? "current" : undefined}>
            <button
              type="button"
              data-testid="room-tab"
              className="side-item"
              aria-current={rooms.active === room.id ? "page" : undefined}
              onClick={() => {
                void client.openRoom(room.id);
                onChosen();
              }}
            >
              # {room.name}
            </button>
          </li>
        ))}
      </ul>
      <form className="new-room" onSubmit={create}>
        <label htmlFor="room-name" className="visually-hidden">
          New room name
        </label>
        <input id="room-name" value={name} maxLength={100} placeholder="New room" onChange={(e) => setName(e.target.value)} />
        <button type="submit" disabled={!name.trim()}>
          Create
        </button>
      </form>
    </nav>
  );
}

/** One room: its messages in the room's order, receipts, members, invitation. */
export function RoomPane({ client, rooms, me }: { client: ChatClient; rooms: Rooms; me: string | null }) {
  const room = rooms.active ? rooms.byId[rooms.active] : undefined;
  const [text, setText] = useState("");
  const id = rooms.active;
  if (!id) return null;
  const send = (e: FormEvent) => {
    e.preventDefault();
    if (!text.trim()) return;
    client.sendToRoom(text);
    setText("");
  };
  return (
    <section className="room" aria-label={`Room ${room?.name ?? ""}`}>
      <aside className="members" aria-label="Members">
        <h2>
          {room?.name}{" "}
          <button type="button" className="retry" onClick={() => void client.leaveRoom(id)}>
            Leave
          </button>
        </h2>
        <ul>
          {room?.members.map((m) => (
            <li key={m.user_id} data-testid="member" data-online={m.online}>
              <span className={m.online ? "dot online" : "dot"} aria-hidden="true" />
              <code>{m.user_id}</code>
              {m.user_id === me && " (you)"}
              {m.online ? <span className="visually-hidden"> online</span> : <span className="visually-hidden"> offline</span>}
            </li>
          ))}
        </ul>
        {room?.invite && (
          <p className="invite">
            Invite link:{" "}
            <input readOnly data-testid="invite-link" value={inviteLink(window.location, room.invite)} onFocus={(e) => e.currentTarget.select()} />
          </p>
        )}
      </aside>
      <ol className="messages room-messages" aria-live="polite" aria-label="Room messages">
        {room?.messages.length === 0 && <li className="empty">No messages yet. Start with @assistant to ask the assistant.</li>}
        {room?.messages.map((m) => {
          const read = readBy(room, m.seq, me);
          const got = deliveredTo(room, m.seq, me);
          const answer = room.answers[m.id];
          return (
            <li key={m.seq} className="exchange">
            <div className={m.from === me ? "bubble mine" : "bubble"} data-testid="room-message">
              <p className="from">
                <code>{m.from === me ? "you" : m.from}</code>
              </p>
              <div className="text">
                <RichText text={m.text} />
              </div>
              {m.from === me && (
                <p className="status" data-testid="receipt">
                  {read.length > 0 ? `read by ${read.length}` : got.length > 0 ? `delivered to ${got.length}` : "sent"}
                </p>
              )}
            </div>
            {answer && (
              <div className="bubble assistant" data-testid="room-answer" data-complete={answer.complete && !answer.failed}>
                <div className="text">
                  <RichText text={answer.text} />
                </div>
                {answer.restarts ? (
                  <p className="restarted" data-testid="restarted">
                    The answer restarted — a responder began it again.
                  </p>
                ) : null}
                {answer.failed && <p className="status">failed — {answer.failed.message}</p>}
              </div>
            )}
            </li>
          );
        })}
      </ol>
      <form className="composer" onSubmit={send}>
        <label htmlFor="room-input" className="visually-hidden">
          Message to the room
        </label>
        <textarea
          id="room-input"
          value={text}
          rows={2}
          maxLength={4000}
          placeholder="Write to the room — @assistant … asks the assistant"
          onChange={(e) => setText(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) send(e);
          }}
        />
        <div className="send">
          <button type="submit" disabled={!text.trim()}>
            Send
          </button>
        </div>
      </form>
    </section>
  );
}
