import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { ApiError } from "@connector/shared/clients/http";
import { createAnyRunClient, connectorHeader, type AnyRunClient, type SubmitResult } from "@connector/shared/clients/anyrun";
import { AnyRunInputError } from "@connector/shared/anyrun/options";
import { parseReport, readReport, type ReportOutcome } from "@connector/shared/anyrun/report";
import { createLogger } from "@connector/shared/logger";
import { startAnyRunDouble, type AnyRunDouble, type AnyRunDoubleOptions } from "@connector/local/doubles/anyrun";

const apiKey = "contract-test-anyrun-key-7f3a91";
const badBytes = Buffer.from("MZ\x90\x00 pretend-malware payload for the ANY.RUN double");
const cleanBytes = Buffer.from("%PDF-1.4 harmless document");
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const sha1 = (b: Uint8Array) => createHash("sha1").update(b).digest("hex");
const md5 = (b: Uint8Array) => createHash("md5").update(b).digest("hex");

const logLines: string[] = [];
let double: AnyRunDouble | undefined;

async function setup(options: AnyRunDoubleOptions = {}, clientOptions: { fetch?: (r: Request) => Promise<Response>; timeoutMs?: number } = {}) {
  double = await startAnyRunDouble({ apiKey, knownBadSha256: sha256(badBytes), queuedMs: 15, runningMs: 40, ...options });
  const client = createAnyRunClient({
    baseUrl: double.url,
    apiKey,
    logger: createLogger({ level: "debug", sink: (_l, line) => logLines.push(line) }),
    ...clientOptions,
  });
  return { double, client };
}

afterEach(async () => {
  await double?.close();
  double = undefined;
  // The key never reaches a log line.
  for (const line of logLines) expect(line).not.toContain(apiKey);
  logLines.length = 0;
});

function taskIdOf(result: SubmitResult): string {
  if (result.kind !== "task") throw new Error(`expected a task, got ${JSON.stringify(result)}`);
  return result.taskId;
}

/** A clock the double reads; tests move it instead of sleeping. */
function fakeClock(start = 1_760_000_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => void (t += ms) };
}

async function pollUntilFinal(
  client: AnyRunClient,
  taskId: string,
  wait: () => void | Promise<void>,
): Promise<{ outcome: ReportOutcome; seen: string[] }> {
  const seen: string[] = [];
  for (let i = 0; i < 100; i++) {
    const { report, outcome } = await client.getReport(taskId);
    seen.push(String(report.data.status));
    if (outcome.state !== "pending") return { outcome, seen };
    await wait();
  }
  throw new Error("task never finished");
}

async function expectApiError(promise: Promise<unknown>): Promise<ApiError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ApiError);
  return err as ApiError;
}

