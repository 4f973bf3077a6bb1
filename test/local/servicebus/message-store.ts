/**
 * One receivable message store: a queue, a subscription, or a dead-letter sub-queue.
 *
 * Holds available messages in sequence-number order, the locks of peek-lock deliveries, deferred
 * messages, and the consumers (receiver links) that want messages. Delivery-count, lock-expiry,
 * max-delivery-count and TTL rules live here.
 */
import type { Logger } from "@connector/shared/logger";
import { annotations, newLockToken, plainProperties, type AmqpMessage } from "./codec.ts";

export interface StoredMessage {
  readonly sequenceNumber: number;
  readonly enqueuedTimeUtc: number;
  amqp: AmqpMessage;
  /** Number of earlier deliveries that ended without completion (the AMQP header value). */
  deliveryCount: number;
  /** Epoch ms; Infinity when the message never expires. */
  readonly expiresAt: number;
  deferred: boolean;
  lock?: MessageLock;
}

export interface MessageLock {
  readonly token: string;
  lockedUntil: number;
  timer: NodeJS.Timeout;
}

export type ReceiveMode = "peekLock" | "receiveAndDelete";

/** A receiver link (or any other taker of messages) attached to a store. */
export interface Consumer {
  readonly receiveMode: ReceiveMode;
  /** How many more messages the consumer can take right now. */
  availableCredit(): number;
  /** `lock` is set in peek-lock mode; in receive-and-delete mode the message is already gone. */
  deliver(message: StoredMessage, lock: MessageLock | undefined): void;
}

export type Settlement =
  | { kind: "complete" }
  | { kind: "abandon"; properties?: Record<string, unknown> }
  | { kind: "defer"; properties?: Record<string, unknown> }
  | { kind: "deadLetter"; reason?: string; description?: string; properties?: Record<string, unknown> };

export interface StoreSettings {
  /** Canonical entity path, e.g. `incident-intake` or `artifact-commands/Subscriptions/submit-url`. */
  readonly path: string;
  readonly maxDeliveryCount: number;
  readonly lockDurationMs: number;
  readonly deadLetterOnExpiration: boolean;
  /** Entity default TTL; Infinity: messages never expire (dead-letter queues). */
  readonly defaultTtlMs: number;
}

export interface EnqueueInput {
  readonly sequenceNumber: number;
  readonly enqueuedTimeUtc: number;
  readonly amqp: AmqpMessage;
  readonly deliveryCount?: number;
}

export const deadLetterReasons = {
  maxDeliveryCountExceeded: "MaxDeliveryCountExceeded",
  ttlExpired: "TTLExpiredException",
} as const;

const maxTimerDelay = 2_147_483_647;

export class MessageStore {
  readonly settings: StoreSettings;
  /** The dead-letter sub-queue; undefined for a dead-letter queue itself. */
  readonly deadLetterQueue: MessageStore | undefined;
  private readonly logger: Logger;
  private readonly available: StoredMessage[] = [];
  private readonly locked = new Map<string, StoredMessage>();
  private readonly deferredMessages = new Map<number, StoredMessage>();
  private readonly consumers: Consumer[] = [];
  private nextConsumer = 0;
  private pumping = false;
  private pumpRequested = false;
  private closed = false;

  constructor(settings: StoreSettings, logger: Logger, deadLetterQueue?: MessageStore) {
    this.settings = settings;
    this.logger = logger;
    this.deadLetterQueue = deadLetterQueue;
  }

  get path(): string {
    return this.settings.path;
  }

  enqueue(input: EnqueueInput): void {
    if (this.closed) return;
    // Messages in a dead-letter queue never expire.
    const headerTtl = typeof input.amqp.ttl === "number" && input.amqp.ttl > 0 ? input.amqp.ttl : Infinity;
    const ttl = this.deadLetterQueue ? Math.min(headerTtl, this.settings.defaultTtlMs) : Infinity;
    const message: StoredMessage = {
      sequenceNumber: input.sequenceNumber,
      enqueuedTimeUtc: input.enqueuedTimeUtc,
      amqp: input.amqp,
      deliveryCount: input.deliveryCount ?? 0,
      expiresAt: Number.isFinite(ttl) ? input.enqueuedTimeUtc + ttl : Infinity,
      deferred: false,
    };
    this.insertAvailable(message);
    this.logger.debug("message enqueued", { entity: this.path, sequenceNumber: message.sequenceNumber });
    this.pump();
  }

  addConsumer(consumer: Consumer): void {
    this.consumers.push(consumer);
    this.pump();
  }

  removeConsumer(consumer: Consumer): void {
    const i = this.consumers.indexOf(consumer);
    if (i >= 0) this.consumers.splice(i, 1);
  }

