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
  };
}
