import { randomUUID } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { components as ArmSchemas } from "@connector/shared/clients/generated/sentinel";
import type { IncidentRef } from "@connector/shared/messages";

/**
 * Local double of the two Sentinel APIs the connector writes to:
 *  - ARM (management.azure.com): incident GET/PUT, comment PUT / list, entities POST;
 *  - the TI STIX objects upload API (api.ti.sentinel.azure.com).
 *
 * It answers as shared/reference/sentinel-api.md describes: bearer token and api-version required,
 * etag checked on incident PUT (409 "Newer version of resource … exists. Data was not saved."),
 * comments keyed by the client's id (201 then 200, 30,000 characters, 100 per incident), 404
 * CloudError for unknown incidents; TI: ≤100 objects, per-record validation reported as a 200
 * partial failure, objects stored by STIX id, 429 with the service's body text past a per-user
 * request rate. Texts the reference does not give (404, 400 messages, TI 400/401/404 bodies) are
 * marked "unverified" below.
 */

type Schemas = ArmSchemas["schemas"];
type Incident = Schemas["Incident"];
type IncidentProperties = Schemas["IncidentProperties"];
type IncidentComment = Schemas["IncidentComment"];
type Entity = Schemas["Entity"];
type ClientInfo = Schemas["ClientInfo"];
type Json = Record<string, unknown>;

export type DoubleApi = "arm" | "ti";

export interface DoubleRequest {
  api: DoubleApi;
  method: string;
  /** Decoded path without the query. */
  path: string;
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  /** Raw request body ("" when none). */
  body: string;
}

/**
 * A fault to inject instead of (or before) the normal answer. With `status`, that answer is sent
 * (after `delayMs`); with `dropConnection`, the socket is destroyed (after `delayMs`); with only
 * `delayMs`, the request is then handled normally.
 */
export interface Fault {
  status?: number;
  body?: unknown;
  headers?: Record<string, string>;
  delayMs?: number;
  dropConnection?: boolean;
}

export type FaultHook = (req: DoubleRequest) => Fault | undefined;

export interface RequestLogEntry {
  api: DoubleApi;
  method: string;
  path: string;
  query: Record<string, string>;
  /** 0 when the connection was dropped. */
  status: number;
  faulted: boolean;
  at: string;
}

export interface UploadLogEntry {
  workspaceId: string;
  sourceSystem: unknown;
  objectCount: number;
  status: number;
  errors: { recordIndex: number; errorMessages: string[] }[];
  at: string;
}

/** An upload request with the STIX objects it carried (empty when the body had none). */
export type UploadWithObjects = UploadLogEntry & { objects: Json[] };

export interface SentinelDoubleOptions {
  /** api-versions the ARM side accepts (default ["2025-09-01"]). */
  armApiVersions?: string[];
  /** api-versions the TI side accepts (default ["2024-02-01-preview"]). */
  tiApiVersions?: string[];
  /** TI requests allowed per user (token) in any 60-second window (default 100). */
  tiRequestsPerMinute?: number;
  /** Workspace GUIDs the TI API knows (seedIncident adds the ref's workspaceId too). */
  workspaceIds?: string[];
  /** Comments per page of the comment list (default 50). */
  commentPageSize?: number;
  /** `author` of comments written through the API (the caller's identity). */
  author?: ClientInfo;
  /** Clock (default Date.now). */
  now?: () => number;
  faults?: FaultHook;
}

export interface SentinelDouble {
  /** Base URL to use as ARM_BASE_URL. */
  armUrl: string;
  /** Base URL to use as SENTINEL_TI_BASE_URL. */
  tiUrl: string;
  close(): Promise<void>;
  /** Creates (or replaces) an incident with the given properties and entities; returns it as GET would. */
  seedIncident(ref: IncidentRef, properties?: Partial<IncidentProperties>, entities?: unknown[]): Incident;
  /** An out-of-band edit (an analyst in the portal): mutates the properties and issues a new etag. */
  updateIncident(incidentId: string, edit: (properties: IncidentProperties) => void): Incident;
  incident(incidentId: string): Incident | undefined;
  comments(incidentId: string): IncidentComment[];
  addWorkspace(workspaceId: string): void;
  /** STIX indicators stored for a workspace (other object types: stixObjects). */
  indicators(workspaceId: string): Json[];
  stixObjects(workspaceId: string): Json[];
  /** TI upload requests, in arrival order. */
  uploads(): UploadLogEntry[];
  /** The same requests with the objects each carried (to attribute indicators to uploads). */
  uploadsWithObjects(): UploadWithObjects[];
  /** Every request either side received. */
  requests(): RequestLogEntry[];
  setFaults(hook: FaultHook | undefined): void;
}

