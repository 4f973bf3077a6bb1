import { TableClient } from "@azure/data-tables";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LiveResponseLimits, type LiveResponseLimitsOptions } from "@connector/shared/live-response/limits";
import { actionMarker, collectComment, isOwnAction, leaseHolderOf } from "@connector/shared/live-response/ownership";
import { createLogger } from "@connector/shared/logger";
import { startAzurite, type AzuriteInstance } from "@connector/local/azurite";

/** The Live Response leases against real Table storage (Azurite): etag-guarded, expiring, capped. */

let azurite: AzuriteInstance;
let tableCounter = 0;

beforeAll(async () => {
  azurite = await startAzurite({ logger: createLogger({ level: "error", sink: () => {} }) });
});

afterAll(async () => {
  await azurite?.close();
});

/** A fresh table per test, and a clock the test moves. */
async function limiter(options: Partial<LiveResponseLimitsOptions> = {}) {
  const clock = { now: new Date("2025-06-01T10:00:00Z") };
  const table = TableClient.fromConnectionString(azurite.connectionString, `lrlimits${++tableCounter}`, { allowInsecureConnection: true });
  const limits = new LiveResponseLimits(table, { maxSessions: 25, startsPerWindow: 10, now: () => clock.now, ...options });
  await limits.ensureTable();
  const advance = (seconds: number) => {
    clock.now = new Date(clock.now.getTime() + seconds * 1000);
  };
  return { limits, advance };
}

const device = "1".repeat(40);

describe("per-device lease", () => {
  it("grants a device to exactly one of many concurrent holders", async () => {
    const { limits } = await limiter();
    const holders = Array.from({ length: 8 }, (_, i) => `incident-${i}/file-${i}`);
    const results = await Promise.all(holders.map((holder) => limits.acquireDevice(device, holder, 600)));
    const winners = results.flatMap((r, i) => (r.granted ? [holders[i]!] : []));
    expect(winners).toHaveLength(1);
    for (const r of results.filter((x) => !x.granted)) {
      expect(r).toMatchObject({ granted: false, limit: "device", holder: winners[0] });
      expect(r.granted === false && r.waitSeconds).toBeGreaterThan(590);
    }
    expect((await limits.deviceLease(device))?.holder).toBe(winners[0]);
  });

  it("is re-entrant for its holder, released only by its holder, then free for the next", async () => {
    const { limits, advance } = await limiter();
    expect(await limits.acquireDevice(device, "a/file-1", 600)).toMatchObject({ granted: true, renewed: false });
    advance(100);
    const again = await limits.acquireDevice(device, "a/file-1", 600);
    expect(again).toMatchObject({ granted: true, renewed: true });
    expect(again.granted && again.expiresAt.toISOString()).toBe("2025-06-01T10:11:40.000Z");
    expect(await limits.acquireDevice(device, "b/file-2", 600)).toMatchObject({ granted: false, limit: "device", holder: "a/file-1", waitSeconds: 600 });
    expect(await limits.releaseDevice(device, "b/file-2")).toBe(false);
    expect((await limits.deviceLease(device))?.holder).toBe("a/file-1");
    expect(await limits.releaseDevice(device, "a/file-1")).toBe(true);
    expect(await limits.deviceLease(device)).toBeUndefined();
    expect(await limits.acquireDevice(device, "b/file-2", 600)).toMatchObject({ granted: true, renewed: false });
  });

  it("lets another holder take over an expired lease (a crashed holder does not block the device)", async () => {
    const { limits, advance } = await limiter();
    expect((await limits.acquireDevice(device, "crashed/file-1", 60)).granted).toBe(true);
    advance(59);
    expect(await limits.acquireDevice(device, "next/file-2", 60)).toMatchObject({ granted: false, waitSeconds: 1 });
    advance(1);
    const takeover = await Promise.all([limits.acquireDevice(device, "next/file-2", 60), limits.acquireDevice(device, "other/file-3", 60)]);
    expect(takeover.filter((r) => r.granted)).toHaveLength(1);
    const winner = (await limits.deviceLease(device))!.holder;
    expect(["next/file-2", "other/file-3"]).toContain(winner);
    // The crashed holder coming back cannot release what is no longer its lease.
    expect(await limits.releaseDevice(device, "crashed/file-1")).toBe(false);
    expect((await limits.deviceLease(device))?.holder).toBe(winner);
  });
});

