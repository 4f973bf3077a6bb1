import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ServiceBusClient } from "@azure/service-bus";
import { ApiError } from "@connector/shared/clients/http";
import { newStagingBlobName } from "@connector/shared/staging";
import { handleSubmitUrl } from "@connector/services/core/submit-url";
import { handleBlobCreated } from "@connector/services/core/submit-file";
import { commentIds, handleIncidentTrigger } from "@connector/services/core/intake";
import { startServiceBusBroker } from "@connector/local/servicebus/index";
import { coreDeps, incident } from "../unit/support/core-deps.ts";

/**
 * The faults the campaigns found, pinned down one by one: crash windows in the cores, and the
 * settlement bug of the AMQP library under the local functions host.
 */

describe("crash windows found by the crash campaign", () => {
  const artifact = { kind: "url" as const, artifactId: "url-0123456789abcdef01234567", url: "https://example.com/x" };

  it("a URL job recorded as submitted whose first poll was never scheduled gets it when the command comes again", async () => {
    const ctx = coreDeps();
    await ctx.deps.jobs.create({ incidentId: incident.incidentId, artifactId: artifact.artifactId, status: "queued", incident, artifact });
    const schedule = ctx.deps.bus.scheduleAnalysisWatch;
    // The host dies between recording the task and scheduling its first poll.
    ctx.deps.bus.scheduleAnalysisWatch = async () => {
      throw new Error("host killed");
    };
    await expect(handleSubmitUrl({ incident, artifact, attempt: 0 }, ctx.deps)).rejects.toThrow("host killed");
    expect(await ctx.deps.jobs.get(incident.incidentId, artifact.artifactId)).toMatchObject({ status: "submitted", taskId: "task-1" });
    ctx.deps.bus.scheduleAnalysisWatch = schedule;

    expect(await handleSubmitUrl({ incident, artifact, attempt: 0 }, ctx.deps)).toBe("skipped");
    expect(ctx.recorded.submissions).toHaveLength(1);
    expect(ctx.recorded.analysisWatches.map((w) => [w.watch.taskId, w.watch.attempt])).toEqual([["task-1", 0]]);
  });

  it("a file job recorded as submitted gets its first poll and loses its staged blob when BlobCreated comes again", async () => {
    const ctx = coreDeps();
    const file = { kind: "file" as const, artifactId: "file-0123456789abcdef01234567", fileName: "a.exe", directory: "C:\\x", hashes: {}, deviceId: "a".repeat(40) };
    const blobName = newStagingBlobName(incident.incidentId, file.artifactId);
    await ctx.deps.jobs.create({ incidentId: incident.incidentId, artifactId: file.artifactId, status: "submitted", incident, artifact: file, blobName, taskId: "task-9", taskUrl: "https://app.any.run/tasks/task-9" });
    const deleted: string[] = [];
    ctx.deps.staging.delete = async (name) => void deleted.push(name);

    const outcome = await handleBlobCreated({ eventType: "Microsoft.Storage.BlobCreated", subject: `/blobServices/default/containers/staging/blobs/${blobName}`, id: "e1" }, ctx.deps);
    expect(outcome).toBe("skipped");
    expect(ctx.recorded.analysisWatches.map((w) => [w.watch.taskId, w.watch.attempt])).toEqual([["task-9", 0]]);
    expect(deleted).toEqual([blobName]);
    expect(ctx.recorded.submissions).toEqual([]);
  });

  it("the started comment is posted by the redelivery when the first delivery failed after recording the jobs", async () => {
    const trigger = JSON.parse(readFileSync(new URL("../fixtures/microsoft/sentinel-incident-trigger-body.COMPOSITE.json", import.meta.url), "utf8"));
    const ctx = coreDeps();
    const deps = { jobs: ctx.deps.jobs, bus: ctx.deps.bus, sentinel: { ...ctx.deps.incidents }, policy: ctx.deps.settings.intake, logger: ctx.deps.logger };
    const put = deps.sentinel.putComment;
    deps.sentinel.putComment = async () => {
      throw new ApiError("sentinel", "putComment", 503, "injected");
    };
    await expect(handleIncidentTrigger(trigger, deps)).rejects.toThrow(/503/);
    deps.sentinel.putComment = put;

    await handleIncidentTrigger(trigger, deps);
    expect(ctx.recorded.comments.get(commentIds.started("33333333-3333-3333-3333-333333333333"))).toContain("analysis started");
    expect(ctx.recorded.commands).toHaveLength(2); // the second is dropped by duplicate detection (same message id)
  });
});

describe("settlements in one tick (rhea 3.0.5 disposition merging, patched in test/local/servicebus/rhea-dispositions.ts)", () => {
  it("keeps an abandon that is settled in the same tick as a complete, and each dead letter's own reason", async () => {
    const broker = await startServiceBusBroker({ queues: [{ name: "q", lockDurationSeconds: 30 }] });
    const client = new ServiceBusClient(broker.connectionString);
    const sender = client.createSender("q");
    const receiver = client.createReceiver("q");
    try {
      for (const id of ["a", "b", "c", "d"]) await sender.sendMessages({ body: { id }, messageId: id });
      const [a, b, c, d] = await receiver.receiveMessages(4, { maxWaitTimeInMs: 2000 });
      expect([a, b, c, d].map((m) => m?.messageId)).toEqual(["a", "b", "c", "d"]);
      await Promise.all([receiver.completeMessage(a!), receiver.abandonMessage(b!)]);
      expect(broker.stats("q").active).toBe(3); // b is back (c, d still locked)
      await Promise.all([
        receiver.deadLetterMessage(c!, { deadLetterReason: "ReasonC", deadLetterErrorDescription: "about c" }),
        receiver.deadLetterMessage(d!, { deadLetterReason: "ReasonD", deadLetterErrorDescription: "about d" }),
      ]);
      expect(broker.deadLetters("q").map((m) => [m.messageId, m.deadLetterReason, m.deadLetterErrorDescription])).toEqual([
        ["c", "ReasonC", "about c"],
        ["d", "ReasonD", "about d"],
      ]);
    } finally {
      await receiver.close();
      await sender.close();
      await client.close();
      await broker.close();
    }
  });
});
