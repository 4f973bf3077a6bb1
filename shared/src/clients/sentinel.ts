import type { TokenCredential } from "@azure/identity";
import createClient from "openapi-fetch";
import { createLogger, type Logger } from "../logger.ts";
import type { IncidentRef } from "../messages.ts";
import { ApiError, bearerAuth, callOrNoResponse, fetchWithTimeout, parseRetryAfter } from "./http.ts";
import type { components, paths } from "./generated/sentinel.ts";

/**
 * Microsoft Sentinel incidents over ARM (api-version 2025-09-01): read an incident and its
 * entities, write it back with the full-body PUT recipe, add labels and comments.
 * Contract: shared/reference/sentinel-api.md §2–3; types: shared/openapi/sentinel.yaml.
 */

type Schemas = components["schemas"];
export type Incident = Schemas["Incident"];
export type IncidentProperties = Schemas["IncidentProperties"];
export type IncidentLabel = Schemas["IncidentLabel"];
export type IncidentOwner = Schemas["IncidentOwnerInfo"];
export type IncidentComment = Schemas["IncidentComment"];
export type IncidentEntitiesResponse = Schemas["IncidentEntitiesResponse"];
export type Entity = Schemas["Entity"];
export type EntityKind = Schemas["EntityKind"];
export type EntityOfKind<K extends EntityKind> = Extract<Entity, { kind: K }>;
export type CloudError = Schemas["CloudError"];

/** The writable part of an incident as sent in a PUT (`etag` optional, read-only fields dropped). */
export interface IncidentWriteBody {
  etag?: string;
  properties: {
    title: string;
    severity: Schemas["IncidentSeverity"];
    status: Schemas["IncidentStatus"];
    description?: string;
    owner?: IncidentOwner;
    labels?: { labelName: string }[];
    classification?: Schemas["IncidentClassification"];
    classificationReason?: Schemas["IncidentClassificationReason"];
    classificationComment?: string;
    firstActivityTimeUtc?: string;
    lastActivityTimeUtc?: string;
  };
}

export type FetchFn = (input: Request) => Promise<Response>;

