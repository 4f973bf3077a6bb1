/**
 * The `$management` request/response operations of an entity, and CBS `put-token`.
 *
 * Requests carry `operation` in their application properties and a map body; responses carry
 * `statusCode` / `statusDescription` (and `errorCondition` on failure) as the Service Bus
 * service does, correlated by `correlation-id` = the request's `message-id`.
 */
import rhea from "rhea";
import type { Logger } from "@connector/shared/logger";
import {
  conditions,
  decodeMessage,
  encodeForDelivery,
  lockTokenFromWire,
  messageStates,
  newLockToken,
  plainProperties,
  type AmqpMessage,
} from "./codec.ts";
import type { ResolvedAddress, SendTarget } from "./entities.ts";
import { MessageNotFoundError, type MessageStore, type Settlement, type StoredMessage } from "./message-store.ts";

export const operations = {
  putToken: "put-token",
  scheduleMessage: "com.microsoft:schedule-message",
  cancelScheduledMessage: "com.microsoft:cancel-scheduled-message",
  peekMessage: "com.microsoft:peek-message",
  renewLock: "com.microsoft:renew-lock",
  updateDisposition: "com.microsoft:update-disposition",
  receiveBySequenceNumber: "com.microsoft:receive-by-sequence-number",
} as const;

export interface ManagementResponse {
  statusCode: number;
  statusDescription: string;
  errorCondition?: string;
  body?: unknown;
}

class ManagementError extends Error {
  readonly statusCode: number;
  readonly condition: string;
  constructor(statusCode: number, condition: string, message: string) {
    super(message);
    this.statusCode = statusCode;
    this.condition = condition;
  }
}

const ok = (body?: unknown): ManagementResponse => ({ statusCode: 200, statusDescription: "OK", body });

/** Handles one request on `<entity>/$management`. Never throws. */
export function handleManagementRequest(entity: ResolvedAddress, request: AmqpMessage, logger: Logger): ManagementResponse {
  const operation = String((request.application_properties as Record<string, unknown> | undefined)?.operation ?? "");
  const body = (typeof request.body === "object" && request.body !== null ? request.body : {}) as Record<string, unknown>;
  try {
    switch (operation) {
      case operations.scheduleMessage:
        return scheduleMessages(sendTargetOf(entity), body);
      case operations.cancelScheduledMessage:
        return cancelScheduled(sendTargetOf(entity), body);
      case operations.peekMessage:
        return peek(entity, body);
      case operations.renewLock:
        return renewLocks(storeOf(entity), body);
      case operations.updateDisposition:
        return updateDisposition(storeOf(entity), body);
      case operations.receiveBySequenceNumber:
        return receiveBySequenceNumber(storeOf(entity), body);
      default:
        throw new ManagementError(501, conditions.notImplemented, `Operation '${operation}' is not supported by the local broker.`);
    }
  } catch (err) {
    if (err instanceof ManagementError) {
      logger.debug("management request failed", { operation, statusCode: err.statusCode, condition: err.condition, error: err.message });
      return { statusCode: err.statusCode, statusDescription: err.message, errorCondition: err.condition };
    }
    if (err instanceof MessageNotFoundError) {
      return { statusCode: 404, statusDescription: err.message, errorCondition: conditions.messageNotFound };
    }
    logger.error("management request crashed", { operation, error: err });
    return { statusCode: 500, statusDescription: err instanceof Error ? err.message : String(err), errorCondition: conditions.internalError };
  }
}

function sendTargetOf(entity: ResolvedAddress): SendTarget {
  if (entity.kind === "queue") return entity.queue;
  if (entity.kind === "topic") return entity.topic;
  throw new ManagementError(400, conditions.notAllowed, "Scheduling is only possible on a queue or topic.");
}

function storeOf(entity: ResolvedAddress): MessageStore {
  if (entity.kind === "topic") throw new ManagementError(400, conditions.notAllowed, "A topic has no messages to receive.");
  return entity.store;
}

function asArray(value: unknown, field: string): unknown[] {
  if (Array.isArray(value)) return value;
  throw new ManagementError(400, conditions.invalidField, `'${field}' is missing or not an array.`);
}

function asSequenceNumber(value: unknown): number {
  if (typeof value === "number") return value;
  if (Buffer.isBuffer(value) && value.length === 8) return Number(value.readBigInt64BE(0));
  throw new ManagementError(400, conditions.invalidField, "Invalid sequence number.");
}

function lockTokens(body: Record<string, unknown>): string[] {
  return asArray(body["lock-tokens"], "lock-tokens").map((v) => {
    const token = lockTokenFromWire(v);
    if (!token) throw new ManagementError(400, conditions.invalidField, "Invalid lock token.");
    return token;
  });
}

function lockLost(): ManagementError {
  return new ManagementError(
    410,
    conditions.lockLost,
    "The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue.",
  );
}

function scheduleMessages(target: SendTarget, body: Record<string, unknown>): ManagementResponse {
  const entries = asArray(body.messages, "messages");
  const sequenceNumbers = entries.map((entry) => {
    const encoded = (entry as Record<string, unknown> | null)?.message;
    if (!Buffer.isBuffer(encoded)) throw new ManagementError(400, conditions.invalidField, "'message' is not binary.");
    return target.accept(decodeMessage(encoded)).sequenceNumber;
  });
  return ok({ "sequence-numbers": rhea.types.wrap_array(sequenceNumbers, 0x81, undefined) });
}

