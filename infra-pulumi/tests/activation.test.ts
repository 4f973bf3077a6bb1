import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { activateFunctionApp } from "../src/activation-core.ts";

// The ARM calls the activation makes, against a loopback stand-in for management.azure.com that
// answers as ARM does for a Flex Consumption app whose host indexes its functions only once its
// triggers were synced.

const appId = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/func-contoso";
const expected = ["intake", "submitUrl", "enrichIncident"];

interface ArmCall {
  method: string;
  path: string;
  apiVersion: string | null;
  auth: string | undefined;
}

let server: Server | undefined;
afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

async function startArm(behaviour: {
  listAfterSyncs: number;
  /** The host indexes its functions only from this restart on (a Key Vault reference resolved late). */
  listAfterRestarts?: number;
  syncStatus?: number;
  listed?: string[];
  restartFailures?: number;
  listFailures?: number;
}) {
  const calls: ArmCall[] = [];
  let syncs = 0;
  let restarts = 0;
  let restartFailures = behaviour.restartFailures ?? 0;
  let listFailures = behaviour.listFailures ?? 0;
  server = createServer((req: IncomingMessage, res) => {
    const url = new URL(req.url ?? "/", "http://arm");
    calls.push({ method: req.method ?? "", path: url.pathname, apiVersion: url.searchParams.get("api-version"), auth: req.headers.authorization });
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { "Content-Type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (req.method === "POST" && url.pathname === `${appId}/restart`) {
      if (restartFailures-- > 0) return json(429, { error: { code: "TooManyRequests" } });
      restarts++;
      syncs = 0;
      return json(200, {});
    }
    if (req.method === "POST" && url.pathname === `${appId}/syncfunctiontriggers`) {
      syncs++;
      return behaviour.syncStatus ? json(behaviour.syncStatus, { error: { code: "AuthorizationFailed" } }) : json(200, {});
    }
    if (req.method === "GET" && url.pathname === `${appId}/functions`) {
      // What ARM answers while the host is still starting.
      if (listFailures-- > 0) return json(400, { Code: "BadRequest", Message: "Encountered an error (ServiceUnavailable) from host runtime." });
      const indexed = syncs >= behaviour.listAfterSyncs && restarts >= (behaviour.listAfterRestarts ?? 1);
      const names = indexed ? (behaviour.listed ?? expected) : [];
      return json(200, { value: names.map((n) => ({ id: `${appId}/functions/${n}`, name: `func-contoso/${n}`, properties: { name: n } })) });
    }
    return json(404, { error: { code: "NotFound" } });
  });
  await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", () => resolve()));
  return { calls, armBaseUrl: `http://127.0.0.1:${(server!.address() as AddressInfo).port}` };
}

/** A clock that the injected sleep moves, so waits take no real time. */
function fakeTime() {
  let t = 0;
  return { now: () => t, sleep: async (ms: number) => void (t += ms) };
}

describe("activateFunctionApp", () => {
  it("restarts, syncs triggers (again while functions are missing) and returns once every function is listed", async () => {
    const arm = await startArm({ listAfterSyncs: 2 });
    const time = fakeTime();
    const result = await activateFunctionApp(
      { appId, expectedFunctions: expected, armBaseUrl: arm.armBaseUrl, pollMs: 10_000, resyncMs: 30_000 },
      { getToken: async () => "arm-token", ...time },
    );
    expect(result.functions.sort()).toEqual([...expected].sort());
    expect(result.syncCalls).toBe(2);
    expect(arm.calls[0]).toMatchObject({ method: "POST", path: `${appId}/restart` });
    expect(arm.calls[1]).toMatchObject({ method: "POST", path: `${appId}/syncfunctiontriggers` });
    expect(arm.calls.every((c) => c.auth === "Bearer arm-token" && c.apiVersion === "2024-04-01")).toBe(true);
    // Listing polls every 10 s; the second sync came 30 s after the first.
    expect(arm.calls.filter((c) => c.method === "GET").length).toBe(4);
  });

  it("restarts again while functions are missing, so a Key Vault reference that resolves late is picked up", async () => {
    const arm = await startArm({ listAfterSyncs: 1, listAfterRestarts: 2 });
    const result = await activateFunctionApp(
      { appId, expectedFunctions: expected, armBaseUrl: arm.armBaseUrl, pollMs: 10_000, resyncMs: 60_000, restartMs: 120_000 },
      { getToken: async () => "t", ...fakeTime() },
    );
    expect(result.functions.sort()).toEqual([...expected].sort());
    expect(result.restarts).toBe(2);
    // Each restart is followed by a trigger sync.
    const actions = arm.calls.filter((c) => c.method === "POST").map((c) => c.path.split("/").pop());
    expect(actions).toEqual(["restart", "syncfunctiontriggers", "syncfunctiontriggers", "restart", "syncfunctiontriggers"]);
  });

  it("fails with the missing functions named when the host never lists them", async () => {
    const arm = await startArm({ listAfterSyncs: 1, listed: ["intake"] });
    const time = fakeTime();
    await expect(
      activateFunctionApp({ appId, expectedFunctions: expected, armBaseUrl: arm.armBaseUrl, timeoutMs: 60_000 }, { getToken: async () => "t", ...time }),
    ).rejects.toThrow(/did not list submitUrl, enrichIncident within 60 s .*listed: intake/);
  });

  it("says which permission is missing when ARM refuses the trigger sync", async () => {
    const arm = await startArm({ listAfterSyncs: 1, syncStatus: 403 });
    await expect(
      activateFunctionApp({ appId, expectedFunctions: expected, armBaseUrl: arm.armBaseUrl }, { getToken: async () => "t", ...fakeTime() }),
    ).rejects.toThrow(/refused syncfunctiontriggers on the Function App \(403\).*Website Contributor/);
  });

  it("rides out a host that is still starting: a throttled restart and listing errors are retried", async () => {
    const arm = await startArm({ listAfterSyncs: 1, restartFailures: 2, listFailures: 3 });
    const result = await activateFunctionApp(
      { appId, expectedFunctions: expected, armBaseUrl: arm.armBaseUrl, pollMs: 5_000 },
      { getToken: async () => "t", ...fakeTime() },
    );
    expect(result.functions.sort()).toEqual([...expected].sort());
    expect(arm.calls.filter((c) => c.path.endsWith("/restart"))).toHaveLength(3);
    expect(arm.calls.filter((c) => c.path.endsWith("/functions"))).toHaveLength(4);
  });

  it("names the last ARM answer when the listing never recovers", async () => {
    const arm = await startArm({ listAfterSyncs: 1, listFailures: 1_000 });
    await expect(
      activateFunctionApp({ appId, expectedFunctions: expected, armBaseUrl: arm.armBaseUrl, timeoutMs: 30_000 }, { getToken: async () => "t", ...fakeTime() }),
    ).rejects.toThrow(/listed: none; last: the function listing answered 400: .*ServiceUnavailable/);
  });
});