export interface RetryPolicy {
  /** Total PUT attempts in addLabels (first try included). */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export interface SentinelClientOptions {
  /** ARM endpoint, e.g. https://management.azure.com (config ARM_BASE_URL). */
  baseUrl: string;
  /** e.g. 2025-09-01 (config SENTINEL_API_VERSION). */
  apiVersion: string;
  credential: TokenCredential;
  /** e.g. https://management.azure.com/.default (config ARM_SCOPE). */
  scope: string;
  fetch?: FetchFn;
  logger?: Logger;
  /** Retry policy of addLabels on 409 (default 5 attempts, 200 ms base, 3 s cap, full jitter). */
  retry?: Partial<RetryPolicy>;
  /** Injected for tests: the jitter source and the wait. */
  random?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

export interface PutCommentResult {
  comment: IncidentComment;
  /** true on 201 (new comment), false on 200 (the same id was updated). */
  created: boolean;
}

export interface SentinelClient {
  getIncident(ref: IncidentRef): Promise<Incident>;
  /** Full replacement. Throws ApiError status 409 code "Conflict" when `body.etag` is stale. */
  putIncident(ref: IncidentRef, body: IncidentWriteBody): Promise<Incident>;
  /** Creates or updates the comment `commentId` (chosen by the caller, so a retry does not duplicate). */
  putComment(ref: IncidentRef, commentId: string, message: string): Promise<PutCommentResult>;
  /** Every comment of the incident (follows nextLink). */
  listComments(ref: IncidentRef): Promise<IncidentComment[]>;
  listEntities(ref: IncidentRef): Promise<IncidentEntitiesResponse & { entities: Entity[] }>;
  /**
   * Adds labels with the full-body PUT recipe (GET, rebuild, union case-insensitively, PUT with the
   * etag, re-GET and retry on 409). Returns the incident's label names after the call.
   */
  addLabels(ref: IncidentRef, labels: readonly string[]): Promise<string[]>;
}

/** Comment size limit (sentinel-service-limits). */
export const maxCommentLength = 30_000;
/** Comments an incident can hold (sentinel-service-limits); a new one past it is refused with 400. */
export const maxCommentsPerIncident = 100;

const incidentPath =
  "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.OperationalInsights/workspaces/{workspaceName}/providers/Microsoft.SecurityInsights/incidents/{incidentId}" as const;
const commentsPath = `${incidentPath}/comments` as const;
const commentPath = `${incidentPath}/comments/{incidentCommentId}` as const;
const entitiesPath = `${incidentPath}/entities` as const;

/** Error details from a CloudError body (or whatever text came back). */
export function cloudErrorOf(body: unknown): { code?: string; message?: string } {
  if (body && typeof body === "object" && "error" in body) {
    const error = (body as { error?: unknown }).error;
    if (error && typeof error === "object") {
      const { code, message } = error as { code?: unknown; message?: unknown };
      return {
        ...(typeof code === "string" ? { code } : {}),
        ...(typeof message === "string" ? { message } : {}),
      };
    }
  }
  if (typeof body === "string" && body.trim()) return { message: body.trim().slice(0, 500) };
  return {};
}

function apiErrorFrom(operation: string, response: Response, body: unknown): ApiError {
  const { code, message } = cloudErrorOf(body);
  return new ApiError(
    "sentinel",
    operation,
    response.status,
    message ?? response.statusText ?? "request failed",
    code,
    parseRetryAfter(response.headers.get("Retry-After")),
  );
}

/**
 * The writable body of an incident, rebuilt from a fresh GET (sentinel-api.md §2.2 step 2): every
 * writable field that is set, labels reduced to `{labelName}`, read-only fields dropped.
 */
export function toWriteBody(incident: Incident): IncidentWriteBody {
  const p = incident.properties;
  if (!p) throw new Error(`Incident ${incident.name ?? "?"} has no properties`);
  const properties: IncidentWriteBody["properties"] = { title: p.title, severity: p.severity, status: p.status };
  if (p.description != null) properties.description = p.description;
  if (p.owner != null) properties.owner = p.owner;
  properties.labels = (p.labels ?? []).map((l) => ({ labelName: l.labelName }));
  if (p.classification != null) properties.classification = p.classification;
  if (p.classificationReason != null) properties.classificationReason = p.classificationReason;
  if (p.classificationComment != null) properties.classificationComment = p.classificationComment;
  if (p.firstActivityTimeUtc != null) properties.firstActivityTimeUtc = p.firstActivityTimeUtc;
  if (p.lastActivityTimeUtc != null) properties.lastActivityTimeUtc = p.lastActivityTimeUtc;
  return incident.etag ? { etag: incident.etag, properties } : { properties };
}

/** Existing labels followed by the new ones that are not present yet (compared case-insensitively). */
export function mergeLabels(existing: readonly string[], add: readonly string[]): string[] {
  const seen = new Set(existing.map((l) => l.toLowerCase()));
  const merged = [...existing];
  for (const raw of add) {
    const label = raw.trim();
    if (!label || seen.has(label.toLowerCase())) continue;
    seen.add(label.toLowerCase());
    merged.push(label);
  }
  return merged;
}

export function createSentinelClient(options: SentinelClientOptions): SentinelClient {
  const log = (options.logger ?? createLogger({ service: "sentinel-client" })).child({ api: "sentinel" });
  const retry: RetryPolicy = { attempts: 5, baseDelayMs: 200, maxDelayMs: 3_000, ...options.retry };
  const random = options.random ?? Math.random;
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const client = createClient<paths>({ baseUrl: options.baseUrl, fetch: options.fetch ?? fetchWithTimeout() });
  client.use(bearerAuth(options.credential, options.scope));
  const apiVersion = options.apiVersion;

  const pathOf = (ref: IncidentRef) => ({
    subscriptionId: ref.subscriptionId,
    resourceGroupName: ref.resourceGroup,
    workspaceName: ref.workspaceName,
    incidentId: ref.incidentId,
  });

  async function getIncident(ref: IncidentRef): Promise<Incident> {
    return callOrNoResponse("sentinel", "getIncident", async () => {
      const { data, error, response } = await client.GET(incidentPath, {
        params: { path: pathOf(ref), query: { "api-version": apiVersion } },
      });
      if (!response.ok || !data) throw apiErrorFrom("getIncident", response, error);
      return data;
    });
  }

  async function putIncident(ref: IncidentRef, body: IncidentWriteBody): Promise<Incident> {
    return callOrNoResponse("sentinel", "putIncident", async () => {
      const { data, error, response } = await client.PUT(incidentPath, {
        params: { path: pathOf(ref), query: { "api-version": apiVersion } },
        body,
      });
      if (!response.ok || !data) throw apiErrorFrom("putIncident", response, error);
      log.debug("incident written", { incidentId: ref.incidentId, status: response.status });
      return data;
    });
  }

  async function putComment(ref: IncidentRef, commentId: string, message: string): Promise<PutCommentResult> {
    if (message.length > maxCommentLength) {
      throw new RangeError(`Comment is ${message.length} characters; Sentinel accepts at most ${maxCommentLength}`);
    }
    return callOrNoResponse("sentinel", "putComment", async () => {
      const { data, error, response } = await client.PUT(commentPath, {
        params: {
          path: { ...pathOf(ref), incidentCommentId: commentId },
          query: { "api-version": apiVersion },
        },
        body: { properties: { message } },
      });
      if (!response.ok || !data) throw apiErrorFrom("putComment", response, error);
      log.debug("comment written", { incidentId: ref.incidentId, commentId, status: response.status });
      return { comment: data, created: response.status === 201 };
    });
  }

  async function listComments(ref: IncidentRef): Promise<IncidentComment[]> {
    const all: IncidentComment[] = [];
    let skipToken: string | undefined;
    for (let page = 0; page < 1_000; page++) {
      const result = await callOrNoResponse("sentinel", "listComments", async () => {
        const { data, error, response } = await client.GET(commentsPath, {
          params: {
            path: pathOf(ref),
            query: { "api-version": apiVersion, ...(skipToken ? { $skipToken: skipToken } : {}) },
          },
        });
        if (!response.ok || !data) throw apiErrorFrom("listComments", response, error);
        return data;
      });
      all.push(...result.value);
      if (!result.nextLink) return all;
      const next = new URL(result.nextLink).searchParams.get("$skipToken") ?? undefined;
      if (!next || next === skipToken) {
        throw new ApiError("sentinel", "listComments", 200, "nextLink carries no usable $skipToken");
      }
      skipToken = next;
    }
    throw new ApiError("sentinel", "listComments", 200, "too many comment pages");
  }

  async function listEntities(ref: IncidentRef): Promise<IncidentEntitiesResponse & { entities: Entity[] }> {
    return callOrNoResponse("sentinel", "listEntities", async () => {
      const { data, error, response } = await client.POST(entitiesPath, {
        params: { path: pathOf(ref), query: { "api-version": apiVersion } },
      });
      if (!response.ok || !data) throw apiErrorFrom("listEntities", response, error);
      const entities = Array.isArray(data.entities)
        ? data.entities.filter((e): e is Entity => !!e && typeof e === "object" && typeof e.kind === "string")
        : [];
      return { ...data, entities, metaData: data.metaData ?? [] };
    });
  }

  async function addLabels(ref: IncidentRef, labels: readonly string[]): Promise<string[]> {
    for (let attempt = 1; ; attempt++) {
      const incident = await getIncident(ref);
      const body = toWriteBody(incident);
      const current = (body.properties.labels ?? []).map((l) => l.labelName);
      const merged = mergeLabels(current, labels);
      if (merged.length === current.length) {
        log.debug("labels already present", { incidentId: ref.incidentId, labels: [...labels] });
        return current;
      }
      body.properties.labels = merged.map((labelName) => ({ labelName }));
      try {
        const written = await putIncident(ref, body);
        return (written.properties?.labels ?? []).map((l) => l.labelName);
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 409) || attempt >= retry.attempts) throw err;
        const ceiling = Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** (attempt - 1));
        const delay = Math.round(random() * ceiling);
        log.warn("incident changed while adding labels; re-reading", {
          incidentId: ref.incidentId,
          attempt,
          delayMs: delay,
        });
        await sleep(delay);
      }
    }
  }

  return { getIncident, putIncident, putComment, listComments, listEntities, addLabels };
}

/** Narrows an entity to one kind. */
export function isEntityKind<K extends EntityKind>(entity: Entity, kind: K): entity is EntityOfKind<K> {
  return entity.kind === kind;
}
