import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiError } from "@connector/shared/clients/http";
import { createMdeClient, machineActionFilter, type MachineAction, type MdeClient } from "@connector/shared/clients/mde";
import { LocalTokenCredential } from "@connector/shared/credentials";
import { startMdeDouble, type MdeDouble } from "@connector/local/doubles/mde";

/**
 * GET /api/machineactions (list, OData $filter / $top) through the typed client against the MDE
 * double: what the connector uses to find its own action after a crash.
 */

const fixtures = join(import.meta.dirname, "..", "fixtures", "microsoft");
const fixture = <T = Record<string, unknown>>(name: string): T => JSON.parse(readFileSync(join(fixtures, name), "utf8")) as T;
const scope = "https://api.securitycenter.microsoft.com/.default";
const deviceA = "a".repeat(40);
const deviceB = "b".repeat(40);
const offline = "c".repeat(40);

let mde: MdeDouble;
let client: MdeClient;
let ours: MachineAction;
let foreign: MachineAction;
let pending: MachineAction;

async function rejection(p: Promise<unknown>): Promise<ApiError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    return err as ApiError;
  }
  throw new Error("expected a rejection");
}

beforeAll(async () => {
  mde = await startMdeDouble({ pendingDelayMs: 5 });
  client = createMdeClient({ baseUrl: mde.url, credential: new LocalTokenCredential(), scope });
  mde.seedMachine({ id: deviceA, osPlatform: "Linux" });
  mde.seedMachine({ id: deviceB, osPlatform: "Linux" });
  mde.seedMachine({ id: offline, osPlatform: "Linux", healthStatus: "Inactive" });
  ours = await client.runScript(deviceA, { scriptName: "anyrun-collect.sh", args: "v1", comment: "ANY.RUN connector: collect x [anyrun-job:i1/file-00000000]" });
  await mde.settled(ours.id);
  foreign = await client.runScript(deviceB, { scriptName: "anyrun-collect.sh", args: "v1", comment: "Analyst: triage" });
  await mde.settled(foreign.id);
  pending = await client.runScript(offline, { scriptName: "anyrun-collect.sh", args: "v1", comment: "queued for an offline host" });
});

afterAll(async () => {
  await mde?.close();
});

describe("listMachineActions", () => {
  it("lists the actions started through the API with the documented fields", async () => {
    const all = await client.listMachineActions({});
    expect(all.map((a) => a.id)).toEqual([ours.id, foreign.id, pending.id]);
    const doc = fixture<MachineAction>("mde-machineaction-liveresponse-succeeded.json");
    for (const key of Object.keys(doc).filter((k) => k !== "@odata.context")) expect(all[0], key).toHaveProperty(key);
    expect(all[0]).toMatchObject({ id: ours.id, type: "LiveResponse", machineId: deviceA, requestSource: "PublicApi", requestorComment: "ANY.RUN connector: collect x [anyrun-job:i1/file-00000000]" });
    expect(Date.parse(all[0]!.creationDateTimeUtc!)).toBeGreaterThan(0);
  });

  it("filters by machineId (and, unverified on the real service, by machineId and status)", async () => {
    expect((await client.listMachineActions({ machineId: deviceB })).map((a) => [a.id, a.requestorComment])).toEqual([[foreign.id, "Analyst: triage"]]);
    expect((await client.listMachineActions({ machineId: offline, status: "Pending" })).map((a) => a.id)).toEqual([pending.id]);
    expect(await client.listMachineActions({ machineId: deviceA, status: "Pending" })).toEqual([]);
    expect((await client.listMachineActions({ machineId: deviceA, type: "LiveResponse" })).map((a) => a.status)).toEqual([expect.stringMatching(/^(Succeeded|Failed)$/)]);
    expect(await client.listMachineActions({ machineId: "d".repeat(40) })).toEqual([]);
    expect(await client.listMachineActions({ top: 1 })).toHaveLength(1);
  });

  it("builds OData string literals with single quotes doubled", () => {
    expect(machineActionFilter({ machineId: deviceA })).toBe(`machineId eq '${deviceA}'`);
    expect(machineActionFilter({ machineId: "o'brien", status: "Pending", type: "LiveResponse" })).toBe("machineId eq 'o''brien' and type eq 'LiveResponse' and status eq 'Pending'");
    expect(machineActionFilter({})).toBeUndefined();
  });

  it("answers 400 ODataError to a filter or $top it does not support", async () => {
    const token = (await new LocalTokenCredential().getToken(scope)).token;
    const get = async (query: string) => {
      const res = await fetch(`${mde.url}/api/machineactions?${query}`, { headers: { Authorization: `Bearer ${token}` } });
      return { status: res.status, body: (await res.json()) as { error?: { code: string }; value?: unknown[] } };
    };
    expect(await get("$filter=machineId%20eq%20'x'%20or%20status%20eq%20'Pending'")).toMatchObject({ status: 400, body: { error: { code: "ODataError" } } });
    expect(await get("$filter=computerDnsName%20eq%20'x'")).toMatchObject({ status: 400, body: { error: { code: "ODataError" } } });
    expect(await get("$top=0")).toMatchObject({ status: 400, body: { error: { code: "ODataError" } } });
    expect(await get("$orderby=id")).toMatchObject({ status: 400, body: { error: { code: "ODataError" } } });
    const since = await get(`$filter=creationDateTimeUtc%20ge%20${encodeURIComponent(pending.creationDateTimeUtc!)}`);
    expect(since.status).toBe(200);
    expect((since.body.value as MachineAction[]).map((a) => a.id)).toContain(pending.id);
    expect(() => client.listMachineActions({ top: 0 })).toThrow(RangeError);
  });

  it("surfaces throttling with Retry-After and needs a token", async () => {
    mde.injectFault({ operation: "listMachineActions", status: 429, code: "TooManyRequests", retryAfterSeconds: 7 });
    const err = await rejection(client.listMachineActions({ machineId: deviceA }));
    expect(err).toMatchObject({ status: 429, code: "TooManyRequests", retryAfterSeconds: 7, transient: true });
    const res = await fetch(`${mde.url}/api/machineactions`);
    expect(res.status).toBe(401);
  });

  it("logs every runliveresponse answer, refusals included", async () => {
    const refused = await rejection(client.runScript(offline, { scriptName: "anyrun-collect.sh", args: "v1", comment: "again" }));
    expect(refused.code).toBe("ActiveRequestAlreadyExists");
    const calls = mde.startCalls();
    expect(calls.map((c) => [c.machineId, c.status, c.code ?? null])).toEqual([
      [deviceA, 201, null],
      [deviceB, 201, null],
      [offline, 201, null],
      [offline, 400, "ActiveRequestAlreadyExists"],
    ]);
    expect(calls[0]).toMatchObject({ actionId: ours.id, comment: ours.requestorComment });
  });
});
