import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { createAnyRunClient, type AnyRunClientOptions } from "@connector/shared/clients/anyrun";
import type { SandboxPort } from "../core/ports.ts";

/** The ANY.RUN client seen through the port the cores use. */
export function createSandboxPort(options: AnyRunClientOptions & { appUrl?: string }): SandboxPort {
  const client = createAnyRunClient(options);
  const appUrl = options.appUrl ?? "https://app.any.run";
  const taskUrl = (taskId: string) => `${appUrl}/tasks/${taskId}`;
  return {
    submitUrl: (url, opts) => client.submitUrl(url, opts),
    submitFile: (file, opts) =>
      client.submitFile(
        {
          fileName: file.fileName,
          content: Readable.toWeb(Readable.from(file.content as AsyncIterable<Buffer>)) as unknown as ReadableStream<Uint8Array> & WebReadableStream<Uint8Array>,
          size: file.size,
        },
        opts,
      ),
    async getReport(taskId) {
      const { outcome } = await client.getReport(taskId);
      if (outcome.state !== "done") return { final: false, failed: outcome.state === "failed", taskUrl: taskUrl(taskId), tags: [] };
      return {
        final: true,
        failed: false,
        taskUrl: outcome.permanentUrl?.replace(/\/$/, "") ?? taskUrl(taskId),
        verdict: { threatLevel: outcome.verdict.threatLevel, threatLevelText: outcome.verdict.threatLevelText, score: outcome.verdict.score },
        tags: outcome.tags,
      };
    },
    async getIocs(taskId) {
      return (await client.getIocs(taskId)).map((i) => ({ type: i.type, value: i.ioc, reputation: i.reputation }));
    },
    taskUrl,
    async findTask({ url, sha256, since }) {
      // Neither the history's order nor its date format is documented: read a bounded window
      // (three pages of 100, far more than one connector's in-flight work) whole and take the
      // newest match submitted after `since`, less a margin for clock skew.
      const earliest = since.getTime() - 5 * 60_000;
      const wantedUrl = url === undefined ? undefined : comparableUrl(url);
      const wantedSha256 = sha256?.toLowerCase();
      let best: { uuid: string; date: number } | undefined;
      for (let page = 0; page < 3; page++) {
        const tasks = await client.getHistory({ skip: page * 100, limit: 100 });
        for (const t of tasks) {
          if (!t.uuid) continue;
          const sameUrl = wantedUrl !== undefined && t.name !== undefined && comparableUrl(t.name) === wantedUrl;
          const sameFile = wantedSha256 !== undefined && t.hashes?.sha256?.toLowerCase() === wantedSha256;
          if (!sameUrl && !sameFile) continue;
          // An unreadable date does not rule a match out: adopting beats paying twice.
          const date = historyDate(t.date) ?? Number.POSITIVE_INFINITY;
          if (date < earliest) continue;
          if (!best || date > best.date) best = { uuid: t.uuid, date };
        }
        if (tasks.length < 100) break;
      }
      return best?.uuid;
    },
  };
}

/** URLs compared as the WHATWG parser writes them (the sandbox may add a trailing slash or lower-case the host). */
function comparableUrl(value: string): string {
  try {
    return new URL(value.trim()).href;
  } catch {
    return value.trim();
  }
}

/** A history date in milliseconds: an ISO/HTTP date string, or epoch seconds or milliseconds. */
export function historyDate(value: string | number | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value === "number") return Number.isFinite(value) ? (value < 1e11 ? value * 1000 : value) : undefined;
  const parsed = Date.parse(value);
  if (!Number.isNaN(parsed)) return parsed;
  return /^\d+$/.test(value.trim()) ? historyDate(Number(value)) : undefined;
}
