import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import { Markdown, safeUrl } from "./Markdown";

const html = (text: string) => renderToStaticMarkup(<Markdown text={text} />);

describe("Markdown", () => {
  it("renders what models write: emphasis, lists, tables, links, code", () => {
    const out = html(
      "**bold** and `code`\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n[docs](https://example.com)\n\n```rust\nfn main() {}\n```",
    );
    expect(out).toContain("<strong>bold</strong>");
    expect(out).toContain("<code>code</code>");
    expect(out).toContain("<li>one</li>");
    expect(out).toContain("<table>");
    expect(out).toContain('<a href="https://example.com" target="_blank" rel="noopener noreferrer nofollow">docs</a>');
    expect(out).toContain('class="hljs language-rust"');
    expect(out).toContain("Copy");
  });

  it("passes no raw HTML, script or dangerous link through", () => {
    const out = html(
      '<img src=x onerror="alert(1)"> <script>alert(2)</script> [x](javascript:alert(3)) [y](data:text/html,hi) ![z](https://example.com/t.png) <a href="javascript:alert(4)">a</a>',
    );
    expect(out).not.toMatch(/<img|<script|onerror|javascript:|data:text/i);
    expect(out).toContain('<a href="https://example.com/t.png"');
  });

  it("keeps only web and mail links", () => {
    expect(safeUrl("https://a.example/x")).toBe("https://a.example/x");
    expect(safeUrl("mailto:me@example.com")).toBe("mailto:me@example.com");
    expect(safeUrl("javascript:alert(1)")).toBe("");
    expect(safeUrl("JaVaScRiPt:alert(1)")).toBe("");
    expect(safeUrl("data:text/html,hi")).toBe("");
    expect(safeUrl("vbscript:x")).toBe("");
    expect(safeUrl("/relative")).toBe("");
  });

  it("shows a fence still being written as a code block already, so nothing jumps when it closes", () => {
    const open = html("Here:\n\n```js\nconst a = 1");
    const closed = html("Here:\n\n```js\nconst a = 1\n```");
    expect(open).toContain("<pre>");
    expect(open.replace(/<[^>]+>/g, "")).toContain("const a = 1");
    expect(open).toBe(closed);
  });
});
