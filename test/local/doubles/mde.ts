import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import type { LibraryFile, Machine, MachineAction, MachineActionCommand } from "@connector/shared/clients/mde";
import { createLogger, type Logger } from "@connector/shared/logger";
import { emulateWindowsCollect, type WindowsQuarantineEntry } from "./mde/windows.ts";

/**
 * A local stand-in for the Microsoft Defender for Endpoint API, limited to what the connector uses
 * and faithful to the contract in shared/reference/mde-live-response.md: Bearer required, error
 * envelope {error:{code,message,target}}, case-sensitive runliveresponse bodies, one active action per
 * device, 10 start calls per minute, 25 concurrent sessions, Pending → InProgress → final, result
 * links valid 30 minutes, library upload limit 20 MB. GET /api/machineactions lists the actions
 * started through the API (all of the double's), filtered by OData `$filter` / `$top`.
 *
 * RunScript on Linux/macOS devices EXECUTES the library script (by default the repository's
 * services/scripts/*) with bash, the Args string as its single argument, in a per-action folder, with
 * PATH led by a stand-in `mdatp` working on the device's fake quarantine folder. Windows devices run
 * a TypeScript emulation of anyrun-collect.ps1 (see ./mde/windows.ts).
 */

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, "..", "..", "..");
export const defaultScriptsDir = join(repoRoot, "services", "scripts");
const mdatpStandIn = join(here, "mde", "mdatp");

export const securityCenterAudiences = ["https://api.securitycenter.microsoft.com", "https://securitycenter.onmicrosoft.com/windowsatpservice"];

/** Accepts the tokens of LocalTokenCredential (`local.<b64url(audience)>`) for the MDE audiences. */
export function acceptLocalMdeToken(token: string): boolean {
  if (!token.startsWith("local.")) return false;
  const audience = Buffer.from(token.slice("local.".length), "base64url").toString("utf8");
  return securityCenterAudiences.includes(audience);
}

export interface MdeDoubleOptions {
  /** Library seed folder: every *.sh / *.ps1 in it. Default: services/scripts. */
  scriptsDir?: string;
  /** RunScript time limit (the service's is 10 minutes). */
  runScriptTimeoutMs?: number;
  /** How long an action for an Active device stays Pending before it starts. */
  pendingDelayMs?: number;
  startCallsPerMinute?: number;
  rateWindowMs?: number;
  maxConcurrentSessions?: number;
  resultLinkTtlMs?: number;
  /** Serve result files gzip-compressed (to exercise the client's tolerance). */
  gzipResults?: boolean;
  acceptToken?: (token: string) => boolean;
  bash?: string;
  /** Requestor recorded on actions (the app registration for app-only tokens). */
  requestor?: string;
  /**
   * What a script that exits non-zero does to its command and action. The reference: "Succeeded only
   * means the commands ran" (the exit code is in the result file), so `completed` is the default;
   * `failed` models a service that fails the command instead, which the connector must handle too.
   */
  nonZeroExit?: "completed" | "failed";
  logger?: Logger;
}

export interface SeedMachine extends Partial<Machine> {
  id: string;
  osPlatform: string;
}

export interface SeedMachineOptions {
  /** mdatp behaviour on Linux/macOS: "legacy" only knows `restore --id I --path D` (before 101.23092.0012). */
  agent?: "modern" | "legacy";
}

export interface ScriptRun {
  actionId: string;
  machineId: string;
  os: "windows" | "linux" | "macos";
  scriptName: string;
  /** The Args parameter exactly as received (undefined when absent). */
  args: string | undefined;
  exitCode: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  durationMs: number;
  /** Entries the script left in its working folder (besides the script itself). */
  leftovers: string[];
}

export interface MdeFault {
  operation: MdeOperation;
  status: number;
  code: string;
  message?: string;
  retryAfterSeconds?: number;
  /** How many calls fail this way (default 1). */
  times?: number;
}

export type MdeOperation =
  | "getMachine"
  | "runLiveResponse"
  | "listMachineActions"
  | "getMachineAction"
  | "getResultDownloadLink"
  | "cancelMachineAction"
  | "listLibraryFiles"
  | "uploadLibraryFile";

/** One answered `runliveresponse` call (for assertions: who was refused, and why). */
export interface StartCall {
  machineId: string;
  at: string;
  status: number;
  /** Error code of a refused call; undefined for 201. */
  code?: string;
  actionId?: string;
  comment?: string;
}

