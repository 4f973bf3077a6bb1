import { createHash } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BlobServiceClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMdeClient, isTerminalActionStatus, type MdeClient } from "@connector/shared/clients/mde";
import { LocalTokenCredential } from "@connector/shared/credentials";
import { encodeCollectArgs, type CollectArgs } from "@connector/shared/live-response/args";
import { parseCollectResult } from "@connector/shared/live-response/result";
import { createLogger } from "@connector/shared/logger";
import { startAzurite, type AzuriteInstance } from "@connector/local/azurite";
import { startMdeDouble, type MdeDouble } from "@connector/local/doubles/mde";
import { blobSasUrl, ensureContainer, readBlob } from "@connector/local/doubles/mde/storage";

/**
 * The real services/scripts/anyrun-collect.sh, run by the MDE double with bash and a stand-in
 * `mdatp`, uploading with its own curl PUT into Azurite.
 */

const container = "staging";
const linuxId = "1111111111111111111111111111111111111111";
const macId = "4444444444444444444444444444444444444444";
const hash = (algorithm: string, b: Buffer) => createHash(algorithm).update(b).digest("hex");
const eicar = Buffer.from("X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*");
// Every character a shell or PowerShell would interpret, plus a newline.
const nastyPath = "/home/azureuser/evil dir/a;b & c | $(id) `id` 'q' \"dq\" back\\slash\nline.com";

let azurite: AzuriteInstance;
let blobs: BlobServiceClient;
let mde: MdeDouble;
let client: MdeClient;
let blobCounter = 0;

beforeAll(async () => {
  azurite = await startAzurite({ logger: createLogger({ level: "error", sink: () => {} }) });
  blobs = await ensureContainer(azurite, container);
  // The start-call budget is raised for this file only; the 10/min limit itself is covered by the contract test.
  mde = await startMdeDouble({ pendingDelayMs: 5, startCallsPerMinute: 100 });
  client = createMdeClient({ baseUrl: mde.url, credential: new LocalTokenCredential(), scope: "https://api.securitycenter.microsoft.com/.default" });
  mde.seedMachine({ id: linuxId, osPlatform: "Linux", computerDnsName: "examplelinuxvm" });
  mde.seedMachine({ id: macId, osPlatform: "macOS" }, { agent: "legacy" });
});

afterAll(async () => {
  await mde?.close();
  await azurite?.close();
});

function newBlob(options?: { permissions?: string; expiresOn?: Date }) {
  const blobName = `incident-7/artifact-${++blobCounter}.bin`;
  return { blobName, uploadUrl: blobSasUrl(azurite, container, blobName, options) };
}

