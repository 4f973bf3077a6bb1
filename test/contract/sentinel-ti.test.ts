import { readFileSync } from "node:fs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ApiError } from "@connector/shared/clients/http";
import {
  chunk,
  createSentinelTiClient,
  maxStixObjectsPerUpload,
  parseRetryAfterMessage,
  type SentinelTiClient,
  type SentinelTiClientOptions,
  type StixObject,
} from "@connector/shared/clients/sentinel-ti";
import { buildIndicator } from "@connector/shared/clients/stix";
import { LocalTokenCredential } from "@connector/shared/credentials";
import { createLogger } from "@connector/shared/logger";
import { startSentinelDouble, type SentinelDouble } from "@connector/local/doubles/sentinel";

const fixture = <T = unknown>(name: string): T =>
  JSON.parse(readFileSync(new URL(`../fixtures/microsoft/${name}`, import.meta.url), "utf8")) as T;

const uploadRequest = fixture<{ sourcesystem: string; stixobjects: StixObject[] }>("sentinel-ti-stix-upload-request.json");
const rateLimited = fixture<{ statusCode: number; message: string }>("sentinel-ti-upload-response-429.json");

const workspaceId = "22222222-2222-2222-2222-222222222222";
const scope = "https://management.azure.com/.default";
const apiVersion = "2024-02-01-preview";
const sourceSystem = "ANY.RUN Sandbox connector";
const credential = new LocalTokenCredential();
const start = Date.parse("2025-06-01T12:00:00.000Z");

let clock: number;
let double: SentinelDouble;
let client: SentinelTiClient;
let logLines: string[];

function makeClient(overrides: Partial<SentinelTiClientOptions> = {}): SentinelTiClient {
  return createSentinelTiClient({
    baseUrl: double.tiUrl,
    apiVersion,
    credential,
    scope,
    logger: createLogger({ level: "debug", sink: (_l, line) => logLines.push(line) }),
    ...overrides,
  });
}

function indicators(count: number, offset = 0): StixObject[] {
  return Array.from({ length: count }, (_, i) =>
    buildIndicator({
      type: "ip",
      value: `198.51.100.${(i + offset) % 256}`,
      reputation: "malicious",
      taskUrl: "https://app.any.run/tasks/0cf223f2-530e-4a50-b68f-563045268648",
      labels: ["anyrun"],
      now: new Date(clock),
      validDays: 30,
    })!,
  );
}

const uploadUrl = () =>
  `${double.tiUrl}/workspaces/${workspaceId}/threat-intelligence-stix-objects:upload?api-version=${apiVersion}`;

beforeEach(async () => {
  clock = start;
  double = await startSentinelDouble({ workspaceIds: [workspaceId], now: () => clock, tiRequestsPerMinute: 3 });
  logLines = [];
  client = makeClient();
});

afterEach(async () => {
  await double.close();
});

