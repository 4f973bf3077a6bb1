import http from "node:http";
import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AzureKeyCredential, EventGridPublisherClient } from "@azure/eventgrid";
import {
  BlobSASPermissions,
  BlobServiceClient,
  BlockBlobClient,
  StorageSharedKeyCredential,
  generateBlobSASQueryParameters,
} from "@azure/storage-blob";
import type { EventGridEvent } from "@azure/functions";
import { createLogger } from "@connector/shared/logger";
import { eventGridTopics, eventTypes, storageDefaults } from "@connector/shared/topology";
import { startAzurite, type AzuriteInstance } from "@connector/local/azurite";
import { DeliveryError, startLocalEventGrid, type LocalEventGrid } from "@connector/local/eventgrid/index";

const fixture = JSON.parse(
  readFileSync(new URL("../fixtures/microsoft/eventgrid-blobcreated-eventgridschema.json", import.meta.url), "utf8"),
) as Record<string, unknown>;

const quiet = createLogger({ level: "error" });
const analysisTopic = eventGridTopics.analysis.name;
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Key → type tree, to compare an event's shape with the fixture's. */
function shape(value: unknown): unknown {
  if (value === null) return "null";
  if (Array.isArray(value)) return value.map(shape);
  if (typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([k, v]) => [k, shape(v)]),
    );
  }
  return typeof value;
}

function publisher(eg: LocalEventGrid, key = eg.key) {
  return new EventGridPublisherClient(eg.topicEndpoint(analysisTopic), "EventGrid", new AzureKeyCredential(key), {
    allowInsecureConnection: true,
    retryOptions: { maxRetries: 0 },
  });
}

function analysisEvent(id: string) {
  return {
    id,
    subject: `anyrun/tasks/${id}`,
    eventType: eventTypes.analysisCompleted,
    eventTime: new Date("2026-01-02T03:04:05.000Z"),
    dataVersion: "1.0",
    data: { taskId: id, verdict: "malicious", score: 100 },
  };
}

