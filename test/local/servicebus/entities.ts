/**
 * Queues, topics and subscriptions, and the resolution of AMQP addresses to them.
 *
 * A queue or topic is a send target: it assigns sequence numbers, applies duplicate detection and
 * holds scheduled messages until their time. A queue then stores the message; a topic copies it
 * into every subscription whose filter matches (no match: the message is dropped, as in Azure).
 */
import { randomUUID } from "node:crypto";
import type { Logger } from "@connector/shared/logger";
import { messageIdKey, type AmqpMessage } from "./codec.ts";
import { MessageStore, scheduledTimeOf } from "./message-store.ts";
import type { QueueSpec, SubscriptionFilter, SubscriptionSpec, TopicSpec } from "./types.ts";

const defaults = {
  maxDeliveryCount: 10,
  lockDurationSeconds: 60,
  defaultMessageTtlDays: 14,
  deadLetterOnExpiration: false,
} as const;

const dayMs = 86_400_000;
const maxTimerDelay = 2_147_483_647;

export interface ScheduledMessage {
  readonly sequenceNumber: number;
  readonly amqp: AmqpMessage;
  readonly scheduledAt: number;
  timer: NodeJS.Timeout;
}

export interface AcceptResult {
  readonly sequenceNumber: number;
  readonly duplicate: boolean;
  readonly scheduled: boolean;
}

export abstract class SendTarget {
  readonly path: string;
  protected readonly logger: Logger;
  private nextSequenceNumber = 1;
  private readonly duplicateWindowMs: number;
  private readonly seenMessageIds = new Map<string, { at: number; sequenceNumber: number }>();
  private readonly scheduled = new Map<number, ScheduledMessage>();
  private closed = false;

  protected constructor(path: string, duplicateDetectionWindowMinutes: number | undefined, logger: Logger) {
    this.path = path;
    this.logger = logger;
    this.duplicateWindowMs = Math.max(0, (duplicateDetectionWindowMinutes ?? 0) * 60_000);
  }

  get duplicateDetection(): boolean {
    return this.duplicateWindowMs > 0;
  }

  /**
   * Takes a sent message: duplicate detection by message id, then either schedules it (when it
   * carries a future `x-opt-scheduled-enqueue-time`) or enqueues it now.
   */
  accept(received: AmqpMessage): AcceptResult {
    const now = Date.now();
    // Like Azure, the broker gives a message without a message-id one (32 hex digits).
    const amqp =
      received.message_id === undefined || received.message_id === null
        ? ({ ...received, message_id: randomUUID().replace(/-/g, "") } as AmqpMessage)
        : received;
    const key = this.duplicateDetection ? messageIdKey(amqp.message_id) : undefined;
    if (key !== undefined) {
      this.forgetOldMessageIds(now);
      const seen = this.seenMessageIds.get(key);
      if (seen) {
        this.logger.debug("duplicate message dropped", { entity: this.path, messageId: String(amqp.message_id) });
        return { sequenceNumber: seen.sequenceNumber, duplicate: true, scheduled: false };
      }
    }
    const sequenceNumber = this.nextSequenceNumber++;
    if (key !== undefined) this.seenMessageIds.set(key, { at: now, sequenceNumber });
    const at = scheduledTimeOf(amqp);
    if (at !== undefined && at > now) {
      this.schedule(sequenceNumber, amqp, at);
      return { sequenceNumber, duplicate: false, scheduled: true };
    }
    this.dispatch(sequenceNumber, amqp, now);
    return { sequenceNumber, duplicate: false, scheduled: false };
  }

  /** Cancels a scheduled message; false when no such message is scheduled. */
  cancelScheduled(sequenceNumber: number): boolean {
    const entry = this.scheduled.get(sequenceNumber);
    if (!entry) return false;
    clearTimeout(entry.timer);
    this.scheduled.delete(sequenceNumber);
    this.logger.debug("scheduled message cancelled", { entity: this.path, sequenceNumber });
    return true;
  }

  scheduledMessages(): ScheduledMessage[] {
    return [...this.scheduled.values()].sort((a, b) => a.sequenceNumber - b.sequenceNumber);
  }

  close(): void {
    this.closed = true;
    for (const entry of this.scheduled.values()) clearTimeout(entry.timer);
    this.scheduled.clear();
  }

  protected abstract dispatch(sequenceNumber: number, amqp: AmqpMessage, enqueuedTimeUtc: number): void;

  private schedule(sequenceNumber: number, amqp: AmqpMessage, at: number): void {
    const entry: ScheduledMessage = { sequenceNumber, amqp, scheduledAt: at, timer: this.scheduleTimer(sequenceNumber, at) };
    this.scheduled.set(sequenceNumber, entry);
    this.logger.debug("message scheduled", { entity: this.path, sequenceNumber, at: new Date(at).toISOString() });
  }

