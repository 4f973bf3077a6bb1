/**
 * Service Bus dead letters: list, show and resend, over the real @azure/service-bus SDK — the same
 * code against the local broker and Azure Service Bus.
 *
 * - Listing and showing only peek: nothing is locked, nothing changes.
 * - Resending receives the selected messages in peek-lock from the dead-letter sub-queue (in
 *   sequence-number order, each matched by sequence number and message id), sends a copy to the
 *   original entity and completes the dead letter only once the send succeeded; on a failed send
 *   it is abandoned and stays. Messages in front of a selected one are held locked (the SDK renews
 *   the locks) and abandoned at the end, so the scan never sees the same message twice.
 * - The copy carries the body, content type, correlation id, subject and application properties,
 *   minus the dead-letter properties, with a new message id `<original>:replay:<n>` (n = how often
 *   it was replayed, +1) and `replayedFrom` / `replayCount` properties. The id is deterministic:
 *   a replay that crashed between send and complete sends the same id again, which duplicate
 *   detection drops — the original id itself would be dropped too when still inside the window.
 */
import { createHash } from "node:crypto";
import Long from "long";
import type { ServiceBusClient, ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusReceiver, ServiceBusSender } from "@azure/service-bus";
import { createLogger, redact, type Logger } from "../logger.ts";
import { deadLetterPath, resendTarget, resolveEntities, resolveEntity, type DeadLetterEntity } from "./entities.ts";
import { matchesAge, matchesId, matchesReason, type DeadLetterFilter } from "./filters.ts";

export interface DeadLetterSummary {
  /** `<queue>` or `<topic>/<subscription>`. */
  readonly entity: string;
  /** As a string: sequence numbers are 64-bit. */
  readonly sequenceNumber: string;
  readonly messageId: string;
  readonly reason: string;
  readonly description: string;
  /** When the original was enqueued (the dead-letter copy keeps it). */
  readonly enqueuedTimeUtc: string;
  readonly ageMs: number;
  readonly deliveryCount: number;
  readonly subject?: string;
  readonly correlationId?: string;
  /** Application properties without the dead-letter ones, values as strings. */
  readonly properties: Readonly<Record<string, string>>;
  /** How often this message was replayed before (0 = never). */
  readonly replayCount: number;
}

export interface DeadLetterDetail extends DeadLetterSummary {
  readonly contentType?: string;
  readonly deadLetterSource?: string;
  readonly timeToLiveMs?: number;
  readonly applicationProperties: Readonly<Record<string, unknown>>;
  readonly bodyKind: "json" | "text" | "binary";
  /** Pretty-printed JSON, text, or base64 for binary bodies; secrets redacted. */
  readonly body: string;
}

export type ResendOutcome =
  | "resent"
  | "wouldResend"
  | "refused"
  | "sendFailed"
  /** Sent, but completing the dead letter failed: it is still there; a new replay re-sends the same id (dropped as duplicate). */
  | "sentNotRemoved"
  | "notFound";

export interface ResendResult {
  readonly entity: string;
  readonly sequenceNumber: string;
  readonly messageId: string;
  readonly reason: string;
  readonly outcome: ResendOutcome;
  /** Where the copy went (or would go). */
  readonly target?: string;
  readonly newMessageId?: string;
  readonly error?: string;
}

export interface ResendProgress {
  readonly processed: number;
  readonly total: number;
  readonly resent: number;
  readonly failed: number;
}

export interface ResendReport {
  readonly dryRun: boolean;
  readonly selected: number;
  readonly resent: number;
  readonly failed: number;
  readonly results: readonly ResendResult[];
}

export interface ResendOptions {
  readonly dryRun: boolean;
  /** Progress callback every `progressEvery` processed messages (default 100) and at the end. */
  readonly onProgress?: (progress: ResendProgress) => void;
  readonly progressEvery?: number;
}

