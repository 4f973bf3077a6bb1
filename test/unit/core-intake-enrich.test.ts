import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { handleIncidentTrigger, commentIds } from "@connector/services/core/intake";
import { handleAnalysisWatch } from "@connector/services/core/watch-analysis";
import { handleAnalysisCompleted } from "@connector/services/core/enrich";
import { InvalidInputError, RetryLaterError } from "@connector/shared/errors";
import { ApiError } from "@connector/shared/clients/http";
import { coreDeps, incident } from "./support/core-deps.ts";

const trigger = JSON.parse(readFileSync(new URL("../fixtures/microsoft/sentinel-incident-trigger-body.COMPOSITE.json", import.meta.url), "utf8"));

function intakeDeps(ctx: ReturnType<typeof coreDeps>) {
  return { jobs: ctx.deps.jobs, bus: ctx.deps.bus, sentinel: ctx.deps.incidents, policy: ctx.deps.settings.intake, logger: ctx.deps.logger };
}

describe("intake", () => {
  it("analyses at most MAX_ARTIFACTS_PER_INCIDENT artifacts per incident, files first, and names the ones left out", async () => {
    const ctx = coreDeps();
    const policy = { maxArtifactsPerIncident: 3, collectFilesWithoutHash: false };
    const urls = Array.from({ length: 7 }, (_, i) => ({ kind: "Url", properties: { url: `https://bulk.example/${i}` } }));
    const device = "d".repeat(40);
    const file = { kind: "File", properties: { fileName: "dropper.exe", directory: "C:\\Users\\a", additionalData: { MdatpDeviceId: device } } };
    const hash = { kind: "FileHash", properties: { algorithm: "SHA256", hashValue: "e".repeat(64) } };
    const withEntities = (entities: unknown[]) => ({ ...trigger, object: { ...trigger.object, properties: { ...trigger.object.properties, relatedEntities: entities } } });
    const result = await handleIncidentTrigger(withEntities([...urls, file, hash]), { ...intakeDeps(ctx), policy });
    expect(result.published).toHaveLength(3);
    const jobs = await ctx.deps.jobs.listByIncident(trigger.object.name);
    // The detected file is never crowded out by links.
    expect(jobs.map((j) => j.artifact.kind).sort()).toEqual(["file", "url", "url"]);
    const started = ctx.recorded.comments.get(commentIds.started(trigger.object.name))!;
    expect(started).toContain("analysis started</b> for 3 artifact(s)");
    expect(started).toContain("<code>dropper.exe</code>");
    expect(started).toContain("over the limit of 3 analysed artifacts per incident");
    for (const i of [2, 3, 4, 5, 6]) expect(started).toContain(`https://bulk.example/${i}`);
    // A redelivery keeps the same three.
    const again = await handleIncidentTrigger(withEntities([...urls, file, hash]), { ...intakeDeps(ctx), policy });
    expect([...again.published, ...again.alreadyKnown].sort()).toEqual([...result.published].sort());
    // An update with new entities does not get a fresh budget.
    const update = await handleIncidentTrigger(
      { ...withEntities([{ kind: "Url", properties: { url: "https://new.example/" } }]), eventUniqueId: "update-event-1", objectEventType: "Update" },
      { ...intakeDeps(ctx), policy },
    );
    expect(update.published).toEqual([]);
    expect(await ctx.deps.jobs.listByIncident(trigger.object.name)).toHaveLength(3);
    // The update says what it left out in a comment of its own; the first comment still names the three.
    expect(ctx.recorded.comments.get(commentIds.started(trigger.object.name))).toBe(started);
    const updateComment = ctx.recorded.comments.get(commentIds.startedUpdate(trigger.object.name, "update-event-1"))!;
    expect(updateComment).toContain("for 0 more artifact(s) (the incident was updated)");
    expect(updateComment).toContain("https://new.example/");
  });

  it("does not let two triggers of the same incident taken in at once both spend its budget", async () => {
    const ctx = coreDeps();
    const policy = { maxArtifactsPerIncident: 3, collectFilesWithoutHash: false };
    const withUrls = (prefix: string, eventType: string) => ({
      ...trigger,
      objectEventType: eventType,
      object: { ...trigger.object, properties: { ...trigger.object.properties, relatedEntities: Array.from({ length: 3 }, (_, i) => ({ kind: "Url", properties: { url: `https://${prefix}.example/${i}` } })) } },
    });
    const [created, updated] = await Promise.all([
      handleIncidentTrigger(withUrls("first", "Create"), { ...intakeDeps(ctx), policy }),
      handleIncidentTrigger(withUrls("second", "Update"), { ...intakeDeps(ctx), policy }),
    ]);
    expect(created.published.length + updated.published.length).toBe(3);
    expect(ctx.recorded.commands).toHaveLength(3);
    expect(await ctx.deps.jobs.listByIncident(trigger.object.name)).toHaveLength(3);
  });

  it("gives an update with new entities its own started comment, and leaves the first one as it was", async () => {
    const ctx = coreDeps();
    const withUrls = (urls: string[], eventUniqueId: string, objectEventType: string) => ({
      ...trigger,
      eventUniqueId,
      objectEventType,
      object: { ...trigger.object, properties: { ...trigger.object.properties, relatedEntities: urls.map((url) => ({ kind: "Url", properties: { url } })) } },
    });
    await Promise.all([
      handleIncidentTrigger(withUrls(["https://a.example/", "https://b.example/"], "create-event", "Create"), intakeDeps(ctx)),
      handleIncidentTrigger(withUrls(["https://b.example/", "https://c.example/"], "update-event", "Update"), intakeDeps(ctx)),
    ]);
    const first = ctx.recorded.comments.get(commentIds.started(trigger.object.name))!;
    const update = ctx.recorded.comments.get(commentIds.startedUpdate(trigger.object.name, "update-event"))!;
    // Every artifact is named once, in the comment of the event that recorded it.
    const named = ["a", "b", "c"].map((x) => [first.includes(`https://${x}.example/`), update.includes(`https://${x}.example/`)]);
    for (const [inFirst, inUpdate] of named) expect(inFirst !== inUpdate).toBe(true);
    expect(first).toContain("https://a.example/");
    expect(update).toContain("https://c.example/");
    expect(ctx.recorded.commands).toHaveLength(3);
  });

  it("records one job per artifact, publishes one command and posts the started comment", async () => {
    const ctx = coreDeps();
    const result = await handleIncidentTrigger(trigger, intakeDeps(ctx));
    expect(result.published).toHaveLength(1);
    expect(ctx.recorded.commands).toEqual([expect.objectContaining({ attempt: 0, artifact: expect.objectContaining({ kind: "file", fileName: "eicar.com" }) })]);
    const jobs = await ctx.deps.jobs.listByIncident("33333333-3333-3333-3333-333333333333");
    expect(jobs.map((j) => j.status)).toEqual(["queued"]);
    expect(ctx.recorded.comments.get(commentIds.started("33333333-3333-3333-3333-333333333333"))).toContain("analysis started</b> for 1 artifact(s)");
  });

  it("publishes nothing again once the artifact's work has started", async () => {
    const ctx = coreDeps();
    await handleIncidentTrigger(trigger, intakeDeps(ctx));
    const [job] = await ctx.deps.jobs.listByIncident("33333333-3333-3333-3333-333333333333");
    await ctx.deps.jobs.update(job!.incidentId, job!.artifactId, { status: "collecting" });
    const again = await handleIncidentTrigger({ ...trigger, eventUniqueId: "a-later-update-event", objectEventType: "Update" }, intakeDeps(ctx));
    expect(again.alreadyKnown).toEqual([job!.artifactId]);
    expect(ctx.recorded.commands).toHaveLength(1);
    expect(ctx.recorded.comments.size).toBe(1);
  });

  it("reads the entities from the incident when the trigger carries none", async () => {
    const ctx = coreDeps();
    ctx.deps.incidents.listEntities = async () => [{ kind: "Url", properties: { url: "https://example.org/a" } }];
    const body = structuredClone(trigger);
    body.object.properties.relatedEntities = [];
    const result = await handleIncidentTrigger(body, intakeDeps(ctx));
    expect(result.entitiesFrom).toBe("api");
    expect(ctx.recorded.commands[0]?.artifact).toMatchObject({ kind: "url", url: "https://example.org/a" });
  });

  it("says so on the incident when nothing can be analysed", async () => {
    const ctx = coreDeps();
    const body = structuredClone(trigger);
    body.object.properties.relatedEntities = [{ kind: "Account", properties: { accountName: "bob" } }];
    await handleIncidentTrigger(body, intakeDeps(ctx));
    expect([...ctx.recorded.comments.values()][0]).toContain("no URL or file the sandbox can analyse");
    expect(ctx.recorded.commands).toEqual([]);
  });

  it("dead-letters a body that is not an incident trigger with a reason", async () => {
    const ctx = coreDeps();
    const err = await handleIncidentTrigger({ object: {} }, intakeDeps(ctx)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidInputError);
    expect(err).toMatchObject({ reason: "InvalidIncidentTrigger" });
    expect((err as Error).message).toMatch(/workspaceId/);
  });
});

