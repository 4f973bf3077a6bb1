import { describe, expect, it } from "vitest";
import { Readable } from "node:stream";
import { ApiError } from "@connector/shared/clients/http";
import { handleAnalysisWatch } from "@connector/services/core/watch-analysis";
import { handleSubmitUrl } from "@connector/services/core/submit-url";
import { handleBlobCreated } from "@connector/services/core/submit-file";
import { RetryLaterError } from "@connector/shared/errors";
import { coreDeps, incident } from "./support/core-deps.ts";

const urlArtifact = { kind: "url" as const, artifactId: "url-bbbbbbbbbbbbbbbbbbbbbbbb", url: "https://example.com/q" };

describe("analysis watch ends the job instead of hanging", () => {
  const watch = (deadline: string) => ({ incident, artifactId: urlArtifact.artifactId, taskId: "t1", attempt: 3, deadline });
  async function submitted(report: () => Promise<never>) {
    const ctx = coreDeps({ report });
    await ctx.deps.jobs.create({ incidentId: incident.incidentId, artifactId: urlArtifact.artifactId, status: "queued", incident, artifact: urlArtifact });
    await ctx.deps.jobs.update(incident.incidentId, urlArtifact.artifactId, { status: "submitted", taskId: "t1" });
    return ctx;
  }

  it("publishes a timeout when the task is still unknown (404) at the deadline", async () => {
    const ctx = await submitted(() => Promise.reject(new ApiError("anyrun", "getReport", 404, "not found")));
    expect(await handleAnalysisWatch(watch("2026-12-01T09:00:00.000Z"), ctx.deps)).toBe("timeout");
    expect(ctx.recorded.events.map((e) => e.outcome)).toEqual(["timeout"]);
  });

  it("publishes a failure when the report cannot be read (403)", async () => {
    const ctx = await submitted(() => Promise.reject(new ApiError("anyrun", "getReport", 403, "forbidden")));
    expect(await handleAnalysisWatch(watch("2026-12-01T11:00:00.000Z"), ctx.deps)).toBe("failed");
    expect(ctx.recorded.events.map((e) => e.outcome)).toEqual(["failed"]);
  });

  it("never moves a job back from a terminal status it reached meanwhile", async () => {
    const ctx = coreDeps();
    await ctx.deps.jobs.create({ incidentId: incident.incidentId, artifactId: urlArtifact.artifactId, status: "queued", incident, artifact: urlArtifact });
    await ctx.deps.jobs.update(incident.incidentId, urlArtifact.artifactId, { status: "submitted", taskId: "t1" });
    // Enrichment finishes while the completion event is being published.
    ctx.deps.events.publishCompleted = async () => ctx.deps.jobs.update(incident.incidentId, urlArtifact.artifactId, { status: "enriched" });
    expect(await handleAnalysisWatch(watch("2026-12-01T11:00:00.000Z"), ctx.deps)).toBe("done");
    expect((await ctx.deps.jobs.get(incident.incidentId, urlArtifact.artifactId))?.status).toBe("enriched");
  });
});

describe("a 202 (queued) submission is never paid twice", () => {
  it("waits for the queued task in the history and adopts it", async () => {
    let submissions = 0;
    const ctx = coreDeps({ submit: async () => (submissions++, { kind: "queued" as const, queueTaskId: "q-1" }) });
    await ctx.deps.jobs.create({ incidentId: incident.incidentId, artifactId: urlArtifact.artifactId, status: "queued", incident, artifact: urlArtifact });
    const command = { incident, artifact: urlArtifact, attempt: 0 };
    expect(await handleSubmitUrl(command, ctx.deps)).toBe("retrying");
    expect(await ctx.deps.jobs.get(incident.incidentId, urlArtifact.artifactId)).toMatchObject({ status: "submission_uncertain", queueTaskId: "q-1" });

    // Not in the history yet: wait, do not submit again.
    expect(await handleSubmitUrl(ctx.recorded.scheduledCommands[0]!.command, ctx.deps)).toBe("retrying");
    expect(submissions).toBe(1);

    ctx.sandbox.history.push({ taskId: "real-task", url: urlArtifact.url });
    expect(await handleSubmitUrl(ctx.recorded.scheduledCommands[1]!.command, ctx.deps)).toBe("adopted");
    expect(submissions).toBe(1);
    expect(await ctx.deps.jobs.get(incident.incidentId, urlArtifact.artifactId)).toMatchObject({ status: "submitted", taskId: "real-task" });
  });
});

describe("a file without any hash is submitted only when it is what the script collected", () => {
  const file = { kind: "file" as const, artifactId: "file-cccccccccccccccccccccccc", fileName: "a.exe", directory: "C:\\t", hashes: {}, deviceId: "d".repeat(40) };
  const blobName = `${incident.incidentId}/${file.artifactId}/${"0".repeat(32)}.bin`;
  const event = { id: "e", eventType: "Microsoft.Storage.BlobCreated", subject: `/blobServices/default/containers/staging/blobs/${blobName}` };

  async function collecting(reportedSha256?: string) {
    const ctx = coreDeps();
    ctx.deps.staging.digest = async () => ({ etag: "0x1", size: 3, sha256: "a".repeat(64), sha1: "b".repeat(40), md5: "c".repeat(32) });
    ctx.deps.staging.openRead = async () => Readable.from([Buffer.from("abc")]);
    await ctx.deps.jobs.create({ incidentId: incident.incidentId, artifactId: file.artifactId, status: "queued", incident, artifact: file });
    await ctx.deps.jobs.update(incident.incidentId, file.artifactId, { status: reportedSha256 ? "uploaded" : "collecting", blobName, ...(reportedSha256 ? { reportedSha256 } : {}) });
    return ctx;
  }

  it("waits for the script's own hash while the collection is still being read", async () => {
    const ctx = await collecting();
    await expect(handleBlobCreated(event, ctx.deps)).rejects.toBeInstanceOf(RetryLaterError);
    expect(ctx.recorded.submissions).toEqual([]);
  });

  it("refuses a blob that differs from what the script reported (someone else used the upload URL)", async () => {
    const ctx = await collecting("f".repeat(64));
    expect(await handleBlobCreated(event, ctx.deps)).toBe("failed");
    expect(ctx.recorded.submissions).toEqual([]);
    expect([...ctx.recorded.comments.values()][0]).toContain("is not the one the endpoint script collected");
  });

  it("submits when the blob is the file the script collected", async () => {
    const ctx = await collecting("a".repeat(64));
    expect(await handleBlobCreated(event, ctx.deps)).toBe("submitted");
    expect(ctx.recorded.submissions).toEqual([{ kind: "file", target: "a.exe" }]);
  });
});
