// Rooms as the page shows them: a pure model (no I/O), updated by what the
// REST API returns and what the socket delivers (docs/protocol.md §8).

import { addChunk, noAnswer, type Answer, type Chunk } from "./answer";

export type RoomSummary = { id: string; name: string };
export type Member = { user_id: string; online: boolean };

export type RoomMessage = { seq: number; id: string; from: string; text: string };

export type RoomView = {
  id: string;
  name: string;
  /** By seq, in order; a repeat of a seq is ignored. */
  messages: RoomMessage[];
  /** Per seq: members who have it (delivered) and who have read up to it. */
  delivered: Record<number, string[]>;
  /** Per member: the highest seq they have read. */
  readUpTo: Record<string, number>;
  members: Member[];
  invite: string | null;
  /** The assistant's answers, by the message they answer. */
  answers: Record<string, Answer>;
};


export type Rooms = {
  /** Rooms are turned off on this server (`rooms_disabled`): none are shown. */
  off?: boolean;
  list: RoomSummary[];
  /** The room on screen; null: the conversation with the assistant. */
  active: string | null;
  byId: Record<string, RoomView>;
};

export const noRooms: Rooms = { list: [], active: null, byId: {} };

function view(rooms: Rooms, id: string, name = ""): RoomView {
  return (
    rooms.byId[id] ?? {
      id,
      name: name || rooms.list.find((r) => r.id === id)?.name || "room",
      messages: [],
      delivered: {},
      readUpTo: {},
      members: [],
      invite: null,
      answers: {},
    }
  );
}

function put(rooms: Rooms, room: RoomView): Rooms {
  return { ...rooms, byId: { ...rooms.byId, [room.id]: room } };
}

/** The server said rooms are turned off: the page hides them. */
export function turnedOff(rooms: Rooms): Rooms {
  return rooms.off ? rooms : { ...rooms, off: true, list: [], active: null };
}

/** The list from `GET /api/rooms` (or after creating / joining one). */
export function listed(rooms: Rooms, list: RoomSummary[]): Rooms {
  return { ...rooms, list };
}

export function opened(rooms: Rooms, id: string | null): Rooms {
  return { ...rooms, active: id };
}

/** A room message from the socket or the history; placed by seq, once. */
export function messageArrived(rooms: Rooms, roomId: string, message: RoomMessage): Rooms {
  const room = view(rooms, roomId);
  if (room.messages.some((m) => m.seq === message.seq)) return rooms;
  const messages = [...room.messages, message].sort((a, b) => a.seq - b.seq);
  return put(rooms, { ...room, messages });
}

/** A chunk of the assistant's answer to room message `in_reply_to`, by the attempt rule (answer.ts). */
export function answerChunk(rooms: Rooms, roomId: string, chunk: Chunk & { in_reply_to: string }): Rooms {
  const room = view(rooms, roomId);
  const answer = room.answers[chunk.in_reply_to] ?? noAnswer;
  const next = addChunk(answer, chunk);
  if (next === answer) return rooms;
  return put(rooms, { ...room, answers: { ...room.answers, [chunk.in_reply_to]: next } });
}

export function receiptArrived(
  rooms: Rooms,
  roomId: string,
  member: string,
  seq: number,
  state: "delivered" | "read",
): Rooms {
  const room = view(rooms, roomId);
  if (state === "read") {
    if ((room.readUpTo[member] ?? 0) >= seq) return rooms;
    return put(rooms, { ...room, readUpTo: { ...room.readUpTo, [member]: seq } });
  }
  const have = room.delivered[seq] ?? [];
  if (have.includes(member)) return rooms;
  return put(rooms, { ...room, delivered: { ...room.delivered, [seq]: [...have, member] } });
}

/** `GET /api/rooms/{id}`: members (with presence) and an invitation. */
export function detailed(rooms: Rooms, id: string, name: string, members: Member[], invite: string): Rooms {
  return put(rooms, { ...view(rooms, id, name), name, members, invite });
}

/** A member came online or went offline, joined or (not `member`) left:
 * pushed by the server (`room_presence`), so the list needs no polling. */
export function presenceChanged(rooms: Rooms, id: string, user: string, member: boolean, online: boolean): Rooms {
  const room = rooms.byId[id];
  if (!room) return rooms;
  const others = room.members.filter((m) => m.user_id !== user);
  const known = room.members.find((m) => m.user_id === user);
  if (!member) return known ? put(rooms, { ...room, members: others }) : rooms;
  if (known?.online === online) return rooms;
  const members = known
    ? room.members.map((m) => (m.user_id === user ? { ...m, online } : m))
    : [...room.members, { user_id: user, online }];
  return put(rooms, { ...room, members });
}

/** Members other than `me` who have read message `seq`. */
export function readBy(room: RoomView, seq: number, me: string | null): string[] {
  return Object.entries(room.readUpTo)
    .filter(([member, upTo]) => member !== me && upTo >= seq)
    .map(([member]) => member);
}

/** Members other than `me` who have message `seq` (delivered or read). */
export function deliveredTo(room: RoomView, seq: number, me: string | null): string[] {
  const got = new Set(room.delivered[seq] ?? []);
  for (const member of readBy(room, seq, me)) got.add(member);
  got.delete(me ?? "");
  return [...got];
}

/** The page link that joins a room: the invitation in the fragment (never sent to servers). */
export function inviteLink(location: { protocol: string; host: string }, invite: string): string {
  return `${location.protocol}//${location.host}/#join=${encodeURIComponent(invite)}`;
}

/** The invitation in a page fragment `#join=…`, if any. */
export function inviteFromHash(hash: string): string | null {
  const match = /^#join=(.+)$/.exec(hash);
  return match?.[1] ? decodeURIComponent(match[1]) : null;
}