const urlArtifact = { kind: "url" as const, artifactId: "url-aaaaaaaaaaaaaaaaaaaaaaaa", url: "https://example.com/" };

async function submittedJob(ctx: ReturnType<typeof coreDeps>) {
  await ctx.deps.jobs.create({ incidentId: incident.incidentId, artifactId: urlArtifact.artifactId, status: "queued", incident, artifact: urlArtifact });
  await ctx.deps.jobs.update(incident.incidentId, urlArtifact.artifactId, { status: "submitted", taskId: "t1", taskUrl: "https://app.any.run/tasks/t1" });
}

describe("analysis watch", () => {
  const watch = { incident, artifactId: urlArtifact.artifactId, taskId: "t1", attempt: 0, deadline: "2026-12-01T10:30:00.000Z" };

  it("polls again while the task runs and never reads a verdict from it", async () => {
    const ctx = coreDeps({ report: async () => ({ final: false, failed: false, taskUrl: "u", tags: [] }) });
    await submittedJob(ctx);
    expect(await handleAnalysisWatch(watch, ctx.deps)).toBe("pending");
    expect(ctx.recorded.analysisWatches.map((w) => w.watch.attempt)).toEqual([1]);
    expect(ctx.recorded.events).toEqual([]);
  });

  it("publishes the completion once the report is final, and a timeout past the deadline", async () => {
    const ctx = coreDeps();
    await submittedJob(ctx);
    expect(await handleAnalysisWatch(watch, ctx.deps)).toBe("done");
    expect(ctx.recorded.events).toEqual([{ incident, artifactId: urlArtifact.artifactId, taskId: "t1", outcome: "done" }]);
    expect(await handleAnalysisWatch(watch, ctx.deps)).toBe("skipped");

    const late = coreDeps({ report: async () => ({ final: false, failed: false, taskUrl: "u", tags: [] }) });
    await submittedJob(late);
    expect(await handleAnalysisWatch({ ...watch, deadline: "2026-12-01T09:00:00.000Z" }, late.deps)).toBe("timeout");
  });
});

