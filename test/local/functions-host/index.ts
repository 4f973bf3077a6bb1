/**
 * Local stand-in for the Azure Functions host: binds every FunctionDefinition to its trigger from the
 * topology's `functionTriggers`, the way `registerFunction` binds them in Azure.
 *
 * - Service Bus triggers: @azure/service-bus receivers (see service-bus.ts).
 * - Event Grid triggers: in-process, a subscriber registered with the local Event Grid
 *   (`eventGrid.setSubscriber`); as a separate process, a webhook registered through the local Event
 *   Grid's admin API (`eventGridWebhook`).
 * - HTTP triggers: a loopback server under `/api/` with the Functions key check (see http.ts).
 */
import os from "node:os";
import { randomBytes } from "node:crypto";
import { ServiceBusClient } from "@azure/service-bus";
import { createLogger, registerSecret, type Logger } from "@connector/shared/logger";
import type { FunctionDefinition } from "@connector/shared/function-definition";
import { functionTriggers } from "@connector/shared/topology";
import type { Deliver } from "../eventgrid/delivery.ts";
import { eventGridDeliverer, startEventGridWebhook, type WebhookServer } from "./event-grid.ts";
import type { InvocationRecord } from "./invocation.ts";
import { startServiceBusListener, type ServiceBusListener } from "./service-bus.ts";
import { startHttpTriggers, type HttpKeys, type HttpTriggerServer } from "./http.ts";

export type { InvocationRecord } from "./invocation.ts";
export { serviceBusTriggerMetadata, eventGridTriggerMetadata, toCamelCaseValue, triggerInputFromBody } from "./trigger-metadata.ts";

export interface FunctionsHostOptions {
  /** Definitions to host. Default: `allFunctions` from services/src/functions/index.ts. */
  readonly functions?: readonly FunctionDefinition[];
  /** Default: env SERVICEBUS_CONNECTION. Needed only when a Service Bus function is hosted. */
  readonly serviceBusConnectionString?: string;
  /** In-process local Event Grid (a `LocalEventGrid` fits). */
  readonly eventGrid?: { setSubscriber(subscriptionName: string, deliver: Deliver): () => void };
  /** Local Event Grid reached over HTTP (child process): the host serves a webhook and registers it. */
  readonly eventGridWebhook?: { readonly url: string; readonly key: string; readonly port?: number };
  /** Concurrent invocations per Service Bus function. Default 16 × CPU count, as the host. */
  readonly maxConcurrentCalls?: number;
  /** HTTP functions: the keys the host accepts. Default: env FUNCTIONS_HOST_KEY / FUNCTIONS_HOST_MASTER_KEY, else random. */
  readonly httpKeys?: Partial<HttpKeys>;
  /** Port of the HTTP trigger server (default 0 = any free port). */
  readonly httpPort?: number;
  /** Default 5 min, as host.json `maxAutoLockRenewalDuration`. */
  readonly maxAutoLockRenewalDurationMs?: number;
  readonly logger?: Logger;
}

export interface FunctionsHost {
  /** Names of the hosted functions. */
  readonly functions: readonly string[];
  /** Base URL of the Event Grid webhook (child-process mode only). */
  readonly webhookUrl: string | undefined;
  /** `http://127.0.0.1:<port>/api` when an HTTP function is hosted. */
  readonly httpUrl: string | undefined;
  /** The keys the HTTP trigger accepts (never logged). */
  readonly httpKeys: HttpKeys;
  invocations(): InvocationRecord[];
  close(): Promise<void>;
}

export async function loadAllFunctions(): Promise<FunctionDefinition[]> {
  const mod = (await import("@connector/services/functions/index")) as { allFunctions: FunctionDefinition[] };
  return mod.allFunctions;
}

async function registerWebhook(base: string, key: string, subscription: string, webhookUrl: string): Promise<void> {
  const res = await fetch(`${base.replace(/\/$/, "")}/admin/subscriptions/${encodeURIComponent(subscription)}/webhook`, {
    method: "PUT",
    headers: { "content-type": "application/json", "aeg-sas-key": key },
    body: JSON.stringify({ url: webhookUrl }),
  });
  await res.arrayBuffer();
  if (!res.ok) throw new Error(`registering the webhook of Event Grid subscription ${subscription} failed with HTTP ${res.status}`);
}

