/**
 * What the CLI runs against: the replay core directly (Service Bus, the dead-letter container and
 * the Event Grid topic, with the operator's own credentials) or the operator HTTP function
 * (`--function-url`, key in REPLAY_FUNCTION_KEY), which runs the same core inside the Function App.
 */
import type { Logger } from "@connector/shared/logger";
import { parseConfig } from "@connector/shared/config";
import type { DeadLetterFilter } from "@connector/shared/replay/filters";
import { countByEntity, type DeadLetterDetail, type DeadLetterSummary, type EntityCount, type ResendOptions, type ResendReport } from "@connector/shared/replay/servicebus";
import type { EventGridDeadLetter, EventGridDeadLetterDetail, EventReplayReport } from "@connector/shared/replay/eventgrid";
import type { ReplaySettings } from "@connector/shared/replay/settings";
import { buildReplayCore } from "./deps.ts";

export interface ReplayBackend {
  list(filter: DeadLetterFilter): Promise<{ byEntity: EntityCount[]; deadLetters: DeadLetterSummary[] }>;
  show(entity: string, key: string): Promise<DeadLetterDetail | undefined>;
  resend(filter: DeadLetterFilter, options: ResendOptions): Promise<ResendReport>;
  eventList(filter: DeadLetterFilter): Promise<EventGridDeadLetter[]>;
  eventShow(blobName: string): Promise<EventGridDeadLetterDetail[] | undefined>;
  eventReplay(filter: DeadLetterFilter, options: { dryRun: boolean }): Promise<EventReplayReport>;
  close(): Promise<void>;
}

export async function directBackend(settings: ReplaySettings, logger: Logger): Promise<ReplayBackend> {
  // BlobCreated events go to submitFile in this process — which needs the connector's whole configuration.
  let connectorConfigured = true;
  try {
    parseConfig(process.env);
  } catch {
    connectorConfigured = false;
  }
  const core = await buildReplayCore(settings, {
    logger,
    ...(connectorConfigured
      ? { redeliverBlobCreated: async (subscription, event) => (await (await import("./redeliver.ts")).functionAppRedelivery(logger))(subscription, event) }
      : { noRedeliveryHint: "run this with the connector's full configuration (as the Function App has it), or through the operator function with --function-url" }),
  });
  return {
    async list(filter) {
      const deadLetters = await core.serviceBus.list(filter);
      return { byEntity: countByEntity(filter.entities, deadLetters), deadLetters };
    },
    show: (entity, key) => core.serviceBus.show(entity, key),
    resend: (filter, options) => core.serviceBus.resend(filter, options),
    eventList: async (filter) => (await core.eventGrid()).list(filter),
    eventShow: async (blobName) => (await core.eventGrid()).show(blobName),
    eventReplay: async (filter, options) => (await core.eventGrid()).replay(filter, options),
    close: () => core.close(),
  };
}

/** The filters as the HTTP API takes them (durations in ms with a unit). */
function filterParams(filter: DeadLetterFilter): Record<string, string | string[] | boolean | number> {
  return {
    ...(filter.entities?.length ? { entity: [...filter.entities] } : {}),
    ...(filter.reason !== undefined ? { reason: filter.reason } : {}),
    ...(filter.exactReason ? { exactReason: true } : {}),
    ...(filter.olderThanMs !== undefined ? { olderThan: `${filter.olderThanMs}ms` } : {}),
    ...(filter.newerThanMs !== undefined ? { newerThan: `${filter.newerThanMs}ms` } : {}),
    ...(filter.ids?.length ? { id: [...filter.ids] } : {}),
    ...(filter.limit !== undefined ? { limit: filter.limit } : {}),
  };
}

export function remoteBackend(functionUrl: string, key: string): ReplayBackend {
  const base = functionUrl.replace(/\/+$/, "");
  const call = async <T>(action: string, init: { query?: Record<string, unknown>; body?: unknown }): Promise<T | undefined> => {
    const url = new URL(`${base}/${action}`);
    for (const [k, v] of Object.entries(init.query ?? {})) for (const item of Array.isArray(v) ? v : [v]) url.searchParams.append(k, String(item));
    const res = await fetch(url, {
      method: init.body === undefined ? "GET" : "POST",
      headers: { "x-functions-key": key, ...(init.body === undefined ? {} : { "content-type": "application/json" }) },
      ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
    });
    const text = await res.text();
    if (res.status === 404 && (action === "show" || action === "eventgrid-show")) return undefined;
    if (!res.ok) {
      let message = text;
      try {
        message = (JSON.parse(text) as { error?: string }).error ?? text;
      } catch {
        // not JSON
      }
      throw new Error(`operator function answered ${res.status}${message ? `: ${message}` : res.status === 401 ? ": wrong or missing function key (REPLAY_FUNCTION_KEY)" : ""}`);
    }
    return JSON.parse(text) as T;
  };
  return {
    list: async (filter) => (await call<{ byEntity: EntityCount[]; deadLetters: DeadLetterSummary[] }>("list", { query: filterParams(filter) }))!,
    show: (entity, id) => call<DeadLetterDetail>("show", { query: { entity, id } }),
    resend: async (filter, options) => (await call<ResendReport>("resend", { body: { ...filterParams(filter), dryRun: options.dryRun } }))!,
    eventList: async (filter) => (await call<{ deadLetters: EventGridDeadLetter[] }>("eventgrid", { query: filterParams(filter) }))!.deadLetters,
    eventShow: async (blob) => (await call<{ events: EventGridDeadLetterDetail[] }>("eventgrid-show", { query: { blob } }))?.events,
    eventReplay: async (filter, options) => (await call<EventReplayReport>("eventgrid-replay", { body: { ...filterParams(filter), dryRun: options.dryRun } }))!,
    close: async () => undefined,
  };
}
