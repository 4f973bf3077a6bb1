import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { TableClient } from "@azure/data-tables";
import { ServiceBusClient } from "@azure/service-bus";
import { BlobServiceClient } from "@azure/storage-blob";
import { createLogger, type Logger } from "@connector/shared/logger";
import { queues, storageDefaults } from "@connector/shared/topology";
import { compactTriggerBody } from "@connector/shared/incident-trigger";
import { JobStore } from "@connector/shared/job-store";
import { startAzurite, type AzuriteInstance } from "./azurite.ts";
import { startServiceBusBroker } from "./servicebus/index.ts";
import type { LocalServiceBusBroker, ServiceBusBrokerOptions } from "./servicebus/types.ts";
import { startLocalEventGrid, type LocalEventGrid } from "./eventgrid/index.ts";
import { startFunctionsHost, type FunctionsHost } from "./functions-host/index.ts";
import { startAnyRunDouble, type AnyRunDoubleOptions } from "./doubles/anyrun.ts";
import { startMdeDouble, type MdeDouble, type MdeDoubleOptions } from "./doubles/mde.ts";
import { startSentinelDouble } from "./doubles/sentinel.ts";
import { devices, knownBadSamples, urls, type SampleIncident } from "./samples.ts";

/**
 * The embedded default: the whole connector on loopback. Real Azure SDKs against Azurite, the
 * local Service Bus broker and the local Event Grid; doubles of ANY.RUN, MDE and Sentinel; the
 * Function App's handlers in a local functions host (a child process, as in Azure, or in-process).
 */

export interface LocalRuntimeOptions {
  /** `process` (default): the functions host runs as a child process that can be killed and restarted. */
  host?: "process" | "inline";
  /** How fast the sandbox double finishes a task. */
  sandboxRunMs?: number;
  logger?: Logger;
  /** Extra environment for the functions host (overrides). */
  env?: Record<string, string>;
  /** Overrides of the ANY.RUN double's options (e.g. `parallelSlots`, `knownBadSha256`, `queuedMs`). */
  anyrun?: Partial<AnyRunDoubleOptions>;
  /** Overrides of the MDE double's options (e.g. `startCallsPerMinute`, `maxConcurrentSessions`). */
  mde?: Partial<MdeDoubleOptions>;
  /** Overrides of the broker's options (e.g. `queues` / `topics` with a shorter lock for crash tests). */
  broker?: Omit<ServiceBusBrokerOptions, "logger">;
  /** Local Event Grid: retry-delay multiplier (default 0.05) and per-subscription retry policies. */
  eventGrid?: { timeScale?: number; retryPolicy?: Readonly<Record<string, { maxDeliveryAttempts?: number; eventTimeToLiveMinutes?: number }>> };
  /**
   * Puts something between the connector and the doubles (e.g. a fault-injecting proxy): gets the
   * doubles' base URLs and returns the URLs the functions host should use instead; `close` runs
   * when the runtime closes.
   */
  interpose?: (doubles: DoubleUrls) => Promise<Partial<DoubleUrls> & { close?: () => Promise<void> }>;
}

/** Base URLs of the doubles as the connector's settings name them. */
export interface DoubleUrls {
  anyrun: string;
  mde: string;
  arm: string;
  ti: string;
}

export interface LocalRuntime {
  env: Record<string, string>;
  azurite: AzuriteInstance;
  broker: LocalServiceBusBroker;
  eventGrid: LocalEventGrid;
  anyrun: Awaited<ReturnType<typeof startAnyRunDouble>>;
  mde: MdeDouble;
  sentinel: Awaited<ReturnType<typeof startSentinelDouble>>;
  jobs: JobStore;
  /** Sends an incident trigger body to the intake queue, as the Sentinel playbook does. */
  pushIncident(body: unknown, messageId?: string): Promise<void>;
  /** Seeds the doubles with what a sample incident needs (incident, entities, quarantined files). */
  seed(sample: Pick<SampleIncident, "body" | "quarantine">): void;
  startHost(): Promise<void>;
  /** Everything the functions host process printed (its structured logs), for secret scans. */
  hostOutput(): string;
  /** Kills the functions host at once (SIGKILL in process mode), as a crash would. */
  killHost(): Promise<void>;
  close(): Promise<void>;
}

const anyrunKey = `local-${randomBytes(12).toString("hex")}`;

