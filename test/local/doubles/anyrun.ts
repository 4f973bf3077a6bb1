import { createHash, randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { buildIocs, buildReport, historyEntry, type ReportTask, type TaskPhase } from "./anyrun/reports.ts";
import { validateSubmission } from "./anyrun/validation.ts";

/**
 * Local double of the ANY.RUN Sandbox API: a real HTTP server on 127.0.0.1 speaking the contract of
 * shared/reference/anyrun-api.md. It answers only what the real service would; where the real
 * behaviour is unknown the choice is documented here and in test/fixtures/anyrun/README.md.
 *
 * - Auth: `Authorization: API-Key <key>` (scheme case-insensitive); otherwise 401 `{error:true,message}`.
 *   The key is never echoed or recorded.
 * - `POST /v1/analysis`: multipart/form-data (sample in the part `file`), JSON or form-urlencoded.
 *   Fields are validated (anyrun/validation.ts) → 400 `{error:true,message}`. A parallel-slot limit
 *   counts unfinished (queued or running) tasks → 429 with `Retry-After` (whether the real API sends
 *   Retry-After is unverified). Success: 201 `{error:false,data:{taskid}}` by default, or 200, or
 *   202 `{error:false,data:{queueTaskId}}` (`submitStatus`).
 * - Tasks go queued → running → done (or failed, `failTask`) over `queuedMs` / `runningMs`,
 *   computed from the clock on each request (no timers).
 * - `GET /v1/analysis/{id}`: the report of the task in its phase (anyrun/reports.ts); the queue id of
 *   a 202 is not a task id → 404 (how a queue id resolves is unverified; the task shows in history).
 * - `GET /report/{id}/ioc/json`: hand-made IoC array; `[]` while the task is unfinished (a guess).
 * - `GET /v1/analysis?team&skip&limit`: history, newest first by default (options); limit 1–100 else 400.
 * - `GET /v1/user`: hand-made limits; `parallels.{total, available}` from the slot limit.
 * - `faults(req)` is consulted first on every request (see `Fault`).
 */

export interface FaultRequest {
  method: string;
  /** Path without query string or trailing slash. */
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage["headers"];
  /** 1-based index of this request among all the double received. */
  index: number;
}

export interface Fault {
  /** Answer with this status (and body/headers). Omit to only delay and then answer normally. */
  status?: number;
  body?: unknown;
  headers?: Record<string, string>;
  delayMs?: number;
  /** Destroy the connection without answering (the client sees no response). */
  dropConnection?: boolean;
  /**
   * Apply the fault after the request was handled (a task may have been created), e.g. to lose the
   * answer of a successful submission. Default: before handling.
   */
  afterHandling?: boolean;
}

export interface SubmissionInfo {
  kind: "file" | "url";
  fileName?: string;
  url?: string;
  sha256: string;
  fields: Readonly<Record<string, string>>;
}

export type SubmitStatus = 200 | 201 | 202;

export interface AnyRunDoubleOptions {
  /** Accepted key. Default "anyrun-double-api-key". */
  apiKey?: string;
  /** SHA-256 of samples that get the malicious report (case-insensitive). */
  knownBadSha256?: string | readonly string[];
  /** URLs that get the malicious report (exact match after trimming). */
  knownBadUrls?: readonly string[];
  /** Tags of malicious reports. Default ["trojan", "stealer"]. */
  maliciousTags?: readonly string[];
  /** Parallel slots. Default 5. */
  parallelSlots?: number;
  /** Retry-After seconds on 429; null (the default: whether the service sends it is unverified) sends none. */
  retryAfterSeconds?: number | null;
  /** Time in the queued phase. Default 20 ms. */
  queuedMs?: number;
  /** Time in the running phase. Default 80 ms. */
  runningMs?: number;
  /** Success status of a submission. Default 201. */
  submitStatus?: SubmitStatus | ((submission: SubmissionInfo) => SubmitStatus);
  /** Tasks for which this returns true end "failed" instead of "done". */
  failTask?: (submission: SubmissionInfo) => boolean;
  faults?: (req: FaultRequest) => Fault | undefined;
  /** Largest accepted request body. Default 64 MiB (real per-plan limit unverified) → 413. */
  maxBodyBytes?: number;
  /** Clock. Default Date.now. */
  now?: () => number;
  /**
   * Neither the order of `GET /v1/analysis` nor the format of its `date` is documented: newest
   * first with ISO dates (as in the recorded examples) by default, the others to prove the
   * connector does not depend on them.
   */
  historyOrder?: "newest-first" | "oldest-first";
  historyDates?: "iso" | "epoch-seconds";
}

export interface DoubleTask {
  taskId: string;
  /** Set when the submission was answered 202. */
  queueTaskId?: string;
  kind: "file" | "url";
  fileName?: string;
  url?: string;
  /** Uploaded sample size in bytes. */
  size?: number;
  hashes: { md5: string; sha1: string; sha256: string };
  /** Every field received except the file, as strings. */
  fields: Record<string, string>;
  /** Media type of the submission request (multipart/form-data, application/json, …). */
  encoding: string;
  /** Content-Type of the `file` part. */
  fileContentType?: string;
  /** x-anyrun-connector header of the submission. */
  connectorHeader?: string;
  malicious: boolean;
  fails: boolean;
  submitStatus: SubmitStatus;
  submittedAt: number;
  status: TaskPhase;
}

export interface RequestRecord {
  method: string;
  path: string;
  query: string;
  /** Status answered; 0 when the connection was dropped. */
  status: number;
  contentType?: string;
  contentLength?: string;
  transferEncoding?: string;
  connectorHeader?: string;
}

export interface AnyRunDouble {
  url: string;
  apiKey: string;
  close(): Promise<void>;
  /** Snapshot of all tasks with their current status, oldest first. */
  tasks(): DoubleTask[];
  /** Number of POST /v1/analysis requests received (whatever their outcome). */
  submissions(): number;
  setParallelSlots(n: number): void;
  setSubmitStatus(status: SubmitStatus): void;
  /** Every request received, in order (no Authorization value). */
  requests(): RequestRecord[];
}

interface StoredTask extends Omit<DoubleTask, "status"> {
  userTags: string[];
  env: { os: string; version: string; bitness: number };
}

class HttpProblem extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function hashesOf(bytes: Uint8Array): { md5: string; sha1: string; sha256: string } {
  const hex = (algorithm: string) => createHash(algorithm).update(bytes).digest("hex");
  return { md5: hex("md5"), sha1: hex("sha1"), sha256: hex("sha256") };
}

export async function startAnyRunDouble(options: AnyRunDoubleOptions = {}): Promise<AnyRunDouble> {
  const apiKey = options.apiKey ?? "anyrun-double-api-key";
  const now = options.now ?? Date.now;
  const queuedMs = options.queuedMs ?? 20;
  const runningMs = options.runningMs ?? 80;
  const maxBodyBytes = options.maxBodyBytes ?? 64 * 1024 * 1024;
  // Whether ANY.RUN sends Retry-After on 429 is unverified: by default it does not.
  const retryAfter = options.retryAfterSeconds ?? null;
  const maliciousTags = options.maliciousTags ?? ["trojan", "stealer"];
  const badSha = new Set(
    (typeof options.knownBadSha256 === "string" ? [options.knownBadSha256] : (options.knownBadSha256 ?? [])).map((h) => h.toLowerCase()),
  );
  const badUrls = new Set((options.knownBadUrls ?? []).map((u) => u.trim()));
  let parallelSlots = options.parallelSlots ?? 5;
  let submitStatus = options.submitStatus ?? 201;

  const tasks: StoredTask[] = [];
  const byId = new Map<string, StoredTask>();
  const log: RequestRecord[] = [];
  let submissionCount = 0;
  let requestIndex = 0;

  const phaseOf = (task: StoredTask): TaskPhase => {
    const age = now() - task.submittedAt;
    if (age < queuedMs) return "queued";
    if (age < queuedMs + runningMs) return "running";
    return task.fails ? "failed" : "done";
  };
  const unfinished = () => tasks.filter((t) => {
    const p = phaseOf(t);
    return p === "queued" || p === "running";
  }).length;
  const reportTask = (task: StoredTask): ReportTask => ({
    taskId: task.taskId,
    kind: task.kind,
    ...(task.fileName !== undefined ? { fileName: task.fileName } : {}),
    ...(task.url !== undefined ? { url: task.url } : {}),
    hashes: task.hashes,
    malicious: task.malicious,
    tags: maliciousTags,
    userTags: task.userTags,
    fields: task.fields,
    submittedAt: task.submittedAt,
    env: task.env,
  });

  async function readBody(req: IncomingMessage): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let total = 0;
    let tooLarge = false;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > maxBodyBytes) tooLarge = true;
      else chunks.push(chunk);
    }
    if (tooLarge) throw new HttpProblem(413, `Request body exceeds ${maxBodyBytes} bytes`);
    return Buffer.concat(chunks);
  }

  async function submit(req: IncomingMessage, body: Buffer): Promise<{ status: number; body: unknown }> {
    const contentType = req.headers["content-type"] ?? "";
    const mediaType = contentType.split(";")[0]!.trim().toLowerCase();
    const fields: Record<string, string> = {};
    let file: { name: string; type: string; bytes: Uint8Array } | undefined;

    if (mediaType === "multipart/form-data") {
      let form: FormData;
      try {
        form = await new Response(body, { headers: { "content-type": contentType } }).formData();
      } catch {
        throw new HttpProblem(400, "Malformed multipart body");
      }
      for (const [name, value] of form.entries()) {
        if (typeof value === "string") fields[name] = value;
        else if (name === "file") file = { name: value.name, type: value.type, bytes: new Uint8Array(await value.arrayBuffer()) };
        // A file part under another name is not the sample (SDK pitfall §10.2): ignored.
      }
    } else if (mediaType === "application/json") {
      let parsed: unknown;
      try {
        parsed = JSON.parse(body.toString("utf8"));
      } catch {
        throw new HttpProblem(400, "Malformed JSON body");
      }
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new HttpProblem(400, "JSON body must be an object");
      for (const [name, value] of Object.entries(parsed)) {
        if (typeof value === "string") fields[name] = value;
        else if (typeof value === "number" || typeof value === "boolean") fields[name] = String(value);
        else throw new HttpProblem(400, `Invalid value for ${name}`);
      }
    } else if (mediaType === "application/x-www-form-urlencoded") {
      for (const [name, value] of new URLSearchParams(body.toString("utf8"))) fields[name] = value;
    } else {
      throw new HttpProblem(400, `Unsupported content type: ${mediaType || "none"}`);
    }

    const checked = validateSubmission(fields, file !== undefined && file.name !== "");
    if ("error" in checked) throw new HttpProblem(400, checked.error);

    let kind: "file" | "url";
    let fileName: string | undefined;
    let url: string | undefined;
    let bytes: Uint8Array;
    if (checked.objType === "rerun") {
      const original = byId.get(fields.task_rerun_uuid ?? "");
      if (!original) throw new HttpProblem(400, "task_rerun_uuid does not name a finished task");
      kind = original.kind;
      fileName = original.fileName;
      url = original.url;
      bytes = new Uint8Array(0);
    } else if (checked.objType === "file") {
      kind = "file";
      fileName = file!.name;
      bytes = file!.bytes;
    } else {
      kind = "url";
      url = fields.obj_url!;
      bytes = new TextEncoder().encode(url);
    }

    if (unfinished() >= parallelSlots) {
      throw new HttpProblem(
        429,
        "No free parallel slot: wait for a running task to finish",
        retryAfter === null ? {} : { "Retry-After": String(retryAfter) },
      );
    }

    const original = checked.objType === "rerun" ? byId.get(fields.task_rerun_uuid!) : undefined;
    const hashes = original ? original.hashes : hashesOf(bytes);
    const info: SubmissionInfo = {
      kind,
      ...(fileName !== undefined ? { fileName } : {}),
      ...(url !== undefined ? { url } : {}),
      sha256: hashes.sha256,
      fields,
    };
    const status = typeof submitStatus === "function" ? submitStatus(info) : submitStatus;
    const task: StoredTask = {
      taskId: randomUUID(),
      ...(status === 202 ? { queueTaskId: randomUUID() } : {}),
      kind,
      ...(fileName !== undefined ? { fileName } : {}),
      ...(url !== undefined ? { url } : {}),
      ...(kind === "file" && !original ? { size: bytes.byteLength } : original?.size !== undefined ? { size: original.size } : {}),
      hashes,
      fields,
      encoding: mediaType,
      ...(file?.type ? { fileContentType: file.type } : {}),
      ...(typeof req.headers["x-anyrun-connector"] === "string" ? { connectorHeader: req.headers["x-anyrun-connector"] } : {}),
      malicious: kind === "file" ? badSha.has(hashes.sha256) : badUrls.has((url ?? "").trim()),
      fails: options.failTask?.(info) ?? false,
      submitStatus: status,
      submittedAt: now(),
      userTags: checked.userTags,
      env: { os: checked.env.os, version: checked.env.version, bitness: checked.env.bitness },
    };
    tasks.push(task);
    byId.set(task.taskId, task);
    if (status === 202) return { status, body: { error: false, data: { queueTaskId: task.queueTaskId } } };
    return { status, body: { error: false, data: { taskid: task.taskId } } };
  }

  function taskOr404(id: string): StoredTask {
    const task = byId.get(id);
    if (!task) throw new HttpProblem(404, "Task not found");
    return task;
  }

  async function route(req: IncomingMessage, path: string, query: URLSearchParams, body: Buffer): Promise<{ status: number; body: unknown }> {
    const method = req.method ?? "GET";
    if (path === "/v1/analysis") {
      if (method === "POST") return submit(req, body);
      if (method === "GET") {
        const skip = query.has("skip") ? Number(query.get("skip")) : 0;
        const limit = query.has("limit") ? Number(query.get("limit")) : 25;
        if (!Number.isInteger(skip) || skip < 0) throw new HttpProblem(400, "skip must be a non-negative integer");
        if (!Number.isInteger(limit) || limit < 1 || limit > 100) throw new HttpProblem(400, "limit must be between 1 and 100");
        const ordered = options.historyOrder === "oldest-first" ? [...tasks] : [...tasks].reverse();
        const entries = ordered.slice(skip, skip + limit).map((t) => {
          const entry = historyEntry(reportTask(t), phaseOf(t));
          return options.historyDates === "epoch-seconds" ? { ...entry, date: Math.floor(t.submittedAt / 1000) } : entry;
        });
        return { status: 200, body: { error: false, data: { tasks: entries } } };
      }
      throw new HttpProblem(405, "Method not allowed");
    }
    let match = /^\/v1\/analysis\/([^/]+)$/.exec(path);
    if (match) {
      if (method !== "GET") throw new HttpProblem(405, "Method not allowed");
      const task = taskOr404(decodeURIComponent(match[1]!));
      return { status: 200, body: buildReport(reportTask(task), phaseOf(task)) };
    }
    match = /^\/report\/([^/]+)\/ioc\/json$/.exec(path);
    if (match) {
      if (method !== "GET") throw new HttpProblem(405, "Method not allowed");
      const task = taskOr404(decodeURIComponent(match[1]!));
      const phase = phaseOf(task);
      if (phase !== "done") return { status: 200, body: [] };
      return { status: 200, body: buildIocs(reportTask(task), buildReport(reportTask(task), phase)) };
    }
    if (path === "/v1/user") {
      if (method !== "GET") throw new HttpProblem(405, "Method not allowed");
      return {
        status: 200,
        body: {
          error: false,
          data: {
            limits: {
              web: { minute: -1, hour: -1, day: -1, month: -1 },
              api: { minute: -1, hour: -1, day: -1, month: -1 },
              parallels: { total: parallelSlots, available: Math.max(0, parallelSlots - unfinished()) },
            },
          },
        },
      };
    }
    throw new HttpProblem(404, "Not found");
  }

  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    const text = body === undefined ? "" : typeof body === "string" ? body : JSON.stringify(body);
    res.writeHead(status, {
      ...(body === undefined ? {} : { "Content-Type": typeof body === "string" ? "text/plain; charset=utf-8" : "application/json; charset=utf-8" }),
      "Content-Length": String(Buffer.byteLength(text)),
      ...headers,
    });
    res.end(text);
  };

  async function applyFault(fault: Fault, req: IncomingMessage, res: ServerResponse, record: RequestRecord): Promise<boolean> {
    if (fault.delayMs) await sleep(fault.delayMs);
    if (fault.dropConnection) {
      record.status = 0;
      req.socket.destroy();
      return true;
    }
    if (fault.status !== undefined) {
      record.status = fault.status;
      send(res, fault.status, fault.body, fault.headers);
      return true;
    }
    return false;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://double");
    const path = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, "") : url.pathname;
    const method = req.method ?? "GET";
    const record: RequestRecord = {
      method,
      path,
      query: url.search,
      status: 0,
      ...(req.headers["content-type"] ? { contentType: req.headers["content-type"] } : {}),
      ...(req.headers["content-length"] ? { contentLength: req.headers["content-length"] } : {}),
      ...(req.headers["transfer-encoding"] ? { transferEncoding: req.headers["transfer-encoding"] } : {}),
      ...(typeof req.headers["x-anyrun-connector"] === "string" ? { connectorHeader: req.headers["x-anyrun-connector"] } : {}),
    };
    log.push(record);
    const index = ++requestIndex;
    if (method === "POST" && path === "/v1/analysis") submissionCount++;

    let body: Buffer;
    try {
      body = await readBody(req);
    } catch (err) {
      const problem = err instanceof HttpProblem ? err : new HttpProblem(400, "Unreadable body");
      record.status = problem.status;
      send(res, problem.status, { error: true, message: problem.message });
      return;
    }

    const fault = options.faults?.({ method, path, query: url.searchParams, headers: req.headers, index });
    if (fault && !fault.afterHandling && (await applyFault(fault, req, res, record))) return;

    let status: number;
    let answer: unknown;
    let headers: Record<string, string> = {};
    const auth = req.headers.authorization ?? "";
    const m = /^API-Key\s+(\S+)\s*$/i.exec(auth);
    if (!m || m[1] !== apiKey) {
      status = 401;
      answer = { error: true, message: "Authentication required: invalid or missing API key" };
    } else {
      try {
        ({ status, body: answer } = await route(req, path, url.searchParams, body));
      } catch (err) {
        const problem = err instanceof HttpProblem ? err : new HttpProblem(500, "Internal error");
        status = problem.status;
        answer = { error: true, message: problem.message };
        headers = problem instanceof HttpProblem ? problem.headers : {};
      }
    }
    if (fault?.afterHandling && (await applyFault(fault, req, res, record))) return;
    record.status = status;
    send(res, status, answer, headers);
  }

  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) send(res, 500, { error: true, message: "Internal error" });
      else res.destroy();
    });
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    apiKey,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
    tasks: () =>
      tasks.map((task) => {
        const { userTags: _tags, env: _env, ...rest } = task;
        return { ...rest, fields: { ...task.fields }, hashes: { ...task.hashes }, status: phaseOf(task) };
      }),
    submissions: () => submissionCount,
    setParallelSlots(n: number) {
      parallelSlots = n;
    },
    setSubmitStatus(status: SubmitStatus) {
      submitStatus = status;
    },
    requests: () => log.map((r) => ({ ...r })),
  };
}
