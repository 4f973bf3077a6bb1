import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { BlobServiceClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiError } from "@connector/shared/clients/http";
import { createMdeClient, isTerminalActionStatus, type MachineAction, type MdeClient } from "@connector/shared/clients/mde";
import { LocalTokenCredential } from "@connector/shared/credentials";
import { encodeCollectArgs } from "@connector/shared/live-response/args";
import { parseCollectResult } from "@connector/shared/live-response/result";
import { createLogger } from "@connector/shared/logger";
import { startAzurite, type AzuriteInstance } from "@connector/local/azurite";
import { defaultScriptsDir, startMdeDouble, type MdeDouble } from "@connector/local/doubles/mde";
import { blobSasUrl, ensureContainer, readBlob } from "@connector/local/doubles/mde/storage";

const fixtures = join(import.meta.dirname, "..", "fixtures", "microsoft");
const fixture = <T = Record<string, unknown>>(name: string): T => JSON.parse(readFileSync(join(fixtures, name), "utf8")) as T;
const scope = "https://api.securitycenter.microsoft.com/.default";
const container = "staging";
const sha256 = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

const winId = "1e5bc9d7e413ddd7902c2932e418702b84d0cc07";
const offlineId = "2222222222222222222222222222222222222222";
const linuxId = "1111111111111111111111111111111111111111";

let azurite: AzuriteInstance;
let blobs: BlobServiceClient;
let mde: MdeDouble;
let client: MdeClient;
const logLines: string[] = [];

function expectApiError(err: unknown, status: number, code: string): ApiError {
  expect(err).toBeInstanceOf(ApiError);
  const e = err as ApiError;
  expect(e.api).toBe("mde");
  expect(e.status).toBe(status);
  expect(e.code).toBe(code);
  return e;
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("expected a rejection");
}

async function pollUntilFinal(c: MdeClient, id: string, seen: string[] = []): Promise<MachineAction> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const action = await c.getMachineAction(id);
    if (seen[seen.length - 1] !== action.status) seen.push(action.status);
    if (isTerminalActionStatus(action.status)) return action;
    if (Date.now() > deadline) throw new Error(`action ${id} still ${action.status}`);
    await new Promise((r) => setTimeout(r, 15));
  }
}

const rawFetch = (path: string, init: RequestInit & { token?: string | null } = {}) => {
  const headers = new Headers(init.headers);
  const token = init.token === undefined ? `local.${Buffer.from("https://api.securitycenter.microsoft.com").toString("base64url")}` : init.token;
  if (token) headers.set("Authorization", `Bearer ${token}`);
  return fetch(`${mde.url}${path}`, { ...init, headers });
};

beforeAll(async () => {
  azurite = await startAzurite({ logger: createLogger({ level: "error", sink: () => {} }) });
  blobs = await ensureContainer(azurite, container);
  // The shared double allows many start calls; the 10-per-minute limit has its own test below.
  mde = await startMdeDouble({ pendingDelayMs: 5, startCallsPerMinute: 1000 });
  client = createMdeClient({
    baseUrl: mde.url,
    credential: new LocalTokenCredential(),
    scope,
    logger: createLogger({ level: "debug", sink: (_l, line) => logLines.push(line) }),
  });
  mde.seedMachine({ id: winId, osPlatform: "Windows10", version: "1709", osBuild: 18209, computerDnsName: "mymachine1.contoso.com" });
  mde.seedMachine({ id: offlineId, osPlatform: "Linux", healthStatus: "Inactive" });
  mde.seedMachine({ id: linuxId, osPlatform: "Linux" });
});

afterAll(async () => {
  await mde?.close();
  await azurite?.close();
});