describe("tenant-wide session cap and start rate", () => {
  it("refuses the 26th concurrent session with the time until the first lease expires", async () => {
    const { limits, advance } = await limiter({ startsPerWindow: 1000 });
    for (let i = 0; i < 25; i++) {
      expect((await limits.acquireSession(`inc/file-${i}`, 1800, false)).granted).toBe(true);
      advance(1);
    }
    const refused = await limits.acquireSession("inc/file-25", 1800, false);
    expect(refused).toEqual({ granted: false, limit: "sessions", waitSeconds: 1775 });
    // A holder already in the set renews without counting twice.
    expect(await limits.acquireSession("inc/file-3", 1800, false)).toMatchObject({ granted: true, renewed: true });
    expect((await limits.usage()).sessions).toHaveLength(25);
    expect(await limits.releaseSession("inc/file-7")).toBe(true);
    expect(await limits.acquireSession("inc/file-25", 1800, false)).toMatchObject({ granted: true, renewed: false });
  });

  it("never lets concurrent acquirers exceed the cap", async () => {
    const { limits } = await limiter({ maxSessions: 5, startsPerWindow: 1000 });
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => limits.acquireSession(`race/file-${i}`, 600, true)));
    expect(results.filter((r) => r.granted)).toHaveLength(5);
    expect((await limits.usage()).sessions).toHaveLength(5);
    expect((await limits.usage()).starts).toBe(5);
  });

  it("refuses the 11th start in a rolling minute with the time until the oldest start leaves the window", async () => {
    const { limits, advance } = await limiter();
    for (let i = 0; i < 10; i++) {
      const holder = `inc/file-${i}`;
      expect((await limits.acquireSession(holder, 600, true)).granted).toBe(true);
      await limits.releaseSession(holder); // sessions end quickly: only the rate binds
      advance(3);
    }
    expect(await limits.acquireSession("inc/file-10", 600, true)).toEqual({ granted: false, limit: "starts", waitSeconds: 30 });
    // Adopting an existing action counts no start.
    expect((await limits.acquireSession("inc/file-10", 600, false)).granted).toBe(true);
    await limits.releaseSession("inc/file-10");
    advance(30);
    expect(await limits.acquireSession("inc/file-10", 600, true)).toMatchObject({ granted: true });
    expect((await limits.usage()).starts).toBe(10);
  });

  it("acquire() takes device, session and start together and gives a fresh device lease back when refused", async () => {
    const { limits } = await limiter({ maxSessions: 1 });
    const other = "2".repeat(40);
    expect(await limits.acquire({ deviceId: device, holder: "a/file-1", ttlSeconds: 600, countStart: true })).toMatchObject({ granted: true, renewed: false });
    expect(await limits.acquire({ deviceId: other, holder: "b/file-2", ttlSeconds: 600, countStart: true })).toMatchObject({ granted: false, limit: "sessions" });
    expect(await limits.deviceLease(other)).toBeUndefined();
    // Again for the holder (a redelivery): renewed, still one session.
    expect(await limits.acquire({ deviceId: device, holder: "a/file-1", ttlSeconds: 600, countStart: false })).toMatchObject({ granted: true, renewed: true });
    await limits.release({ deviceId: device, holder: "a/file-1" });
    expect(await limits.usage()).toEqual({ sessions: [], starts: 1 });
    expect(await limits.deviceLease(device)).toBeUndefined();
    expect((await limits.acquire({ deviceId: other, holder: "b/file-2", ttlSeconds: 600, countStart: true })).granted).toBe(true);
  });
});

describe("ownership marker", () => {
  const job = { incidentId: "7f3c2a10-1b2c-4d5e-8f90-a1b2c3d4e5f6", artifactId: "file-0123456789abcdef01234567" };

  it("ends the action comment with the job's marker and recognises only that", () => {
    const comment = collectComment({ ...job, fileName: "invoice.exe", incidentLabel: "42" });
    expect(comment).toBe(`ANY.RUN connector: collect invoice.exe for Sentinel incident 42 [anyrun-job:${job.incidentId}/${job.artifactId}]`);
    expect(leaseHolderOf(job)).toBe(`${job.incidentId}/${job.artifactId}`);
    expect(isOwnAction({ type: "LiveResponse", requestorComment: comment }, job)).toBe(true);
    expect(isOwnAction({ type: "LiveResponse", requestorComment: comment }, { ...job, artifactId: "file-ffff" })).toBe(false);
    expect(isOwnAction({ type: "Isolate", requestorComment: comment }, job)).toBe(false);
    expect(isOwnAction({ type: "LiveResponse", requestorComment: "Analyst: triage" }, job)).toBe(false);
    expect(isOwnAction({ type: "LiveResponse", requestorComment: null }, job)).toBe(false);
  });

  it("cannot be forged through a file name", () => {
    const victim = { incidentId: "victim", artifactId: "file-1111" };
    const comment = collectComment({ ...job, fileName: `x ${actionMarker(victim)}`, incidentLabel: "1" });
    expect(isOwnAction({ type: "LiveResponse", requestorComment: comment }, victim)).toBe(false);
    expect(comment).not.toContain(actionMarker(victim));
    expect(isOwnAction({ type: "LiveResponse", requestorComment: comment }, job)).toBe(true);
  });
});