export interface MdeDouble {
  url: string;
  close(): Promise<void>;
  seedMachine(machine: SeedMachine, options?: SeedMachineOptions): Machine;
  /** Puts a file into the device's quarantine; returns its threat id. */
  seedQuarantine(deviceId: string, entry: { originalPath: string; content: Buffer | string; threatName?: string }): string;
  /** A file present on a Windows device's disk (Windows emulation, GetFile). */
  seedFile(deviceId: string, entry: { path: string; content: Buffer | string }): void;
  actions(): MachineAction[];
  /** Every runliveresponse call the double answered, in order (faults injected by tests included). */
  startCalls(): StartCall[];
  runs(): ScriptRun[];
  /** Invocations of the stand-in mdatp on a device (Linux/macOS), one line each. */
  mdatpCalls(deviceId: string): string[];
  /** Folder exclusions currently configured through the stand-in mdatp on a device. */
  mdatpExclusions(deviceId: string): string[];
  /** The next matching calls answer with this error. */
  injectFault(fault: MdeFault): void;
  /** Resolves with the action once it is final (Succeeded, Failed, TimeOut, Cancelled). */
  settled(actionId: string, timeoutMs?: number): Promise<MachineAction>;
}

type Os = "windows" | "linux" | "macos";
const finalStatuses = new Set(["Succeeded", "Failed", "TimeOut", "Cancelled"]);
const libraryLimit = 20 * 1024 * 1024;

interface DeviceState {
  machine: Machine;
  os: Os;
  dir: string;
  quarantineDir: string;
  quarantine: WindowsQuarantineEntry[];
  files: Map<string, Buffer>;
}

interface ParsedCommand {
  type: "PutFile" | "RunScript" | "GetFile";
  params: Record<string, string>;
}

interface ActionState {
  action: MachineAction;
  commands: ParsedCommand[];
  results: Map<number, Buffer>;
  child?: ChildProcess;
  started: boolean;
  waiters: (() => void)[];
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }
}

function osOf(platform: string): Os {
  if (/windows/i.test(platform)) return "windows";
  if (/mac/i.test(platform)) return "macos";
  return "linux";
}

function nowIso(): string {
  return new Date().toISOString();
}

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new HttpError(400, "BadRequest", "Request body is too large");
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