export interface ServiceBusDeadLettersOptions {
  readonly logger?: Logger;
  readonly now?: () => number;
  /** How long a receive waits for the first message before the scan of a dead-letter queue ends (default 3 s). */
  readonly receiveWaitMs?: number;
  readonly peekBatchSize?: number;
}

const deadLetterPropertyPattern = /^(deadletterreason|deadlettererrordescription|x-opt-deadletter.*)$/i;

/** The application properties a copy must not carry: DeadLetterReason, DeadLetterErrorDescription, x-opt-deadletter*. */
export function isDeadLetterProperty(key: string): boolean {
  return deadLetterPropertyPattern.test(key);
}

export function stripDeadLetterProperties(properties: Readonly<Record<string, unknown>> | undefined): Record<string, unknown> {
  return Object.fromEntries(Object.entries(properties ?? {}).filter(([k]) => !isDeadLetterProperty(k)));
}

/** `<original>:replay:<n>`, kept within Service Bus's 128 characters (long originals are shortened with a hash). */
export function replayMessageId(original: string, count: number): string {
  const suffix = `:replay:${count}`;
  const id = `${original}${suffix}`;
  if (id.length <= 128) return id;
  const hash = createHash("sha256").update(original).digest("hex").slice(0, 16);
  return `${original.slice(0, 128 - suffix.length - hash.length - 1)}~${hash}${suffix}`;
}

/** The copy of a dead letter that goes back to its entity. */
export function replayCopy(message: ServiceBusReceivedMessage): ServiceBusMessage {
  const properties = stripDeadLetterProperties(message.applicationProperties);
  const original = typeof properties["replayedFrom"] === "string" ? properties["replayedFrom"] : String(message.messageId ?? "");
  const count = replayCountOf(properties) + 1;
  const copy: ServiceBusMessage = {
    body: message.body,
    messageId: replayMessageId(original, count),
    applicationProperties: { ...(properties as ServiceBusMessage["applicationProperties"]), replayedFrom: original, replayCount: count },
  };
  if (message.contentType !== undefined) copy.contentType = message.contentType;
  if (message.correlationId !== undefined) copy.correlationId = message.correlationId;
  if (message.subject !== undefined) copy.subject = message.subject;
  if (message.to !== undefined) copy.to = message.to;
  if (message.replyTo !== undefined) copy.replyTo = message.replyTo;
  if (message.sessionId !== undefined) copy.sessionId = message.sessionId;
  return copy;
}

function replayCountOf(properties: Readonly<Record<string, unknown>>): number {
  const n = Number(properties["replayCount"] ?? 0);
  return Number.isInteger(n) && n > 0 ? n : 0;
}

function textValue(value: unknown): string {
  return value instanceof Date ? value.toISOString() : typeof value === "object" && value !== null ? JSON.stringify(value) : String(value);
}

function renderBody(body: unknown): { bodyKind: DeadLetterDetail["bodyKind"]; body: string } {
  if (body instanceof Uint8Array) {
    const buffer = Buffer.from(body);
    const text = buffer.toString("utf8");
    if (!Buffer.from(text, "utf8").equals(buffer) || /[\u0000-\u0008\u000e-\u001f]/.test(text)) return { bodyKind: "binary", body: buffer.toString("base64") };
    try {
      return { bodyKind: "json", body: redact(JSON.stringify(JSON.parse(text), null, 2)) };
    } catch {
      return { bodyKind: "text", body: redact(text) };
    }
  }
  if (typeof body === "string") return { bodyKind: "text", body: redact(body) };
  return { bodyKind: "json", body: redact(JSON.stringify(body, null, 2) ?? "null") };
}

function redactValues(properties: Readonly<Record<string, unknown>>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(properties).map(([k, v]) => [k, typeof v === "string" ? redact(v) : v]));
}

export class ServiceBusDeadLetters {
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly receiveWaitMs: number;
  private readonly peekBatchSize: number;