describe("submission", () => {
  it("submits a URL as JSON with string values and the connector header", async () => {
    const { double, client } = await setup();
    const result = await client.submitUrl("https://phish.example/login", {
      obj_ext_browser: "Mozilla Firefox",
      opt_network_tor: false,
      user_tags: ["sentinel", "incident #7"],
    });
    expect(result).toEqual({ kind: "task", taskId: expect.stringMatching(/^[0-9a-f-]{36}$/), status: 201 });
    const [task] = double.tasks();
    expect(task).toMatchObject({ taskId: taskIdOf(result), kind: "url", url: "https://phish.example/login", encoding: "application/json" });
    expect(task!.connectorHeader).toBe(connectorHeader.value);
    expect(task!.fields).toMatchObject({
      obj_type: "url",
      obj_url: "https://phish.example/login",
      obj_ext_browser: "Mozilla Firefox",
      opt_network_tor: "false",
      opt_network_fakenet: "false",
      user_tags: "sentinel,incident-7",
    });
    expect(task!.hashes.sha256).toBe(sha256(Buffer.from("https://phish.example/login")));
  });

  it("streams a file as multipart: part `file`, explicit false booleans, hashes of the bytes", async () => {
    const { double, client } = await setup();
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(badBytes.subarray(0, 10));
        c.enqueue(badBytes.subarray(10));
        c.close();
      },
    });
    const r1 = await client.submitFile(
      { fileName: "invoice.exe", content: stream },
      { opt_network_connect: false, opt_automated_interactivity: false, obj_ext_startfolder: "temp" },
    );
    const r2 = await client.submitFile({ fileName: "doc.pdf", content: cleanBytes, contentType: "application/pdf" }, { env_os: "linux" });
    expect(r1.kind).toBe("task");
    expect(r2.kind).toBe("task");

    const [t1, t2] = double.tasks();
    expect(t1).toMatchObject({ kind: "file", fileName: "invoice.exe", size: badBytes.length, encoding: "multipart/form-data", malicious: true });
    expect(t1!.hashes).toEqual({ md5: md5(badBytes), sha1: sha1(badBytes), sha256: sha256(badBytes) });
    expect(t1!.fields).toEqual({
      obj_type: "file",
      env_os: "windows",
      env_version: "10",
      env_bitness: "64",
      env_type: "complete",
      opt_network_connect: "false",
      opt_network_fakenet: "false",
      opt_network_tor: "false",
      opt_network_mitm: "false",
      opt_automated_interactivity: "false",
      obj_ext_startfolder: "temp",
      auto_confirm_uac: "true",
    });
    expect(t2).toMatchObject({ fileName: "doc.pdf", fileContentType: "application/pdf", malicious: false });
    expect(t2!.hashes.sha256).toBe(sha256(cleanBytes));
    expect(t2!.fields).toMatchObject({ env_os: "linux", env_version: "22.04.2", run_as_root: "false" });
    expect(t2!.fields.auto_confirm_uac).toBeUndefined();

    // The unsized stream went out chunked; the Buffer with its exact Content-Length.
    const posts = double.requests().filter((r) => r.method === "POST");
    expect(posts[0]!.transferEncoding).toBe("chunked");
    expect(posts[0]!.contentLength).toBeUndefined();
    expect(Number(posts[1]!.contentLength)).toBeGreaterThan(cleanBytes.length);
  });

  it("streams a multi-MiB sample with a declared size as Content-Length; oversize bodies get 413", async () => {
    const { double, client } = await setup({ maxBodyBytes: 6 * 1024 * 1024 });
    const chunk = 256 * 1024;
    const total = 5 * 1024 * 1024;
    const expected = createHash("sha256");
    let produced = 0;
    const source = () =>
      new ReadableStream<Uint8Array>({
        pull(controller) {
          if (produced >= total) return controller.close();
          const part = new Uint8Array(chunk).fill(produced / chunk);
          expected.update(part);
          produced += chunk;
          controller.enqueue(part);
        },
      });
    await client.submitFile({ fileName: "big.bin", content: source(), size: total });
    const [task] = double.tasks();
    expect(task).toMatchObject({ size: total, hashes: { sha256: expected.digest("hex") } });
    const post = double.requests().find((r) => r.method === "POST");
    expect(Number(post!.contentLength)).toBeGreaterThan(total);
    expect(post!.transferEncoding).toBeUndefined();

    const err = await expectApiError(client.submitFile({ fileName: "huge.bin", content: Buffer.alloc(7 * 1024 * 1024) }));
    expect(err.status).toBe(413);
    expect(double.tasks()).toHaveLength(1);
  });

  it("accepts 200 as created and 202 as queued", async () => {
    const { double, client } = await setup();
    double.setSubmitStatus(200);
    const created = await client.submitUrl("https://example.com/a");
    expect(created).toEqual({ kind: "task", taskId: double.tasks()[0]!.taskId, status: 200 });

    double.setSubmitStatus(202);
    const queued = await client.submitUrl("https://example.com/b");
    expect(queued).toEqual({ kind: "queued", queueTaskId: double.tasks()[1]!.queueTaskId });
    if (queued.kind !== "queued") throw new Error("unreachable");
    // The queue id is not a task id; the task is found through history.
    const notFound = await expectApiError(client.getReport(queued.queueTaskId));
    expect(notFound.status).toBe(404);
    const history = await client.getHistory({ limit: 1 });
    expect(history[0]).toMatchObject({ uuid: double.tasks()[1]!.taskId, name: "https://example.com/b" });
  });

  it("treats a 2xx without an id as NoTaskId (outcome unknown, not transient)", async () => {
    const { client } = await setup({
      faults: (req) => (req.method === "POST" ? { status: 201, body: { error: false, data: {} } } : undefined),
    });
    const err = await expectApiError(client.submitUrl("https://example.com/x"));
    expect(err).toMatchObject({ api: "anyrun", operation: "submitUrl", status: 201, code: "NoTaskId" });
    expect(err.transient).toBe(false);
  });
});

