import type { Artifact, FileArtifact, HashOnlyArtifact } from "@connector/shared/messages";

/**
 * The HTML of every comment the connector posts. Sentinel renders comment HTML, so every dynamic
 * value (file names, URLs, IoCs, tags — all attacker-influenced) is escaped, and every comment
 * stays within Sentinel's 30,000-character limit: the IoC table is cut, never the verdict.
 */

export const commentLimit = 30_000;

export function escapeHtml(value: unknown): string {
  return String(value)
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

function hashText(a: FileArtifact | HashOnlyArtifact): string {
  const h = a.hashes;
  return h.sha256 ? `SHA-256 ${h.sha256}` : h.sha1 ? `SHA-1 ${h.sha1}` : h.md5 ? `MD5 ${h.md5}` : "no hash";
}

export function describeArtifact(a: Artifact): string {
  switch (a.kind) {
    case "url":
      return `URL <code>${escapeHtml(a.url)}</code>`;
    case "file":
      return `File <code>${escapeHtml(a.fileName)}</code> on ${escapeHtml(a.hostName ?? a.deviceId)} (${escapeHtml(hashText(a))})`;
    case "hash":
      return `File hash ${escapeHtml(hashText(a))}${a.fileName ? ` (<code>${escapeHtml(a.fileName)}</code>)` : ""}`;
  }
}

/** Over-limit artifacts named one by one; the rest are counted, so the comment keeps its other parts. */
const overLimitNamed = 50;

export function startedComment(
  artifacts: readonly Artifact[],
  ignored: readonly { kind: string; reason: string }[],
  limit?: { max: number; artifacts: readonly Artifact[] },
  options: { update?: boolean } = {},
): string {
  const analysed = artifacts.filter((a) => a.kind !== "hash");
  const hashOnly = artifacts.filter((a): a is HashOnlyArtifact => a.kind === "hash");
  const parts = [
    options.update
      ? `<p><b>ANY.RUN Sandbox: analysis started</b> for ${analysed.length} more artifact(s) (the incident was updated).</p>`
      : `<p><b>ANY.RUN Sandbox: analysis started</b> for ${analysed.length} artifact(s).</p>`,
  ];
  if (analysed.length) parts.push(`<ul>${analysed.map((a) => `<li>${describeArtifact(a)}</li>`).join("")}</ul>`);
  if (hashOnly.length) {
    parts.push(
      `<p>Not analysed (no Live Response possible):</p><ul>${hashOnly
        .map((a) => `<li>${describeArtifact(a)}: ${escapeHtml(a.reason)}</li>`)
        .join("")}</ul>`,
    );
  }
  // Before the over-limit list, the longest and least important part, which a cut would take first.
  if (ignored.length) parts.push(`<p>Ignored entities: ${ignoredText(ignored)}</p>`);
  if (limit?.artifacts.length) {
    const named = limit.artifacts.slice(0, overLimitNamed);
    const more = limit.artifacts.length - named.length;
    parts.push(
      `<p>Not analysed: ${limit.artifacts.length} artifact(s) over the limit of ${limit.max} analysed artifacts per incident (MAX_ARTIFACTS_PER_INCIDENT):</p><ul>${named
        .map((a) => `<li>${describeArtifact(a)}</li>`)
        .join("")}${more ? `<li>and ${more} more</li>` : ""}</ul>`,
    );
  }
  return fit(parts.join(""));
}

export function noArtifactsComment(ignored: readonly { kind: string; reason: string }[]): string {
  const detail = ignored.length ? ` Ignored: ${ignoredText(ignored)}.` : "";
  return fit(`<p><b>ANY.RUN Sandbox:</b> this incident has no URL or file the sandbox can analyse.${detail}</p>`);
}

/** "File (reason) ×300, Url (reason)": one entry per kind and reason, however many entities share it. */
function ignoredText(ignored: readonly { kind: string; reason: string }[]): string {
  const counts = new Map<string, { kind: string; reason: string; n: number }>();
  for (const i of ignored) {
    const key = `${i.kind}\u0000${i.reason}`;
    const entry = counts.get(key) ?? { ...i, n: 0 };
    entry.n++;
    counts.set(key, entry);
  }
  return [...counts.values()].map((c) => `${escapeHtml(c.kind)} (${escapeHtml(c.reason)})${c.n > 1 ? ` ×${c.n}` : ""}`).join(", ");
}

export interface IocRow {
  type: string;
  value: string;
  reputation: number;
}

const reputationText: Record<number, string> = { 0: "unknown", 1: "suspicious", 2: "malicious" };

export interface ResultCommentInput {
  artifact: Artifact;
  taskUrl: string;
  verdict: { threatLevel: number; threatLevelText: string; score: number };
  tags: readonly string[];
  iocs: readonly IocRow[];
  sandboxEnvironment?: string;
}

export function resultComment(input: ResultCommentInput): string {
  const { verdict } = input;
  const head = [
    `<p><b>ANY.RUN Sandbox verdict: ${escapeHtml(verdict.threatLevelText)}</b></p>`,
    `<p>${describeArtifact(input.artifact)}</p>`,
    `<table><tr><td>Verdict</td><td>${escapeHtml(verdict.threatLevelText)}</td></tr>`,
    `<tr><td>Threat level</td><td>${escapeHtml(verdict.threatLevel)}</td></tr>`,
    `<tr><td>Score</td><td>${escapeHtml(verdict.score)}</td></tr>`,
    input.tags.length ? `<tr><td>Tags</td><td>${input.tags.map(escapeHtml).join(", ")}</td></tr>` : "",
    input.sandboxEnvironment ? `<tr><td>Environment</td><td>${escapeHtml(input.sandboxEnvironment)}</td></tr>` : "",
    `<tr><td>Task</td><td><a href="${escapeHtml(input.taskUrl)}">${escapeHtml(input.taskUrl)}</a></td></tr></table>`,
  ].join("");
  const sorted = [...input.iocs].sort((a, b) => b.reputation - a.reputation);
  if (!sorted.length) return fit(head + "<p>No IoCs reported.</p>");
  const tableStart = `<p>IoCs (${sorted.length}):</p><table><tr><th>Type</th><th>Value</th><th>Reputation</th></tr>`;
  const rows = sorted.map(
    (i) => `<tr><td>${escapeHtml(i.type)}</td><td><code>${escapeHtml(i.value)}</code></td><td>${escapeHtml(reputationText[i.reputation] ?? i.reputation)}</td></tr>`,
  );
  // Keep as many rows as fit, leaving room for the closing tag and the "more" note.
  const reserve = 200;
  let body = head + tableStart;
  let kept = 0;
  for (const row of rows) {
    if (body.length + row.length + reserve > commentLimit) break;
    body += row;
    kept++;
  }
  body += "</table>";
  if (kept < rows.length) body += `<p>${rows.length - kept} more IoC(s) not shown; see the task report.</p>`;
  return fit(body);
}

export function failureComment(artifact: Artifact, reason: string, taskUrl?: string): string {
  return fit(
    `<p><b>ANY.RUN Sandbox: analysis failed</b></p><p>${describeArtifact(artifact)}</p><p>${escapeHtml(reason)}</p>` +
      (taskUrl ? `<p>Task: <a href="${escapeHtml(taskUrl)}">${escapeHtml(taskUrl)}</a></p>` : ""),
  );
}

/** Last-resort guard: a comment over the limit is cut (only the started/failure comments can get here). */
function fit(html: string): string {
  if (html.length <= commentLimit) return html;
  // Cut before a tag or character reference the limit would split.
  const cut = html.slice(0, commentLimit - 20).replace(/<[^>]*$/, "").replace(/&[#A-Za-z0-9]*$/, "");
  return cut + "<p>(truncated)</p>";
}