  constructor(
    private readonly client: ServiceBusClient,
    options: ServiceBusDeadLettersOptions = {},
  ) {
    this.logger = options.logger ?? createLogger({ service: "replay" });
    this.now = options.now ?? Date.now;
    this.receiveWaitMs = options.receiveWaitMs ?? 3000;
    this.peekBatchSize = options.peekBatchSize ?? 100;
  }

  /** The dead letters that match, oldest first within each entity, entities in topology order. */
  async list(filter: DeadLetterFilter = {}): Promise<DeadLetterSummary[]> {
    return (await this.select(filter)).selected;
  }

  /** The selected dead letters, and every sequence number peeked per entity (selected or not). */
  private async select(filter: DeadLetterFilter): Promise<{ selected: DeadLetterSummary[]; peeked: Map<string, string[]> }> {
    const entities = resolveEntities(filter.entities);
    const messages = await Promise.all(entities.map((entity) => this.peekAll(entity)));
    const found: DeadLetterSummary[] = [];
    const peeked = new Map<string, string[]>();
    for (const [i, entity] of entities.entries()) {
      const all = messages[i]!.map((message) => this.summarise(entity, message));
      peeked.set(entity.name, all.map((s) => s.sequenceNumber));
      for (const summary of all) {
        if (matchesReason(filter, summary.reason) && matchesAge(filter, summary.ageMs) && matchesId(filter, summary.messageId)) found.push(summary);
      }
    }
    return { selected: limitOldest(found, filter.limit, entities), peeked };
  }

  /** One dead letter in full, by sequence number (digits) or message id; undefined when absent. */
  async show(entityName: string, key: string): Promise<DeadLetterDetail | undefined> {
    const entity = resolveEntity(entityName);
    const bySequence = /^\d+$/.test(key);
    const message = (await this.peekAll(entity)).find((m) => (bySequence ? m.sequenceNumber?.toString() === key : String(m.messageId ?? "") === key));
    if (!message) return undefined;
    return {
      ...this.summarise(entity, message),
      ...(message.contentType !== undefined ? { contentType: message.contentType } : {}),
      ...(message.deadLetterSource !== undefined ? { deadLetterSource: message.deadLetterSource } : {}),
      ...(message.timeToLive !== undefined ? { timeToLiveMs: message.timeToLive } : {}),
      applicationProperties: redactValues(message.applicationProperties ?? {}),
      ...renderBody(message.body),
    };
  }

  /** Re-sends the selected dead letters to their original entity (or, with `dryRun`, only says what it would do). */
  async resend(filter: DeadLetterFilter, options: ResendOptions): Promise<ResendReport> {
    const { selected, peeked } = await this.select(filter);
    const results: ResendResult[] = [];
    const every = Math.max(1, options.progressEvery ?? 100);
    let resent = 0;
    let failed = 0;
    const record = (result: ResendResult) => {
      results.push(result);
      if (result.outcome === "resent") resent++;
      else if (result.outcome !== "wouldResend") failed++;
      if (!options.dryRun && results.length % every === 0) options.onProgress?.({ processed: results.length, total: selected.length, resent, failed });
    };

    if (options.dryRun) {
      for (const s of selected) {
        const entity = resolveEntity(s.entity);
        const target = resendTarget(entity, s.properties);
        const original = s.properties["replayedFrom"] ?? s.messageId;
        record(
          target.ok
            ? { ...base(s), outcome: "wouldResend", target: target.entity, newMessageId: replayMessageId(original, s.replayCount + 1) }
            : { ...base(s), outcome: "refused", error: target.reason },
        );
      }
      return { dryRun: true, selected: selected.length, resent: 0, failed, results };
    }

    const senders = new Map<string, ServiceBusSender>();
    try {
      for (const entity of resolveEntities(filter.entities)) {
        const wanted = new Map(selected.filter((s) => s.entity === entity.name).map((s) => [s.sequenceNumber, s]));
        if (wanted.size === 0) continue;
        // How many messages the receiver must go through to reach the last selected one: asking for
        // exactly that many lets a receive return at once instead of waiting for a fuller batch.
        const last = [...wanted.keys()].reduce((a, b) => (compareSequence(a, b) >= 0 ? a : b));
        const ahead = (peeked.get(entity.name) ?? []).filter((seq) => compareSequence(seq, last) <= 0).length;
        await this.resendFrom(entity, wanted, ahead, senders, record);
      }
    } finally {
      await Promise.allSettled([...senders.values()].map((s) => s.close()));
    }
    options.onProgress?.({ processed: results.length, total: selected.length, resent, failed });
    return { dryRun: false, selected: selected.length, resent, failed, results };
  }