  private scheduleTimer(sequenceNumber: number, at: number): NodeJS.Timeout {
    const delay = Math.min(Math.max(0, at - Date.now()), maxTimerDelay);
    const timer = setTimeout(() => this.onScheduledTime(sequenceNumber), delay);
    timer.unref();
    return timer;
  }

  private onScheduledTime(sequenceNumber: number): void {
    const entry = this.scheduled.get(sequenceNumber);
    if (!entry || this.closed) return;
    if (entry.scheduledAt > Date.now()) {
      entry.timer = this.scheduleTimer(sequenceNumber, entry.scheduledAt);
      return;
    }
    this.scheduled.delete(sequenceNumber);
    this.dispatch(sequenceNumber, entry.amqp, Date.now());
  }

  private forgetOldMessageIds(now: number): void {
    for (const [key, seen] of this.seenMessageIds) {
      if (now - seen.at < this.duplicateWindowMs) break; // insertion order = time order
      this.seenMessageIds.delete(key);
    }
  }
}

function storeSettings(
  path: string,
  spec: {
    maxDeliveryCount?: number;
    lockDurationSeconds?: number;
    deadLetterOnExpiration?: boolean;
    defaultMessageTtlDays?: number;
  },
) {
  return {
    path,
    maxDeliveryCount: Math.max(1, spec.maxDeliveryCount ?? defaults.maxDeliveryCount),
    lockDurationMs: Math.round((spec.lockDurationSeconds ?? defaults.lockDurationSeconds) * 1000),
    deadLetterOnExpiration: spec.deadLetterOnExpiration ?? defaults.deadLetterOnExpiration,
    defaultTtlMs: (spec.defaultMessageTtlDays ?? defaults.defaultMessageTtlDays) * dayMs,
  };
}

function createStoreWithDeadLetterQueue(path: string, spec: Parameters<typeof storeSettings>[1], logger: Logger): MessageStore {
  const settings = storeSettings(path, spec);
  const dlq = new MessageStore({ ...settings, path: `${path}/$DeadLetterQueue`, defaultTtlMs: Infinity }, logger);
  return new MessageStore(settings, logger, dlq);
}

export class QueueEntity extends SendTarget {
  readonly kind = "queue";
  readonly store: MessageStore;

  constructor(spec: QueueSpec, logger: Logger) {
    super(spec.name, spec.duplicateDetectionWindowMinutes, logger);
    this.store = createStoreWithDeadLetterQueue(spec.name, spec, logger);
  }

  protected dispatch(sequenceNumber: number, amqp: AmqpMessage, enqueuedTimeUtc: number): void {
    this.store.enqueue({ sequenceNumber, amqp, enqueuedTimeUtc });
  }

  override close(): void {
    super.close();
    this.store.close();
    this.store.deadLetterQueue?.close();
  }
}

export class SubscriptionEntity {
  readonly kind = "subscription";
  readonly name: string;
  readonly path: string;
  readonly filter: SubscriptionFilter;
  readonly store: MessageStore;

  constructor(topic: string, spec: SubscriptionSpec, defaultTtlDays: number | undefined, logger: Logger) {
    this.name = spec.name;
    this.path = `${topic}/Subscriptions/${spec.name}`;
    this.filter = spec.filter ?? true;
    this.store = createStoreWithDeadLetterQueue(
      this.path,
      { ...spec, defaultMessageTtlDays: spec.defaultMessageTtlDays ?? defaultTtlDays },
      logger,
    );
  }

  matches(amqp: AmqpMessage): boolean {
    return filterMatches(this.filter, amqp);
  }
}

export class TopicEntity extends SendTarget {
  readonly kind = "topic";
  readonly subscriptions = new Map<string, SubscriptionEntity>();

  constructor(spec: TopicSpec, logger: Logger) {
    super(spec.name, spec.duplicateDetectionWindowMinutes, logger);
    for (const sub of spec.subscriptions) {
      this.subscriptions.set(sub.name.toLowerCase(), new SubscriptionEntity(spec.name, sub, spec.defaultMessageTtlDays, logger));
    }
  }

  protected dispatch(sequenceNumber: number, amqp: AmqpMessage, enqueuedTimeUtc: number): void {
    let matched = 0;
    for (const sub of this.subscriptions.values()) {
      if (!sub.matches(amqp)) continue;
      matched++;
      sub.store.enqueue({ sequenceNumber, amqp, enqueuedTimeUtc });
    }
    if (matched === 0) this.logger.debug("no subscription matched; message dropped", { entity: this.path, sequenceNumber });
  }