describe("local Event Grid", () => {
  let azurite: AzuriteInstance;
  let eg: LocalEventGrid;
  const received = new Map<string, EventGridEvent[]>();

  beforeAll(async () => {
    azurite = await startAzurite({ logger: quiet });
    eg = await startLocalEventGrid({ azurite, logger: quiet });
    for (const sub of ["enrich-incident", "submit-file"]) {
      eg.setSubscriber(sub, async (name, events) => {
        received.get(name)?.push(...events) ?? received.set(name, [...events]);
      });
    }
    const direct = BlobServiceClient.fromConnectionString(azurite.connectionString);
    await direct.getContainerClient(storageDefaults.stagingContainer).create();
    await direct.getContainerClient("other").create();
  });
  afterAll(async () => {
    await eg?.close();
    await azurite?.close();
  });
  beforeEach(() => received.clear());

  describe("custom topic", () => {
    it("accepts EventGridPublisherClient events and delivers them to the subscriber", async () => {
      await publisher(eg).send([analysisEvent("task-1")]);
      await eg.idle();
      const events = received.get("enrich-incident") ?? [];
      expect(events).toHaveLength(1);
      expect(events[0]).toEqual({
        id: "task-1",
        subject: "anyrun/tasks/task-1",
        eventType: "AnyRun.Sandbox.AnalysisCompleted",
        eventTime: "2026-01-02T03:04:05.000Z",
        dataVersion: "1.0",
        data: { taskId: "task-1", verdict: "malicious", score: 100 },
        topic: `/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local-rg/providers/Microsoft.EventGrid/topics/${analysisTopic}`,
        metadataVersion: "1",
      });
      expect(received.get("submit-file")).toBeUndefined();
      const log = eg.deliveries().filter((d) => d.eventId === "task-1");
      expect(log).toEqual([expect.objectContaining({ subscription: "enrich-incident", attempt: 1, outcome: "Delivered" })]);
    });

    it("rejects a wrong key with 401 (RestError in the SDK)", async () => {
      const error = await publisher(eg, "not-the-key").send([analysisEvent("task-2")]).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toMatchObject({ name: "RestError", statusCode: 401 });
      await eg.idle();
      expect(eg.published().some((p) => p.event.id === "task-2")).toBe(false);
    });

    it("answers 400 for a missing required field or a non-array body, 404 for an unknown topic", async () => {
      const post = (url: string, body: unknown) =>
        fetch(url, { method: "POST", headers: { "aeg-sas-key": eg.key, "content-type": "application/json" }, body: JSON.stringify(body) });
      const { dataVersion: _omitted, ...noDataVersion } = { ...analysisEvent("task-3"), eventTime: "2026-01-02T03:04:05Z" };
      const missing = await post(eg.topicEndpoint(analysisTopic), [noDataVersion]);
      expect(missing.status).toBe(400);
      expect(((await missing.json()) as { error: { message: string } }).error.message).toContain("dataVersion");
      const { data: _noData, ...noData } = { ...analysisEvent("task-4"), eventTime: "2026-01-02T03:04:05Z" };
      expect((await post(eg.topicEndpoint(analysisTopic), [noData])).status).toBe(400);
      expect((await post(eg.topicEndpoint(analysisTopic), { ...noData, data: {} })).status).toBe(400);
      expect((await post(eg.topicEndpoint("no-such-topic"), [])).status).toBe(404);
      // The storage topic is a system topic: nobody can publish to it.
      expect((await post(eg.topicEndpoint(eventGridTopics.staging.name), [])).status).toBe(404);
      await eg.idle();
      expect(received.size).toBe(0);
    });
  });

  describe("storage system topic (blob proxy)", () => {
    function sasFor(container: string, blobName: string, permissions: string): string {
      return generateBlobSASQueryParameters(
        {
          containerName: container,
          blobName,
          permissions: BlobSASPermissions.parse(permissions),
          startsOn: new Date(Date.now() - 60_000),
          expiresOn: new Date(Date.now() + 15 * 60_000),
        },
        new StorageSharedKeyCredential(azurite.accountName, azurite.accountKey),
      ).toString();
    }

    it("raises exactly one BlobCreated for a SAS Put Blob, shaped like the fixture, url without query", async () => {
      const name = "incident-42/sample one.exe";
      const sas = sasFor("staging", name, "cw");
      const blob = new BlockBlobClient(`${eg.blobEndpoint}/staging/${encodeURIComponent(name)}?${sas}`);
      const content = Buffer.from("MZ" + "x".repeat(998));
      const response = await blob.upload(content, content.length, {
        blobHTTPHeaders: { blobContentType: "application/x-msdownload" },
      });
      await eg.idle();

      const raised = eg.published().filter((p) => p.event.subject.endsWith("/sample one.exe"));
      expect(raised).toHaveLength(1);
      const events = received.get("submit-file") ?? [];
      expect(events).toHaveLength(1);
      const event = events[0]!;
      expect(event).toEqual(raised[0]!.event);
      expect(shape(event)).toEqual(shape(fixture));

      const data = event.data as Record<string, unknown>;
      expect(event.topic).toBe(
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local-rg/providers/Microsoft.Storage/storageAccounts/devstoreaccount1",
      );
      expect(event.subject).toBe(`/blobServices/default/containers/staging/blobs/${name}`);
      expect(event.eventType).toBe("Microsoft.Storage.BlobCreated");
      expect(event.id).toMatch(uuidPattern);
      expect(event.dataVersion).toBe("");
      expect(event.metadataVersion).toBe("1");
      expect(event.eventTime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$/);
      expect(Math.abs(Date.parse(event.eventTime) - Date.now())).toBeLessThan(10_000);
      expect(data.api).toBe("PutBlob");
      expect(data.clientRequestId).toBe(response.clientRequestId);
      expect(data.requestId).toBe(response.requestId);
      expect(data.eTag).toBe(response.etag!.replace(/"/g, ""));
      expect(data.contentType).toBe("application/x-msdownload");
      expect(data.contentLength).toBe(1000);
      expect(data.blobType).toBe("BlockBlob");
      expect(data.url).toBe(`${eg.blobEndpoint}/staging/${encodeURIComponent(name)}`);
      expect(String(data.url)).not.toContain("?");
      expect(String(data.url)).not.toContain("sig=");
      expect(data.sequencer).toMatch(/^[0-9A-F]{48}$/);
      expect((data.storageDiagnostics as { batchId: string }).batchId).toMatch(uuidPattern);

      // The write really landed in Azurite, unchanged.
      const stored = await BlobServiceClient.fromConnectionString(azurite.connectionString)
        .getContainerClient("staging")
        .getBlobClient(name)
        .downloadToBuffer();
      expect(stored.equals(content)).toBe(true);
    });

    it("raises one PutBlockList event with the committed length for a block upload, none for Put Block", async () => {
      const name = "incident-42/big.bin";
      const blob = new BlockBlobClient(`${eg.blobEndpoint}/staging/${name}?${sasFor("staging", name, "cw")}`);
      const content = Buffer.alloc(3000, 7);
      await blob.uploadData(content, { maxSingleShotSize: 1024, blockSize: 1024, concurrency: 1 });
      await eg.idle();
      const events = received.get("submit-file") ?? [];
      expect(events).toHaveLength(1);
      const data = events[0]!.data as Record<string, unknown>;
      expect(data.api).toBe("PutBlockList");
      expect(data.contentLength).toBe(3000);
      expect(data.contentType).toBe("application/octet-stream");
      expect(eg.published().filter((p) => p.event.subject.endsWith("/big.bin"))).toHaveLength(1);
    });

    it("raises nothing when the SAS forbids the write (403 passes through unchanged)", async () => {
      const name = "incident-42/readonly.bin";
      const blob = new BlockBlobClient(`${eg.blobEndpoint}/staging/${name}?${sasFor("staging", name, "r")}`);
      const error = await blob.upload("x", 1).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toMatchObject({ statusCode: 403 });
      await eg.idle();
      expect(eg.published().filter((p) => p.event.subject.endsWith("/readonly.bin"))).toHaveLength(0);
    });

    it("does not deliver a blob outside the staging container to submit-file", async () => {
      const service = BlobServiceClient.fromConnectionString(eg.storageConnectionString);
      await service.getContainerClient("other").getBlockBlobClient("staging/not-staged.bin").upload("abc", 3);
      await eg.idle();
      const raised = eg.published().filter((p) => p.event.subject === "/blobServices/default/containers/other/blobs/staging/not-staged.bin");
      expect(raised).toHaveLength(1);
      expect(received.get("submit-file")).toBeUndefined();
      expect(eg.deliveries().filter((d) => d.subject.includes("not-staged"))).toHaveLength(0);
    });

    it("forwards reads unchanged: listing through the proxy names the proxy endpoint", async () => {
      const service = BlobServiceClient.fromConnectionString(eg.storageConnectionString);
      const container = service.getContainerClient("other");
      await container.getBlockBlobClient("read-me.txt").upload("read me", 7);
      const text = (await container.getBlobClient("read-me.txt").downloadToBuffer(2, 3)).toString();
      expect(text).toBe("ad ");
      const names: string[] = [];
      for await (const b of container.listBlobsFlat()) names.push(b.name);
      expect(names).toContain("read-me.txt");
      expect(container.url.startsWith(eg.blobEndpoint)).toBe(true);
    });
  });

  describe("webhook subscriber via the admin API", () => {
    it("registers a webhook and posts the event array with aeg-* headers", async () => {
      const hits: { headers: http.IncomingHttpHeaders; body: unknown }[] = [];
      const server = http.createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("end", () => {
          hits.push({ headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString()) });
          res.writeHead(200).end();
        });
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
      const register = (key: string) =>
        fetch(`${eg.url}/admin/subscriptions/enrich-incident/webhook`, {
          method: "PUT",
          headers: { "aeg-sas-key": key, "content-type": "application/json" },
          body: JSON.stringify({ url }),
        });
      try {
        expect((await register("wrong")).status).toBe(401);
        expect((await register(eg.key)).status).toBe(200);
        await publisher(eg).send([analysisEvent("task-hook")]);
        await eg.idle();
        expect(hits).toHaveLength(1);
        expect(hits[0]!.headers["aeg-event-type"]).toBe("Notification");
        expect(hits[0]!.headers["aeg-subscription-name"]).toBe("ENRICH-INCIDENT");
        expect(hits[0]!.headers["aeg-delivery-count"]).toBe("0");
        expect(hits[0]!.body).toEqual([expect.objectContaining({ id: "task-hook", eventType: eventTypes.analysisCompleted })]);
      } finally {
        // Back to the in-process subscriber for the other tests.
        eg.setSubscriber("enrich-incident", async (name, events) => {
          received.get(name)?.push(...events) ?? received.set(name, [...events]);
        });
        await new Promise<void>((r) => server.close(() => r()));
      }
    });
  });
});

describe("local Event Grid retries and dead-lettering", () => {
  let azurite: AzuriteInstance;
  let eg: LocalEventGrid;
  let behaviour: (attempt: number) => Promise<void>;
  const attemptTimes: number[] = [];

  beforeAll(async () => {
    azurite = await startAzurite({ logger: quiet });
    eg = await startLocalEventGrid({
      azurite,
      logger: quiet,
      timeScale: 0.001, // 10 s → 10 ms, 30 s → 30 ms, 1 min → 60 ms
      jitter: false,
      retryPolicy: {
        "enrich-incident": { maxDeliveryAttempts: 3 },
        "submit-file": { eventTimeToLiveMinutes: 1 }, // 60 ms at this time scale
      },
    });
    eg.setSubscriber("enrich-incident", (_name, _events, info) => {
      attemptTimes.push(Date.now());
      return behaviour(info.attempt);
    });
    eg.setSubscriber("submit-file", (_name, _events, info) => behaviour(info.attempt));
  });
  afterAll(async () => {
    await eg?.close();
    await azurite?.close();
  });
  beforeEach(() => {
    attemptTimes.length = 0;
  });

  async function deadLetterBlobs(prefix: string) {
    const container = BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient(
      storageDefaults.eventGridDeadLetterContainer,
    );
    const blobs: { name: string; content: unknown }[] = [];
    for await (const b of container.listBlobsFlat({ prefix })) {
      blobs.push({ name: b.name, content: JSON.parse((await container.getBlobClient(b.name).downloadToBuffer()).toString()) });
    }
    return blobs;
  }

  it("retries a failing subscriber with backoff, then dead-letters to the Azurite container", async () => {
    behaviour = async () => {
      throw new DeliveryError(500);
    };
    await publisher(eg).send([analysisEvent("doomed-1")]);
    await eg.idle();

    const attempts = eg.deliveries().filter((d) => d.eventId === "doomed-1");
    expect(attempts.map((a) => [a.attempt, a.outcome, a.httpStatus])).toEqual([
      [1, "GenericError", 500],
      [2, "GenericError", 500],
      [3, "GenericError", 500],
    ]);
    expect(attemptTimes).toHaveLength(3);
    expect(attemptTimes[1]! - attemptTimes[0]!).toBeGreaterThanOrEqual(9);
    expect(attemptTimes[2]! - attemptTimes[1]!).toBeGreaterThanOrEqual(29);

    const dead = eg.deadLetters().filter((d) => d.event.id === "doomed-1");
    expect(dead).toHaveLength(1);
    const record = dead[0]!;
    expect(record.container).toBe("eventgrid-deadletters");
    const now = new Date();
    expect(record.blobName).toMatch(/^ENRICH-INCIDENT\/\d{4}\/([1-9]|1[0-2])\/([1-9]|[12]\d|3[01])\/(\d|1\d|2[0-3])\/[0-9a-f-]{36}\.json$/);
    expect(record.blobName.startsWith(`ENRICH-INCIDENT/${now.getUTCFullYear()}/${now.getUTCMonth() + 1}/${now.getUTCDate()}/`)).toBe(true);

    const blobs = await deadLetterBlobs("ENRICH-INCIDENT/");
    const blob = blobs.find((b) => b.name === record.blobName);
    expect(blob).toBeDefined();
    const [stored] = blob!.content as Record<string, unknown>[];
    expect(stored).toMatchObject({
      id: "doomed-1",
      eventType: eventTypes.analysisCompleted,
      subject: "anyrun/tasks/doomed-1",
      data: { taskId: "doomed-1", verdict: "malicious", score: 100 },
      deadLetterReason: "MaxDeliveryAttemptsExceeded",
      deliveryAttempts: 3,
      lastDeliveryOutcome: "GenericError",
      lastHttpStatusCode: 500,
    });
    expect(Date.parse(String(stored!.publishTime))).toBeLessThanOrEqual(Date.parse(String(stored!.lastDeliveryAttemptTime)));
    expect(Date.parse(String(stored!.lastDeliveryAttemptTime)) - Date.parse(String(stored!.publishTime))).toBeGreaterThanOrEqual(38);
  });

  it("does not retry a 400: dead-letters after one attempt", async () => {
    behaviour = async () => {
      throw new DeliveryError(400);
    };
    await publisher(eg).send([analysisEvent("bad-1")]);
    await eg.idle();
    expect(eg.deliveries().filter((d) => d.eventId === "bad-1")).toHaveLength(1);
    const [dead] = eg.deadLetters().filter((d) => d.event.id === "bad-1");
    expect(dead?.event).toMatchObject({
      deadLetterReason: "UndeliverableDueToHttpBadRequest",
      deliveryAttempts: 1,
      lastDeliveryOutcome: "BadRequest",
      lastHttpStatusCode: 400,
    });
    expect((await deadLetterBlobs("ENRICH-INCIDENT/")).some((b) => b.name === dead!.blobName)).toBe(true);
  });

  it("delivers once the subscriber recovers, without dead-lettering", async () => {
    behaviour = async (attempt) => {
      if (attempt < 3) throw Object.assign(new Error("busy"), { status: 503 });
    };
    await publisher(eg).send([analysisEvent("flaky-1")]);
    await eg.idle();
    expect(eg.deliveries().filter((d) => d.eventId === "flaky-1").map((d) => d.outcome)).toEqual(["Busy", "Busy", "Delivered"]);
    expect(eg.deadLetters().some((d) => d.event.id === "flaky-1")).toBe(false);
  });

  it("dead-letters with TimeToLiveExceeded when the event TTL runs out first", async () => {
    behaviour = async () => {
      throw new DeliveryError(500);
    };
    await BlobServiceClient.fromConnectionString(eg.storageConnectionString)
      .getContainerClient("staging")
      .createIfNotExists();
    await BlobServiceClient.fromConnectionString(eg.storageConnectionString)
      .getContainerClient("staging")
      .getBlockBlobClient("ttl.bin")
      .upload("ttl", 3);
    await eg.idle();
    const dead = eg.deadLetters().filter((d) => d.subscription === "submit-file");
    expect(dead).toHaveLength(1);
    const event = dead[0]!.event;
    expect(event.deadLetterReason).toBe("TimeToLiveExceeded");
    // Retries at 10 ms and 30 ms fit in the 60 ms TTL, the 60 ms step does not (≥ 2 attempts, fewer than the 30 allowed).
    const attempts = eg.deliveries().filter((d) => d.eventId === event.id);
    expect(event.deliveryAttempts).toBe(attempts.length);
    expect(event.deliveryAttempts).toBeGreaterThanOrEqual(2);
    expect(event.deliveryAttempts).toBeLessThanOrEqual(4);
    expect(event.lastHttpStatusCode).toBe(500);
    expect(Date.parse(event.lastDeliveryAttemptTime) - Date.parse(event.publishTime)).toBeLessThan(60);
    expect(dead[0]!.blobName.startsWith("SUBMIT-FILE/")).toBe(true);
    expect((await deadLetterBlobs("SUBMIT-FILE/")).map((b) => b.name)).toEqual([dead[0]!.blobName]);
  });
});