const maxCommentChars = 30_000;
const maxCommentsPerIncident = 100;
const maxStixObjects = 100;
const severities = ["High", "Medium", "Low", "Informational"];
const statuses = ["New", "Active", "Closed"];
const classifications = ["Undetermined", "TruePositive", "BenignPositive", "FalsePositive"];
const classificationReasons = ["SuspiciousActivity", "SuspiciousButExpected", "IncorrectAlertLogic", "InaccurateData"];
const ownerTypes = ["Unknown", "User", "Group"];
const stixTypes = ["indicator", "attack-pattern", "threat-actor", "identity", "relationship"];
const armAudiences = new Set([
  "https://management.azure.com",
  "https://management.azure.com/",
  "https://management.core.windows.net",
  "https://management.core.windows.net/",
]);

interface StoredIncident {
  subscriptionId: string;
  resourceGroup: string;
  workspaceName: string;
  incident: Incident & { properties: IncidentProperties };
  comments: Map<string, IncidentComment>;
  entities: Entity[];
}

class HttpAnswer {
  constructor(
    readonly status: number,
    readonly body?: unknown,
    readonly headers: Record<string, string> = {},
  ) {}
}

const cloudError = (status: number, code: string, message: string) => new HttpAnswer(status, { error: { code, message } });
const tiError = (status: number, message: string) => new HttpAnswer(status, { statusCode: status, message });

const clone = <T>(value: T): T => structuredClone(value);
const newEtag = () => `"${randomUUID()}"`;
const unquote = (etag: string) => etag.replace(/^W\//, "").replace(/^"(.*)"$/, "$1");
const isObject = (v: unknown): v is Json => !!v && typeof v === "object" && !Array.isArray(v);
const isTimestamp = (v: unknown) =>
  typeof v === "string" && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/.test(v) && !Number.isNaN(Date.parse(v));

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function listen(server: Server): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      resolve(`http://127.0.0.1:${port}`);
    });
  });
}

function bearerToken(headers: IncomingHttpHeaders): string | undefined | null {
  const header = headers.authorization;
  if (header === undefined) return undefined;
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  return match ? match[1]! : null;
}

/** Tokens of the local credential carry their audience; anything else is taken as an opaque valid token. */
function audienceAccepted(token: string): boolean {
  if (!token.startsWith("local.")) return true;
  try {
    return armAudiences.has(Buffer.from(token.slice("local.".length), "base64url").toString("utf8"));
  } catch {
    return false;
  }
}

