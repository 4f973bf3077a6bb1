/**
 * Azurite (blob + table) from the npm package, each service in its own child process on loopback.
 *
 * - Blob is started on port 0; Azurite prints the address it really listens on, which we parse.
 * - Table prints the configured port only ("…started on 127.0.0.1:0"), so for it we pick a free port
 *   ourselves (bind port 0, read it, release it) and retry on the rare EADDRINUSE race.
 * - Each child gets an IPC channel and a tiny preload that exits when the channel disconnects, so
 *   the services die with the parent even when the parent is SIGKILLed (no orphans after a test run).
 *
 * Table clients over http need `allowInsecureConnection: true`.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import net from "node:net";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { createLogger, type Logger } from "@connector/shared/logger";

/** The well-known development account of Azurite / the Storage emulator (public, documented). */
export const DEV_ACCOUNT_NAME = "devstoreaccount1";
export const DEV_ACCOUNT_KEY =
  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

export interface AzuriteOptions {
  /** Workspace folder (kept on close). Default: a fresh temp folder, removed on close. */
  location?: string;
  logger?: Logger;
  /** Milliseconds to wait for each service to answer. Default 20 s. */
  startTimeoutMs?: number;
}

export interface AzuriteInstance {
  readonly blobPort: number;
  readonly tablePort: number;
  /** `http://127.0.0.1:<blobPort>/devstoreaccount1` */
  readonly blobUrl: string;
  /** `http://127.0.0.1:<tablePort>/devstoreaccount1` */
  readonly tableUrl: string;
  readonly connectionString: string;
  readonly accountName: string;
  readonly accountKey: string;
  readonly location: string;
  close(): Promise<void>;
}

const HOST = "127.0.0.1";

/** Exits the Azurite child when its IPC channel to the parent goes away (parent ended or was killed). */
const PARENT_WATCH_PRELOAD =
  "data:text/javascript," +
  encodeURIComponent(
    [
      "if (process.channel) {",
      "  process.channel.unref();",
      "  process.on('disconnect', () => {",
      "    process.kill(process.pid, 'SIGTERM');",
      "    setTimeout(() => process.exit(0), 2000).unref();",
      "  });",
      "}",
    ].join("\n"),
  );

export function storageConnectionString(parts: {
  accountName: string;
  accountKey: string;
  blobEndpoint?: string;
  tableEndpoint?: string;
}): string {
  const segments = [
    "DefaultEndpointsProtocol=http",
    `AccountName=${parts.accountName}`,
    `AccountKey=${parts.accountKey}`,
  ];
  if (parts.blobEndpoint) segments.push(`BlobEndpoint=${parts.blobEndpoint}`);
  if (parts.tableEndpoint) segments.push(`TableEndpoint=${parts.tableEndpoint}`);
  return segments.join(";") + ";";
}

/** A port that was free a moment ago (bind 0, read, release). */
export async function findFreePort(host = HOST): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error("could not determine a free port"))));
    });
  });
}

function azuriteEntry(service: "blob" | "table"): string {
  const require = createRequire(import.meta.url);
  const pkgJson = require.resolve("azurite/package.json");
  return path.join(path.dirname(pkgJson), "dist", "src", service, "main.js");
}

interface ServiceProcess {
  child: ChildProcess;
  port: number;
  stop(): Promise<void>;
}

function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  if (await waitForExit(child, 3000)) return;
  child.kill("SIGKILL");
  await waitForExit(child, 3000);
}

