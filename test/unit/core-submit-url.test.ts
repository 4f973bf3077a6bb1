import { describe, expect, it } from "vitest";
import { ApiError } from "@connector/shared/clients/http";
import { InvalidInputError } from "@connector/shared/errors";
import { handleSubmitUrl } from "@connector/services/core/submit-url";
import { commentIds } from "@connector/services/core/intake";
import { HistoryInconclusiveError } from "@connector/services/core/ports";
import { coreDeps, incident } from "./support/core-deps.ts";

const artifact = { kind: "url" as const, artifactId: "url-0123456789abcdef01234567", url: "https://example.com/x" };
const command = { incident, artifact, attempt: 0 };

async function withJob(status: "queued" | "submitting" | "submission_uncertain" | "submitted" = "queued", sandbox = {}) {
  const ctx = coreDeps(sandbox);
  await ctx.deps.jobs.create({ incidentId: incident.incidentId, artifactId: artifact.artifactId, status: "queued", incident, artifact });
  if (status !== "queued") await ctx.deps.jobs.update(incident.incidentId, artifact.artifactId, { status });
  return ctx;
}

describe("URL submission", () => {
  it("submits once, records the task and schedules its first poll", async () => {
    const { deps, recorded } = await withJob();
    expect(await handleSubmitUrl(command, deps)).toBe("submitted");
    expect(recorded.submissions).toEqual([{ kind: "url", target: "https://example.com/x" }]);
    const job = await deps.jobs.get(incident.incidentId, artifact.artifactId);
    expect(job).toMatchObject({ status: "submitted", taskId: "task-1", taskUrl: "https://app.any.run/tasks/task-1" });
    expect(recorded.analysisWatches).toHaveLength(1);
    expect(recorded.analysisWatches[0]!.at.toISOString()).toBe("2026-12-01T10:00:30.000Z");
    expect(recorded.analysisWatches[0]!.watch.deadline).toBe("2026-12-01T10:30:00.000Z");
  });

  it("does nothing when the same command comes again after the submission", async () => {
    const { deps, recorded } = await withJob();
    await handleSubmitUrl(command, deps);
    expect(await handleSubmitUrl(command, deps)).toBe("skipped");
    expect(recorded.submissions).toHaveLength(1);
  });

  it("marks a 5xx as uncertain and adopts the task the history shows instead of paying twice", async () => {
    let calls = 0;
    const ctx = await withJob("queued", {
      submit: async () => {
        calls++;
        throw new ApiError("anyrun", "submitUrl", 502, "bad gateway");
      },
    });
    expect(await handleSubmitUrl(command, ctx.deps)).toBe("retrying");
    expect((await ctx.deps.jobs.get(incident.incidentId, artifact.artifactId))?.status).toBe("submission_uncertain");
    expect(ctx.recorded.scheduledCommands.map((c) => c.command.attempt)).toEqual([1]);

    ctx.sandbox.history.push({ taskId: "created-anyway", url: artifact.url });
    expect(await handleSubmitUrl(ctx.recorded.scheduledCommands[0]!.command, ctx.deps)).toBe("adopted");
    expect(calls).toBe(1);
    expect(await ctx.deps.jobs.get(incident.incidentId, artifact.artifactId)).toMatchObject({ status: "submitted", taskId: "created-anyway" });
  });

  it("resubmits an uncertain submission only when the history does not have it", async () => {
    let calls = 0;
    const ctx = await withJob("submission_uncertain", {
      submit: async () => ({ kind: "task" as const, taskId: `t${++calls}` }),
    });
    expect(await handleSubmitUrl(command, ctx.deps)).toBe("submitted");
    expect(calls).toBe(1);
  });

  it("reports an uncertain submission it cannot check in the history instead of paying again", async () => {
    let calls = 0;
    const ctx = await withJob("submission_uncertain", {
      submit: async () => ({ kind: "task" as const, taskId: `t${++calls}` }),
    });
    ctx.deps.sandbox.findTask = async () => {
      throw new HistoryInconclusiveError(5000);
    };
    expect(await handleSubmitUrl(command, ctx.deps)).toBe("failed");
    expect(calls).toBe(0);
    const comment = ctx.recorded.comments.get(commentIds.failure(incident.incidentId, artifact.artifactId));
    expect(comment).toContain("could not be searched back to the submission (read 5000 tasks), so it was not submitted again");
  });

  it("waits while another delivery may still be submitting (within the grace period)", async () => {
    const ctx = await withJob("submitting");
    ctx.deps.now = () => new Date(Date.now() + 5_000);
    expect(await handleSubmitUrl(command, ctx.deps)).toBe("retrying");
    expect(ctx.recorded.submissions).toEqual([]);
    expect((await ctx.deps.jobs.get(incident.incidentId, artifact.artifactId))?.status).toBe("submitting");
  });

  it("backs off on 429 honouring Retry-After, and gives up with a comment when the budget is spent", async () => {
    const ctx = await withJob("queued", { submit: async () => Promise.reject(new ApiError("anyrun", "submitUrl", 429, "no free slot", undefined, 120)) });
    expect(await handleSubmitUrl(command, ctx.deps)).toBe("retrying");
    expect(ctx.recorded.scheduledCommands[0]!.at.getTime() - ctx.deps.now!().getTime()).toBeGreaterThanOrEqual(120_000);
    expect((await ctx.deps.jobs.get(incident.incidentId, artifact.artifactId))?.status).toBe("queued");

    expect(await handleSubmitUrl({ ...command, attempt: 4 }, ctx.deps)).toBe("failed");
    const comment = ctx.recorded.comments.get(commentIds.failure(incident.incidentId, artifact.artifactId));
    expect(comment).toContain("Gave up after 5 attempts: anyrun answered HTTP 429");
  });

  it("fails with one clear comment when the sandbox refuses the URL (4xx)", async () => {
    const ctx = await withJob("queued", { submit: async () => Promise.reject(new ApiError("anyrun", "submitUrl", 400, "obj_url is invalid")) });
    expect(await handleSubmitUrl(command, ctx.deps)).toBe("failed");
    expect((await ctx.deps.jobs.get(incident.incidentId, artifact.artifactId))?.status).toBe("failed");
    expect([...ctx.recorded.comments.values()][0]).toContain("The sandbox refused the URL (400");
    expect(ctx.recorded.scheduledCommands).toEqual([]);
  });

  it("leaves a valid command of the other kind alone (a subscription without its filter), without dead-lettering it", async () => {
    const { deps, recorded } = coreDeps();
    const file = { kind: "file" as const, artifactId: "file-1", fileName: "a.exe", directory: "C:\\t", hashes: {}, deviceId: "d".repeat(40) };
    expect(await handleSubmitUrl({ incident, artifact: file, attempt: 0 }, deps)).toBe("skipped");
    expect(recorded.submissions).toEqual([]);
  });

  it("rejects a malformed command as invalid input, naming the field", async () => {
    const { deps } = coreDeps();
    await expect(handleSubmitUrl({ incident, artifact: { kind: "url" } }, deps)).rejects.toThrow(InvalidInputError);
    await expect(handleSubmitUrl({ incident, artifact: { kind: "url" } }, deps)).rejects.toThrow(/artifact/);
    await expect(handleSubmitUrl(command, deps)).rejects.toMatchObject({ reason: "UnknownJob" });
  });
});