export async function startLocalRuntime(options: LocalRuntimeOptions = {}): Promise<LocalRuntime> {
  const logger = options.logger ?? createLogger({ service: "local-runtime", level: "warn" });
  const cleanups: (() => Promise<void>)[] = [];
  // Idempotent: a Ctrl-C handler and the main flow may both close; the second waits for the first.
  let closing: Promise<void> | undefined;
  const closeAll = () =>
    (closing ??= (async () => {
      for (const c of [...cleanups].reverse()) await c().catch(() => undefined);
    })());
  try {
    const azurite = await startAzurite({ logger });
    cleanups.push(() => azurite.close());
    const broker = await startServiceBusBroker({ ...options.broker, logger });
    cleanups.push(() => broker.close());
    const eventGrid = await startLocalEventGrid({
      azurite,
      timeScale: options.eventGrid?.timeScale ?? 0.05,
      ...(options.eventGrid?.retryPolicy ? { retryPolicy: options.eventGrid.retryPolicy } : {}),
      logger,
    });
    cleanups.push(() => eventGrid.close());
    const anyrun = await startAnyRunDouble({
      knownBadSha256: knownBadSamples(),
      knownBadUrls: [urls.malicious],
      queuedMs: 300,
      runningMs: options.sandboxRunMs ?? 1500,
      ...options.anyrun,
      apiKey: anyrunKey,
    });
    cleanups.push(() => anyrun.close());
    const mde = await startMdeDouble({ pendingDelayMs: 200, logger, ...options.mde });
    cleanups.push(() => mde.close());
    const sentinel = await startSentinelDouble({});
    cleanups.push(() => sentinel.close());

    mde.seedMachine({ id: devices.windows.id, osPlatform: devices.windows.osPlatform, osArchitecture: devices.windows.osArchitecture, computerDnsName: devices.windows.name, healthStatus: "Active" });
    mde.seedMachine({ id: devices.linux.id, osPlatform: devices.linux.osPlatform, osArchitecture: devices.linux.osArchitecture, computerDnsName: devices.linux.name, healthStatus: "Active" });

    const doubleUrls: DoubleUrls = { anyrun: anyrun.url, mde: mde.url, arm: sentinel.armUrl, ti: sentinel.tiUrl };
    if (options.interpose) {
      const { close, ...urls } = await options.interpose({ ...doubleUrls });
      if (close) cleanups.push(close);
      Object.assign(doubleUrls, urls);
    }

    const env: Record<string, string> = {
      SERVICEBUS_CONNECTION: broker.connectionString,
      STORAGE_CONNECTION: eventGrid.storageConnectionString,
      STAGING_CONTAINER: storageDefaults.stagingContainer,
      EVENTGRID_ENDPOINT: eventGrid.topicEndpoint("analysis-events"),
      EVENTGRID_KEY: eventGrid.key,
      LOCAL_EVENTGRID_URL: eventGrid.url,
      LOCAL_EVENTGRID_KEY: eventGrid.key,
      ANYRUN_BASE_URL: doubleUrls.anyrun,
      ANYRUN_API_KEY: anyrunKey,
      MDE_BASE_URL: doubleUrls.mde,
      ARM_BASE_URL: doubleUrls.arm,
      SENTINEL_TI_BASE_URL: doubleUrls.ti,
      AZURE_CREDENTIAL: "local",
      ANALYSIS_POLL_SECONDS: "1",
      LIVE_RESPONSE_POLL_SECONDS: "1",
      RETRY_BASE_SECONDS: "1",
      RETRY_MAX_SECONDS: "5",
      LOG_LEVEL: process.env.LOCAL_RUNTIME_VERBOSE ? "info" : "warn",
      ...options.env,
    };

    // The staging container and the jobs table exist before anything is uploaded (Pulumi creates them in Azure).
    await BlobServiceClient.fromConnectionString(eventGrid.storageConnectionString).getContainerClient(env.STAGING_CONTAINER!).createIfNotExists();
    const jobs = new JobStore(TableClient.fromConnectionString(azurite.connectionString, storageDefaults.jobsTable, { allowInsecureConnection: true }));
    await jobs.ensureTable();

    const sbClient = new ServiceBusClient(broker.connectionString);
    const intakeSender = sbClient.createSender(queues.incidentIntake.name);
    cleanups.push(async () => {
      await intakeSender.close();
      await sbClient.close();
    });

    let child: ChildProcess | undefined;
    const output: string[] = [];
    let inline: FunctionsHost | undefined;
    const hostMode = options.host ?? "process";

    const startHost = async () => {
      if (hostMode === "inline") {
        Object.assign(process.env, env);
        inline = await startFunctionsHost({ eventGrid, serviceBusConnectionString: env.SERVICEBUS_CONNECTION!, logger });
        return;
      }
      child = await spawnHost(env, logger, (text) => output.push(text));
    };
    const killHost = async () => {
      if (inline) {
        await inline.close();
        inline = undefined;
      }
      if (child) {
        const c = child;
        child = undefined;
        const exited = new Promise<void>((resolve) => c.once("exit", () => resolve()));
        c.kill("SIGKILL");
        await exited;
      }
    };
    cleanups.push(killHost);

    return {
      env,
      azurite,
      broker,
      eventGrid,
      anyrun,
      mde,
      sentinel,
      jobs,
      async pushIncident(body, messageId) {
        // As the intake playbook sends it: a body too large for one message loses its entity lists.
        await intakeSender.sendMessages({ body: compactTriggerBody(body), contentType: "application/json", ...(messageId ? { messageId } : {}) });
      },
      seed(sample) {
        const parsed = sample.body as { workspaceId: string; workspaceInfo: { SubscriptionId: string; ResourceGroupName: string; WorkspaceName: string }; object: { name: string; properties: Record<string, unknown> } };
        const props = parsed.object.properties;
        sentinel.seedIncident(
          {
            subscriptionId: parsed.workspaceInfo.SubscriptionId,
            resourceGroup: parsed.workspaceInfo.ResourceGroupName,
            workspaceName: parsed.workspaceInfo.WorkspaceName,
            workspaceId: parsed.workspaceId,
            incidentId: parsed.object.name,
          },
          {
            title: props["title"] as string,
            severity: (props["severity"] as string) ?? "Medium",
            status: (props["status"] as string) ?? "New",
            description: (props["description"] as string) ?? "",
            labels: Array.isArray(props["labels"]) ? (props["labels"] as { labelName: string }[]).map((l) => ({ labelName: l.labelName, labelType: "User" })) : [],
          } as never,
          (props["relatedEntities"] as never) ?? [],
        );
        for (const q of sample.quarantine) mde.seedQuarantine(q.deviceId, { originalPath: q.originalPath, content: q.content });
      },
      startHost,
      killHost,
      hostOutput: () => output.join(""),
      close: closeAll,
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

const hostEntry = fileURLToPath(new URL("./functions-host/main.ts", import.meta.url));

/** The message of a ConfigError the host logged while starting, if any. */
function configErrorIn(hostStdout: string): string | undefined {
  for (const line of hostStdout.split("\n")) {
    if (!line.includes('"ConfigError"')) continue;
    try {
      const entry = JSON.parse(line) as { error?: { name?: string; message?: string } };
      if (entry.error?.name === "ConfigError" && entry.error.message) return entry.error.message;
    } catch {
      // not a log line
    }
  }
  return undefined;
}

async function spawnHost(env: Record<string, string>, logger: Logger, record: (text: string) => void): Promise<ChildProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", hostEntry], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let ready = false;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("functions host did not report ready within 60 s")), 60_000);
    let buffered = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      const text = chunk.toString("utf8");
      record(text);
      if (!ready) {
        buffered += text;
        if (/functions host ready/i.test(buffered)) {
          ready = true;
          clearTimeout(timer);
          resolve();
        }
      }
      if (process.env.LOCAL_RUNTIME_VERBOSE) process.stderr.write(text);
    });
    child.stderr!.on("data", (chunk: Buffer) => {
      record(chunk.toString("utf8"));
      if (process.env.LOCAL_RUNTIME_VERBOSE) process.stderr.write(chunk);
      else logger.debug("functions host stderr", { text: chunk.toString("utf8").slice(0, 500) });
    });
    child.once("exit", (code) => {
      if (!ready) {
        clearTimeout(timer);
        // A setting the functions refuse is the likely cause; its message names the setting, never a value.
        reject(new Error(configErrorIn(buffered) ?? `functions host exited with code ${code} before it was ready`));
      }
    });
  });
  return child;
}