describe("MDE client against the MDE double", () => {
  it("reads a machine with the documented fields", async () => {
    const machine = await client.getMachine(winId);
    const doc = fixture("mde-machine-get-response.json");
    for (const key of Object.keys(doc)) expect(machine, key).toHaveProperty(key);
    expect(machine).toMatchObject({ id: winId, osPlatform: "Windows10", version: "1709", osBuild: 18209, healthStatus: "Active", onboardingStatus: "onboarded", osArchitecture: "64-bit" });
  });

  it("maps an unknown machine to ApiError ResourceNotFound with the documented envelope", async () => {
    expectApiError(await rejection(client.getMachine("9".repeat(40))), 404, "ResourceNotFound");
    const raw = (await (await rawFetch(`/api/machines/${"9".repeat(40)}`)).json()) as { error: Record<string, unknown> };
    expect(Object.keys(raw.error).sort()).toEqual(Object.keys(fixture<{ error: object }>("mde-error-resourcenotfound.json").error).sort());
  });

  it("answers 401 Unauthorized without a token or with a token for another audience", async () => {
    const res = await rawFetch(`/api/machines/${winId}`, { token: null });
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("Unauthorized");
    const wrongAudience = createMdeClient({ baseUrl: mde.url, credential: new LocalTokenCredential(), scope: "https://management.azure.com/.default" });
    const err = expectApiError(await rejection(wrongAudience.getMachine(winId)), 401, "Unauthorized");
    expect(err.transient).toBe(false);
  });

  it("starts a RunScript action (201, Pending, commands Created), refuses a second one on the device, cancels", async () => {
    const action = await client.runScript(offlineId, { scriptName: "anyrun-collect.sh", args: "v1.linux.x", comment: "ANY.RUN collect" });
    const doc = fixture<MachineAction>("mde-runliveresponse-response.json");
    for (const key of Object.keys(doc)) expect(action, key).toHaveProperty(key);
    expect(action).toMatchObject({ type: "LiveResponse", status: "Pending", machineId: offlineId, requestorComment: "ANY.RUN collect", errorHResult: 0 });
    expect(action.commands).toEqual([
      {
        index: 0,
        startTime: null,
        endTime: null,
        commandStatus: "Created",
        errors: [],
        command: { type: "RunScript", params: [{ key: "ScriptName", value: "anyrun-collect.sh" }, { key: "Args", value: "v1.linux.x" }] },
      },
    ]);
    const raw = await rawFetch(`/api/machines/${linuxId}/runliveresponse`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(fixture("mde-runliveresponse-request.json")),
    });
    expect(raw.status).toBe(400); // minidump.ps1 is not in this library
    expect(((await raw.json()) as { error: { code: string } }).error.code).toBe("InvalidInput");

    // The device is offline: the action stays Pending, and the device has its one active action.
    await new Promise((r) => setTimeout(r, 50));
    expect((await client.getMachineAction(action.id)).status).toBe("Pending");
    expectApiError(await rejection(client.runScript(offlineId, { scriptName: "anyrun-collect.sh", args: "v1", comment: "again" })), 400, "ActiveRequestAlreadyExists");

    const { Comment } = fixture<{ Comment: string }>("mde-cancel-machineaction-request.json");
    const cancelled = await client.cancelMachineAction(action.id, Comment);
    expect(cancelled).toMatchObject({ id: action.id, status: "Cancelled", cancellationComment: Comment });
    expect(cancelled.cancellationDateTimeUtc).toEqual(expect.any(String));
    expect(isTerminalActionStatus(cancelled.status)).toBe(true);
    expectApiError(await rejection(client.cancelMachineAction(action.id, "twice")), 400, "BadRequest");
    expectApiError(await rejection(client.cancelMachineAction("00000000-0000-0000-0000-000000000000", "x")), 404, "ResourceNotFound");
  });

  it("validates the runliveresponse body case-sensitively", async () => {
    const post = async (body: unknown) => {
      const res = await rawFetch(`/api/machines/${linuxId}/runliveresponse`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      return { status: res.status, code: ((await res.json()) as { error: { code: string } }).error.code };
    };
    const script = { type: "RunScript", params: [{ key: "ScriptName", value: "anyrun-collect.sh" }] };
    expect(await post({ commands: [script], Comment: "x" })).toEqual({ status: 400, code: "MissingRequiredParameter" });
    expect(await post({ Commands: [script] })).toEqual({ status: 400, code: "MissingRequiredParameter" });
    expect(await post({ Commands: [{ type: "RunScript", params: [{ key: "scriptName", value: "anyrun-collect.sh" }] }], Comment: "x" })).toEqual({ status: 400, code: "InvalidRequestBody" });
    expect(await post({ Commands: [{ type: "RunScript", params: [{ key: "Args", value: "a" }] }], Comment: "x" })).toEqual({ status: 400, code: "MissingRequiredParameter" });
    expect(await post({ Commands: [{ type: "runscript", params: [] }], Comment: "x" })).toEqual({ status: 400, code: "InvalidRequestBody" });
    expect(await post({ Commands: [{ type: "GetFile", params: [{ key: "Path", value: "/x" }] }, script], Comment: "x" })).toEqual({ status: 400, code: "InvalidRequestBody" });
    expect(mde.actions().filter((a) => a.machineId === linuxId)).toHaveLength(0);
  });

  it("runs the Windows collection end to end: Pending → Succeeded, result link, transcript-framed result, blob", async () => {
    const content = Buffer.from("MZ fake windows sample \u0000\u0001 bytes");
    const originalPath = "C:\\Users\\alice\\Downloads\\inv & co; $(calc).exe";
    mde.seedQuarantine(winId, { originalPath, content });
    const blobName = "incident-1/win-sample.bin";
    const uploadUrl = blobSasUrl(azurite, container, blobName);
    const args = encodeCollectArgs({ uploadUrl, originalPath: originalPath.toUpperCase(), fileName: "inv & co; $(calc).exe", sha256: sha256(content), os: "windows" });

    const action = await client.runScript(winId, { scriptName: "anyrun-collect.ps1", args, comment: "ANY.RUN collect" });
    expect(action.status).toBe("Pending");
    const seen: string[] = [];
    const done = await pollUntilFinal(client, action.id, seen);
    expect(seen[seen.length - 1]).toBe("Succeeded");
    const finished = fixture<MachineAction>("mde-machineaction-liveresponse-succeeded.json");
    for (const key of Object.keys(finished)) expect(done, key).toHaveProperty(key);
    expect(Object.keys(done.commands![0]!).sort()).toEqual(Object.keys(finished.commands![0]!).sort());
    expect(done).toMatchObject({ type: finished.type, requestSource: finished.requestSource, errorHResult: 0 });
    expect(done.commands?.[0]).toMatchObject({ commandStatus: "Completed", errors: [] });
    expect(done.commands?.[0]?.startTime).toEqual(expect.any(String));
    expect(done.commands?.[0]?.endTime).toEqual(expect.any(String));

    const link = await client.getResultDownloadLink(action.id, 0);
    expect(new URL(link).searchParams.get("sig")).toEqual(expect.any(String));
    const linkDoc = fixture<{ value: string }>("mde-getliveresponseresultdownloadlink-response.json");
    for (const key of new URL(linkDoc.value).searchParams.keys()) expect(new URL(link).searchParams.has(key), key).toBe(true);

    const result = await client.downloadScriptResult(action.id, 0);
    expect(result.script_name).toBe("anyrun-collect.ps1");
    expect(result.exit_code).toBe(0);
    expect(result.script_output.startsWith("Transcript started, output file is")).toBe(true);
    expect(result.script_output.endsWith("\u0000")).toBe(true);
    expect(result.script_output).not.toContain("sig=");
    const outcome = parseCollectResult(result);
    expect(outcome).toEqual({ ok: true, exitCode: 0, report: { status: "uploaded", sha256: sha256(content), size: content.length } });
    expect(await readBlob(blobs, container, blobName)).toEqual(content);
    expect(mde.runs().at(-1)).toMatchObject({ actionId: action.id, os: "windows", args, exitCode: 0 });
  });

  it("runs a queued action once its device comes back online", async () => {
    const other = "3333333333333333333333333333333333333333";
    mde.seedMachine({ id: other, osPlatform: "WindowsServer2022", healthStatus: "NoSensorData" });
    const args = encodeCollectArgs({ uploadUrl: blobSasUrl(azurite, container, "q.bin"), originalPath: "C:\\nothing.exe", fileName: "nothing.exe", os: "windows" });
    const action = await client.runScript(other, { scriptName: "anyrun-collect.ps1", args, comment: "queued" });
    await new Promise((r) => setTimeout(r, 50));
    expect((await client.getMachineAction(action.id)).status).toBe("Pending");
    mde.seedMachine({ id: other, osPlatform: "WindowsServer2022", healthStatus: "Active" });
    const done = await pollUntilFinal(client, action.id);
    // The script ran and reported not_found with exit code 3: the commands ran, so the action
    // succeeds; only the result file's exit code and result line say the collection failed.
    expect(done.status).toBe("Succeeded");
    expect(done.commands?.[0]?.commandStatus).toBe("Completed");
    const outcome = parseCollectResult(await client.downloadScriptResult(action.id, 0));
    expect(outcome).toMatchObject({ ok: false, reason: "reported_failure", status: "not_found", exitCode: 3 });
  });

  it("retries a 401 once with a fresh token request, and surfaces a second 401", async () => {
    mde.injectFault({ operation: "getMachine", status: 401, code: "Unauthorized", times: 1 });
    expect((await client.getMachine(winId)).id).toBe(winId);
    mde.injectFault({ operation: "getMachine", status: 401, code: "Unauthorized", times: 2 });
    const err = expectApiError(await rejection(client.getMachine(winId)), 401, "Unauthorized");
    expect(err.transient).toBe(false);
  });

  it("surfaces injected faults by code (e.g. ResourceNotFound right after creation), then recovers", async () => {
    mde.injectFault({ operation: "getMachineAction", status: 404, code: "ResourceNotFound", times: 1 });
    const [first] = mde.actions();
    expectApiError(await rejection(client.getMachineAction(first!.id)), 404, "ResourceNotFound");
    expect((await client.getMachineAction(first!.id)).id).toBe(first!.id);
    mde.injectFault({ operation: "getMachine", status: 500, code: "InternalServerError" });
    const err = expectApiError(await rejection(client.getMachine(winId)), 500, "InternalServerError");
    expect(err.transient).toBe(true);
  });

  it("lists the library (seeded from services/scripts) and uploads with OverrideIfExists semantics", async () => {
    const files = await client.listLibraryFiles();
    const doc = fixture<{ value: Record<string, unknown>[] }>("mde-libraryfiles-list-response.json");
    const sh = files.find((f) => f.fileName === "anyrun-collect.sh");
    expect(sh?.sha256).toBe(sha256(readFileSync(join(defaultScriptsDir, "anyrun-collect.sh"))));
    expect(files.find((f) => f.fileName === "anyrun-collect.ps1")?.sha256).toBe(sha256(readFileSync(join(defaultScriptsDir, "anyrun-collect.ps1"))));
    for (const key of Object.keys(doc.value[0]!)) expect(sh, key).toHaveProperty(key);

    const uploaded = await client.uploadLibraryFile({
      fileName: "hello.sh",
      content: "#!/bin/bash\necho hello\n",
      description: "greeting",
      hasParameters: true,
      parametersDescription: "none really",
      overrideIfExists: false,
    });
    expect(uploaded).toMatchObject({ fileName: "hello.sh", sha256: sha256("#!/bin/bash\necho hello\n"), description: "greeting", hasParameters: true, parametersDescription: "none really" });
    expect((await client.listLibraryFiles()).map((f) => f.fileName)).toContain("hello.sh");
    const again = { fileName: "hello.sh", content: "#!/bin/bash\necho bye\n", description: "greeting", hasParameters: false, overrideIfExists: false };
    expectApiError(await rejection(client.uploadLibraryFile(again)), 400, "BadRequest");
    const replaced = await client.uploadLibraryFile({ ...again, overrideIfExists: true });
    expect(replaced.sha256).toBe(sha256("#!/bin/bash\necho bye\n"));
    expect(replaced.hasParameters).toBe(false);
    expect(() => client.uploadLibraryFile({ ...again, fileName: "bad name.sh" })).toThrow(TypeError);
    expect(() => client.uploadLibraryFile({ ...again, content: new Uint8Array(20 * 1024 * 1024 + 1) })).toThrow(RangeError);
    // The service side of the 20 MB limit, for a caller that does not check.
    const form = new FormData();
    form.append("file", new Blob([new Uint8Array(20 * 1024 * 1024 + 1)]), "big.bin");
    form.append("OverrideIfExists", "true");
    const big = await rawFetch("/api/libraryfiles", { method: "POST", body: form });
    expect(big.status).toBe(400);
    expect(((await big.json()) as { error: { code: string } }).error.code).toBe("BadRequest");
    expect((await client.listLibraryFiles()).map((f) => f.fileName)).not.toContain("big.bin");
  });

  it("never logs the result link's signature", () => {
    expect(logLines.length).toBeGreaterThan(0);
    for (const line of logLines) expect(line).not.toMatch(/sig=(?!REDACTED)/);
  });
});