  override close(): void {
    super.close();
    for (const sub of this.subscriptions.values()) {
      sub.store.close();
      sub.store.deadLetterQueue?.close();
    }
  }
}

const systemProperties: Record<string, string> = {
  messageid: "message_id",
  correlationid: "correlation_id",
  to: "to",
  replyto: "reply_to",
  subject: "subject",
  label: "subject",
  sessionid: "group_id",
  contenttype: "content_type",
  replytosessionid: "reply_to_group_id",
};

/** Correlation-filter semantics: every listed property present and equal (`sys.` = system property). */
export function filterMatches(filter: SubscriptionFilter, amqp: AmqpMessage): boolean {
  if (filter === true) return true;
  const props = (amqp.application_properties ?? {}) as Record<string, unknown>;
  for (const [key, expected] of Object.entries(filter)) {
    let actual: unknown;
    if (key.toLowerCase().startsWith("sys.")) {
      const field = systemProperties[key.slice(4).toLowerCase()];
      actual = field ? (amqp as unknown as Record<string, unknown>)[field] : undefined;
    } else {
      actual = props[key];
    }
    if (actual !== expected) return false;
  }
  return true;
}

export type ResolvedAddress =
  | { kind: "queue"; queue: QueueEntity; store: MessageStore }
  | { kind: "topic"; topic: TopicEntity }
  | { kind: "subscription"; topic: TopicEntity; subscription: SubscriptionEntity; store: MessageStore }
  | { kind: "deadLetter"; store: MessageStore; parent: MessageStore };

export class EntityRegistry {
  private readonly queues = new Map<string, QueueEntity>();
  private readonly topics = new Map<string, TopicEntity>();
  private readonly logger: Logger;

  constructor(logger: Logger) {
    this.logger = logger;
  }

  addQueue(spec: QueueSpec): QueueEntity {
    const key = spec.name.toLowerCase();
    if (this.topics.has(key)) throw new Error(`'${spec.name}' is already a topic`);
    this.queues.get(key)?.close();
    const queue = new QueueEntity(spec, this.logger);
    this.queues.set(key, queue);
    return queue;
  }

  addTopic(spec: TopicSpec): TopicEntity {
    const key = spec.name.toLowerCase();
    if (this.queues.has(key)) throw new Error(`'${spec.name}' is already a queue`);
    this.topics.get(key)?.close();
    const topic = new TopicEntity(spec, this.logger);
    this.topics.set(key, topic);
    return topic;
  }

  paths(): string[] {
    const out: string[] = [];
    for (const q of this.queues.values()) out.push(q.path);
    for (const t of this.topics.values()) {
      out.push(t.path);
      for (const s of t.subscriptions.values()) out.push(s.path);
    }
    return out;
  }

  /**
   * Resolves an entity path, case-insensitively: `<queue>`, `<topic>`,
   * `<topic>/Subscriptions/<sub>`, and either of the receivable ones + `/$DeadLetterQueue`.
   * A leading `sb://host/` or `amqps://host/` is ignored.
   */
  resolve(address: string): ResolvedAddress | undefined {
    const parts = normaliseAddress(address).split("/");
    const [first, second, third, fourth, ...rest] = parts;
    if (!first || rest.length > 0) return undefined;
    const queue = this.queues.get(first);
    const topic = this.topics.get(first);
    if (second === undefined) {
      if (queue) return { kind: "queue", queue, store: queue.store };
      if (topic) return { kind: "topic", topic };
      return undefined;
    }
    if (queue && second === "$deadletterqueue" && third === undefined && queue.store.deadLetterQueue) {
      return { kind: "deadLetter", store: queue.store.deadLetterQueue, parent: queue.store };
    }
    if (topic && second === "subscriptions" && third) {
      const subscription = topic.subscriptions.get(third);
      if (!subscription) return undefined;
      if (fourth === undefined) return { kind: "subscription", topic, subscription, store: subscription.store };
      if (fourth === "$deadletterqueue" && subscription.store.deadLetterQueue) {
        return { kind: "deadLetter", store: subscription.store.deadLetterQueue, parent: subscription.store };
      }
    }
    return undefined;
  }

  close(): void {
    for (const q of this.queues.values()) q.close();
    for (const t of this.topics.values()) t.close();
  }
}

export function normaliseAddress(address: string): string {
  let a = address.trim();
  const scheme = /^[a-z][a-z0-9+.-]*:\/\/[^/]*\/?/i.exec(a);
  if (scheme) a = a.slice(scheme[0].length);
  return a.replace(/^\/+|\/+$/g, "").toLowerCase();
}