describe("enrichment", () => {
  const event = (outcome: "done" | "failed" | "timeout" = "done") => ({ id: "e1", data: { incident, artifactId: urlArtifact.artifactId, taskId: "t1", outcome } });
  const iocs = [
    { type: "sha256", value: "a".repeat(64), reputation: 2 },
    { type: "domain", value: "evil.example.net", reputation: 1 },
    { type: "ip", value: "198.51.100.7", reputation: 0 },
    { type: "mutex", value: "Global\\x", reputation: 2 },
  ];

  it("writes verdict, labels and only malicious/suspicious indicators", async () => {
    const ctx = coreDeps({ iocs });
    await submittedJob(ctx);
    const result = await handleAnalysisCompleted(event(), ctx.deps);
    expect(result).toMatchObject({ outcome: "enriched", indicators: 2 });
    const comment = ctx.recorded.comments.get(commentIds.result(incident.incidentId, urlArtifact.artifactId))!;
    expect(comment).toContain("<td>Verdict</td><td>Malicious activity</td>");
    expect(comment).toContain("evil.example.net");
    expect(ctx.recorded.labels).toEqual(["ANY.RUN: Malicious activity", "trojan"]);
    expect(ctx.recorded.uploads[0]!.map((o) => o["pattern"])).toEqual([
      `[file:hashes.'SHA-256' = '${"a".repeat(64)}']`,
      "[domain-name:value = 'evil.example.net']",
    ]);
  });

  it("uploads nothing for a clean verdict", async () => {
    const ctx = coreDeps({
      iocs,
      report: async () => ({ final: true, failed: false, taskUrl: "https://app.any.run/tasks/t1", verdict: { threatLevel: 0, threatLevelText: "No threats detected", score: 37 }, tags: [] }),
    });
    await submittedJob(ctx);
    await handleAnalysisCompleted(event(), ctx.deps);
    expect(ctx.recorded.uploads).toEqual([]);
    expect(ctx.recorded.labels).toEqual(["ANY.RUN: No threats detected"]);
  });

  it("is a no-op for a repeated event, and splits large indicator sets into requests of at most 100", async () => {
    const many = Array.from({ length: 250 }, (_, i) => ({ type: "domain", value: `host${i}.example.net`, reputation: 2 }));
    const ctx = coreDeps({ iocs: many });
    await submittedJob(ctx);
    await handleAnalysisCompleted(event(), ctx.deps);
    expect(ctx.recorded.uploads.map((u) => u.length)).toEqual([100, 100, 50]);
    expect(await handleAnalysisCompleted(event(), ctx.deps)).toEqual({ outcome: "skipped" });
    expect(ctx.recorded.uploads).toHaveLength(3);
    expect(ctx.recorded.comments.size).toBe(1);
  });

  it("lets one delivery enrich at a time: a concurrent one is retried later and then finds the work done", async () => {
    const ctx = coreDeps({ iocs });
    await submittedJob(ctx);
    const upload = ctx.deps.threatIntel.uploadStixObjects;
    let release!: () => void;
    const slow = new Promise<void>((resolve) => (release = resolve));
    ctx.deps.threatIntel.uploadStixObjects = async (...args) => {
      await slow; // Sentinel TI answers slowly; Event Grid times the delivery out and delivers again.
      return upload(...args);
    };
    const first = handleAnalysisCompleted(event(), ctx.deps);
    await new Promise((r) => setTimeout(r, 20));
    await expect(handleAnalysisCompleted(event(), ctx.deps)).rejects.toBeInstanceOf(RetryLaterError);
    release();
    expect(await first).toMatchObject({ outcome: "enriched", indicators: 2 });
    expect(await handleAnalysisCompleted(event(), ctx.deps)).toEqual({ outcome: "skipped" });
    expect(ctx.recorded.uploads).toHaveLength(1);
  });

  it("does not upload the indicator set again when a crash came after the upload, and a stale claim is taken over", async () => {
    const clock = { t: Date.parse("2026-12-04T08:00:00Z") };
    const ctx = coreDeps({ iocs });
    ctx.deps.now = () => new Date(clock.t);
    await submittedJob(ctx);
    const update = ctx.deps.jobs.update.bind(ctx.deps.jobs);
    let killed = false;
    ctx.deps.jobs.update = async (incidentId, artifactId, patch, ifMatch) => {
      // From the last write on the process is gone: nothing it would still write lands.
      if (patch.status === "enriched" || killed) {
        killed = true;
        throw new Error("host killed before the last write");
      }
      return update(incidentId, artifactId, patch, ifMatch);
    };
    await expect(handleAnalysisCompleted(event(), ctx.deps)).rejects.toThrow(/host killed/);
    ctx.deps.jobs.update = update;
    // The crashed delivery's claim holds for a minute, then the retry takes it over.
    await expect(handleAnalysisCompleted(event(), ctx.deps)).rejects.toBeInstanceOf(RetryLaterError);
    clock.t += 61_000;
    expect(await handleAnalysisCompleted(event(), ctx.deps)).toMatchObject({ outcome: "enriched", indicators: 2 });
    expect(ctx.recorded.uploads).toHaveLength(1);
    expect(ctx.recorded.comments.size).toBe(1);
  });

  it("gives the claim back when an attempt fails, so its retry need not wait", async () => {
    const ctx = coreDeps({ iocs });
    await submittedJob(ctx);
    const putComment = ctx.deps.incidents.putComment;
    ctx.deps.incidents.putComment = async () => {
      throw new ApiError("sentinel", "putComment", 503, "unavailable");
    };
    await expect(handleAnalysisCompleted(event(), ctx.deps)).rejects.toThrow(/unavailable/);
    ctx.deps.incidents.putComment = putComment;
    expect(await handleAnalysisCompleted(event(), ctx.deps)).toMatchObject({ outcome: "enriched" });
  });

  it("still labels the incident and uploads indicators when the incident holds 100 comments, and retries other failures", async () => {
    const ctx = coreDeps({ iocs });
    await submittedJob(ctx);
    // 100 comments already (analysts'), and Sentinel refuses a new one with a 400.
    for (let i = 0; i < 100; i++) ctx.recorded.comments.set(`analyst-${i}`, "note");
    ctx.deps.incidents.putComment = async () => {
      throw new ApiError("sentinel", "putComment", 400, "An incident can have at most 100 comments.", "BadRequest");
    };
    expect(await handleAnalysisCompleted(event(), ctx.deps)).toMatchObject({ outcome: "enriched", indicators: 2 });
    expect(ctx.recorded.labels).toEqual(["ANY.RUN: Malicious activity", "trojan"]);
    expect(ctx.recorded.uploads).toHaveLength(1);

    // Any other 400 (a wrong API version, a bad body) is not swallowed: it is retried and surfaces.
    const wrong = coreDeps({ iocs });
    await submittedJob(wrong);
    wrong.deps.incidents.putComment = async () => {
      throw new ApiError("sentinel", "putComment", 400, "The api-version is invalid.", "InvalidApiVersionParameter");
    };
    await expect(handleAnalysisCompleted(event(), wrong.deps)).rejects.toMatchObject({ status: 400 });

    const busy = coreDeps({ iocs });
    await submittedJob(busy);
    busy.deps.incidents.putComment = async () => {
      throw new ApiError("sentinel", "putComment", 503, "busy");
    };
    await expect(handleAnalysisCompleted(event(), busy.deps)).rejects.toMatchObject({ status: 503 });
    expect(busy.recorded.labels).toEqual([]);
  });

  it("reports a failed or timed-out task on the incident", async () => {
    const ctx = coreDeps();
    await submittedJob(ctx);
    expect(await handleAnalysisCompleted(event("timeout"), ctx.deps)).toEqual({ outcome: "failed" });
    expect(ctx.recorded.comments.get(commentIds.failure(incident.incidentId, urlArtifact.artifactId))).toContain("did not finish before the connector&#39;s deadline");
  });
});