export async function startMdeDouble(options: MdeDoubleOptions = {}): Promise<MdeDouble> {
  const log = options.logger ?? createLogger({ service: "mde-double", level: "warn" });
  const scriptsDir = options.scriptsDir ?? defaultScriptsDir;
  const runScriptTimeoutMs = options.runScriptTimeoutMs ?? 10 * 60_000;
  const pendingDelayMs = options.pendingDelayMs ?? 20;
  const startLimit = options.startCallsPerMinute ?? 10;
  const rateWindowMs = options.rateWindowMs ?? 60_000;
  const maxSessions = options.maxConcurrentSessions ?? 25;
  const linkTtlMs = options.resultLinkTtlMs ?? 30 * 60_000;
  const acceptToken = options.acceptToken ?? acceptLocalMdeToken;
  const bash = options.bash ?? "bash";
  const requestor = options.requestor ?? "ANY.RUN connector (app)";
  const nonZeroExit = options.nonZeroExit ?? "completed";
  /** A script ran to its end: its exit code is in the result file either way. */
  const scriptEnded = (cmd: { commandStatus: string; errors?: string[] }, exitCode: number | null) => {
    if (exitCode === 0 || nonZeroExit === "completed") {
      cmd.commandStatus = "Completed";
      return;
    }
    cmd.commandStatus = "Failed";
    cmd.errors = [`Script execution failed with exit code ${exitCode}`];
  };

  const root = mkdtempSync(join(tmpdir(), "mde-double-"));
  const binDir = join(root, "bin");
  mkdirSync(binDir);
  copyFileSync(mdatpStandIn, join(binDir, "mdatp"));
  chmodSync(join(binDir, "mdatp"), 0o755);

  const devices = new Map<string, DeviceState>();
  const actions = new Map<string, ActionState>();
  const runs: ScriptRun[] = [];
  const faults: MdeFault[] = [];
  const startCalls: number[] = [];
  const startLog: StartCall[] = [];
  const links = new Map<string, { actionId: string; index: number; sig: string; expires: number }>();
  const library = new Map<string, { file: LibraryFile; content: Buffer }>();
  const timers = new Set<NodeJS.Timeout>();
  let closed = false;

  const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
  const putLibrary = (fileName: string, content: Buffer, meta: Partial<LibraryFile>, createdBy: string) => {
    const existing = library.get(fileName);
    const time = nowIso();
    const file: LibraryFile = {
      fileName,
      sha256: sha256(content),
      description: meta.description ?? null,
      creationTime: existing?.file.creationTime ?? time,
      lastUpdatedTime: time,
      createdBy,
      hasParameters: meta.hasParameters ?? false,
      parametersDescription: meta.parametersDescription ?? null,
    };
    library.set(fileName, { file, content });
    return file;
  };
  if (existsSync(scriptsDir)) {
    for (const name of readdirSync(scriptsDir).filter((n) => /\.(sh|ps1)$/.test(n)).sort()) {
      putLibrary(name, readFileSync(join(scriptsDir, name)), { description: "ANY.RUN collection script", hasParameters: true, parametersDescription: "v1 envelope" }, "seed");
    }
  }

  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      if (!closed) fn();
    }, ms);
    timers.add(t);
  };

  // ------------------------------------------------------------------------------------------
  // Action lifecycle

  const touch = (state: ActionState) => {
    state.action.lastUpdateDateTimeUtc = nowIso();
  };
  const finalise = (state: ActionState, status: "Succeeded" | "Failed" | "TimeOut" | "Cancelled") => {
    if (finalStatuses.has(state.action.status)) return;
    state.action.status = status;
    touch(state);
  };
  const notify = (state: ActionState) => {
    if (!finalStatuses.has(state.action.status)) return;
    for (const w of state.waiters.splice(0)) w();
  };

  const scheduleStart = (state: ActionState) => {
    if (state.started) return;
    const device = devices.get(state.action.machineId ?? "");
    if (!device || device.machine.healthStatus !== "Active") return; // stays Pending (queued)
    state.started = true;
    later(pendingDelayMs, () => {
      void execute(state, device).catch((err: unknown) => {
        log.error("action execution failed", { actionId: state.action.id, error: err });
        finalise(state, "Failed");
        notify(state);
      });
    });
  };

  async function runBash(state: ActionState, device: DeviceState, scriptName: string, content: Buffer, args: string | undefined): Promise<{ exitCode: number | null; stdout: string; stderr: string; timedOut: boolean }> {
    const workDir = mkdtempSync(join(root, `action-${state.action.id.slice(0, 8)}-`));
    const scriptPath = join(workDir, scriptName);
    writeFileSync(scriptPath, content, { mode: 0o700 });
    const started = Date.now();
    const child = spawn(bash, args === undefined ? [scriptPath] : [scriptPath, args], {
      cwd: workDir,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        PATH: `${binDir}:${process.env.PATH ?? "/usr/bin:/bin"}`,
        HOME: workDir,
        TMPDIR: workDir,
        LANG: "C.UTF-8",
        MDATP_FAKE_QUARANTINE: device.quarantineDir,
      },
    });
    state.child = child;
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const cap = 1024 * 1024;
    let outSize = 0;
    let errSize = 0;
    child.stdout!.on("data", (d: Buffer) => {
      if (outSize < cap) out.push(d);
      outSize += d.length;
    });
    child.stderr!.on("data", (d: Buffer) => {
      if (errSize < cap) err.push(d);
      errSize += d.length;
    });
    let timedOut = false;
    const killGroup = () => {
      try {
        if (child.pid) process.kill(-child.pid, "SIGKILL");
      } catch {
        /* already gone */
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup();
    }, runScriptTimeoutMs);
    const exitCode = await new Promise<number | null>((resolve) => {
      child.on("error", () => resolve(null));
      child.on("close", (code) => resolve(code));
    });
    clearTimeout(timer);
    state.child = undefined;
    const leftovers = existsSync(workDir) ? readdirSync(workDir).filter((n) => n !== scriptName) : [];
    rmSync(workDir, { recursive: true, force: true });
    const result = {
      exitCode: timedOut ? null : exitCode,
      stdout: Buffer.concat(out).toString("utf8"),
      stderr: Buffer.concat(err).toString("utf8"),
      timedOut,
    };
    runs.push({
      actionId: state.action.id,
      machineId: device.machine.id,
      os: device.os,
      scriptName,
      args,
      ...result,
      durationMs: Date.now() - started,
      leftovers,
    });
    return result;
  }

  async function execute(state: ActionState, device: DeviceState): Promise<void> {
    if (finalStatuses.has(state.action.status)) return;
    state.action.status = "InProgress";
    touch(state);
    const commands = state.action.commands ?? [];
    let failed = false;
    for (let i = 0; i < state.commands.length; i++) {
      if (state.action.status !== "InProgress") break; // cancelled
      const parsed = state.commands[i]!;
      const cmd = commands[i]!;
      cmd.startTime = nowIso();
      touch(state);
      if (parsed.type === "PutFile") {
        cmd.commandStatus = library.has(parsed.params.FileName!) ? "Completed" : "Failed";
        if (cmd.commandStatus === "Failed") cmd.errors = ["File was not found in the library"];
      } else if (parsed.type === "GetFile") {
        const path = parsed.params.Path!;
        const content = [...device.files].find(([p]) => (device.os === "windows" ? p.toLowerCase() === path.toLowerCase() : p === path))?.[1];
        if (content) {
          state.results.set(i, content);
          cmd.commandStatus = "Completed";
        } else {
          cmd.commandStatus = "Failed";
          cmd.errors = ["File not found"];
        }
      } else {
        const scriptName = parsed.params.ScriptName!;
        const args = parsed.params.Args;
        const entry = library.get(scriptName);
        if (!entry) {
          cmd.commandStatus = "Failed";
          cmd.errors = ["Script was not found in the library"];
        } else if (device.os === "windows") {
          const started = Date.now();
          const run = await emulateWindowsCollect(args, device);
          runs.push({ actionId: state.action.id, machineId: device.machine.id, os: "windows", scriptName, args, exitCode: run.exitCode, stdout: run.stdout, stderr: run.stderr, timedOut: false, durationMs: Date.now() - started, leftovers: [] });
          const resultFile = { script_name: scriptName, exit_code: run.exitCode, script_output: run.stdout, script_errors: run.stderr };
          state.results.set(i, Buffer.from(JSON.stringify(resultFile)));
          scriptEnded(cmd, run.exitCode);
        } else {
          const run = await runBash(state, device, scriptName, entry.content, args);
          if (state.action.status !== "InProgress") break; // cancelled while running
          if (run.timedOut) {
            cmd.commandStatus = "Failed";
            cmd.errors = ["Script execution timed out"];
            cmd.endTime = nowIso();
            finalise(state, "TimeOut");
            notify(state);
            return;
          }
          const resultFile = { script_name: scriptName, exit_code: run.exitCode ?? -1, script_output: run.stdout, script_errors: run.stderr };
          state.results.set(i, Buffer.from(JSON.stringify(resultFile)));
          scriptEnded(cmd, run.exitCode);
        }
      }
      cmd.endTime = nowIso();
      touch(state);
      if (cmd.commandStatus === "Failed") {
        failed = true;
        break; // later commands are not executed
      }
    }
    if (state.action.status === "InProgress") finalise(state, failed ? "Failed" : "Succeeded");
    notify(state);
  }

  // ------------------------------------------------------------------------------------------
  // HTTP

  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", "Content-Length": Buffer.byteLength(text), ...headers });
    res.end(text);
  };
  const sendError = (res: ServerResponse, e: HttpError) => {
    const headers: Record<string, string> = {};
    if (e.retryAfterSeconds !== undefined) headers["Retry-After"] = String(e.retryAfterSeconds);
    send(res, e.status, { error: { code: e.code, message: e.message, target: randomUUID() } }, headers);
  };

  const takeFault = (operation: MdeOperation): HttpError | undefined => {
    const i = faults.findIndex((f) => f.operation === operation);
    if (i < 0) return undefined;
    const f = faults[i]!;
    const times = (f.times ?? 1) - 1;
    if (times <= 0) faults.splice(i, 1);
    else faults[i] = { ...f, times };
    return new HttpError(f.status, f.code, f.message ?? `Injected ${f.code}`, f.retryAfterSeconds);
  };

  const parseJson = async (req: IncomingMessage): Promise<unknown> => {
    const raw = await readBody(req, 1024 * 1024);
    try {
      return JSON.parse(raw.toString("utf8")) as unknown;
    } catch {
      throw new HttpError(400, "InvalidRequestBody", "Request body is not valid JSON");
    }
  };

  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

  function parseRunRequest(body: unknown): { commands: ParsedCommand[]; comment: string } {
    if (!isObject(body)) throw new HttpError(400, "InvalidRequestBody", "Request body must be an object");
    if (!("Commands" in body)) throw new HttpError(400, "MissingRequiredParameter", "Commands is required");
    if (!("Comment" in body)) throw new HttpError(400, "MissingRequiredParameter", "Comment is required");
    const { Commands, Comment } = body;
    if (typeof Comment !== "string") throw new HttpError(400, "InvalidRequestBody", "Comment must be a string");
    if (!Array.isArray(Commands) || Commands.length === 0) throw new HttpError(400, "InvalidRequestBody", "Commands must be a non-empty array");
    const allowed: Record<ParsedCommand["type"], { required: string[]; optional: string[] }> = {
      PutFile: { required: ["FileName"], optional: [] },
      RunScript: { required: ["ScriptName"], optional: ["Args"] },
      GetFile: { required: ["Path"], optional: [] },
    };
    const order = ["PutFile", "RunScript", "GetFile"];
    let last = 0;
    const commands = Commands.map((c: unknown): ParsedCommand => {
      if (!isObject(c)) throw new HttpError(400, "InvalidRequestBody", "Each command must be an object");
      if (!("type" in c)) throw new HttpError(400, "MissingRequiredParameter", "Command type is required");
      if (!("params" in c)) throw new HttpError(400, "MissingRequiredParameter", "Command params are required");
      const type = c.type;
      if (typeof type !== "string" || !(type in allowed)) throw new HttpError(400, "InvalidRequestBody", "Unknown command type");
      const rank = order.indexOf(type);
      if (rank < last) throw new HttpError(400, "InvalidRequestBody", "Commands must be ordered PutFile, RunScript, GetFile");
      last = rank;
      if (!Array.isArray(c.params)) throw new HttpError(400, "InvalidRequestBody", "params must be an array");
      const spec = allowed[type as ParsedCommand["type"]];
      const params: Record<string, string> = {};
      for (const p of c.params) {
        if (!isObject(p) || !("key" in p) || !("value" in p)) throw new HttpError(400, "InvalidRequestBody", "params entries are {key, value}");
        if (typeof p.key !== "string" || typeof p.value !== "string") throw new HttpError(400, "InvalidRequestBody", "param key and value are strings");
        if (!spec.required.includes(p.key) && !spec.optional.includes(p.key)) throw new HttpError(400, "InvalidRequestBody", "Unknown parameter key");
        params[p.key] = p.value;
      }
      for (const k of spec.required) if (!(k in params)) throw new HttpError(400, "MissingRequiredParameter", `${k} is required`);
      return { type: type as ParsedCommand["type"], params };
    });
    return { commands, comment: Comment };
  }

  /**
   * `$filter` of GET /api/machineactions: the documented fields (id, status, machineId, type,
   * requestor: `eq '<string>'`; creationDateTimeUtc: eq/ne/gt/ge/lt/le <ISO date>), clauses joined
   * with `and`. The reference leaves combining clauses unverified; the double accepts it. Anything
   * else is a 400 ODataError.
   */
  function parseActionFilter(text: string | null): (a: MachineAction) => boolean {
    if (text === null || text.trim() === "") return () => true;
    const stringFields = new Set(["id", "status", "machineId", "type", "requestor"]);
    // Split on `and` outside string literals.
    const clauses: string[] = [];
    let rest = text;
    for (;;) {
      const m = /^((?:[^']|'(?:[^']|'')*')*?)\s+and\s+/i.exec(rest);
      if (!m) break;
      clauses.push(m[1]!);
      rest = rest.slice(m[0].length);
    }
    clauses.push(rest);
    const tests = clauses.map((clause): ((a: MachineAction) => boolean) => {
      let m = /^\s*(\w+)\s+eq\s+'((?:[^']|'')*)'\s*$/.exec(clause);
      if (m && stringFields.has(m[1]!)) {
        const field = m[1] as "id" | "status" | "machineId" | "type" | "requestor";
        const value = m[2]!.replace(/''/g, "'");
        return (a) => String(a[field] ?? "") === value;
      }
      m = /^\s*creationDateTimeUtc\s+(eq|ne|gt|ge|lt|le)\s+(\d{4}-\d{2}-\d{2}T[\d:.]+Z)\s*$/.exec(clause);
      if (m) {
        const op = m[1]!;
        const at = Date.parse(m[2]!);
        if (Number.isNaN(at)) throw new HttpError(400, "ODataError", "Invalid datetime literal in $filter");
        return (a) => {
          const t = Date.parse(a.creationDateTimeUtc ?? "");
          return op === "eq" ? t === at : op === "ne" ? t !== at : op === "gt" ? t > at : op === "ge" ? t >= at : op === "lt" ? t < at : t <= at;
        };
      }
      throw new HttpError(400, "ODataError", "The query specified in the URI is not valid");
    });
    return (a) => tests.every((t) => t(a));
  }

  function listActions(query: URLSearchParams): unknown {
    for (const key of query.keys()) {
      if (key.startsWith("$") && key !== "$filter" && key !== "$top") throw new HttpError(400, "ODataError", `Query option ${key} is not supported`);
    }
    const filter = parseActionFilter(query.get("$filter"));
    const topText = query.get("$top");
    let top = 10_000;
    if (topText !== null) {
      top = Number(topText);
      if (!/^\d+$/.test(topText) || top < 1 || top > 10_000) throw new HttpError(400, "ODataError", "$top must be an integer from 1 to 10000");
    }
    const value = [...actions.values()]
      .map((s) => s.action)
      .filter(filter)
      .slice(0, top)
      .map((a) => structuredClone(a));
    return { "@odata.context": `${url}/api/$metadata#MachineActions`, value };
  }

  function startAction(machineId: string, body: unknown): MachineAction {
    const now = Date.now();
    while (startCalls.length > 0 && startCalls[0]! <= now - rateWindowMs) startCalls.shift();
    if (startCalls.length >= startLimit) {
      const retry = Math.max(1, Math.ceil((startCalls[0]! + rateWindowMs - now) / 1000));
      throw new HttpError(429, "TooManyRequests", "Rate limit is exceeded", retry);
    }
    // Every call that is not itself throttled counts, also one refused below (404, 400).
    startCalls.push(now);
    const device = devices.get(machineId);
    if (!device) throw new HttpError(404, "ResourceNotFound", `Machine ${machineId} was not found`);
    const { commands, comment } = parseRunRequest(body);
    for (const c of commands) {
      const name = c.type === "PutFile" ? c.params.FileName : c.type === "RunScript" ? c.params.ScriptName : undefined;
      if (name !== undefined && !library.has(name)) throw new HttpError(400, "InvalidInput", `${name} was not found in the library`);
    }
    const active = [...actions.values()].filter((a) => !finalStatuses.has(a.action.status));
    if (active.some((a) => a.action.machineId === machineId)) {
      throw new HttpError(400, "ActiveRequestAlreadyExists", "Action is already in progress");
    }
    if (active.length >= maxSessions) throw new HttpError(429, "TooManyRequests", "Too many concurrent Live Response sessions", 60);
    const time = nowIso();
    const action: MachineAction = {
      "@odata.context": `${url}/api/$metadata#MachineActions/$entity`,
      id: randomUUID(),
      type: "LiveResponse",
      title: null,
      requestor,
      requestorComment: comment,
      requestSource: "PublicApi",
      status: "Pending",
      machineId,
      computerDnsName: device.machine.computerDnsName ?? null,
      creationDateTimeUtc: time,
      lastUpdateDateTimeUtc: time,
      cancellationRequestor: null,
      cancellationComment: null,
      cancellationDateTimeUtc: null,
      errorHResult: 0,
      scope: null,
      externalId: null,
      relatedFileInfo: null,
      troubleshootInfo: null,
      commands: commands.map(
        (c, index): MachineActionCommand => ({
          index,
          startTime: null,
          endTime: null,
          commandStatus: "Created",
          errors: [],
          command: { type: c.type, params: Object.entries(c.params).map(([key, value]) => ({ key, value })) },
        }),
      ),
    };
    const state: ActionState = { action, commands, results: new Map(), started: false, waiters: [] };
    actions.set(action.id, state);
    scheduleStart(state);
    return action;
  }

  function cancelAction(id: string, body: unknown): MachineAction {
    const state = actions.get(id);
    if (!state) throw new HttpError(404, "ResourceNotFound", `Machine action ${id} was not found`);
    if (!isObject(body) || !("Comment" in body)) throw new HttpError(400, "MissingRequiredParameter", "Comment is required");
    if (typeof body.Comment !== "string") throw new HttpError(400, "InvalidRequestBody", "Comment must be a string");
    if (finalStatuses.has(state.action.status)) throw new HttpError(400, "BadRequest", `Action is already ${state.action.status}`);
    state.action.status = "Cancelled";
    state.action.cancellationRequestor = requestor;
    state.action.cancellationComment = body.Comment;
    state.action.cancellationDateTimeUtc = nowIso();
    touch(state);
    if (state.child?.pid) {
      try {
        process.kill(-state.child.pid, "SIGKILL");
      } catch {
        /* already gone */
      }
    }
    notify(state);
    return state.action;
  }

  function downloadLink(id: string, index: number): unknown {
    const state = actions.get(id);
    if (!state) throw new HttpError(404, "ResourceNotFound", `Machine action ${id} was not found`);
    if (index < 0 || index >= state.commands.length) throw new HttpError(400, "InvalidInput", "Command index is out of range");
    if (!state.results.has(index)) throw new HttpError(404, "ResourceNotFound", "No result is available for this command");
    const token = randomBytes(16).toString("hex");
    const sig = randomBytes(32).toString("base64");
    const expires = Date.now() + linkTtlMs;
    links.set(token, { actionId: id, index, sig, expires });
    const se = new Date(expires).toISOString().replace(/\.\d{3}Z$/, "Z");
    const query = new URLSearchParams({ se, sp: "r", sv: "2019-07-07", sr: "b", sig });
    return { "@odata.context": `${url}/api/$metadata#Edm.String`, value: `${url}/investigation-actions-data/${token}/CustomPlaybookCommandOutput?${query}` };
  }

  async function uploadLibrary(req: IncomingMessage): Promise<LibraryFile> {
    const raw = await readBody(req, libraryLimit + 1024 * 1024);
    const type = req.headers["content-type"] ?? "";
    if (!type.startsWith("multipart/form-data")) throw new HttpError(400, "InvalidRequestBody", "Expected multipart/form-data");
    let form: FormData;
    try {
      form = await new Request("http://double/", { method: "POST", headers: { "content-type": type }, body: raw }).formData();
    } catch {
      throw new HttpError(400, "InvalidRequestBody", "Malformed multipart body");
    }
    const file = form.get("file") ?? form.get("File");
    if (!file || typeof file === "string") throw new HttpError(400, "MissingRequiredParameter", "file is required");
    const content = Buffer.from(await file.arrayBuffer());
    if (content.length > libraryLimit) throw new HttpError(400, "BadRequest", "File size exceeds the 20 MB limit");
    const fileName = file.name;
    if (!/^[A-Za-z0-9_.-]+$/.test(fileName)) throw new HttpError(400, "InvalidInput", "File name may contain letters, digits, '-', '_' and '.' only");
    const bool = (key: string): boolean | undefined => {
      const v = form.get(key);
      if (v === null) return undefined;
      if (typeof v !== "string" || !/^(true|false)$/i.test(v)) throw new HttpError(400, "InvalidRequestBody", `${key} must be true or false`);
      return v.toLowerCase() === "true";
    };
    const text = (key: string) => {
      const v = form.get(key);
      return typeof v === "string" ? v : undefined;
    };
    const override = bool("OverrideIfExists") ?? false;
    if (library.has(fileName) && !override) throw new HttpError(400, "BadRequest", "A library file with this name already exists");
    return putLibrary(
      fileName,
      content,
      { description: text("Description") ?? null, hasParameters: bool("HasParameters") ?? false, parametersDescription: text("ParametersDescription") ?? null },
      requestor,
    );
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const parsedUrl = new URL(req.url ?? "/", "http://127.0.0.1");
    const path = decodeURIComponent(parsedUrl.pathname);
    const method = req.method ?? "GET";

    // Result files: a storage SAS link, no bearer.
    const resultMatch = /^\/investigation-actions-data\/([0-9a-f]{32})\/CustomPlaybookCommandOutput$/.exec(path);
    if (resultMatch && method === "GET") {
      const link = links.get(resultMatch[1]!);
      const storageError = (status: number, code: string) => {
        res.writeHead(status, { "Content-Type": "application/xml", "x-ms-error-code": code });
        res.end(`<?xml version="1.0" encoding="utf-8"?><Error><Code>${code}</Code><Message>Server failed to authenticate the request.</Message></Error>`);
      };
      if (!link || parsedUrl.searchParams.get("sig") !== link.sig) return storageError(403, "AuthenticationFailed");
      if (Date.now() > link.expires) return storageError(403, "AuthenticationFailed");
      const bytes = actions.get(link.actionId)?.results.get(link.index);
      if (!bytes) return storageError(404, "BlobNotFound");
      const body = options.gzipResults ? gzipSync(bytes) : bytes;
      res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": body.length });
      res.end(body);
      return;
    }

    const auth = req.headers.authorization ?? "";
    const bearer = /^Bearer (\S+)$/.exec(auth);
    if (!bearer || !acceptToken(bearer[1]!)) {
      req.resume();
      return sendError(res, new HttpError(401, "Unauthorized", "Authorization has been denied for this request"));
    }

    const route = (op: MdeOperation, fn: () => Promise<void> | void) => async () => {
      const fault = takeFault(op);
      if (fault) {
        req.resume();
        return sendError(res, fault);
      }
      await fn();
    };

    let m: RegExpExecArray | null;
    let handler: (() => Promise<void>) | undefined;
    if ((m = /^\/api\/machines\/([^/]+)$/.exec(path)) && method === "GET") {
      const id = m[1]!;
      handler = route("getMachine", () => {
        const device = devices.get(id) ?? devices.get(id.toLowerCase());
        if (!device) throw new HttpError(404, "ResourceNotFound", `Machine ${id} was not found`);
        send(res, 200, { "@odata.context": `${url}/api/$metadata#Machines/$entity`, ...device.machine });
      });
    } else if ((m = /^\/api\/machines\/([^/]+)\/runliveresponse$/.exec(path)) && method === "POST") {
      const id = m[1]!;
      const logged = (entry: Omit<StartCall, "machineId" | "at">) => startLog.push({ machineId: id, at: nowIso(), ...entry });
      handler = async () => {
        const fault = takeFault("runLiveResponse");
        if (fault) {
          req.resume();
          logged({ status: fault.status, code: fault.code });
          return sendError(res, fault);
        }
        try {
          const action = startAction(id, await parseJson(req));
          logged({ status: 201, actionId: action.id, comment: action.requestorComment ?? undefined });
          send(res, 201, action);
        } catch (err) {
          if (err instanceof HttpError) logged({ status: err.status, code: err.code });
          throw err;
        }
      };
    } else if (path === "/api/machineactions" && method === "GET") {
      handler = route("listMachineActions", () => send(res, 200, listActions(parsedUrl.searchParams)));
    } else if ((m = /^\/api\/machineactions\/([^/]+)$/.exec(path)) && method === "GET") {
      const id = m[1]!;
      handler = route("getMachineAction", () => {
        const state = actions.get(id);
        if (!state) throw new HttpError(404, "ResourceNotFound", `Machine action ${id} was not found`);
        send(res, 200, { ...state.action, "@odata.context": `${url}/api/$metadata#MachineActions/$entity` });
      });
    } else if ((m = /^\/api\/machineactions\/([^/]+)\/GetLiveResponseResultDownloadLink\(index=(\d+)\)$/.exec(path)) && method === "GET") {
      const id = m[1]!;
      const index = Number(m[2]);
      handler = route("getResultDownloadLink", () => send(res, 200, downloadLink(id, index)));
    } else if ((m = /^\/api\/machineactions\/([^/]+)\/cancel$/.exec(path)) && method === "POST") {
      const id = m[1]!;
      handler = route("cancelMachineAction", async () => send(res, 200, cancelAction(id, await parseJson(req))));
    } else if (path === "/api/libraryfiles" && method === "GET") {
      handler = route("listLibraryFiles", () =>
        send(res, 200, { "@odata.context": `${url}/api/$metadata#LibraryFiles`, value: [...library.values()].map((e) => e.file) }),
      );
    } else if (path === "/api/libraryfiles" && method === "POST") {
      handler = route("uploadLibraryFile", async () => send(res, 200, await uploadLibrary(req)));
    }
    if (!handler) {
      req.resume();
      return sendError(res, new HttpError(404, "NotFound", "No such resource"));
    }
    await handler();
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (err instanceof HttpError) return sendError(res, err);
      log.error("mde double request failed", { error: err });
      sendError(res, new HttpError(500, "InternalServerError", "Internal server error"));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const deviceOrThrow = (deviceId: string) => {
    const d = devices.get(deviceId);
    if (!d) throw new Error(`seed the machine ${deviceId} first`);
    return d;
  };

  return {
    url,
    async close() {
      closed = true;
      for (const t of timers) clearTimeout(t);
      for (const s of actions.values()) {
        if (s.child?.pid) {
          try {
            process.kill(-s.child.pid, "SIGKILL");
          } catch {
            /* gone */
          }
        }
      }
      const closing = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closing;
      rmSync(root, { recursive: true, force: true });
    },

    seedMachine(seed, seedOptions = {}) {
      const time = nowIso();
      const existing = devices.get(seed.id);
      const machine: Machine = {
        computerDnsName: `host-${seed.id.slice(0, 6)}.contoso.com`,
        firstSeen: time,
        lastSeen: time,
        version: null,
        osBuild: null,
        osArchitecture: "64-bit",
        osProcessor: "x64",
        lastIpAddress: "192.0.2.10",
        lastExternalIpAddress: "198.51.100.71",
        healthStatus: "Active",
        onboardingStatus: "onboarded",
        rbacGroupId: 140,
        rbacGroupName: "Servers",
        riskScore: "Low",
        exposureLevel: "Medium",
        isAadJoined: false,
        aadDeviceId: null,
        machineTags: [],
        ...existing?.machine,
        ...seed,
      };
      const os = osOf(machine.osPlatform ?? "");
      let device = existing;
      if (!device) {
        const dir = join(root, "devices", seed.id);
        const quarantineDir = join(dir, "quarantine");
        mkdirSync(join(quarantineDir, "items"), { recursive: true });
        writeFileSync(join(quarantineDir, "calls.log"), "");
        writeFileSync(join(quarantineDir, "exclusions"), "");
        device = { machine, os, dir, quarantineDir, quarantine: [], files: new Map() };
        devices.set(seed.id, device);
      } else {
        device.machine = machine;
        device.os = os;
      }
      writeFileSync(join(device.quarantineDir, "agent"), seedOptions.agent ?? "modern");
      // A device that comes back online runs its queued actions.
      for (const s of actions.values()) if (s.action.machineId === seed.id && s.action.status === "Pending") scheduleStart(s);
      return machine;
    },

    seedQuarantine(deviceId, entry) {
      const device = deviceOrThrow(deviceId);
      const threatId = randomUUID();
      const content = typeof entry.content === "string" ? Buffer.from(entry.content) : entry.content;
      const threatName = entry.threatName ?? "Virus:DOS/EICAR_Test_File";
      device.quarantine.push({ threatId, threatName, originalPath: entry.originalPath, content });
      const itemDir = join(device.quarantineDir, "items", threatId);
      mkdirSync(itemDir, { recursive: true });
      writeFileSync(join(itemDir, "path"), entry.originalPath);
      writeFileSync(join(itemDir, "content"), content);
      writeFileSync(join(itemDir, "name"), threatName);
      return threatId;
    },

    seedFile(deviceId, entry) {
      const device = deviceOrThrow(deviceId);
      device.files.set(entry.path, typeof entry.content === "string" ? Buffer.from(entry.content) : entry.content);
    },

    actions: () => [...actions.values()].map((s) => structuredClone(s.action)),
    startCalls: () => startLog.map((c) => ({ ...c })),
    runs: () => runs.map((r) => ({ ...r, leftovers: [...r.leftovers] })),
    mdatpCalls: (deviceId) =>
      readFileSync(join(deviceOrThrow(deviceId).quarantineDir, "calls.log"), "utf8").split("\n").filter(Boolean),
    mdatpExclusions: (deviceId) =>
      readFileSync(join(deviceOrThrow(deviceId).quarantineDir, "exclusions"), "utf8").split("\n").filter(Boolean),
    injectFault(fault) {
      faults.push(fault);
    },
    settled(actionId, timeoutMs = 30_000) {
      const state = actions.get(actionId);
      if (!state) return Promise.reject(new Error(`unknown action ${actionId}`));
      if (finalStatuses.has(state.action.status)) return Promise.resolve(structuredClone(state.action));
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`action ${actionId} still ${state.action.status} after ${timeoutMs} ms`)), timeoutMs);
        state.waiters.push(() => {
          clearTimeout(t);
          resolve(structuredClone(state.action));
        });
      });
    },
  };
}
