import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { createAnyRunClient, type AnyRunClientOptions } from "@connector/shared/clients/anyrun";
import { HistoryInconclusiveError, type SandboxPort } from "../core/ports.ts";

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
      // Neither the history's order nor its date format is documented. Newest first (detected
      // from the dates), the search stops at the first page that reaches back before `since`, less
      // a margin for clock skew; otherwise it reads to the end of the history. It takes the newest
      // match after that point; when it cannot read the whole window it says so rather than
      // answer "not there", since that answer leads to a second, paid submission.
      const earliest = since.getTime() - 5 * 60_000;
      const wantedUrl = url === undefined ? undefined : comparableUrl(url);
      const wantedSha256 = sha256?.toLowerCase();
      let best: { uuid: string; date: number } | undefined;
      for (let page = 0; page < historyPageLimit; page++) {
        const tasks = await client.getHistory({ skip: page * historyPageSize, limit: historyPageSize });
        const dates: number[] = [];
        for (const t of tasks) {
          const date = historyDate(t.date);
          if (date !== undefined) dates.push(date);
          if (!t.uuid) continue;
          const sameUrl = wantedUrl !== undefined && t.name !== undefined && comparableUrl(t.name) === wantedUrl;
          const sameFile = wantedSha256 !== undefined && t.hashes?.sha256?.toLowerCase() === wantedSha256;
          if (!sameUrl && !sameFile) continue;
          // An unreadable date does not rule a match out: adopting beats paying twice.
          const at = date ?? Number.POSITIVE_INFINITY;
          if (at < earliest) continue;
          if (!best || at > best.date) best = { uuid: t.uuid, date: at };
        }
        if (tasks.length < historyPageSize) return best?.uuid;
        const newestFirst = dates.length >= 2 && dates[0]! >= dates[dates.length - 1]! && dates[0]! !== dates[dates.length - 1]!;
        if (newestFirst && dates[dates.length - 1]! < earliest) return best?.uuid;
      }
      if (best) return best.uuid;
      throw new HistoryInconclusiveError(historyPageLimit * historyPageSize);
    },
  };
}

const historyPageSize = 100;
/** 5,000 tasks: far more than one connector's work in flight, bounded so a look-up stays short. */
const historyPageLimit = 50;

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