describe("STIX objects upload", () => {
  it("uploads the recorded request's objects (200, empty body)", async () => {
    const result = await client.uploadStixObjects(workspaceId, uploadRequest.sourcesystem, uploadRequest.stixobjects);
    expect(result).toEqual({ accepted: 2, errors: [] });
    expect(double.indicators(workspaceId).map((o) => o.id)).toEqual([
      "indicator--10000003-71a2-445c-ab86-927291df48f8",
      "indicator--67e62408-e3de-4783-9480-f595d4fdae52",
    ]);
    expect(double.uploads()).toEqual([
      { workspaceId, sourceSystem: "test", objectCount: 2, status: 200, errors: [], at: new Date(start).toISOString() },
    ]);
  });

  it("refuses 150 objects client-side; chunks of 100 + 50 are accepted", async () => {
    const objects = indicators(150);
    await expect(client.uploadStixObjects(workspaceId, sourceSystem, objects)).rejects.toBeInstanceOf(RangeError);
    expect(double.uploads()).toEqual([]);

    const parts = chunk(objects);
    expect(parts.map((p) => p.length)).toEqual([maxStixObjectsPerUpload, 50]);
    expect(await client.uploadStixObjects(workspaceId, sourceSystem, parts[0]!)).toEqual({ accepted: 100, errors: [] });
    expect(await client.uploadStixObjects(workspaceId, sourceSystem, parts[1]!)).toEqual({ accepted: 50, errors: [] });
    // 150 objects over 0–255 distinct addresses: 150 indicators stored.
    expect(double.indicators(workspaceId)).toHaveLength(150);
  });

  it("the service side also answers 400 above 100 objects", async () => {
    const res = await fetch(uploadUrl(), {
      method: "POST",
      headers: { Authorization: `Bearer ${(await credential.getToken(scope)).token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ sourcesystem: sourceSystem, stixobjects: indicators(101) }),
    });
    expect(res.status).toBe(400);
    expect(double.indicators(workspaceId)).toHaveLength(0);
  });

  it("counts a partial failure (200 with errors[]) and stores the valid records", async () => {
    const [a, b, c] = indicators(3);
    const { pattern: _dropped, ...noPattern } = b!;
    const result = await client.uploadStixObjects(workspaceId, sourceSystem, [a!, noPattern as StixObject, c!]);
    expect(result.accepted).toBe(2);
    expect(result.errors).toEqual([{ recordIndex: 1, errorMessages: ["Missing required property 'pattern'."] }]);
    expect(double.indicators(workspaceId).map((o) => o.id).sort()).toEqual([a!.id, c!.id].sort());
    expect(logLines.some((l) => l.includes("STIX upload partially rejected"))).toBe(true);
  });

  it("updates an object re-uploaded with the same id instead of duplicating it", async () => {
    const [first] = indicators(1);
    await client.uploadStixObjects(workspaceId, sourceSystem, [first!]);
    clock += 60_000;
    const [again] = indicators(1);
    expect(again!.id).toBe(first!.id);
    await client.uploadStixObjects(workspaceId, sourceSystem, [{ ...again!, confidence: 60 }]);
    const stored = double.indicators(workspaceId);
    expect(stored).toHaveLength(1);
    expect(stored[0]).toMatchObject({ id: first!.id, confidence: 60, modified: new Date(start + 60_000).toISOString() });
  });

  it("parses retryAfterSeconds from the 429 message", async () => {
    for (let i = 0; i < 3; i++) await client.uploadStixObjects(workspaceId, sourceSystem, indicators(1, i));
    clock += 15_000;
    const err = await client.uploadStixObjects(workspaceId, sourceSystem, indicators(1, 9)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ api: "sentinel-ti", status: 429, code: "TooManyRequests", retryAfterSeconds: 45, transient: true });
    expect((err as ApiError).message).toContain("Rate limit is exceeded. Try again in 45 seconds.");
    // Same shape as the recorded body, with the number filled in.
    const last = double.uploads().at(-1)!;
    expect(last.status).toBe(429);

    clock += 45_000;
    expect(await client.uploadStixObjects(workspaceId, sourceSystem, indicators(1, 9))).toEqual({ accepted: 1, errors: [] });
  });

  it("answers the throttled body in the recorded shape", async () => {
    const token = (await credential.getToken(scope)).token;
    const post = () =>
      fetch(uploadUrl(), {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ sourcesystem: sourceSystem, stixobjects: indicators(1) }),
      });
    for (let i = 0; i < 3; i++) expect((await post()).status).toBe(200);
    const res = await post();
    expect(res.status).toBe(429);
    const body = (await res.json()) as typeof rateLimited;
    expect(Object.keys(body).sort()).toEqual(Object.keys(rateLimited).sort());
    expect(body.statusCode).toBe(rateLimited.statusCode);
    expect(body.message).toBe(rateLimited.message.replace("<number of seconds>", "60"));
  });

  it("prefers a Retry-After header, and survives a message without a number", async () => {
    double.setFaults(() => ({ status: 429, body: rateLimited, headers: { "Retry-After": "7" } }));
    await expect(client.uploadStixObjects(workspaceId, sourceSystem, indicators(1))).rejects.toMatchObject({
      status: 429,
      retryAfterSeconds: 7,
    });
    double.setFaults(() => ({ status: 429, body: rateLimited }));
    const err = (await client.uploadStixObjects(workspaceId, sourceSystem, indicators(1)).catch((e: unknown) => e)) as ApiError;
    expect(err.status).toBe(429);
    expect(err.retryAfterSeconds).toBeUndefined();
    expect(parseRetryAfterMessage("Rate limit is exceeded. Try again in 12 seconds.")).toBe(12);
  });

  it("answers 401 without a token, and for a token of another audience", async () => {
    const res = await fetch(uploadUrl(), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(uploadRequest),
    });
    expect(res.status).toBe(401);
    expect(double.indicators(workspaceId)).toEqual([]);

    const wrong = makeClient({ scope: "https://api.securitycenter.microsoft.com/.default" });
    await expect(wrong.uploadStixObjects(workspaceId, sourceSystem, indicators(1))).rejects.toMatchObject({
      status: 401,
      transient: false,
    });
  });

  it("answers 404 for an unknown workspace and 400 without api-version", async () => {
    await expect(
      client.uploadStixObjects("33333333-3333-3333-3333-333333333333", sourceSystem, indicators(1)),
    ).rejects.toMatchObject({ status: 404, transient: false });
    const noVersion = makeClient({ apiVersion: "" });
    await expect(noVersion.uploadStixObjects(workspaceId, sourceSystem, indicators(1))).rejects.toMatchObject({ status: 400 });
  });

  it("refuses the reserved source system and skips empty uploads without a request", async () => {
    await expect(client.uploadStixObjects(workspaceId, "Microsoft Sentinel", indicators(1))).rejects.toBeInstanceOf(RangeError);
    expect(await client.uploadStixObjects(workspaceId, sourceSystem, [])).toEqual({ accepted: 0, errors: [] });
    expect(double.requests()).toEqual([]);
  });

  it("reports a dropped connection as status 0 and keeps the token out of logs", async () => {
    double.setFaults(() => ({ dropConnection: true }));
    await expect(client.uploadStixObjects(workspaceId, sourceSystem, indicators(1))).rejects.toMatchObject({
      status: 0,
      transient: true,
    });
    double.setFaults(undefined);
    await client.uploadStixObjects(workspaceId, sourceSystem, indicators(1));
    const token = (await credential.getToken(scope)).token;
    expect(logLines.length).toBeGreaterThan(0);
    for (const line of logLines) expect(line).not.toContain(token);
  });
});

describe("chunk", () => {
  it("splits into slices of at most the given size", () => {
    expect(chunk([1, 2, 3, 4, 5], 2)).toEqual([[1, 2], [3, 4], [5]]);
    expect(chunk([], 100)).toEqual([]);
    expect(() => chunk([1], 0)).toThrow(RangeError);
  });
});
