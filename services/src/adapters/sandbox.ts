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
      const earliest = since.getTime() - 5 * 60_000;
      // History is newest first; three pages of 100 cover far more than one connector's in-flight work.
      for (let page = 0; page < 3; page++) {
        const tasks = await client.getHistory({ skip: page * 100, limit: 100 });
        for (const t of tasks) {
          const date = t.date ? Date.parse(t.date) : Number.NaN;
          if (!Number.isNaN(date) && date < earliest) return undefined;
          const sameUrl = url !== undefined && t.name === url;
          const sameFile = sha256 !== undefined && t.hashes?.sha256?.toLowerCase() === sha256.toLowerCase();
          if ((sameUrl || sameFile) && t.uuid) return t.uuid;
        }
        if (tasks.length < 100) return undefined;
      }
      return undefined;
    },
  };
}