export async function startFunctionsHost(options: FunctionsHostOptions = {}): Promise<FunctionsHost> {
  const logger = options.logger ?? createLogger({ service: "functions-host" });
  const definitions = options.functions ?? (await loadAllFunctions());
  const records: InvocationRecord[] = [];
  const record = (r: InvocationRecord) => {
    records.push(r);
  };

  const names = new Set<string>();
  for (const d of definitions) {
    if (names.has(d.name)) throw new Error(`Function ${d.name} is defined twice`);
    names.add(d.name);
    const trigger = functionTriggers[d.name];
    if (!trigger) throw new Error(`Function ${d.name} has no trigger in the topology`);
    const fits =
      (d.kind === "serviceBus" && (trigger.type === "serviceBusQueue" || trigger.type === "serviceBusTopic")) ||
      (d.kind === "eventGrid" && trigger.type === "eventGrid") ||
      (d.kind === "http" && trigger.type === "http");
    if (!fits) throw new Error(`Function ${d.name}: handler kind ${d.kind} does not fit trigger ${trigger.type}`);
  }

  const serviceBusDefs = definitions.filter((d) => d.kind === "serviceBus");
  const eventGridDefs = definitions.filter((d) => d.kind === "eventGrid");
  const httpDefs = definitions.filter((d) => d.kind === "http");
  const httpKeys: HttpKeys = {
    functionKey: options.httpKeys?.functionKey ?? process.env.FUNCTIONS_HOST_KEY ?? randomBytes(24).toString("base64url"),
    masterKey: options.httpKeys?.masterKey ?? process.env.FUNCTIONS_HOST_MASTER_KEY ?? randomBytes(24).toString("base64url"),
  };
  registerSecret(httpKeys.functionKey);
  registerSecret(httpKeys.masterKey);

  const connectionString = options.serviceBusConnectionString ?? process.env.SERVICEBUS_CONNECTION;
  if (serviceBusDefs.length > 0 && !connectionString) {
    throw new Error("The functions host needs a Service Bus connection string (SERVICEBUS_CONNECTION)");
  }
  if (eventGridDefs.length > 0 && !options.eventGrid && !options.eventGridWebhook) {
    throw new Error("The functions host hosts Event Grid functions but was given no local Event Grid");
  }

  let client: ServiceBusClient | undefined;
  const listeners: ServiceBusListener[] = [];
  const unregister: (() => void)[] = [];
  let webhook: WebhookServer | undefined;
  let httpServer: HttpTriggerServer | undefined;

  const closeAll = async () => {
    for (const u of unregister) u();
    await httpServer?.close();
    await Promise.allSettled(listeners.map((l) => l.close()));
    await webhook?.close();
    await client?.close();
  };

  try {
    if (serviceBusDefs.length > 0) {
      client = new ServiceBusClient(connectionString!);
      for (const d of serviceBusDefs) {
        if (d.kind !== "serviceBus") continue;
        const trigger = functionTriggers[d.name];
        if (trigger.type !== "serviceBusQueue" && trigger.type !== "serviceBusTopic") continue;
        listeners.push(
          startServiceBusListener(client, d, trigger, {
            maxConcurrentCalls: options.maxConcurrentCalls ?? 16 * Math.max(1, os.cpus().length),
            maxAutoLockRenewalDurationMs: options.maxAutoLockRenewalDurationMs ?? 5 * 60_000,
            logger,
            record,
          }),
        );
      }
    }

    if (eventGridDefs.length > 0) {
      const targets = new Map<string, Deliver>();
      for (const d of eventGridDefs) {
        if (d.kind !== "eventGrid") continue;
        targets.set(d.name, eventGridDeliverer(d, logger, record));
      }
      if (options.eventGrid) {
        for (const d of eventGridDefs) {
          const trigger = functionTriggers[d.name];
          if (trigger.type !== "eventGrid") continue;
          unregister.push(options.eventGrid.setSubscriber(trigger.subscription, targets.get(d.name)!));
        }
      } else if (options.eventGridWebhook) {
        webhook = await startEventGridWebhook(targets, logger, options.eventGridWebhook.port ?? 0);
        for (const d of eventGridDefs) {
          const trigger = functionTriggers[d.name];
          if (trigger.type !== "eventGrid") continue;
          await registerWebhook(options.eventGridWebhook.url, options.eventGridWebhook.key, trigger.subscription, webhook.webhookUrl(d.name));
        }
      }
    }

    if (httpDefs.length > 0) {
      httpServer = await startHttpTriggers(
        httpDefs.filter((d) => d.kind === "http"),
        { keys: httpKeys, port: options.httpPort ?? 0, logger, record },
      );
    }
  } catch (err) {
    await closeAll();
    throw err;
  }

  let closing: Promise<void> | undefined;
  return {
    functions: definitions.map((d) => d.name),
    webhookUrl: webhook?.url,
    httpUrl: httpServer?.url,
    httpKeys,
    invocations: () => [...records],
    close: () => (closing ??= closeAll()),
  };
}
