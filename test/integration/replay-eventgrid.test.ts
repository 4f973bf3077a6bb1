import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AzureKeyCredential, EventGridPublisherClient } from "@azure/eventgrid";
import { BlobServiceClient, type ContainerClient } from "@azure/storage-blob";
import type { EventGridEvent } from "@azure/functions";
import { createLogger } from "@connector/shared/logger";
import type { EventGridFunctionDefinition } from "@connector/shared/function-definition";
import { eventGridTopics, eventTypes, storageDefaults } from "@connector/shared/topology";
import { EventGridDeadLetters } from "@connector/shared/replay/eventgrid";
import { inProcessRedelivery } from "@connector/services/replay/redeliver";
import { startAzurite, type AzuriteInstance } from "@connector/local/azurite";
import { DeliveryError, startLocalEventGrid, type LocalEventGrid } from "@connector/local/eventgrid/index";

const quiet = createLogger({ level: "error" });
const blobNamePattern = /^(ENRICH-INCIDENT|SUBMIT-FILE)\/\d{4}\/\d{1,2}\/\d{1,2}\/\d{1,2}\/[0-9a-f-]{36}\.json$/;

let azurite: AzuriteInstance;
let eg: LocalEventGrid;
let container: ContainerClient;
let publisher: EventGridPublisherClient<"EventGrid">;
/** What each subscription's subscriber does: fail with 400 (dead-letter at once) or record. */
const mode: Record<string, "fail" | "accept"> = {};
const delivered: Record<string, EventGridEvent[]> = {};