  private async resendFrom(
    entity: DeadLetterEntity,
    wanted: Map<string, DeadLetterSummary>,
    ahead: number,
    senders: Map<string, ServiceBusSender>,
    record: (r: ResendResult) => void,
  ): Promise<void> {
    const receiver = this.receiver(entity, "peekLock");
    const held: ServiceBusReceivedMessage[] = [];
    const log = this.logger.child({ entity: entity.name });
    let received = 0;
    try {
      while (wanted.size > 0) {
        const batch = await receiver.receiveMessages(Math.min(100, Math.max(1, ahead - received)), { maxWaitTimeInMs: this.receiveWaitMs });
        if (batch.length === 0) break;
        received += batch.length;
        for (const message of batch) {
          const key = message.sequenceNumber?.toString() ?? "";
          const summary = wanted.get(key);
          if (!summary || String(message.messageId ?? "") !== summary.messageId) {
            held.push(message);
            continue;
          }
          wanted.delete(key);
          record(await this.resendOne(entity, receiver, message, summary, senders, log));
        }
      }
    } finally {
      // Not selected: back to the dead-letter queue as they were (abandon only counts a delivery).
      await Promise.allSettled(held.map((m) => receiver.abandonMessage(m)));
      await receiver.close().catch(() => undefined);
    }
    for (const summary of wanted.values()) {
      record({ ...base(summary), outcome: "notFound", error: "no longer in the dead-letter queue (resent or removed meanwhile)" });
    }
  }

  private async resendOne(
    entity: DeadLetterEntity,
    receiver: ServiceBusReceiver,
    message: ServiceBusReceivedMessage,
    summary: DeadLetterSummary,
    senders: Map<string, ServiceBusSender>,
    log: Logger,
  ): Promise<ResendResult> {
    const copy = replayCopy(message);
    const target = resendTarget(entity, copy.applicationProperties ?? {});
    if (!target.ok) {
      await receiver.abandonMessage(message).catch(() => undefined);
      log.warn("dead letter not resent", { sequenceNumber: summary.sequenceNumber, messageId: summary.messageId, why: target.reason });
      return { ...base(summary), outcome: "refused", error: target.reason };
    }
    let sender = senders.get(target.entity);
    if (!sender) {
      sender = this.client.createSender(target.entity);
      senders.set(target.entity, sender);
    }
    const newMessageId = String(copy.messageId);
    try {
      await sender.sendMessages(copy);
    } catch (err) {
      await receiver.abandonMessage(message).catch(() => undefined);
      const error = errorText(err);
      log.warn("resend failed; the dead letter stays", { sequenceNumber: summary.sequenceNumber, messageId: summary.messageId, error });
      return { ...base(summary), outcome: "sendFailed", target: target.entity, newMessageId, error };
    }
    try {
      await receiver.completeMessage(message);
    } catch (err) {
      const error = errorText(err);
      log.warn("resent, but the dead letter could not be removed", { sequenceNumber: summary.sequenceNumber, messageId: summary.messageId, newMessageId, error });
      return { ...base(summary), outcome: "sentNotRemoved", target: target.entity, newMessageId, error };
    }
    log.info("dead letter resent", { sequenceNumber: summary.sequenceNumber, messageId: summary.messageId, target: target.entity, newMessageId });
    return { ...base(summary), outcome: "resent", target: target.entity, newMessageId };
  }

