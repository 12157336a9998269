// One answer as the page shows it, built from its reply chunks as they
// arrive: the rule of docs/protocol.md §3, in one place for the
// conversation and the rooms (the Rust clients have it in
// crates/protocol/src/answer.rs).
//
// An answer may be written more than once (a responder crashed mid-answer,
// a request was redelivered), and a model writes something else each time,
// so every chunk carries its attempt's number and attempts are never mixed:
// - chunks are kept per attempt, placed by seq; a repeat changes nothing;
// - the page shows the highest attempt seen: a chunk of a higher attempt
//   replaces what a lower one showed (the answer restarted); chunks of a
//   lower attempt arriving late are kept but not shown;
// - the answer is complete as soon as one attempt's final chunk and every
//   chunk before it are in — normally the one shown; should another complete
//   first, that one is the answer — and after that every chunk is dropped;
// - a chunk with an error ends the answer as failed, unless it was complete.

import type { ReplyFailure } from "./protocol";

/** One attempt's chunks. */
export type Attempt = {
  /** Chunk texts by seq. */
  chunks: Record<number, string>;
  /** The seq of its final chunk, once seen. */
  finalSeq: number | null;
  /** Stopped by a cancel (its final chunk says so). */
  cancelled?: boolean;
};

/** The answer: the attempt shown, at the top level, and the others. */
export type Answer = Attempt & {
  /** The attempt shown (0: not numbered). */
  attempt: number;
  /** The text of the shown attempt's chunks 0..n without gaps. */
  text: string;
  complete: boolean;
  /** Why the service gave up on it. */
  failed?: ReplyFailure;
  /** How often what was shown was replaced by another attempt. */
  restarts?: number;
  /** The other attempts seen, by number, in case one completes first. */
  others?: Record<string, Attempt>;
};

/** A reply chunk, as far as the answer is concerned. */
export type Chunk = {
  seq: number;
  attempt?: number;
  text: string;
  final: boolean;
  cancelled?: boolean;
  error?: ReplyFailure;
};

export const noAnswer: Answer = { attempt: 0, chunks: {}, finalSeq: null, text: "", complete: false };

function contiguousText(chunks: Record<number, string>): string {
  let text = "";
  for (let seq = 0; seq in chunks; seq++) text += chunks[seq];
  return text;
}

function isComplete({ chunks, finalSeq }: Attempt): boolean {
  if (finalSeq === null) return false;
  for (let seq = 0; seq <= finalSeq; seq++) if (!(seq in chunks)) return false;
  return true;
}

function withChunk(attempt: Attempt, chunk: Chunk): Attempt {
  const cancelled = attempt.cancelled === true || (chunk.final && chunk.cancelled === true);
  return {
    chunks: { ...attempt.chunks, [chunk.seq]: chunk.text },
    finalSeq: chunk.final ? chunk.seq : attempt.finalSeq,
    ...(cancelled ? { cancelled } : {}),
  };
}

function shown(answer: Answer): Attempt {
  return { chunks: answer.chunks, finalSeq: answer.finalSeq, ...(answer.cancelled ? { cancelled: true } : {}) };
}

/**
 * Takes in one chunk by the rule above; returns `answer` itself when the
 * chunk changes nothing (a repeat, after the end).
 */
export function addChunk(answer: Answer, chunk: Chunk): Answer {
  if (answer.complete) return answer;
  if (chunk.error) return { ...answer, complete: true, failed: chunk.error };
  const number = chunk.attempt ?? 0;
  const current = answer.attempt ?? 0;
  const others = answer.others ?? {};
  const nothingYet = Object.keys(answer.chunks).length === 0 && Object.keys(others).length === 0;
  if (number === current || nothingYet) {
    if (chunk.seq in answer.chunks) return answer;
    const next = withChunk(answer, chunk);
    const { cancelled: _, ...rest } = answer;
    return { ...rest, ...next, attempt: number, text: contiguousText(next.chunks), complete: isComplete(next) };
  }
  const attempt = others[number] ?? { chunks: {}, finalSeq: null };
  if (chunk.seq in attempt.chunks) return answer;
  const next = withChunk(attempt, chunk);
  const completes = isComplete(next);
  if (number < current && !completes) return { ...answer, others: { ...others, [number]: next } };
  // This attempt goes on screen; the one shown joins the others.
  const { [number]: _, ...rest } = others;
  const replaced = Object.keys(answer.chunks).length > 0;
  const restarts = (answer.restarts ?? 0) + (replaced ? 1 : 0);
  return {
    ...next,
    attempt: number,
    text: contiguousText(next.chunks),
    complete: completes,
    ...(answer.failed ? { failed: answer.failed } : {}),
    ...(restarts > 0 ? { restarts } : {}),
    others: { ...rest, [current]: shown(answer) },
  };
}