function validateStixObject(obj: unknown): string[] {
  if (!isObject(obj)) return ["The STIX object must be a JSON object."];
  const errors: string[] = [];
  const type = obj.type;
  if (typeof type !== "string" || !stixTypes.includes(type)) {
    errors.push(`Unsupported or missing 'type' (${JSON.stringify(type ?? null)}); supported: ${stixTypes.join(", ")}.`);
  }
  if (obj.spec_version !== "2.1") errors.push("Missing or invalid required property 'spec_version' (must be '2.1').");
  const idPattern = new RegExp(`^${typeof type === "string" ? type.replace(/[-]/g, "\\-") : "[a-z-]+"}--[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`, "i");
  if (typeof obj.id !== "string" || !idPattern.test(obj.id)) errors.push("Missing or invalid required property 'id' (<type>--<UUID>).");
  for (const key of ["created", "modified"]) {
    if (!isTimestamp(obj[key])) errors.push(`Missing or invalid required property '${key}' (RFC 3339 UTC timestamp).`);
  }
  if (type === "indicator") {
    if (typeof obj.pattern !== "string" || !obj.pattern.trim()) errors.push("Missing required property 'pattern'.");
    if (typeof obj.pattern_type !== "string" || !obj.pattern_type.trim()) errors.push("Missing required property 'pattern_type'.");
    if (!isTimestamp(obj.valid_from)) errors.push("Missing or invalid required property 'valid_from'.");
    if (obj.valid_until !== undefined) {
      if (!isTimestamp(obj.valid_until)) errors.push("Invalid property 'valid_until'.");
      else if (isTimestamp(obj.valid_from) && Date.parse(obj.valid_until as string) <= Date.parse(obj.valid_from as string)) {
        errors.push("'valid_until' must be later than 'valid_from'.");
      }
    }
  }
  if (type === "relationship") {
    for (const key of ["relationship_type", "source_ref", "target_ref"]) {
      if (typeof obj[key] !== "string" || !(obj[key] as string)) errors.push(`Missing required property '${key}'.`);
    }
  }
  if ((type === "attack-pattern" || type === "threat-actor" || type === "identity") && typeof obj.name !== "string") {
    errors.push("Missing required property 'name'.");
  }
  if (obj.confidence !== undefined && !(Number.isInteger(obj.confidence) && (obj.confidence as number) >= 0 && (obj.confidence as number) <= 100)) {
    errors.push("'confidence' must be an integer between 0 and 100.");
  }
  if (obj.labels !== undefined && !(Array.isArray(obj.labels) && obj.labels.every((l) => typeof l === "string"))) {
    errors.push("'labels' must be a list of strings.");
  }
  return errors;
}

