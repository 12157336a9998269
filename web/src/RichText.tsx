import { lazy, Suspense } from "react";

// The Markdown renderer and its highlighter are most of the page's code:
// they load in a chunk of their own, started at once (main.tsx) but not
// holding up the first paint.
const Markdown = lazy(() => import("./Markdown").then((m) => ({ default: m.Markdown })));

/** Starts loading the renderer (called once the page is up). */
export function preloadMarkdown(): void {
  void import("./Markdown");
}

/** An answer or a room message as Markdown (Markdown.tsx); until the renderer is in, as plain text. */
export function RichText({ text }: { text: string }) {
  return (
    <Suspense
      fallback={
        <div className="markdown">
          <p className="plain">{text}</p>
        </div>
      }
    >
      <Markdown text={text} />
    </Suspense>
  );
}