describe("failures", () => {
  it("401 for a wrong key, without the key in the error", async () => {
    const { double } = await setup();
    const wrongKey = "wrong-key-for-contract-4411";
    const client = createAnyRunClient({ baseUrl: double.url, apiKey: wrongKey, logger: createLogger({ sink: () => {} }) });
    const err = await expectApiError(client.submitUrl("https://example.com/x"));
    expect(err).toMatchObject({ api: "anyrun", status: 401 });
    expect(err.message).toContain("invalid or missing API key");
    expect(err.message).not.toContain(wrongKey);
    expect(String(err.stack)).not.toContain(wrongKey);
    expect(err.transient).toBe(false);
    expect(double.tasks()).toHaveLength(0);
  });

  it("redacts the key even if an error body echoes it", async () => {
    const { client } = await setup({
      faults: () => ({ status: 403, body: { error: true, message: `key ${apiKey} has no access (Authorization: API-Key ${apiKey})` } }),
    });
    const err = await expectApiError(client.getUser());
    expect(err.status).toBe(403);
    expect(err.message).not.toContain(apiKey);
    expect(err.message).toContain("REDACTED");
  });

  it("429 when no parallel slot is free, with Retry-After parsed", async () => {
    const { double, client } = await setup({ parallelSlots: 1, retryAfterSeconds: 17, now: fakeClock().now });
    await client.submitUrl("https://example.com/first");
    expect((await client.getUser()).limits.parallels).toEqual({ total: 1, available: 0 });
    const err = await expectApiError(client.submitUrl("https://example.com/second"));
    expect(err).toMatchObject({ status: 429, retryAfterSeconds: 17 });
    expect(err.transient).toBe(true);
    expect(double.submissions()).toBe(2);
    expect(double.tasks()).toHaveLength(1);

    double.setParallelSlots(2);
    expect((await client.submitUrl("https://example.com/second")).kind).toBe("task");
    expect((await client.getUser()).limits.parallels).toEqual({ total: 2, available: 0 });
  });

  it("429 without Retry-After (the default: unverified that the service sends it) leaves the wait to the caller", async () => {
    const { double, client } = await setup({ parallelSlots: 1, now: fakeClock().now });
    await client.submitUrl("https://example.com/first");
    const err = await expectApiError(client.submitUrl("https://example.com/second"));
    expect(err.status).toBe(429);
    expect(err.retryAfterSeconds).toBeUndefined();
    expect(err.transient).toBe(true);
    expect(double.tasks()).toHaveLength(1);
  });

  it("rejects bad options before sending anything", async () => {
    const { double, client } = await setup();
    const err = await client.submitUrl("https://example.com/x", { env_version: "11", env_bitness: 32 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AnyRunInputError);
    expect((err as AnyRunInputError).problems).toEqual(["env_bitness 32 is not available for windows 11"]);
    await expect(client.submitUrl(`https://example.com/${"a".repeat(500)}`)).rejects.toThrow("obj_url must be 5–512 characters (got 520)");
    await expect(client.submitFile({ fileName: "", content: badBytes })).rejects.toThrow("fileName is required");
    expect(double.submissions()).toBe(0);
  });

  it("maps the server's 400 for a bad option (request altered on the wire) to a terminal ApiError", async () => {
    // A transport that corrupts the validated body, so the double's own validation answers.
    const corrupting = async (request: Request) => {
      const body = (await request.json()) as Record<string, string>;
      const altered = new Request(request.url, {
        method: "POST",
        headers: request.headers,
        body: JSON.stringify({ ...body, env_version: "11", env_bitness: "32" }),
      });
      return fetch(altered);
    };
    const { double, client } = await setup({}, { fetch: corrupting });
    const err = await expectApiError(client.submitUrl("https://example.com/x"));
    expect(err).toMatchObject({ status: 400, code: undefined });
    expect(err.message).toContain("env_bitness 32 is not available for windows 11");
    expect(err.transient).toBe(false);
    expect(double.tasks()).toHaveLength(0);
  });

  it("the double answers 400 with {error:true,message} to invalid submissions", async () => {
    const { double } = await setup();
    const post = async (body: string | FormData | URLSearchParams, contentType?: string) => {
      const res = await fetch(`${double.url}/v1/analysis`, {
        method: "POST",
        headers: { Authorization: `API-Key ${apiKey}`, ...(contentType ? { "Content-Type": contentType } : {}) },
        body,
      });
      return { status: res.status, body: (await res.json()) as { error: boolean; message: string } };
    };
    const json = (o: object) => post(JSON.stringify(o), "application/json");
    expect(await json({ obj_type: "exe" })).toEqual({ status: 400, body: { error: true, message: "Invalid obj_type: exe" } });
    expect((await json({ obj_type: "url", obj_url: "http" })).body.message).toBe("obj_url length must be between 5 and 512 characters");
    expect((await json({ obj_type: "url", obj_url: `https://e.example/${"a".repeat(500)}` })).status).toBe(400);
    expect((await json({ obj_type: "url", obj_url: "https://e.example", env_os: "linux", env_bitness: "32" })).body.message).toBe(
      "env_bitness 32 is not available for linux 22.04.2",
    );
    expect((await json({ obj_type: "url", obj_url: "https://e.example", env_type: "development", env_version: "7" })).status).toBe(400);
    expect((await json({ obj_type: "url", obj_url: "https://e.example", opt_network_connect: "no" })).status).toBe(400);
    expect((await json({ obj_type: "url", obj_url: "https://e.example", user_tags: "bad tag!" })).status).toBe(400);
    // A file part under another name (SDK pitfall) is a missing file.
    const form = new FormData();
    form.set("obj_type", "file");
    form.set("sample.exe", new Blob([badBytes]), "sample.exe");
    expect(await post(form)).toEqual({
      status: 400,
      body: { error: true, message: "File is required: send it as a multipart part named 'file'" },
    });
    // Form-urlencoded URL tasks are accepted.
    expect((await post(new URLSearchParams({ obj_type: "url", obj_url: "https://e.example/f" }), "application/x-www-form-urlencoded")).status).toBe(201);
    expect(double.tasks()).toHaveLength(1);
  });

  it("a dropped connection is an ApiError with status 0 (before or after the task was created)", async () => {
    let drop: "before" | "after" = "before";
    const { double, client } = await setup({
      faults: (req) => (req.method === "POST" ? { dropConnection: true, afterHandling: drop === "after" } : undefined),
    });
    const before = await expectApiError(client.submitFile({ fileName: "a.exe", content: badBytes }));
    expect(before).toMatchObject({ api: "anyrun", operation: "submitFile", status: 0 });
    expect(before.transient).toBe(true);
    expect(double.tasks()).toHaveLength(0);

    drop = "after";
    const after = await expectApiError(client.submitUrl("https://example.com/lost-answer"));
    expect(after.status).toBe(0);
    // The task exists although the answer was lost: reconcile through history, do not resubmit.
    expect(double.tasks()).toHaveLength(1);
    const history = await client.getHistory();
    expect(history.map((t) => t.name)).toEqual(["https://example.com/lost-answer"]);
  });

  it("a timeout is status 0; a non-JSON 200 is InvalidBody", async () => {
    const { double } = await setup({
      faults: (req) =>
        req.path === "/v1/user" ? { delayMs: 300 } : req.path === "/v1/analysis" && req.method === "GET" ? { status: 200, body: "<html>oops</html>" } : undefined,
    });
    const client = createAnyRunClient({ baseUrl: double.url, apiKey, timeoutMs: 50, logger: createLogger({ sink: () => {} }) });
    const timeout = await expectApiError(client.getUser());
    expect(timeout.status).toBe(0);
    const invalid = await expectApiError(client.getHistory());
    expect(invalid).toMatchObject({ status: 200, code: "InvalidBody" });
  });
});

describe("reports", () => {
  it("polls a task from queued through running to done without reading an early verdict", async () => {
    const clock = fakeClock();
    const { client } = await setup({ now: clock.now, queuedMs: 15, runningMs: 40 });
    const taskId = taskIdOf(await client.submitFile({ fileName: "setup.exe", content: new Blob([badBytes]) }));
    const early = await client.getReport(taskId);
    expect(early.outcome).toEqual({ state: "pending", status: "queued" });
    expect(early.report.data.analysis?.scores).toBeUndefined();

    const { outcome, seen } = await pollUntilFinal(client, taskId, () => clock.advance(10));
    expect(seen).toEqual(["queued", "queued", "running", "running", "running", "running", "done"]);
    expect(outcome).toMatchObject({ state: "done", verdict: { threatLevel: 2 } });
  });

  it("the running report holds a zero verdict that the reader does not take", async () => {
    const { client } = await setup({ queuedMs: 0, runningMs: 5_000 });
    const taskId = taskIdOf(await client.submitFile({ fileName: "setup.exe", content: badBytes }));
    const { report, outcome } = await client.getReport(taskId);
    expect(report.data.status).toBe("running");
    expect(report.data.analysis?.scores?.verdict).toEqual({ score: 0, threatLevel: 0, threatLevelText: "No threats detected" });
    expect(outcome).toEqual({ state: "pending", status: "running" });
  });

  it("serves the malicious report for a known-bad sample, rewritten for the task", async () => {
    const { client, double } = await setup({ queuedMs: 0, runningMs: 0, maliciousTags: ["trojan", "stealer", "agenttesla"] });
    const taskId = taskIdOf(await client.submitFile({ fileName: "invoice.exe", content: badBytes }));
    const { report, outcome } = await client.getReport(taskId);
    expect(outcome).toMatchObject({
      state: "done",
      taskId,
      permanentUrl: `https://app.any.run/tasks/${taskId}`,
      verdict: { score: 100, threatLevel: 2, threatLevelText: "Malicious activity" },
      tags: ["trojan", "stealer", "agenttesla"],
      mitre: ["T1129"],
      mainObject: {
        type: "file",
        filename: "invoice.exe",
        hashes: { md5: md5(badBytes), sha1: sha1(badBytes), sha256: sha256(badBytes) },
      },
    });
    expect(report.data.analysis?.tags).toEqual([
      { tag: "trojan", users: 1 },
      { tag: "stealer", users: 1 },
      { tag: "agenttesla", users: 1 },
    ]);
    expect(report.data.analysis?.reports?.IOC).toBe(`https://api.any.run/report/${taskId}/ioc/json`);
    const raw = await (await fetch(`${double.url}/v1/analysis/${taskId}`, { headers: { Authorization: `API-Key ${apiKey}` } })).text();
    expect(raw).not.toContain("4649c7fc-5780-476a-86b0-b89e424339bc");
  });

  it("serves the clean report for anything else, and a failed task as failed", async () => {
    const { client } = await setup({ queuedMs: 0, runningMs: 0, failTask: (s) => s.url === "https://example.com/broken" });
    const fileId = taskIdOf(await client.submitFile({ fileName: "doc.pdf", content: cleanBytes }));
    expect((await client.getReport(fileId)).outcome).toMatchObject({
      state: "done",
      verdict: { score: 37, threatLevel: 0, threatLevelText: "No threats detected" },
      tags: [],
      mainObject: { filename: "doc.pdf", hashes: { sha256: sha256(cleanBytes) } },
    });
    const urlId = taskIdOf(await client.submitUrl("https://example.com/fine"));
    expect((await client.getReport(urlId)).outcome).toMatchObject({
      state: "done",
      verdict: { threatLevel: 0 },
      mainObject: { type: "url", url: "https://example.com/fine" },
    });
    const failedId = taskIdOf(await client.submitUrl("https://example.com/broken"));
    expect((await client.getReport(failedId)).outcome).toEqual({ state: "failed", status: "failed" });
  });

  it("a known-bad URL gets the malicious verdict", async () => {
    const { client } = await setup({ queuedMs: 0, runningMs: 0, knownBadUrls: ["http://evil.example/payload"] });
    const id = taskIdOf(await client.submitUrl("http://evil.example/payload"));
    expect((await client.getReport(id)).outcome).toMatchObject({ state: "done", verdict: { threatLevel: 2 } });
  });

  it("served reports in every phase parse with the reader used on the recorded fixtures", async () => {
    const clock = fakeClock();
    const { double, client } = await setup({ now: clock.now, queuedMs: 40, runningMs: 40, failTask: (s) => s.fileName === "fails.bin" });
    const rawFixtures = ["report_malicious_file_2020.json", "report_clean_file_2021.json"].map((f) =>
      JSON.parse(readFileSync(new URL(`../fixtures/anyrun/${f}`, import.meta.url), "utf8")),
    );
    for (const raw of rawFixtures) expect(readReport(parseReport(raw)).state).toBe("done");

    const ids = [
      taskIdOf(await client.submitFile({ fileName: "bad.exe", content: badBytes })),
      taskIdOf(await client.submitFile({ fileName: "fails.bin", content: cleanBytes })),
      taskIdOf(await client.submitUrl("https://example.com/page")),
    ];
    const get = async (id: string) =>
      (await fetch(`${double.url}/v1/analysis/${id}`, { headers: { Authorization: `API-Key ${apiKey}` } })).json();
    const states: string[] = [];
    for (let round = 0; round < 3; round++) {
      for (const id of ids) {
        const served = parseReport(await get(id));
        states.push(`${round}:${String(served.data.status)}:${readReport(served).state}`);
      }
      clock.advance(45);
    }
    expect(states).toEqual([
      "0:queued:pending", "0:queued:pending", "0:queued:pending",
      "1:running:pending", "1:running:pending", "1:running:pending",
      "2:done:done", "2:failed:failed", "2:done:done",
    ]);
  });
});

describe("IoCs, history, user", () => {
  it("serves IoCs of the malicious task: main object, dropped files, network", async () => {
    const { client } = await setup({ queuedMs: 0, runningMs: 0 });
    const taskId = taskIdOf(await client.submitFile({ fileName: "setup.exe", content: badBytes }));
    const iocs = await client.getIocs(taskId);
    expect(iocs[0]).toEqual({ category: "Main object", type: "sha256", name: "setup.exe", ioc: sha256(badBytes), reputation: 2 });
    const dropped = iocs.filter((i) => i.category === "Dropped executable file");
    expect(dropped.map((i) => i.ioc)).toEqual([
      "0d21041a1b5cd9f9968fc1d457c78a802c9c5a23f375327e833501b65bcd095d",
      "bd046e6497b304e4ea4ab102cab2b1f94ce09bde0eebba4c59942a732679e4eb",
      "a7d0b746d12c58a51986ed8cf1c64d97fa80c106c9004b7bf92e104a89cffda4",
    ]);
    expect(dropped.every((i) => i.reputation === 2)).toBe(true);
    expect(new Set(iocs.map((i) => i.type))).toEqual(new Set(["sha256", "domain", "ip", "url"]));
    expect(iocs.filter((i) => i.type === "ip").map((i) => [i.ioc, i.ipVersion])).toEqual([
      ["203.0.113.45", 4],
      ["2001:db8::bad:1", 6],
    ]);
    for (const ioc of iocs) expect([0, 1, 2]).toContain(ioc.reputation);
    expect(iocs.filter((i) => i.category !== "Main object" && i.category !== "Dropped executable file").every((i) => i.reputation >= 1)).toBe(true);
  });

  it("serves only reputation-0 IoCs for a clean task, and none before it is done", async () => {
    const clock = fakeClock();
    const { client } = await setup({ now: clock.now, queuedMs: 0, runningMs: 60 });
    const taskId = taskIdOf(await client.submitUrl("https://example.com/clean"));
    expect(await client.getIocs(taskId)).toEqual([]);
    await pollUntilFinal(client, taskId, () => clock.advance(30));
    expect(await client.getIocs(taskId)).toEqual([
      { category: "Main object", type: "url", ioc: "https://example.com/clean", reputation: 0 },
    ]);
  });

  it("pages through history newest first with skip and limit in the query string", async () => {
    const { double, client } = await setup({ queuedMs: 0, runningMs: 0 });
    for (const n of [1, 2, 3]) await client.submitUrl(`https://example.com/${n}`);
    const first = await client.getHistory({ skip: 0, limit: 2 });
    const second = await client.getHistory({ skip: 2, limit: 2 });
    expect(first.map((t) => t.name)).toEqual(["https://example.com/3", "https://example.com/2"]);
    expect(second.map((t) => t.name)).toEqual(["https://example.com/1"]);
    expect(second[0]).toMatchObject({
      uuid: double.tasks()[0]!.taskId,
      verdict: "No threats detected",
      hashes: { sha256: sha256(Buffer.from("https://example.com/1")) },
    });
    const historyCalls = double.requests().filter((r) => r.method === "GET" && r.path === "/v1/analysis");
    expect(historyCalls.map((r) => r.query)).toEqual(["?team=false&skip=0&limit=2", "?team=false&skip=2&limit=2"]);
    await expect(client.getHistory({ limit: 101 })).rejects.toBeInstanceOf(AnyRunInputError);
  });

  it("reports account limits", async () => {
    const { client } = await setup({ parallelSlots: 3 });
    expect(await client.getUser()).toEqual({
      limits: {
        web: { minute: -1, hour: -1, day: -1, month: -1 },
        api: { minute: -1, hour: -1, day: -1, month: -1 },
        parallels: { total: 3, available: 3 },
      },
    });
  });
});