describe("MDE double limits", () => {
  it("allows 10 runliveresponse calls per minute, then 429 with Retry-After", async () => {
    const limited = await startMdeDouble();
    try {
      const c = createMdeClient({ baseUrl: limited.url, credential: new LocalTokenCredential(), scope });
      const ids = Array.from({ length: 11 }, (_, i) => String(i).padStart(2, "0").repeat(20));
      for (const id of ids) limited.seedMachine({ id, osPlatform: "Linux", healthStatus: "Inactive" });
      for (const id of ids.slice(0, 10)) await c.runScript(id, { scriptName: "anyrun-collect.sh", args: "v1", comment: "burst" });
      const err = expectApiError(await rejection(c.runScript(ids[10]!, { scriptName: "anyrun-collect.sh", args: "v1", comment: "burst" })), 429, "TooManyRequests");
      expect(err.retryAfterSeconds).toBeGreaterThan(0);
      expect(err.retryAfterSeconds).toBeLessThanOrEqual(60);
      expect(err.transient).toBe(true);
    } finally {
      await limited.close();
    }
  });

  it("counts refused start calls (busy device, unknown device) against the same limit", async () => {
    const limited = await startMdeDouble({ pendingDelayMs: 60_000 });
    try {
      const c = createMdeClient({ baseUrl: limited.url, credential: new LocalTokenCredential(), scope });
      const busy = "ab".repeat(20);
      limited.seedMachine({ id: busy, osPlatform: "Linux", healthStatus: "Active" });
      await c.runScript(busy, { scriptName: "anyrun-collect.sh", args: "v1", comment: "first" });
      for (let i = 0; i < 8; i++) {
        expectApiError(await rejection(c.runScript(busy, { scriptName: "anyrun-collect.sh", args: "v1", comment: "again" })), 400, "ActiveRequestAlreadyExists");
      }
      expectApiError(await rejection(c.runScript("cd".repeat(20), { scriptName: "anyrun-collect.sh", args: "v1", comment: "unknown" })), 404, "ResourceNotFound");
      expectApiError(await rejection(c.runScript(busy, { scriptName: "anyrun-collect.sh", args: "v1", comment: "eleventh" })), 429, "TooManyRequests");
    } finally {
      await limited.close();
    }
  });

  it("times a long RunScript out (TimeOut) after InProgress, and tolerates gzip result files", async () => {
    const slow = await startMdeDouble({ runScriptTimeoutMs: 400, gzipResults: true, pendingDelayMs: 5 });
    try {
      const c = createMdeClient({ baseUrl: slow.url, credential: new LocalTokenCredential(), scope });
      slow.seedMachine({ id: linuxId, osPlatform: "Linux" });
      await c.uploadLibraryFile({ fileName: "sleepy.sh", content: "#!/bin/bash\necho started\nsleep 30\n", description: "", hasParameters: false, overrideIfExists: false });
      await c.uploadLibraryFile({ fileName: "quick.sh", content: '#!/bin/bash\necho "args=$#:$1"\necho oops >&2\nexit 0\n', description: "", hasParameters: true, overrideIfExists: false });
      const action = await c.runScript(linuxId, { scriptName: "sleepy.sh", args: "v1.none", comment: "slow" });
      const seen: string[] = [];
      const done = await pollUntilFinal(c, action.id, seen);
      expect(seen).toContain("InProgress");
      expect(done.status).toBe("TimeOut");
      expect(slow.runs()[0]).toMatchObject({ scriptName: "sleepy.sh", timedOut: true, exitCode: null });

      const quick = await c.runScript(linuxId, { scriptName: "quick.sh", args: "v1.a-b_c", comment: "quick" });
      expect((await pollUntilFinal(c, quick.id)).status).toBe("Succeeded");
      const result = await c.downloadScriptResult(quick.id, 0);
      expect(result).toEqual({ script_name: "quick.sh", exit_code: 0, script_output: "args=1:v1.a-b_c\n", script_errors: "oops\n" });
    } finally {
      await slow.close();
    }
  });

  it("expires result links after their lifetime (403 from storage)", async () => {
    const short = await startMdeDouble({ resultLinkTtlMs: 400, pendingDelayMs: 5 });
    try {
      const c = createMdeClient({ baseUrl: short.url, credential: new LocalTokenCredential(), scope });
      short.seedMachine({ id: linuxId, osPlatform: "Linux" });
      const action = await c.runScript(linuxId, { scriptName: "anyrun-collect.sh", args: "v1", comment: "bad args" });
      await pollUntilFinal(c, action.id);
      const link = await c.getResultDownloadLink(action.id, 0);
      expect((await fetch(link)).status).toBe(200);
      await new Promise((r) => setTimeout(r, 500));
      const expired = await fetch(link);
      expect(expired.status).toBe(403);
      expect(expired.headers.get("x-ms-error-code")).toBe("AuthenticationFailed");
      // A fresh link works again without re-running anything.
      expect(parseCollectResult(await c.downloadScriptResult(action.id, 0))).toMatchObject({ ok: false, status: "bad_args", exitCode: 2 });
    } finally {
      await short.close();
    }
  });
});
