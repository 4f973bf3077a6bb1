/**
 * What the Azure Functions host + Node.js v4 worker hand a Service Bus / Event Grid trigger:
 * the trigger input (string bodies go through `tryJsonParse`, as `fromRpcTypedData` does) and
 * `context.triggerMetadata` (host binding data: PascalCase keys, dates as ISO strings,
 * `DeliveryCount` starting at 1, the body's own JSON fields merged in at the top level and winning
 * over real metadata — azure-functions-nodejs-library #459 — then every key camel-cased
 * recursively by the worker's `toCamelCaseValue`).
 */
import type { ServiceBusReceivedMessage } from "@azure/service-bus";
import type { EventGridEvent } from "@azure/functions";

export function toCamelCaseKey(key: string): string {
  return key.charAt(0).toLowerCase() + key.slice(1);
}

/** Same rule as the v4 library: lower-case the first letter of every key, recursively. */
export function toCamelCaseValue(data: unknown): unknown {
  if (typeof data !== "object" || data === null) return data;
  if (Array.isArray(data)) return data.map(toCamelCaseValue);
  if (Buffer.isBuffer(data) || data instanceof Uint8Array) return data;
  const result: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(data)) result[toCamelCaseKey(key)] = toCamelCaseValue(value);
  return result;
}

function tryJsonParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** The trigger input the host would pass for this message body. */
export function triggerInputFromBody(body: unknown): unknown {
  if (Buffer.isBuffer(body) || body instanceof Uint8Array) return tryJsonParse(Buffer.from(body).toString("utf8"));
  if (typeof body === "string") return tryJsonParse(body);
  return body;
}

/** .NET's DateTime.MaxValue: the host cannot express a later instant (e.g. "never expires"). */
const DOTNET_MAX_DATE_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999);
const DOTNET_MAX_DATE_ISO = "9999-12-31T23:59:59.9999999Z";

/** Dates → ISO strings, Long-like → number, recursively (what the JSON hop to the worker does). */
function jsonish(value: unknown): unknown {
  if (value instanceof Date) return value.getTime() > DOTNET_MAX_DATE_MS ? DOTNET_MAX_DATE_ISO : value.toISOString();
  if (value === null || typeof value !== "object") return typeof value === "bigint" ? Number(value) : value;
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) return value;
  const maybeLong = value as { toNumber?: () => number; low?: unknown; high?: unknown };
  if (typeof maybeLong.toNumber === "function" && "low" in maybeLong && "high" in maybeLong) return maybeLong.toNumber();
  if (Array.isArray(value)) return value.map(jsonish);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = jsonish(v);
  return out;
}

function definedEntries(record: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(record).filter(([, v]) => v !== undefined && v !== null));
}

export function serviceBusTriggerMetadata(message: ServiceBusReceivedMessage, input: unknown): Record<string, unknown> {
  const applicationProperties = jsonish(message.applicationProperties ?? {});
  const metadata: Record<string, unknown> = definedEntries({
    DeliveryCount: (message.deliveryCount ?? 0) + 1,
    DeadLetterSource: message.deadLetterSource,
    LockToken: message.lockToken,
    ExpiresAtUtc: jsonish(message.expiresAtUtc),
    EnqueuedTimeUtc: jsonish(message.enqueuedTimeUtc),
    MessageId: message.messageId === undefined ? undefined : String(jsonish(message.messageId)),
    ContentType: message.contentType,
    ReplyTo: message.replyTo,
    ReplyToSessionId: message.replyToSessionId,
    SequenceNumber: jsonish(message.sequenceNumber),
    To: message.to,
    Label: message.subject,
    Subject: message.subject,
    CorrelationId: message.correlationId === undefined ? undefined : String(jsonish(message.correlationId)),
    SessionId: message.sessionId,
    PartitionKey: message.partitionKey,
    ApplicationProperties: applicationProperties,
    UserProperties: applicationProperties,
  });
  if (typeof input === "object" && input !== null && !Array.isArray(input) && !Buffer.isBuffer(input)) {
    Object.assign(metadata, jsonish(input));
  }
  return toCamelCaseValue(metadata) as Record<string, unknown>;
}

export function eventGridTriggerMetadata(event: EventGridEvent): Record<string, unknown> {
  return toCamelCaseValue(jsonish(event)) as Record<string, unknown>;
}