  /** Hands available messages to consumers that have credit, round-robin. */
  pump(): void {
    if (this.closed) return;
    if (this.pumping) {
      this.pumpRequested = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.pumpRequested = false;
        this.expireMessages(Date.now());
        while (this.available.length > 0) {
          const consumer = this.pickConsumer();
          if (!consumer) break;
          const message = this.available.shift() as StoredMessage;
          if (consumer.receiveMode === "receiveAndDelete") {
            consumer.deliver(message, undefined);
          } else {
            consumer.deliver(message, this.acquireLock(message));
          }
        }
      } while (this.pumpRequested);
    } finally {
      this.pumping = false;
    }
  }

  /** Settles a locked message; false when the lock is unknown or has expired. */
  settle(lockToken: string, settlement: Settlement): boolean {
    const message = this.takeLocked(lockToken);
    if (!message) return false;
    switch (settlement.kind) {
      case "complete":
        this.logger.debug("message completed", { entity: this.path, sequenceNumber: message.sequenceNumber });
        break;
      case "abandon":
        this.applyProperties(message, settlement.properties);
        this.returnAfterFailedDelivery(message, "abandoned");
        break;
      case "defer":
        this.applyProperties(message, settlement.properties);
        message.deferred = true;
        this.deferredMessages.set(message.sequenceNumber, message);
        this.logger.debug("message deferred", { entity: this.path, sequenceNumber: message.sequenceNumber });
        break;
      case "deadLetter":
        this.applyProperties(message, settlement.properties);
        this.deadLetter(message, settlement.reason, settlement.description);
        break;
    }
    this.pump();
    return true;
  }

  /** Extends a lock by the entity's lock duration; undefined when the lock is gone. */
  renewLock(lockToken: string): number | undefined {
    const message = this.locked.get(lockToken);
    if (!message?.lock) return undefined;
    clearTimeout(message.lock.timer);
    message.lock.lockedUntil = Date.now() + this.settings.lockDurationMs;
    message.lock.timer = this.lockTimer(lockToken, this.settings.lockDurationMs);
    return message.lock.lockedUntil;
  }

  /** Attached consumers (receiver links). */
  consumerCount(): number {
    return this.consumers.length;
  }

  isLocked(lockToken: string): boolean {
    return this.locked.has(lockToken);
  }

  /** Makes a locked message available again at once (its receiver went away). */
  releaseLock(lockToken: string): void {
    const message = this.takeLocked(lockToken);
    if (!message) return;
    this.returnAfterFailedDelivery(message, "released");
    this.pump();
  }

  /**
   * Takes deferred messages by sequence number (management `receive-by-sequence-number`).
   * Throws `MessageNotFoundError` when one of them is not deferred here.
   */
  receiveDeferred(sequenceNumbers: readonly number[], mode: ReceiveMode): { message: StoredMessage; lock?: MessageLock }[] {
    for (const seq of sequenceNumbers) {
      const m = this.deferredMessages.get(seq);
      if (!m || m.lock) throw new MessageNotFoundError(`Deferred message with sequence number ${seq} not found in ${this.path}.`);
    }
    return sequenceNumbers.map((seq) => {
      const message = this.deferredMessages.get(seq) as StoredMessage;
      this.deferredMessages.delete(seq);
      if (mode === "receiveAndDelete") return { message };
      return { message, lock: this.acquireLock(message) };
    });
  }

  /** Active (including locked) and deferred messages from `fromSequenceNumber`, in order. */
  peekable(): StoredMessage[] {
    this.expireMessages(Date.now());
    const all = [...this.available, ...this.locked.values(), ...[...this.deferredMessages.values()].filter((m) => !m.lock)];
    return all.sort((a, b) => a.sequenceNumber - b.sequenceNumber);
  }

  counts(): { active: number; locked: number; deferred: number } {
    this.expireMessages(Date.now());
    let deferredUnlocked = 0;
    for (const m of this.deferredMessages.values()) if (!m.lock) deferredUnlocked++;
    let lockedDeferred = 0;
    for (const m of this.locked.values()) if (m.deferred) lockedDeferred++;
    return {
      active: this.available.length + this.locked.size - lockedDeferred,
      locked: this.locked.size - lockedDeferred,
      deferred: deferredUnlocked + lockedDeferred,
    };
  }

  list(kind: "active" | "deferred"): StoredMessage[] {
    this.expireMessages(Date.now());
    const source =
      kind === "active"
        ? [...this.available, ...[...this.locked.values()].filter((m) => !m.deferred)]
        : [...this.deferredMessages.values(), ...[...this.locked.values()].filter((m) => m.deferred)];
    return source.sort((a, b) => a.sequenceNumber - b.sequenceNumber);
  }

  close(): void {
    this.closed = true;
    for (const m of this.locked.values()) if (m.lock) clearTimeout(m.lock.timer);
    this.locked.clear();
    this.consumers.length = 0;
  }

  private pickConsumer(): Consumer | undefined {
    const n = this.consumers.length;
    for (let i = 0; i < n; i++) {
      const index = (this.nextConsumer + i) % n;
      const consumer = this.consumers[index];
      if (consumer && consumer.availableCredit() > 0) {
        this.nextConsumer = (index + 1) % n;
        return consumer;
      }
    }
    return undefined;
  }

  private acquireLock(message: StoredMessage): MessageLock {
    const token = newLockToken();
    const lock: MessageLock = {
      token,
      lockedUntil: Date.now() + this.settings.lockDurationMs,
      timer: this.lockTimer(token, this.settings.lockDurationMs),
    };
    message.lock = lock;
    this.locked.set(token, message);
    return lock;
  }

  private lockTimer(token: string, delayMs: number): NodeJS.Timeout {
    const timer = setTimeout(() => this.onLockExpired(token), Math.min(Math.max(0, delayMs), maxTimerDelay));
    timer.unref();
    return timer;
  }

  private onLockExpired(token: string): void {
    const message = this.locked.get(token);
    if (!message?.lock) return;
    const remaining = message.lock.lockedUntil - Date.now();
    if (remaining > 0) {
      message.lock.timer = this.lockTimer(token, remaining);
      return;
    }
    this.takeLocked(token);
    this.logger.debug("lock expired", { entity: this.path, sequenceNumber: message.sequenceNumber });
    this.returnAfterFailedDelivery(message, "lock expired");
    this.pump();
  }

  private takeLocked(token: string): StoredMessage | undefined {
    const message = this.locked.get(token);
    if (!message) return undefined;
    this.locked.delete(token);
    if (message.lock) clearTimeout(message.lock.timer);
    message.lock = undefined;
    return message;
  }

  /** Abandon, lock expiry or release: count the delivery, then redeliver or dead-letter. */
  private returnAfterFailedDelivery(message: StoredMessage, why: string): void {
    message.deliveryCount += 1;
    if (this.deadLetterQueue && message.deliveryCount >= this.settings.maxDeliveryCount) {
      this.deadLetter(
        message,
        deadLetterReasons.maxDeliveryCountExceeded,
        `Message could not be consumed after ${this.settings.maxDeliveryCount} delivery attempts.`,
      );
      return;
    }
    this.logger.debug("message returned", { entity: this.path, sequenceNumber: message.sequenceNumber, why, deliveryCount: message.deliveryCount });
    if (message.deferred) this.deferredMessages.set(message.sequenceNumber, message);
    else this.insertAvailable(message);
  }

  private deadLetter(message: StoredMessage, reason: string | undefined, description: string | undefined): void {
    const props: Record<string, unknown> = {};
    if (reason !== undefined) props.DeadLetterReason = reason;
    if (description !== undefined) props.DeadLetterErrorDescription = description;
    this.applyProperties(message, props);
    if (!this.deadLetterQueue) {
      // Already in a dead-letter queue: Azure keeps the message where it is.
      if (message.deferred) this.deferredMessages.set(message.sequenceNumber, message);
      else this.insertAvailable(message);
      return;
    }
    this.logger.debug("message dead-lettered", { entity: this.path, sequenceNumber: message.sequenceNumber, reason });
    this.deadLetterQueue.enqueue({
      sequenceNumber: message.sequenceNumber,
      enqueuedTimeUtc: message.enqueuedTimeUtc,
      amqp: message.amqp,
      deliveryCount: message.deliveryCount,
    });
  }

  private applyProperties(message: StoredMessage, properties: Record<string, unknown> | undefined): void {
    const updates = plainProperties(properties);
    if (Object.keys(updates).length === 0) return;
    message.amqp = { ...message.amqp, application_properties: { ...(message.amqp.application_properties ?? {}), ...updates } } as AmqpMessage;
  }

  private insertAvailable(message: StoredMessage): void {
    const list = this.available;
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((list[mid] as StoredMessage).sequenceNumber < message.sequenceNumber) lo = mid + 1;
      else hi = mid;
    }
    list.splice(lo, 0, message);
  }

  /** Lazy TTL expiry, as in Azure: expired messages are removed or dead-lettered when seen. */
  private expireMessages(now: number): void {
    if (!this.deadLetterQueue) return;
    const expired: StoredMessage[] = [];
    for (let i = this.available.length - 1; i >= 0; i--) {
      const m = this.available[i] as StoredMessage;
      if (m.expiresAt <= now) {
        this.available.splice(i, 1);
        expired.push(m);
      }
    }
    for (const [seq, m] of this.deferredMessages) {
      if (!m.lock && m.expiresAt <= now) {
        this.deferredMessages.delete(seq);
        expired.push(m);
      }
    }
    for (const m of expired.reverse()) {
      if (this.settings.deadLetterOnExpiration && this.deadLetterQueue) {
        m.deferred = false;
        this.deadLetter(m, deadLetterReasons.ttlExpired, "The message expired and was dead lettered.");
      } else {
        this.logger.debug("message expired", { entity: this.path, sequenceNumber: m.sequenceNumber });
      }
    }
  }
}

export class MessageNotFoundError extends Error {
  override readonly name = "MessageNotFoundError";
}

/** Scheduled-enqueue time carried by a message, if any. */
export function scheduledTimeOf(amqp: AmqpMessage): number | undefined {
  const v: unknown = amqp.message_annotations?.[annotations.scheduledEnqueueTime];
  if (v instanceof Date) return v.getTime();
  if (typeof v === "number") return v;
  return undefined;
}