  private receiver(entity: DeadLetterEntity, receiveMode: "peekLock" | "receiveAndDelete"): ServiceBusReceiver {
    const options = { subQueueType: "deadLetter" as const, receiveMode };
    return entity.kind === "queue" ? this.client.createReceiver(entity.queue, options) : this.client.createReceiver(entity.topic, entity.subscription, options);
  }

  private async peekAll(entity: DeadLetterEntity): Promise<ServiceBusReceivedMessage[]> {
    const receiver = this.receiver(entity, "peekLock");
    const messages: ServiceBusReceivedMessage[] = [];
    try {
      // Always from an explicit sequence number: without one the SDK continues after the last
      // message peeked on this entity by any receiver of the client.
      let from = Long.fromNumber(0);
      for (;;) {
        const batch = await receiver.peekMessages(this.peekBatchSize, { fromSequenceNumber: from });
        if (batch.length === 0) break;
        messages.push(...batch);
        const last = batch[batch.length - 1]!.sequenceNumber;
        if (!last) break;
        from = last.add(1);
      }
    } catch (err) {
      throw new Error(`peeking ${deadLetterPath(entity)} failed: ${errorText(err)}`, { cause: err });
    } finally {
      await receiver.close().catch(() => undefined);
    }
    return messages;
  }

  private summarise(entity: DeadLetterEntity, message: ServiceBusReceivedMessage): DeadLetterSummary {
    const enqueued = message.enqueuedTimeUtc ?? new Date(this.now());
    const properties = stripDeadLetterProperties(message.applicationProperties);
    return {
      entity: entity.name,
      sequenceNumber: message.sequenceNumber?.toString() ?? "",
      messageId: String(message.messageId ?? ""),
      reason: message.deadLetterReason ?? "",
      description: message.deadLetterErrorDescription ?? "",
      enqueuedTimeUtc: enqueued.toISOString(),
      ageMs: Math.max(0, this.now() - enqueued.getTime()),
      deliveryCount: message.deliveryCount ?? 0,
      ...(message.subject !== undefined ? { subject: message.subject } : {}),
      ...(message.correlationId !== undefined ? { correlationId: String(message.correlationId) } : {}),
      properties: Object.fromEntries(Object.entries(properties).map(([k, v]) => [k, textValue(v)])),
      replayCount: replayCountOf(properties),
    };
  }
}

export interface EntityCount {
  readonly entity: string;
  readonly count: number;
  readonly oldestAgeMs?: number;
}

/** How many of `deadLetters` each entity holds (every entity asked for, 0 included), with the oldest age. */
export function countByEntity(entityNames: readonly string[] | undefined, deadLetters: readonly DeadLetterSummary[]): EntityCount[] {
  return resolveEntities(entityNames).map((e) => {
    const mine = deadLetters.filter((d) => d.entity === e.name);
    return { entity: e.name, count: mine.length, ...(mine.length ? { oldestAgeMs: Math.max(...mine.map((d) => d.ageMs)) } : {}) };
  });
}

function base(s: DeadLetterSummary): Pick<ResendResult, "entity" | "sequenceNumber" | "messageId" | "reason"> {
  return { entity: s.entity, sequenceNumber: s.sequenceNumber, messageId: s.messageId, reason: s.reason };
}

function errorText(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown };
  const text = typeof e?.message === "string" ? e.message : String(err);
  return redact(typeof e?.code === "string" && !text.includes(e.code) ? `${e.code}: ${text}` : text);
}

/** Keeps the `limit` oldest, then restores entity order (topology) and sequence order. */
function limitOldest(found: DeadLetterSummary[], limit: number | undefined, entities: readonly DeadLetterEntity[]): DeadLetterSummary[] {
  const chosen = limit === undefined ? found : [...found].sort((a, b) => b.ageMs - a.ageMs).slice(0, limit);
  const order = new Map(entities.map((e, i) => [e.name, i]));
  return [...chosen].sort((a, b) => (order.get(a.entity)! - order.get(b.entity)!) || compareSequence(a.sequenceNumber, b.sequenceNumber));
}

function compareSequence(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}