/** Resolves once an HTTP request to the port gets any HTTP answer. */
async function waitUntilAnswering(port: number, deadline: number, child: ChildProcess): Promise<void> {
  for (;;) {
    if (child.exitCode !== null) throw new Error(`Azurite process exited with code ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const req = http.get({ host: HOST, port, path: `/${DEV_ACCOUNT_NAME}?comp=list`, timeout: 1000 }, (res) => {
        res.resume();
        resolve(true);
      });
      req.on("error", () => resolve(false));
      req.on("timeout", () => req.destroy());
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`Azurite on port ${port} did not answer in time`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function startService(
  service: "blob" | "table",
  location: string,
  requestedPort: number,
  timeoutMs: number,
  logger: Logger,
): Promise<ServiceProcess> {
  const args = [
    "--import",
    PARENT_WATCH_PRELOAD,
    azuriteEntry(service),
    `--${service}Host`,
    HOST,
    `--${service}Port`,
    String(requestedPort),
    "--location",
    location,
    "--skipApiVersionCheck",
    "--disableTelemetry",
    "--loose",
    "--silent",
  ];
  const child = spawn(process.execPath, args, {
    cwd: location,
    stdio: ["ignore", "pipe", "pipe", "ipc"],
    env: { ...process.env, NODE_OPTIONS: "" },
  });
  let output = "";
  const deadline = Date.now() + timeoutMs;
  const listening = new Promise<number>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output = (output + chunk.toString("utf8")).slice(-4000);
      const m = /successfully (?:listens on|started on) (?:https?:\/\/)?[\d.]+:(\d+)/.exec(output);
      if (m && Number(m[1]) > 0) resolve(Number(m[1]));
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code, signal) =>
      reject(new Error(`Azurite ${service} exited (${code ?? signal}) before listening: ${output.trim().slice(-500)}`)),
    );
    child.once("error", reject);
    setTimeout(() => reject(new Error(`Azurite ${service} did not start within ${timeoutMs} ms`)), timeoutMs).unref();
  });
  try {
    const port = await listening;
    await waitUntilAnswering(port, deadline, child);
    // Keep draining the pipes so the child never blocks on a full stdout buffer.
    child.stdout!.resume();
    child.stderr!.resume();
    logger.debug("azurite service listening", { service, port, pid: child.pid });
    return { child, port, stop: () => stopChild(child) };
  } catch (err) {
    await stopChild(child);
    throw err;
  }
}

const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const child of liveChildren) {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
  });
}

export async function startAzurite(options: AzuriteOptions = {}): Promise<AzuriteInstance> {
  const logger = options.logger ?? createLogger({ service: "azurite" });
  const timeoutMs = options.startTimeoutMs ?? 20_000;
  const ownLocation = options.location === undefined;
  const location = options.location ?? (await mkdtemp(path.join(os.tmpdir(), "azurite-")));
  installExitHook();

  const started: ServiceProcess[] = [];
  const cleanup = async () => {
    await Promise.all(started.map((s) => s.stop()));
    for (const s of started) liveChildren.delete(s.child);
    if (ownLocation) await rm(location, { recursive: true, force: true });
  };

  try {
    const startTable = async (): Promise<ServiceProcess> => {
      let lastError: unknown;
      for (let attempt = 0; attempt < 5; attempt++) {
        const port = await findFreePort();
        try {
          return await startService("table", location, port, timeoutMs, logger);
        } catch (err) {
          lastError = err;
          if (!/EADDRINUSE/.test(String((err as Error).message))) break;
        }
      }
      throw lastError instanceof Error ? lastError : new Error("Azurite table did not start");
    };
    const results = await Promise.allSettled([startService("blob", location, 0, timeoutMs, logger), startTable()]);
    for (const r of results) {
      if (r.status === "fulfilled") {
        started.push(r.value);
        liveChildren.add(r.value.child);
      }
    }
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
    const [blob, table] = started as [ServiceProcess, ServiceProcess];

    const blobUrl = `http://${HOST}:${blob.port}/${DEV_ACCOUNT_NAME}`;
    const tableUrl = `http://${HOST}:${table.port}/${DEV_ACCOUNT_NAME}`;
    logger.info("azurite ready", { blobUrl, tableUrl });
    let closed: Promise<void> | undefined;
    return {
      blobPort: blob.port,
      tablePort: table.port,
      blobUrl,
      tableUrl,
      connectionString: storageConnectionString({
        accountName: DEV_ACCOUNT_NAME,
        accountKey: DEV_ACCOUNT_KEY,
        blobEndpoint: blobUrl,
        tableEndpoint: tableUrl,
      }),
      accountName: DEV_ACCOUNT_NAME,
      accountKey: DEV_ACCOUNT_KEY,
      location,
      close: () => (closed ??= cleanup()),
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
