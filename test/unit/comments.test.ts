import { describe, expect, it } from "vitest";
import { commentLimit, escapeHtml, failureComment, noArtifactsComment, resultComment, startedComment } from "@connector/services/core/comments";
import type { FileArtifact, UrlArtifact } from "@connector/shared/messages";

const file: FileArtifact = {
  kind: "file",
  artifactId: "file-1",
  fileName: "<img src=x onerror=alert(1)>.exe",
  directory: "C:\\Users\\a",
  hashes: { sha256: "a".repeat(64) },
  deviceId: "b".repeat(40),
  hostName: "host-1",
};
const verdict = { threatLevel: 2, threatLevelText: "Malicious activity", score: 100 };

describe("comments", () => {
  it("escapes every dynamic value", () => {
    expect(escapeHtml(`<a href="x">'&`)).toBe("&lt;a href=&quot;x&quot;&gt;&#39;&amp;");
    const html = resultComment({
      artifact: file,
      taskUrl: "https://app.any.run/tasks/1",
      verdict,
      tags: ["<script>"],
      iocs: [{ type: "url", value: "http://e.com/<b>", reputation: 2 }],
    });
    expect(html).not.toContain("<img");
    expect(html).not.toContain("<script>");
    expect(html).toContain("&lt;img src=x onerror=alert(1)&gt;.exe");
    expect(html).toContain("http://e.com/&lt;b&gt;");
  });

  it("carries verdict text, threat level, score and task link", () => {
    const html = resultComment({ artifact: file, taskUrl: "https://app.any.run/tasks/abc", verdict, tags: ["trojan"], iocs: [] });
    expect(html).toContain("<td>Verdict</td><td>Malicious activity</td>");
    expect(html).toContain("<td>Threat level</td><td>2</td>");
    expect(html).toContain("<td>Score</td><td>100</td>");
    expect(html).toContain('<a href="https://app.any.run/tasks/abc">');
    expect(html).toContain("trojan");
  });

  it("cuts the IoC table, never the verdict, to stay within 30,000 characters", () => {
    const iocs = Array.from({ length: 2000 }, (_, i) => ({ type: "domain", value: `host-${i}.example.com`, reputation: i % 3 }));
    const html = resultComment({ artifact: file, taskUrl: "https://app.any.run/tasks/abc", verdict, tags: [], iocs });
    expect(html.length).toBeLessThanOrEqual(commentLimit);
    expect(html).toContain("Malicious activity");
    expect(html).toMatch(/\d+ more IoC\(s\) not shown/);
    // Malicious rows come first, so what is cut is the least important.
    expect(html).toContain("<td>malicious</td>");
    expect(html).not.toContain("<td>unknown</td>");
  });

  it("lists analysed artifacts and hash-only ones with their reason", () => {
    const url: UrlArtifact = { kind: "url", artifactId: "url-1", url: "https://example.com/" };
    const html = startedComment(
      [url, { kind: "hash", artifactId: "hash-1", hashes: { md5: "c".repeat(32) }, reason: "hash only" }],
      [{ kind: "Url", reason: "not an http(s) URL" }],
    );
    expect(html).toContain("analysis started</b> for 1 artifact(s)");
    expect(html).toContain("https://example.com/");
    expect(html).toContain(`MD5 ${"c".repeat(32)}: hash only`);
    expect(html).toContain("Url (not an http(s) URL)");
  });

  it("says why an analysis failed", () => {
    expect(failureComment(file, "The device is Inactive.")).toContain("The device is Inactive.");
  });

  it("sums up ignored entities by reason, and keeps even thousands of them within the limit", () => {
    const ignored = [
      ...Array.from({ length: 300 }, () => ({ kind: "File", reason: "no hash to check the collected file against" })),
      { kind: "Url", reason: "not an http(s) URL" },
    ];
    expect(noArtifactsComment(ignored)).toBe(
      "<p><b>ANY.RUN Sandbox:</b> this incident has no URL or file the sandbox can analyse. Ignored: File (no hash to check the collected file against) ×300, Url (not an http(s) URL).</p>",
    );
    const many = Array.from({ length: 2000 }, (_, i) => ({ kind: "Url", reason: `not an http(s) URL: ftp://host${i}.example/${"x".repeat(20)}` }));
    expect(noArtifactsComment(many).length).toBeLessThanOrEqual(commentLimit);
    expect(startedComment([], many).length).toBeLessThanOrEqual(commentLimit);
  });

  it("names at most 50 artifacts over the per-incident limit and counts the rest, keeping the ignored entities", () => {
    const urls: UrlArtifact[] = Array.from({ length: 3000 }, (_, i) => ({ kind: "url", artifactId: `url-${i}`, url: `https://bulk.example/${i}` }));
    const html = startedComment(urls.slice(0, 25), [{ kind: "Url", reason: "not an http(s) URL" }], { max: 25, artifacts: urls.slice(25) });
    expect(html).toContain("<p>Not analysed: 2975 artifact(s) over the limit of 25 analysed artifacts per incident (MAX_ARTIFACTS_PER_INCIDENT):</p>");
    expect(html).toContain("<li>URL <code>https://bulk.example/74</code></li><li>and 2925 more</li></ul>");
    expect(html).not.toContain("https://bulk.example/75<");
    expect(html).toContain("<p>Ignored entities: Url (not an http(s) URL)</p>");
    expect(html).not.toContain("(truncated)");
  });

  it("cuts an overlong comment before a tag or character reference, never through one", () => {
    for (let pad = 0; pad < 12; pad++) {
      // The padding moves where the limit falls relative to the escaped text.
      const urls: UrlArtifact[] = Array.from({ length: 90 }, (_, i) => ({ kind: "url", artifactId: `url-${i}`, url: `https://x.example/${"p".repeat(pad)}${"&<".repeat(200)}${i}` }));
      const html = startedComment(urls, []);
      expect(html.length).toBeLessThanOrEqual(commentLimit);
      expect(html.endsWith("<p>(truncated)</p>")).toBe(true);
      const body = html.slice(0, -"<p>(truncated)</p>".length);
      expect(body).not.toMatch(/<[^>]*$/);
      expect(body).not.toMatch(/&[#A-Za-z0-9]*$/);
    }
  });
});
