/**
 * Child-process entry of the local functions host (run with `tsx`).
 *
 * Environment:
 *   SERVICEBUS_CONNECTION            Service Bus connection string (local broker)
 *   LOCAL_EVENTGRID_URL              base URL of the local Event Grid (admin API) — for Event Grid functions
 *   LOCAL_EVENTGRID_KEY              its key
 *   FUNCTIONS_HOST_WEBHOOK_PORT      port of the Event Grid webhook (default 0 = any free port)
 *   FUNCTIONS_HOST_HTTP_PORT         port of the HTTP trigger server (default 0 = any free port)
 *   FUNCTIONS_HOST_KEY / FUNCTIONS_HOST_MASTER_KEY  keys the HTTP trigger accepts (default: random)
 *   FUNCTIONS_HOST_MAX_CONCURRENT_CALLS
 *   FUNCTIONS_HOST_FUNCTIONS         optional comma-separated subset of function names
 *   FUNCTIONS_HOST_DEFINITIONS_MODULE optional module (path or file URL) exporting `allFunctions`
 *                                    instead of services/src/functions/index.ts (tests)
 *
 * Logs `{"message":"functions host ready", pid, functions, webhookUrl, httpUrl}` when listening; closes the
 * receivers and exits 0 on SIGTERM / SIGINT, and when the parent's IPC channel (if any) disconnects.
 */
import path from "node:path";
import { pathToFileURL } from "node:url";
import { createLogger } from "@connector/shared/logger";
import type { FunctionDefinition } from "@connector/shared/function-definition";
import { loadAllFunctions, startFunctionsHost, type FunctionsHost } from "./index.ts";

const logger = createLogger({ service: "functions-host" });

function positiveInt(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer`);
  return n;
}

async function loadDefinitions(): Promise<FunctionDefinition[]> {
  const modulePath = process.env.FUNCTIONS_HOST_DEFINITIONS_MODULE;
  let defs: FunctionDefinition[];
  if (modulePath) {
    const specifier = modulePath.startsWith("file:") ? modulePath : pathToFileURL(path.resolve(modulePath)).href;
    defs = ((await import(specifier)) as { allFunctions: FunctionDefinition[] }).allFunctions;
  } else {
    defs = await loadAllFunctions();
  }
  const subset = process.env.FUNCTIONS_HOST_FUNCTIONS?.split(",").map((s) => s.trim()).filter(Boolean);
  return subset && subset.length > 0 ? defs.filter((d) => subset.includes(d.name)) : defs;
}

async function main(): Promise<void> {
  const eventGridUrl = process.env.LOCAL_EVENTGRID_URL;
  const eventGridKey = process.env.LOCAL_EVENTGRID_KEY;
  const host: FunctionsHost = await startFunctionsHost({
    functions: await loadDefinitions(),
    serviceBusConnectionString: process.env.SERVICEBUS_CONNECTION,
    eventGridWebhook:
      eventGridUrl && eventGridKey
        ? { url: eventGridUrl, key: eventGridKey, port: positiveInt("FUNCTIONS_HOST_WEBHOOK_PORT") ?? 0 }
        : undefined,
    httpPort: positiveInt("FUNCTIONS_HOST_HTTP_PORT") ?? 0,
    maxConcurrentCalls: positiveInt("FUNCTIONS_HOST_MAX_CONCURRENT_CALLS"),
    logger,
  });

  let stopping = false;
  const stop = (reason: string) => {
    if (stopping) return;
    stopping = true;
    logger.info("functions host stopping", { reason });
    const force = setTimeout(() => process.exit(1), 30_000);
    force.unref();
    host.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error("functions host close failed", { error: err });
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
  if (process.channel) {
    process.channel.unref();
    process.once("disconnect", () => stop("parent disconnected"));
  }

  // Always printed, whatever LOG_LEVEL says: the parent waits for this line.
  createLogger({ service: "functions-host", level: "info" }).info("functions host ready", { pid: process.pid, functions: host.functions, webhookUrl: host.webhookUrl, httpUrl: host.httpUrl });
}

main().catch((err: unknown) => {
  logger.error("functions host failed to start", { error: err });
  process.exit(1);
});