export async function startSentinelDouble(options: SentinelDoubleOptions = {}): Promise<SentinelDouble> {
  const now = options.now ?? Date.now;
  const armVersions = options.armApiVersions ?? ["2025-09-01"];
  const tiVersions = options.tiApiVersions ?? ["2024-02-01-preview"];
  const tiLimit = options.tiRequestsPerMinute ?? 100;
  const pageSize = options.commentPageSize ?? 50;
  const author: ClientInfo = options.author ?? {
    objectId: "6c0f5a5e-0000-4000-8000-000000000001",
    email: null,
    userPrincipalName: null,
    name: "ANY.RUN Sentinel connector",
  };
  let faults = options.faults;

  const incidents = new Map<string, StoredIncident>();
  const workspaces = new Set((options.workspaceIds ?? []).map((w) => w.toLowerCase()));
  const stix = new Map<string, Map<string, Json>>();
  const requestLog: RequestLogEntry[] = [];
  const uploadLog: UploadLogEntry[] = [];
  const uploadObjects: Json[][] = [];
  const tiCalls = new Map<string, number[]>();
  let incidentNumber = 1000;

  const iso = () => new Date(now()).toISOString();
  const keyOf = (sub: string, rg: string, ws: string, id: string) => `${sub}/${rg}/${ws}/${id}`.toLowerCase();
  let armUrl = "";
  const incidentResourceId = (s: Pick<StoredIncident, "subscriptionId" | "resourceGroup" | "workspaceName">, id: string) =>
    `/subscriptions/${s.subscriptionId}/resourceGroups/${s.resourceGroup}/providers/Microsoft.OperationalInsights/workspaces/${s.workspaceName}/providers/Microsoft.SecurityInsights/incidents/${id}`;

  function findIncident(incidentId: string): StoredIncident | undefined {
    const id = incidentId.toLowerCase();
    for (const stored of incidents.values()) if (stored.incident.name?.toLowerCase() === id) return stored;
    return undefined;
  }

  function newIncident(
    loc: Pick<StoredIncident, "subscriptionId" | "resourceGroup" | "workspaceName">,
    incidentId: string,
    properties: Partial<IncidentProperties>,
  ): StoredIncident["incident"] {
    const at = iso();
    const number = properties.incidentNumber ?? ++incidentNumber;
    const id = incidentResourceId(loc, incidentId);
    return {
      id,
      name: incidentId,
      type: "Microsoft.SecurityInsights/incidents",
      etag: newEtag(),
      properties: {
        title: "Incident",
        severity: "Medium",
        status: "New",
        labels: [],
        createdTimeUtc: at,
        lastModifiedTimeUtc: at,
        incidentNumber: number,
        incidentUrl: `https://portal.azure.com/#asset/Microsoft_Azure_Security_Insights/Incident${id}`,
        providerName: "Azure Sentinel",
        providerIncidentId: String(number),
        relatedAnalyticRuleIds: [],
        additionalData: { alertsCount: 0, bookmarksCount: 0, commentsCount: 0, alertProductNames: [], tactics: [] },
        ...clone(properties),
      },
    };
  }

  // ---------------------------------------------------------------- ARM

  function checkArmAuth(headers: IncomingHttpHeaders): HttpAnswer | undefined {
    const token = bearerToken(headers);
    if (token === undefined) {
      return cloudError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.");
    }
    if (token === null) {
      return cloudError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is provided in an invalid format.");
    }
    if (!audienceAccepted(token)) return cloudError(401, "InvalidAuthenticationToken", "The access token is invalid.");
    return undefined;
  }

  function checkApiVersion(query: URLSearchParams, versions: string[], api: DoubleApi): HttpAnswer | undefined {
    const version = query.get("api-version");
    if (!version) {
      return api === "arm"
        ? cloudError(400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests.")
        : tiError(400, "The api-version query parameter is required."); // unverified text
    }
    if (!versions.includes(version)) {
      return api === "arm"
        ? cloudError(400, "InvalidApiVersionParameter", `The api-version '${version}' is invalid. The supported versions are '${versions.join(",")}'.`)
        : tiError(400, `Unsupported api-version '${version}'.`); // unverified text
    }
    return undefined;
  }

  function parseJson(body: string): { ok: true; value: unknown } | { ok: false; answer: HttpAnswer } {
    try {
      return { ok: true, value: JSON.parse(body) };
    } catch (err) {
      return {
        ok: false,
        answer: cloudError(400, "InvalidRequestContent", `The request content was invalid and could not be deserialized: '${(err as Error).message}'.`),
      };
    }
  }

  function validateIncidentProperties(p: unknown): string | undefined {
    if (!isObject(p)) return "The 'properties' field is required.";
    if (typeof p.title !== "string" || !p.title) return "The Title field is required."; // unverified text
    if (typeof p.severity !== "string" || !severities.includes(p.severity)) return `Invalid or missing severity '${String(p.severity)}'.`;
    if (typeof p.status !== "string" || !statuses.includes(p.status)) return `Invalid or missing status '${String(p.status)}'.`;
    if (p.classification != null && !classifications.includes(p.classification as string)) return `Invalid classification '${String(p.classification)}'.`;
    if (p.classificationReason != null && !classificationReasons.includes(p.classificationReason as string)) {
      return `Invalid classificationReason '${String(p.classificationReason)}'.`;
    }
    if (p.owner != null) {
      if (!isObject(p.owner)) return "Invalid owner.";
      if (p.owner.ownerType != null && !ownerTypes.includes(p.owner.ownerType as string)) return `Invalid ownerType '${String(p.owner.ownerType)}'.`;
    }
    if (p.labels != null) {
      if (!Array.isArray(p.labels)) return "Invalid labels.";
      for (const label of p.labels) {
        if (!isObject(label) || typeof label.labelName !== "string" || !label.labelName) return "The LabelName field is required.";
      }
    }
    return undefined;
  }

  function putIncident(loc: StoredIncident | undefined, locParts: Pick<StoredIncident, "subscriptionId" | "resourceGroup" | "workspaceName">, incidentId: string, body: string): HttpAnswer {
    const parsed = parseJson(body);
    if (!parsed.ok) return parsed.answer;
    if (!isObject(parsed.value)) return cloudError(400, "InvalidRequestContent", "The request content was invalid and could not be deserialized.");
    const requestBody = parsed.value;
    const problem = validateIncidentProperties(requestBody.properties);
    if (problem) return cloudError(400, "BadRequest", problem);
    const p = requestBody.properties as Json;

    if (loc && typeof requestBody.etag === "string" && unquote(requestBody.etag) !== unquote(loc.incident.etag ?? "")) {
      return cloudError(409, "Conflict", `Newer version of resource '${loc.incident.name}' exists. Data was not saved.`);
    }

    const created = !loc;
    const base = loc?.incident ?? newIncident(locParts, incidentId, {});
    const previousLabels = base.properties.labels ?? [];
    const labels = ((p.labels as Json[] | undefined) ?? []).map((l) => {
      const name = l.labelName as string;
      const kept = previousLabels.find((old) => old.labelName === name);
      // labelType is read-only: the request's value is ignored; a label the system assigned stays so.
      return { labelName: name, labelType: kept?.labelType ?? ("User" as const) };
    });
    const readOnly = {
      createdTimeUtc: base.properties.createdTimeUtc,
      incidentNumber: base.properties.incidentNumber,
      incidentUrl: base.properties.incidentUrl,
      providerName: base.properties.providerName,
      providerIncidentId: base.properties.providerIncidentId,
      relatedAnalyticRuleIds: base.properties.relatedAnalyticRuleIds,
      additionalData: base.properties.additionalData,
    };
    const writable: Json = {};
    for (const key of [
      "title",
      "description",
      "severity",
      "status",
      "classification",
      "classificationReason",
      "classificationComment",
      "owner",
      "firstActivityTimeUtc",
      "lastActivityTimeUtc",
    ]) {
      if (p[key] !== undefined && p[key] !== null) writable[key] = clone(p[key]);
    }
    // PUT replaces the resource: writable fields the body omits are cleared.
    const properties = { ...readOnly, ...writable, labels, lastModifiedTimeUtc: iso() } as IncidentProperties;
    const incident = { id: base.id, name: base.name, type: base.type, etag: newEtag(), properties };
    if (loc) {
      loc.incident = incident;
    } else {
      incidents.set(keyOf(locParts.subscriptionId, locParts.resourceGroup, locParts.workspaceName, incidentId), {
        ...locParts,
        incident,
        comments: new Map(),
        entities: [],
      });
    }
    return new HttpAnswer(created ? 201 : 200, clone(incident));
  }

  function putComment(stored: StoredIncident, commentId: string, body: string): HttpAnswer {
    const parsed = parseJson(body);
    if (!parsed.ok) return parsed.answer;
    const props = isObject(parsed.value) ? parsed.value.properties : undefined;
    if (!isObject(props) || typeof props.message !== "string") return cloudError(400, "BadRequest", "The Message field is required."); // unverified text
    const message = props.message;
    if (message.length > maxCommentChars) {
      // unverified text; the limit itself is from sentinel-service-limits
      return cloudError(400, "BadRequest", `Comment message exceeds the maximum length of ${maxCommentChars} characters.`);
    }
    const existing = [...stored.comments.entries()].find(([id]) => id.toLowerCase() === commentId.toLowerCase());
    if (!existing && stored.comments.size >= maxCommentsPerIncident) {
      return cloudError(400, "BadRequest", `An incident can have at most ${maxCommentsPerIncident} comments.`); // unverified text
    }
    const at = iso();
    const name = existing?.[0] ?? commentId;
    const comment: IncidentComment = {
      id: `${stored.incident.id}/comments/${name}`,
      name,
      type: "Microsoft.SecurityInsights/incidents/comments",
      etag: randomUUID(),
      properties: {
        message,
        createdTimeUtc: existing?.[1].properties?.createdTimeUtc ?? at,
        lastModifiedTimeUtc: at,
        author: clone(existing?.[1].properties?.author ?? author),
      },
    };
    stored.comments.set(name, comment);
    const data = stored.incident.properties.additionalData;
    if (data && !existing) data.commentsCount = (data.commentsCount ?? 0) + 1;
    return new HttpAnswer(existing ? 200 : 201, clone(comment));
  }

  function listComments(stored: StoredIncident, path: string, query: URLSearchParams): HttpAnswer {
    const all = [...stored.comments.values()];
    const top = Number(query.get("$top") ?? pageSize);
    const size = Number.isInteger(top) && top > 0 ? Math.min(top, pageSize) : pageSize;
    const skipToken = query.get("$skipToken");
    let offset = 0;
    if (skipToken !== null) {
      offset = Number(Buffer.from(skipToken, "base64url").toString("utf8"));
      if (!Number.isInteger(offset) || offset < 0) return cloudError(400, "BadRequest", "Invalid $skipToken.");
    }
    const value = all.slice(offset, offset + size).map(clone);
    const body: Json = { value };
    if (offset + size < all.length) {
      const next = new URLSearchParams({ "api-version": query.get("api-version") ?? "", $skipToken: Buffer.from(String(offset + size)).toString("base64url") });
      if (query.get("$top")) next.set("$top", String(size));
      body.nextLink = `${armUrl}${path}?${next.toString()}`;
    }
    return new HttpAnswer(200, body);
  }

  function listEntities(stored: StoredIncident): HttpAnswer {
    const counts = new Map<string, number>();
    for (const e of stored.entities) counts.set(e.kind, (counts.get(e.kind) ?? 0) + 1);
    return new HttpAnswer(200, {
      entities: clone(stored.entities),
      metaData: [...counts].map(([entityKind, count]) => ({ entityKind, count })),
    });
  }

  const incidentRoute =
    /^\/subscriptions\/([^/]+)\/resourceGroups\/([^/]+)\/providers\/Microsoft\.OperationalInsights\/workspaces\/([^/]+)\/providers\/Microsoft\.SecurityInsights\/incidents\/([^/]+)(?:\/(comments)(?:\/([^/]+))?|\/(entities))?\/?$/i;

  function handleArm(req: DoubleRequest): HttpAnswer {
    const auth = checkArmAuth(req.headers);
    if (auth) return auth;
    const version = checkApiVersion(req.query, armVersions, "arm");
    if (version) return version;
    const match = incidentRoute.exec(req.path);
    if (!match) return cloudError(404, "InvalidResourceType", `The resource type could not be found for path '${req.path}'.`);
    const [, subscriptionId, resourceGroup, workspaceName, incidentId, comments, commentId, entities] = match as unknown as string[];
    const locParts = { subscriptionId: subscriptionId!, resourceGroup: resourceGroup!, workspaceName: workspaceName! };
    const stored = incidents.get(keyOf(subscriptionId!, resourceGroup!, workspaceName!, incidentId!));
    const notFound = () => cloudError(404, "NotFound", `Incident '${incidentId}' was not found.`); // unverified text
    const notAllowed = () => cloudError(405, "MethodNotAllowed", `The double does not model ${req.method} ${req.path}.`);

    if (entities) {
      if (req.method !== "POST") return notAllowed();
      return stored ? listEntities(stored) : notFound();
    }
    if (comments && commentId) {
      if (req.method !== "PUT") return notAllowed();
      return stored ? putComment(stored, commentId, req.body) : notFound();
    }
    if (comments) {
      if (req.method !== "GET") return notAllowed();
      return stored ? listComments(stored, req.path, req.query) : notFound();
    }
    if (req.method === "GET") return stored ? new HttpAnswer(200, clone(stored.incident)) : notFound();
    if (req.method === "PUT") return putIncident(stored, locParts, incidentId!, req.body);
    return notAllowed();
  }

  // ---------------------------------------------------------------- TI

  const uploadRoute = /^\/workspaces\/([^/]+)\/threat-intelligence-stix-objects:upload$/;

  interface UploadOutcome {
    answer: HttpAnswer;
    sourceSystem?: unknown;
    objectCount?: number;
    errors?: UploadLogEntry["errors"];
    objects?: Json[];
  }

  function handleTi(req: DoubleRequest): HttpAnswer {
    const match = uploadRoute.exec(req.path);
    if (!match || req.method !== "POST") return tiError(404, "Resource not found"); // unverified text
    const workspaceId = match[1]!;
    const t = now();
    const outcome = upload(req, workspaceId, t);
    uploadLog.push({
      workspaceId,
      sourceSystem: outcome.sourceSystem,
      objectCount: outcome.objectCount ?? 0,
      status: outcome.answer.status,
      errors: outcome.errors ?? [],
      at: new Date(t).toISOString(),
    });
    uploadObjects.push(outcome.objects ?? []);
    return outcome.answer;
  }

  function upload(req: DoubleRequest, workspaceId: string, t: number): UploadOutcome {
    const token = bearerToken(req.headers);
    if (!token || !audienceAccepted(token)) {
      return { answer: tiError(401, "Unauthorized. Access token is missing or invalid.") }; // unverified text
    }

    // Per-user limit over a sliding minute; throttled calls do not count.
    const calls = (tiCalls.get(token) ?? []).filter((at) => at > t - 60_000);
    tiCalls.set(token, calls);
    if (calls.length >= tiLimit) {
      const wait = Math.max(1, Math.ceil((calls[0]! + 60_000 - t) / 1000));
      return { answer: tiError(429, `Rate limit is exceeded. Try again in ${wait} seconds.`) };
    }
    calls.push(t);

    const version = checkApiVersion(req.query, tiVersions, "ti");
    if (version) return { answer: version };
    if (!workspaces.has(workspaceId.toLowerCase())) {
      return { answer: tiError(404, `Workspace '${workspaceId}' not found.`) }; // unverified text
    }

    let body: unknown;
    try {
      body = JSON.parse(req.body);
    } catch {
      return { answer: tiError(400, "The request body is not valid JSON.") }; // unverified text
    }
    if (!isObject(body)) return { answer: tiError(400, "The request body must be a JSON object.") };
    const { sourcesystem, stixobjects } = body;
    const objectCount = Array.isArray(stixobjects) ? stixobjects.length : 0;
    const reject = (message: string): UploadOutcome => ({ answer: tiError(400, message), sourceSystem: sourcesystem, objectCount });
    if (typeof sourcesystem !== "string" || !sourcesystem.trim()) return reject("'sourcesystem' is required.");
    if (sourcesystem.trim().toLowerCase() === "microsoft sentinel") return reject("'Microsoft Sentinel' is a reserved source system name.");
    if (!Array.isArray(stixobjects) || stixobjects.length === 0) return reject("'stixobjects' must be a non-empty array.");
    if (stixobjects.length > maxStixObjects) {
      return reject(`At most ${maxStixObjects} STIX objects are accepted per request; got ${stixobjects.length}.`);
    }

    const store = stix.get(workspaceId.toLowerCase()) ?? new Map<string, Json>();
    stix.set(workspaceId.toLowerCase(), store);
    const errors: UploadLogEntry["errors"] = [];
    stixobjects.forEach((obj: unknown, recordIndex) => {
      const problems = validateStixObject(obj);
      if (problems.length > 0) errors.push({ recordIndex, errorMessages: problems });
      else store.set(((obj as Json).id as string).toLowerCase(), clone(obj as Json));
    });
    // All accepted: 200 with an empty body; some rejected: 200 with {errors}.
    return {
      answer: new HttpAnswer(200, errors.length > 0 ? { errors } : undefined),
      sourceSystem: sourcesystem,
      objectCount,
      errors,
      objects: stixobjects.filter(isObject).map((o) => clone(o)),
    };
  }

  // ---------------------------------------------------------------- HTTP plumbing

  function send(res: ServerResponse, answer: HttpAnswer) {
    const payload = answer.body === undefined ? "" : typeof answer.body === "string" ? answer.body : JSON.stringify(answer.body);
    const headers: Record<string, string> = { ...answer.headers };
    if (payload && !Object.keys(headers).some((h) => h.toLowerCase() === "content-type")) {
      headers["Content-Type"] = "application/json; charset=utf-8";
    }
    headers["Content-Length"] = String(Buffer.byteLength(payload));
    res.writeHead(answer.status, headers);
    res.end(payload);
  }

  async function serve(api: DoubleApi, handle: (req: DoubleRequest) => HttpAnswer, req: IncomingMessage, res: ServerResponse) {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    let path = url.pathname;
    try {
      path = decodeURIComponent(url.pathname);
    } catch {
      // keep the raw path; it will not match a route
    }
    const request: DoubleRequest = {
      api,
      method: req.method ?? "GET",
      path,
      query: url.searchParams,
      headers: req.headers,
      body: await readBody(req),
    };
    const entry: RequestLogEntry = {
      api,
      method: request.method,
      path: request.path,
      query: Object.fromEntries(url.searchParams),
      status: 0,
      faulted: false,
      at: iso(),
    };
    requestLog.push(entry);
    const fault = faults?.(request);
    if (fault) {
      entry.faulted = true;
      if (fault.delayMs) await new Promise((r) => setTimeout(r, fault.delayMs));
      if (fault.dropConnection) {
        req.socket.destroy();
        return;
      }
      if (fault.status !== undefined) {
        entry.status = fault.status;
        send(res, new HttpAnswer(fault.status, fault.body, fault.headers));
        return;
      }
    }
    const answer = handle(request);
    entry.status = answer.status;
    send(res, answer);
  }

  function handler(api: DoubleApi, handle: (req: DoubleRequest) => HttpAnswer) {
    return (req: IncomingMessage, res: ServerResponse) => {
      serve(api, handle, req, res).catch((err: unknown) => {
        const message = err instanceof Error ? err.message : String(err);
        if (res.headersSent) return void res.destroy();
        send(res, api === "arm" ? cloudError(500, "InternalServerError", message) : tiError(500, message));
      });
    };
  }

  const armServer = createServer(handler("arm", handleArm));
  const tiServer = createServer(handler("ti", handleTi));
  armUrl = await listen(armServer);
  const tiUrl = await listen(tiServer);

  const requireIncident = (incidentId: string) => {
    const stored = findIncident(incidentId);
    if (!stored) throw new Error(`No incident ${incidentId} in the Sentinel double`);
    return stored;
  };

  return {
    armUrl,
    tiUrl,
    async close() {
      for (const server of [armServer, tiServer]) {
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    },
    seedIncident(ref, properties = {}, entities = []) {
      const locParts = { subscriptionId: ref.subscriptionId, resourceGroup: ref.resourceGroup, workspaceName: ref.workspaceName };
      const incident = newIncident(locParts, ref.incidentId, {
        ...(ref.title ? { title: ref.title } : {}),
        ...(ref.incidentNumber !== undefined ? { incidentNumber: ref.incidentNumber } : {}),
        ...properties,
      });
      const seeded = (entities as Json[]).map((e) => {
        const copy = clone(e);
        const name = typeof copy.name === "string" ? copy.name : randomUUID();
        return {
          ...copy,
          id: typeof copy.id === "string" ? copy.id : `/subscriptions/${ref.subscriptionId}/resourceGroups/${ref.resourceGroup}/providers/Microsoft.OperationalInsights/workspaces/${ref.workspaceName}/providers/Microsoft.SecurityInsights/Entities/${name}`,
          name,
          type: typeof copy.type === "string" ? copy.type : "Microsoft.SecurityInsights/Entities",
        } as unknown as Entity;
      });
      incidents.set(keyOf(ref.subscriptionId, ref.resourceGroup, ref.workspaceName, ref.incidentId), {
        ...locParts,
        incident,
        comments: new Map(),
        entities: seeded,
      });
      workspaces.add(ref.workspaceId.toLowerCase());
      return clone(incident);
    },
    updateIncident(incidentId, edit) {
      const stored = requireIncident(incidentId);
      edit(stored.incident.properties);
      stored.incident.etag = newEtag();
      stored.incident.properties = { ...stored.incident.properties, lastModifiedTimeUtc: iso() };
      return clone(stored.incident);
    },
    incident: (incidentId) => {
      const stored = findIncident(incidentId);
      return stored ? clone(stored.incident) : undefined;
    },
    comments: (incidentId) => [...(findIncident(incidentId)?.comments.values() ?? [])].map(clone),
    addWorkspace: (workspaceId) => void workspaces.add(workspaceId.toLowerCase()),
    indicators: (workspaceId) => [...(stix.get(workspaceId.toLowerCase())?.values() ?? [])].filter((o) => o.type === "indicator").map(clone),
    stixObjects: (workspaceId) => [...(stix.get(workspaceId.toLowerCase())?.values() ?? [])].map(clone),
    uploads: () => uploadLog.map(clone),
    uploadsWithObjects: () => uploadLog.map((u, i) => ({ ...clone(u), objects: (uploadObjects[i] ?? []).map(clone) })),
    requests: () => requestLog.map(clone),
    setFaults: (hook) => {
      faults = hook;
    },
  };
}