async function until(what: string, probe: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function blobNames(): Promise<string[]> {
  const names: string[] = [];
  for await (const b of container.listBlobsFlat()) names.push(b.name);
  return names.sort();
}

async function publishAnalysisEvent(id: string): Promise<void> {
  const before = eg.deadLetters().length;
  mode["enrich-incident"] = "fail";
  await publisher.send([
    {
      id,
      eventType: eventTypes.analysisCompleted,
      subject: `/incidents/inc-1/artifacts/${id}`,
      dataVersion: "1.0",
      eventTime: new Date("2026-01-02T03:04:05.000Z"),
      data: { taskId: `task-${id}`, outcome: "completed", verdict: "malicious" },
    },
  ]);
  await until("the event to be dead-lettered", () => eg.deadLetters().length > before);
  await eg.idle();
}

async function uploadStagedSample(name: string): Promise<void> {
  const before = eg.deadLetters().length;
  mode["submit-file"] = "fail";
  const staging = BlobServiceClient.fromConnectionString(eg.storageConnectionString).getContainerClient(storageDefaults.stagingContainer);
  await staging.getBlockBlobClient(name).upload("MZ sample", 9);
  await until("BlobCreated to be dead-lettered", () => eg.deadLetters().length > before);
  await eg.idle();
}

beforeAll(async () => {
  azurite = await startAzurite({ logger: quiet });
  eg = await startLocalEventGrid({ azurite, logger: quiet, timeScale: 0.001, jitter: false });
  for (const sub of ["enrich-incident", "submit-file"]) {
    eg.setSubscriber(sub, async (name, events) => {
      if (mode[name] === "fail") throw new DeliveryError(400);
      (delivered[name] ??= []).push(...events);
    });
  }
  const service = BlobServiceClient.fromConnectionString(azurite.connectionString);
  await service.getContainerClient(storageDefaults.stagingContainer).createIfNotExists();
  container = service.getContainerClient(storageDefaults.eventGridDeadLetterContainer);
  publisher = new EventGridPublisherClient(eg.topicEndpoint(eventGridTopics.analysis.name), "EventGrid", new AzureKeyCredential(eg.key), {
    allowInsecureConnection: true,
  });
});

afterAll(async () => {
  await eg?.close();
  await azurite?.close();
});

beforeEach(async () => {
  for (const name of await blobNames().catch(() => [])) await container.deleteBlob(name);
  for (const k of Object.keys(delivered)) delete delivered[k];
});

describe("Event Grid dead letters", () => {
  it("an empty or missing container lists nothing", async () => {
    const missing = new EventGridDeadLetters(BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient("no-such-container"), { logger: quiet });
    expect(await missing.list()).toEqual([]);
  });

  it("lists the dead-letter blobs with subscription, reason, attempts, outcome and age, and shows one", async () => {
    await publishAnalysisEvent("evt-list-1");
    await uploadStagedSample("inc-1/file-00aa11bb/0123456789abcdef0123456789abcdef.bin");
    const core = new EventGridDeadLetters(container, { logger: quiet });

    const listed = await core.list();
    expect(listed).toHaveLength(2);
    const analysis = listed.find((e) => e.subscription === "enrich-incident")!;
    expect(analysis.blobName).toMatch(blobNamePattern);
    expect(analysis).toMatchObject({
      topic: "analysis-events",
      topicSource: "custom",
      id: "evt-list-1",
      eventType: eventTypes.analysisCompleted,
      deadLetterReason: "UndeliverableDueToHttpBadRequest",
      deliveryAttempts: 1,
      lastDeliveryOutcome: "BadRequest",
      lastHttpStatusCode: 400,
    });
    expect(analysis.ageMs).toBeGreaterThanOrEqual(0);
    expect(analysis.ageMs).toBeLessThan(30_000);
    const blob = listed.find((e) => e.subscription === "submit-file")!;
    expect(blob).toMatchObject({ topic: "staging-blob-events", topicSource: "storage", eventType: eventTypes.blobCreated });
    expect(blob.subject).toBe(`/blobServices/default/containers/${storageDefaults.stagingContainer}/blobs/inc-1/file-00aa11bb/0123456789abcdef0123456789abcdef.bin`);

    expect((await core.list({ entities: ["submit-file"] })).map((e) => e.id)).toEqual([blob.id]);
    expect((await core.list({ entities: ["analysis-events"] })).map((e) => e.id)).toEqual(["evt-list-1"]);
    expect((await core.list({ ids: ["evt-list-1"] })).map((e) => e.subscription)).toEqual(["enrich-incident"]);
    expect(await core.list({ reason: "Forbidden" })).toEqual([]);
    expect(await core.list({ olderThanMs: 60_000 })).toEqual([]);

    const shown = await core.show(analysis.blobName);
    expect(shown).toHaveLength(1);
    expect(shown![0]!.event).toEqual({
      id: "evt-list-1",
      eventType: eventTypes.analysisCompleted,
      subject: "/incidents/inc-1/artifacts/evt-list-1",
      dataVersion: "1.0",
      metadataVersion: "1",
      eventTime: "2026-01-02T03:04:05.000Z",
      topic: expect.stringMatching(/\/providers\/Microsoft\.EventGrid\/topics\/analysis-events$/i),
      data: { taskId: "task-evt-list-1", outcome: "completed", verdict: "malicious" },
    });
    expect(await core.show("ENRICH-INCIDENT/none.json")).toBeUndefined();
  });

  it("re-publishes a custom-topic event with the same id, and deletes the blob only after that succeeded", async () => {
    await publishAnalysisEvent("evt-replay-1");
    const [name] = await blobNames();

    // Without a publisher it is refused and nothing changes.
    const noPublisher = new EventGridDeadLetters(container, { logger: quiet });
    const refused = await noPublisher.replay({}, { dryRun: false });
    expect(refused.results).toEqual([expect.objectContaining({ id: "evt-replay-1", outcome: "refused", error: expect.stringMatching(/EVENTGRID_ENDPOINT/) })]);
    expect(await blobNames()).toEqual([name]);

    const core = new EventGridDeadLetters(container, { publisher, logger: quiet });
    const dry = await core.replay({}, { dryRun: true });
    expect(dry).toMatchObject({ dryRun: true, selected: 1, replayed: 0, blobsDeleted: 0, results: [{ id: "evt-replay-1", outcome: "wouldReplay", via: "publish:analysis-events" }] });
    expect(await blobNames()).toEqual([name]);

    mode["enrich-incident"] = "accept";
    const report = await core.replay({ entities: ["enrich-incident"] }, { dryRun: false });
    expect(report).toMatchObject({ dryRun: false, selected: 1, replayed: 1, failed: 0, blobsDeleted: 1 });
    await until("the re-published event to be delivered", () => (delivered["enrich-incident"] ?? []).length === 1);
    const again = delivered["enrich-incident"]![0]!;
    expect(again.id).toBe("evt-replay-1");
    expect(again.eventType).toBe(eventTypes.analysisCompleted);
    expect(again.subject).toBe("/incidents/inc-1/artifacts/evt-replay-1");
    expect(again.data).toEqual({ taskId: "task-evt-replay-1", outcome: "completed", verdict: "malicious" });
    expect(again).not.toHaveProperty("deadLetterReason");
    expect(await blobNames()).toEqual([]);
  });

  it("keeps the blob when the publish fails", async () => {
    await publishAnalysisEvent("evt-fail-1");
    const wrongKey = new EventGridPublisherClient(eg.topicEndpoint(eventGridTopics.analysis.name), "EventGrid", new AzureKeyCredential("wrong-key-value"), {
      allowInsecureConnection: true,
      retryOptions: { maxRetries: 0 },
    });
    const core = new EventGridDeadLetters(container, { publisher: wrongKey, logger: quiet });
    const report = await core.replay({}, { dryRun: false });
    expect(report).toMatchObject({ replayed: 0, failed: 1, blobsDeleted: 0, results: [{ id: "evt-fail-1", outcome: "failed" }] });
    expect(report.results[0]!.error).toMatch(/not authorized|401|Unauthorized/i);
    expect(await blobNames()).toHaveLength(1);
  });

  it("re-delivers a BlobCreated event to the submitFile function in-process, and keeps the blob when the function fails", async () => {
    await uploadStagedSample("inc-2/file-11aa22bb/fedcba9876543210fedcba9876543210.bin");
    const calls: EventGridEvent[] = [];
    let fail = true;
    const submitFile: EventGridFunctionDefinition = {
      name: "submitFile",
      kind: "eventGrid",
      handler: async (event, context) => {
        expect(context.functionName).toBe("submitFile");
        calls.push(event);
        if (fail) throw new Error("sandbox unreachable");
      },
    };
    const core = new EventGridDeadLetters(container, { redeliverBlobCreated: inProcessRedelivery([submitFile], quiet), logger: quiet });
    const [original] = await core.list();

    const failed = await core.replay({}, { dryRun: false });
    expect(failed).toMatchObject({ replayed: 0, failed: 1, results: [{ outcome: "failed", via: "redeliver:submit-file", error: "sandbox unreachable" }] });
    expect(await blobNames()).toHaveLength(1);

    fail = false;
    const done = await core.replay({}, { dryRun: false });
    expect(done).toMatchObject({ replayed: 1, failed: 0, blobsDeleted: 1 });
    expect(calls).toHaveLength(2);
    expect(calls[1]!.id).toBe(original!.id);
    expect(calls[1]!.eventType).toBe(eventTypes.blobCreated);
    expect(calls[1]!.subject).toBe(original!.subject);
    expect((calls[1]!.data as { api?: string }).api).toBe("PutBlob");
    expect(calls[1]).not.toHaveProperty("deliveryAttempts");
    expect(await blobNames()).toEqual([]);

    // Without an in-process function the system-topic event is refused (nothing can publish to it).
    await uploadStagedSample("inc-3/file-22aa33bb/00112233445566778899aabbccddeeff.bin");
    const elsewhere = new EventGridDeadLetters(container, { publisher, logger: quiet, noRedeliveryHint: "use --function-url" });
    const refused = await elsewhere.replay({}, { dryRun: false });
    expect(refused.results).toEqual([expect.objectContaining({ outcome: "refused", error: expect.stringMatching(/system topic.*use --function-url/) })]);
    expect(await blobNames()).toHaveLength(1);
  });

  it("rewrites a blob holding several events with the ones not replayed", async () => {
    await publishAnalysisEvent("evt-multi-1");
    const [name] = await blobNames();
    const client = container.getBlockBlobClient(name!);
    const [first] = JSON.parse((await client.downloadToBuffer()).toString("utf8")) as Record<string, unknown>[];
    const both = JSON.stringify([first, { ...first, id: "evt-multi-2" }]);
    await client.upload(both, Buffer.byteLength(both));

    mode["enrich-incident"] = "accept";
    const core = new EventGridDeadLetters(container, { publisher, logger: quiet });
    const report = await core.replay({ ids: ["evt-multi-2"] }, { dryRun: false });
    expect(report).toMatchObject({ selected: 1, replayed: 1, blobsDeleted: 0 });
    const left = JSON.parse((await client.downloadToBuffer()).toString("utf8")) as { id: string }[];
    expect(left.map((e) => e.id)).toEqual(["evt-multi-1"]);
  });
});