function cancelScheduled(target: SendTarget, body: Record<string, unknown>): ManagementResponse {
  const sequenceNumbers = asArray(body["sequence-numbers"], "sequence-numbers").map(asSequenceNumber);
  const missing = sequenceNumbers.filter((seq) => !target.cancelScheduled(seq));
  if (missing.length > 0) {
    throw new ManagementError(404, conditions.messageNotFound, `Messages not found. Missing sequence numbers: ${missing.join(",")}`);
  }
  return ok();
}

interface PeekItem {
  sequenceNumber: number;
  encode(): Buffer;
}

function peek(entity: ResolvedAddress, body: Record<string, unknown>): ManagementResponse {
  const from = asSequenceNumber(body["from-sequence-number"] ?? 1);
  const count = typeof body["message-count"] === "number" ? body["message-count"] : 1;
  const items: PeekItem[] = [];
  if (entity.kind !== "topic") {
    for (const m of entity.store.peekable()) items.push({ sequenceNumber: m.sequenceNumber, encode: () => encodeStored(m) });
  }
  const target = entity.kind === "queue" ? entity.queue : entity.kind === "topic" ? entity.topic : undefined;
  for (const s of target?.scheduledMessages() ?? []) {
    items.push({
      sequenceNumber: s.sequenceNumber,
      encode: () =>
        encodeForDelivery(s.amqp, {
          sequenceNumber: s.sequenceNumber,
          enqueuedTimeUtc: s.scheduledAt,
          deliveryCount: 0,
          state: messageStates.scheduled,
        }),
    });
  }
  const selected = items
    .filter((i) => i.sequenceNumber >= from)
    .sort((a, b) => a.sequenceNumber - b.sequenceNumber)
    .slice(0, Math.max(0, count));
  if (selected.length === 0) return { statusCode: 204, statusDescription: "No messages available." };
  return ok({ messages: selected.map((i) => ({ message: i.encode() })) });
}

function encodeStored(m: StoredMessage): Buffer {
  return encodeForDelivery(m.amqp, {
    sequenceNumber: m.sequenceNumber,
    enqueuedTimeUtc: m.enqueuedTimeUtc,
    deliveryCount: m.deliveryCount,
    state: m.deferred ? messageStates.deferred : messageStates.active,
    lockedUntilUtc: m.lock?.lockedUntil,
  });
}

function renewLocks(store: MessageStore, body: Record<string, unknown>): ManagementResponse {
  const expirations = lockTokens(body).map((token) => {
    const until = store.renewLock(token);
    if (until === undefined) throw lockLost();
    return until;
  });
  return ok({ expirations: rhea.types.wrap_array(expirations, 0x83, undefined) });
}

function updateDisposition(store: MessageStore, body: Record<string, unknown>): ManagementResponse {
  const tokens = lockTokens(body);
  const status = String(body["disposition-status"] ?? "");
  const properties = plainProperties(body["properties-to-modify"]);
  let settlement: Settlement;
  switch (status) {
    case "completed":
      settlement = { kind: "complete" };
      break;
    case "abandoned":
      settlement = { kind: "abandon", properties };
      break;
    case "defered":
    case "deferred":
      settlement = { kind: "defer", properties };
      break;
    case "suspended": {
      const reason = body["deadletter-reason"];
      const description = body["deadletter-description"];
      settlement = {
        kind: "deadLetter",
        reason: typeof reason === "string" ? reason : undefined,
        description: typeof description === "string" ? description : undefined,
        properties,
      };
      break;
    }
    default:
      throw new ManagementError(400, conditions.invalidField, `Unknown disposition-status '${status}'.`);
  }
  for (const token of tokens) if (!store.isLocked(token)) throw lockLost();
  for (const token of tokens) store.settle(token, settlement);
  return ok();
}

function receiveBySequenceNumber(store: MessageStore, body: Record<string, unknown>): ManagementResponse {
  const sequenceNumbers = asArray(body["sequence-numbers"], "sequence-numbers").map(asSequenceNumber);
  const mode = body["receiver-settle-mode"] === 0 ? "receiveAndDelete" : "peekLock";
  const received = store.receiveDeferred(sequenceNumbers, mode);
  return ok({
    messages: received.map(({ message, lock }) => ({
      "lock-token": rhea.types.wrap_uuid(rhea.string_to_uuid(lock?.token ?? newLockToken())),
      message: encodeForDelivery(message.amqp, {
        sequenceNumber: message.sequenceNumber,
        enqueuedTimeUtc: message.enqueuedTimeUtc,
        deliveryCount: message.deliveryCount,
        state: messageStates.deferred,
        lockedUntilUtc: lock?.lockedUntil,
      }),
    })),
  });
}

/** CBS: any token is accepted (the SDK sends SAS tokens; nothing is verified locally). */
export function handleCbsRequest(request: AmqpMessage): ManagementResponse {
  const operation = (request.application_properties as Record<string, unknown> | undefined)?.operation;
  if (operation !== operations.putToken) {
    return { statusCode: 400, statusDescription: `Unsupported CBS operation '${String(operation)}'.`, errorCondition: conditions.notImplemented };
  }
  return { statusCode: 202, statusDescription: "Accepted" };
}
