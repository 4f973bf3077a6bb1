/**
 * AMQP message helpers: the Service Bus message annotations, lock tokens as delivery tags,
 * batched sends, and decoding of stored messages for the inspection API.
 */
import rhea from "rhea";
import type { Message } from "rhea";

export const annotations = {
  sequenceNumber: "x-opt-sequence-number",
  enqueuedTime: "x-opt-enqueued-time",
  lockedUntil: "x-opt-locked-until",
  scheduledEnqueueTime: "x-opt-scheduled-enqueue-time",
  messageState: "x-opt-message-state",
  enqueueSequenceNumber: "x-opt-enqueue-sequence-number",
} as const;

/** `x-opt-message-state` values as the SDK reads them. */
export const messageStates = { active: 0, deferred: 1, scheduled: 2 } as const;

export const conditions = {
  deadLetter: "com.microsoft:dead-letter",
  lockLost: "com.microsoft:message-lock-lost",
  messageNotFound: "com.microsoft:message-not-found",
  notFound: "amqp:not-found",
  notImplemented: "amqp:not-implemented",
  notAllowed: "amqp:not-allowed",
  invalidField: "amqp:invalid-field",
  internalError: "amqp:internal-error",
  messageSizeExceeded: "amqp:link:message-size-exceeded",
} as const;

/** Message format of a batched send: the body's data sections each hold one encoded message. */
export const batchMessageFormat = 0x80013700;

/** An AMQP message as rhea decodes it: header fields, annotations, properties and body. */
export type AmqpMessage = Message;

/**
 * The SDK turns a delivery tag into a lock token by swapping the byte order of the first three
 * GUID groups (the .NET layout) before formatting it. The swap is its own inverse, so the tag is
 * built by applying it to the token's bytes.
 */
export function lockTokenToDeliveryTag(lockToken: string): Buffer {
  return reorderGuidBytes(rhea.string_to_uuid(lockToken));
}

export function deliveryTagToLockToken(tag: Buffer): string {
  return rhea.uuid_to_string(reorderGuidBytes(tag));
}

function reorderGuidBytes(b: Buffer): Buffer {
  const order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
  return Buffer.from(order.map((i) => b[i] ?? 0));
}

/** A lock token sent in a management request body (AMQP uuid, decoded by rhea as 16 bytes). */
export function lockTokenFromWire(value: unknown): string | undefined {
  if (Buffer.isBuffer(value) && value.length === 16) return rhea.uuid_to_string(value).toLowerCase();
  if (typeof value === "string") return value.toLowerCase();
  return undefined;
}

export function newLockToken(): string {
  return rhea.generate_uuid().toLowerCase();
}

/** Normalises `message-id` (string, ulong, uuid or binary) for duplicate detection. */
export function messageIdKey(id: unknown): string | undefined {
  if (id === undefined || id === null) return undefined;
  if (typeof id === "string") return `s:${id}`;
  if (typeof id === "number") return `n:${id}`;
  if (Buffer.isBuffer(id)) return `b:${id.toString("hex")}`;
  return `o:${String(id)}`;
}

export function displayMessageId(id: unknown): string | number | undefined {
  if (typeof id === "string" || typeof id === "number") return id;
  if (Buffer.isBuffer(id)) return id.length === 16 ? rhea.uuid_to_string(id) : id.toString("hex");
  return undefined;
}

export interface DeliveryAnnotations {
  sequenceNumber: number;
  enqueuedTimeUtc: number;
  deliveryCount: number;
  state: number;
  lockedUntilUtc?: number;
}

/** Encodes a stored message for a delivery or a peek response, adding the broker annotations. */
export function encodeForDelivery(message: AmqpMessage, extra: DeliveryAnnotations): Buffer {
  const t = rhea.types;
  const out: Record<string, unknown> = { ...message };
  out.delivery_count = extra.deliveryCount;
  out.first_acquirer = extra.deliveryCount === 0;
  const ann: Record<string, unknown> = { ...(message.message_annotations ?? {}) };
  ann[annotations.sequenceNumber] = t.wrap_long(extra.sequenceNumber);
  ann[annotations.enqueueSequenceNumber] = t.wrap_long(extra.sequenceNumber);
  ann[annotations.enqueuedTime] = t.wrap_timestamp(extra.enqueuedTimeUtc);
  ann[annotations.messageState] = t.wrap_int(extra.state);
  if (extra.lockedUntilUtc !== undefined) ann[annotations.lockedUntil] = t.wrap_timestamp(extra.lockedUntilUtc);
  else delete ann[annotations.lockedUntil];
  out.message_annotations = ann;
  return rhea.message.encode(out);
}

export function decodeMessage(buffer: Buffer): AmqpMessage {
  return rhea.message.decode(buffer) as unknown as AmqpMessage;
}

interface BodySection {
  typecode: number;
  content: unknown;
  multiple?: boolean;
}

function isBodySection(body: unknown): body is BodySection {
  return typeof body === "object" && body !== null && "typecode" in body && "content" in body;
}

/** Unpacks a batched send (format 0x80013700) into its messages. */
export function unpackBatch(payload: Buffer): AmqpMessage[] {
  const envelope = rhea.message.decode(payload);
  const body: unknown = envelope.body;
  if (!isBodySection(body) || body.typecode !== 0x75) {
    throw new Error("batched message without data sections");
  }
  const parts = body.multiple ? (body.content as unknown[]) : [body.content];
  return parts.map((part) => {
    if (!Buffer.isBuffer(part)) throw new Error("batch data section is not binary");
    return rhea.message.decode(part) as unknown as AmqpMessage;
  });
}

/** The body the way the SDK's default transformer presents it: JSON if it parses, else bytes. */
export function decodeBody(message: AmqpMessage): unknown {
  const body: unknown = message.body;
  if (isBodySection(body)) {
    if (body.typecode === 0x75 && !body.multiple && Buffer.isBuffer(body.content)) {
      const text = body.content.toString("utf8");
      try {
        return JSON.parse(text);
      } catch {
        return body.content;
      }
    }
    return body.content;
  }
  return body;
}

export function toDate(value: unknown): Date | undefined {
  if (value instanceof Date) return value;
  if (typeof value === "number") return new Date(value);
  return undefined;
}

/** Turns the SDK's properties-to-modify / dead-letter info values into plain property values. */
export function plainProperties(input: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (typeof input !== "object" || input === null) return out;
  for (const [k, v] of Object.entries(input as Record<string, unknown>)) {
    if (v === undefined || v === null) continue;
    out[k] = v;
  }
  return out;
}