/** Starts through the client, or with a raw request for Args the client itself refuses to send. */
async function start(deviceId: string, args: string, raw: boolean): Promise<{ id: string; status: string }> {
  if (!raw) return client.runScript(deviceId, { scriptName: "anyrun-collect.sh", args, comment: "ANY.RUN collect" });
  const token = (await new LocalTokenCredential().getToken("https://api.securitycenter.microsoft.com/.default")).token;
  const body = { Commands: [{ type: "RunScript", params: [{ key: "ScriptName", value: "anyrun-collect.sh" }, { key: "Args", value: args }] }], Comment: "raw" };
  const res = await fetch(`${mde.url}/api/machines/${deviceId}/runliveresponse`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  expect(res.status).toBe(201);
  return (await res.json()) as { id: string; status: string };
}

async function collect(deviceId: string, args: string, raw = false) {
  const action = await start(deviceId, args, raw);
  const deadline = Date.now() + 30_000;
  let status = action.status;
  while (!isTerminalActionStatus(status)) {
    if (Date.now() > deadline) throw new Error(`action still ${status}`);
    await new Promise((r) => setTimeout(r, 20));
    status = (await client.getMachineAction(action.id)).status;
  }
  const result = await client.downloadScriptResult(action.id, 0);
  const run = mde.runs().find((r) => r.actionId === action.id)!;
  return { status, result, outcome: parseCollectResult(result), run };
}

function expectNoSecrets(uploadUrl: string, texts: string[]) {
  const url = new URL(uploadUrl);
  const sig = url.searchParams.get("sig")!;
  for (const text of texts) {
    expect(text).not.toContain("sig=");
    expect(text).not.toContain(sig);
    expect(text).not.toContain(encodeURIComponent(sig));
    expect(text).not.toContain(url.search.slice(1));
    expect(text).not.toContain(url.host);
  }
}

function argsFor(over: Partial<CollectArgs> & Pick<CollectArgs, "uploadUrl">): string {
  return encodeCollectArgs({ originalPath: nastyPath, fileName: "a;b & c.com", os: "linux", ...over });
}

describe("anyrun-collect.sh through the MDE double and Azurite", () => {
  it("restores the quarantined file, uploads its exact bytes, reports sha256/size, leaks no SAS, cleans up", async () => {
    mde.seedQuarantine(linuxId, { originalPath: nastyPath, content: eicar });
    const { blobName, uploadUrl } = newBlob();
    const args = argsFor({ uploadUrl, sha256: hash("sha256", eicar) });
    expect(args).toMatch(/^[A-Za-z0-9._-]+$/);
    const { status, result, outcome, run } = await collect(linuxId, args);

    expect(status).toBe("Succeeded");
    expect(run.args).toBe(args);
    expect(result.exit_code).toBe(0);
    expect(outcome).toEqual({ ok: true, exitCode: 0, report: { status: "uploaded", sha256: hash("sha256", eicar), size: eicar.length } });
    const blob = await readBlob(blobs, container, blobName);
    expect(blob).toBeDefined();
    expect(hash("sha256", blob!)).toBe(hash("sha256", eicar));
    expectNoSecrets(uploadUrl, [result.script_output, result.script_errors]);
    // The restore used the modern by-path command inside an excluded private folder, removed afterwards.
    const calls = mde.mdatpCalls(linuxId);
    expect(calls.some((c) => c.startsWith("mdatp threat quarantine restore threat-path --path "))).toBe(true);
    expect(calls.filter((c) => c.startsWith("mdatp exclusion folder add --path "))).toHaveLength(1);
    expect(calls.filter((c) => c.startsWith("mdatp exclusion folder remove --path "))).toHaveLength(1);
    expect(mde.mdatpExclusions(linuxId)).toEqual([]);
    expect(run.leftovers).toEqual([]);
    expect(result.script_output.trim().split("\n").at(-1)).toMatch(/^ANYRUN_COLLECT_RESULT [A-Za-z0-9_-]+$/);
  });

  it("refuses a file whose hash differs: non-zero exit, hash_mismatch, nothing uploaded", async () => {
    const content = Buffer.from("a different file at the same path\n");
    const path = "/srv/app/payload.bin";
    mde.seedQuarantine(linuxId, { originalPath: path, content });
    const { blobName, uploadUrl } = newBlob();
    const { status, result, outcome } = await collect(linuxId, argsFor({ uploadUrl, originalPath: path, fileName: "payload.bin", sha256: hash("sha256", eicar) }));
    expect(status).toBe("Succeeded");
    expect(result.exit_code).toBe(5);
    expect(outcome).toMatchObject({ ok: false, reason: "reported_failure", status: "hash_mismatch", exitCode: 5 });
    if (!outcome.ok) expect(outcome.report?.sha256).toBe(hash("sha256", content));
    expect(await readBlob(blobs, container, blobName)).toBeUndefined();
  });

  it("checks sha1 when no sha256 is given, and md5 when only md5 is", async () => {
    const path = "/tmp/drop/sample.elf";
    const content = Buffer.from("\u007fELF fake sample");
    mde.seedQuarantine(linuxId, { originalPath: path, content });
    const one = newBlob();
    const bySha1 = await collect(linuxId, argsFor({ uploadUrl: one.uploadUrl, originalPath: path, fileName: "sample.elf", sha1: hash("sha1", content) }));
    expect(bySha1.outcome).toMatchObject({ ok: true, report: { sha256: hash("sha256", content), size: content.length } });
    const two = newBlob();
    const wrongMd5 = await collect(linuxId, argsFor({ uploadUrl: two.uploadUrl, originalPath: path, fileName: "sample.elf", md5: hash("md5", eicar) }));
    expect(wrongMd5.outcome).toMatchObject({ ok: false, status: "hash_mismatch", exitCode: 5 });
    const rightMd5 = await collect(linuxId, argsFor({ uploadUrl: two.uploadUrl, originalPath: path, fileName: "sample.elf", md5: hash("md5", content) }));
    expect(rightMd5.outcome.ok).toBe(true);
    expect(await readBlob(blobs, container, two.blobName)).toEqual(content);
  });

  it("fails with upload_failed when the SAS has expired (curl --fail on 403)", async () => {
    const path = "/opt/x/expired.sh";
    mde.seedQuarantine(linuxId, { originalPath: path, content: eicar });
    const { blobName, uploadUrl } = newBlob({ expiresOn: new Date(Date.now() - 60_000) });
    const { status, result, outcome } = await collect(linuxId, argsFor({ uploadUrl, originalPath: path, fileName: "expired.sh", sha256: hash("sha256", eicar) }));
    expect(status).toBe("Succeeded");
    expect(result.exit_code).toBe(6);
    expect(outcome).toMatchObject({ ok: false, status: "upload_failed", exitCode: 6, report: { detail: "curl exit 22 http 403" } });
    expect(await readBlob(blobs, container, blobName)).toBeUndefined();
    expectNoSecrets(uploadUrl, [result.script_output, result.script_errors]);
  });

  it("fails with upload_failed when the SAS does not grant write", async () => {
    const path = "/opt/x/readonly.sh";
    mde.seedQuarantine(linuxId, { originalPath: path, content: eicar });
    const { blobName, uploadUrl } = newBlob({ permissions: "r" });
    const { result, outcome } = await collect(linuxId, argsFor({ uploadUrl, originalPath: path, fileName: "readonly.sh" }));
    expect(result.exit_code).toBe(6);
    expect(outcome).toMatchObject({ ok: false, status: "upload_failed", report: { detail: "curl exit 22 http 403" } });
    expect(await readBlob(blobs, container, blobName)).toBeUndefined();
  });

  it("reports not_found for a file that is neither on disk nor in quarantine, after trying every lookup", async () => {
    const before = mde.mdatpCalls(linuxId).length;
    const { uploadUrl } = newBlob();
    const { result, outcome } = await collect(linuxId, argsFor({ uploadUrl, originalPath: "/nowhere/ghost.bin", fileName: "ghost.bin" }));
    expect(result.exit_code).toBe(3);
    expect(outcome).toMatchObject({ ok: false, reason: "reported_failure", status: "not_found", exitCode: 3 });
    const calls = mde.mdatpCalls(linuxId).slice(before);
    expect(calls).toContain("mdatp threat quarantine list");
    expect(calls).toContain("mdatp threat list");
  });

  it("falls back to `restore --id --path` on an agent older than 101.23092.0012 (macOS)", async () => {
    const path = "/Users/bob/Downloads/invoice.pdf.app";
    const content = Buffer.from("macho fake");
    const threatId = mde.seedQuarantine(macId, { originalPath: path, content });
    const { blobName, uploadUrl } = newBlob();
    const { status, outcome } = await collect(macId, argsFor({ uploadUrl, originalPath: path, fileName: "invoice.pdf.app", sha256: hash("sha256", content), os: "macos" }));
    expect(status).toBe("Succeeded");
    expect(outcome).toMatchObject({ ok: true, report: { sha256: hash("sha256", content) } });
    expect(await readBlob(blobs, container, blobName)).toEqual(content);
    const calls = mde.mdatpCalls(macId);
    expect(calls.some((c) => c.includes("restore threat-path"))).toBe(true); // tried first, rejected by the old agent
    const legacy = calls.filter((c) => c.startsWith(`mdatp threat quarantine restore --id ${threatId} --path `));
    expect(legacy).toHaveLength(1);
    expect(calls.indexOf(legacy[0]!)).toBeGreaterThan(calls.findIndex((c) => c.includes("restore threat-id --id")));
  });

  it("copies a file still present at its original path without touching the quarantine", async () => {
    const dir = mkdtempSync(join(tmpdir(), "endpoint-"));
    try {
      const path = join(dir, "still here; really.txt");
      const content = Buffer.from("present on disk\n");
      writeFileSync(path, content);
      const before = mde.mdatpCalls(linuxId).length;
      const { blobName, uploadUrl } = newBlob();
      const { outcome } = await collect(linuxId, argsFor({ uploadUrl, originalPath: path, fileName: "still here; really.txt", sha256: hash("sha256", content) }));
      expect(outcome).toMatchObject({ ok: true, report: { sha256: hash("sha256", content), size: content.length } });
      expect(await readBlob(blobs, container, blobName)).toEqual(content);
      expect(mde.mdatpCalls(linuxId).slice(before)).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses a network or pseudo-filesystem path or dot segments even when an envelope carries them (bad_args, nothing reached)", async () => {
    const { blobName, uploadUrl } = newBlob();
    const fields = argsFor({ uploadUrl }).split(".");
    for (const [path, detail] of [
      ["//evil-host/share/a.sh", "original path not absolute"],
      ["/tmp/../etc/shadow", "original path has dot segments"],
      ["/proc/self/environ", "original path is on a pseudo or network filesystem"],
      ["/net/evil-host/share/a.sh", "original path is on a pseudo or network filesystem"],
    ] as const) {
      fields[3] = Buffer.from(path).toString("base64url");
      const run = await collect(linuxId, fields.join("."));
      expect(run.outcome).toMatchObject({ ok: false, status: "bad_args", exitCode: 2, report: { detail } });
      expect(run.run.leftovers).toEqual([]);
    }
    expect(mde.mdatpCalls(linuxId).filter((c) => c.includes("evil-host") || c.includes("shadow") || c.includes("environ"))).toEqual([]);
    expect(await readBlob(blobs, container, blobName)).toBeUndefined();
  });

  it("rejects a malformed or foreign envelope with bad_args (exit 2)", async () => {
    const { uploadUrl } = newBlob();
    const windowsArgs = encodeCollectArgs({ uploadUrl, originalPath: "C:\\x.exe", fileName: "x.exe", os: "windows" });
    const foreign = await collect(linuxId, windowsArgs);
    expect(foreign.outcome).toMatchObject({ ok: false, status: "bad_args", exitCode: 2, report: { detail: "envelope os" } });
    const fields = argsFor({ uploadUrl }).split(".");
    fields[3] = "%%%";
    const broken = await collect(linuxId, fields.join(".").replace("%%%", "a"));
    expect(broken.outcome).toMatchObject({ ok: false, status: "bad_args", exitCode: 2 });
    const injection = "v1.linux.$(touch ${TMPDIR}/pwned);id";
    expect(() => client.runScript(linuxId, { scriptName: "anyrun-collect.sh", args: injection, comment: "x" })).toThrow(TypeError);
    const shell = await collect(linuxId, injection, true);
    expect(shell.outcome).toMatchObject({ ok: false, status: "bad_args", report: { detail: "envelope charset" } });
    expect(shell.run.leftovers).toEqual([]);
  });
});
