/**
 * Public types of the local Service Bus broker.
 *
 * Entity declarations accept the topology's `QueueDeclaration` / `TopicDeclaration` as they are,
 * and also looser literals for tests (only `name` is required; the rest defaults like Azure).
 * Durations may be fractional (e.g. `lockDurationSeconds: 0.5`) so tests can exercise expiry.
 */
import type { Logger } from "@connector/shared/logger";

/** Exact match on application properties (a correlation filter), or `true` for "match all". */
export type SubscriptionFilter = Readonly<Record<string, string | number | boolean>> | true;

export interface QueueSpec {
  readonly name: string;
  readonly maxDeliveryCount?: number;
  readonly lockDurationSeconds?: number;
  /** 0 or absent: duplicate detection off. */
  readonly duplicateDetectionWindowMinutes?: number;
  readonly deadLetterOnExpiration?: boolean;
  readonly defaultMessageTtlDays?: number;
}

export interface SubscriptionSpec {
  readonly name: string;
  /** Absent, `true` or `{}`: every message. Keys `sys.<name>` match system properties instead. */
  readonly filter?: SubscriptionFilter;
  readonly maxDeliveryCount?: number;
  readonly lockDurationSeconds?: number;
  readonly deadLetterOnExpiration?: boolean;
  readonly defaultMessageTtlDays?: number;
}

export interface TopicSpec {
  readonly name: string;
  readonly duplicateDetectionWindowMinutes?: number;
  readonly defaultMessageTtlDays?: number;
  readonly subscriptions: readonly SubscriptionSpec[];
}

export interface ServiceBusBrokerOptions {
  /** TCP port on 127.0.0.1; 0 or absent lets the OS choose. */
  port?: number;
  host?: string;
  /** Extra queues; a name that is also in the topology replaces the topology's entry. */
  queues?: readonly QueueSpec[];
  topics?: readonly TopicSpec[];
  /** Create the entities of `shared/src/topology.ts` too (default true). */
  includeTopology?: boolean;
  /** Default: a logger at LOG_LEVEL, or "warn" when LOG_LEVEL is unset. */
  logger?: Logger;
  /**
   * What happens to locked, unsettled messages when their receiver link or connection goes away.
   * false (default, as Azure): they stay locked until the lock expires, and can still be settled
   * through `$management` (the SDK does that when its link is gone). true: they become available
   * again at once, with their delivery count increased.
   */
  releaseLocksOnDetach?: boolean;
  /** Advertised on sender links and enforced on sends (default 256 KiB, the Standard tier). */
  maxMessageSizeBytes?: number;
}

export interface EntityStats {
  /** Messages that can be received now plus those locked by a receiver (Azure's active count). */
  active: number;
  /** Of `active`, the ones currently locked. */
  locked: number;
  scheduled: number;
  deferred: number;
  deadLetter: number;
  /** Receiver links attached to the entity itself (not its dead-letter queue). */
  receivers: number;
}

export interface InspectedMessage {
  sequenceNumber: number;
  messageId?: string | number;
  body: unknown;
  applicationProperties: Record<string, unknown>;
  subject?: string;
  correlationId?: string | number;
  contentType?: string;
  deliveryCount: number;
  enqueuedTimeUtc: Date;
  scheduledEnqueueTimeUtc?: Date;
  expiresAtUtc?: Date;
  locked: boolean;
  deadLetterReason?: string;
  deadLetterErrorDescription?: string;
}

export type MessageListKind = "active" | "scheduled" | "deferred" | "deadLetter";

export interface LocalServiceBusBroker {
  readonly host: string;
  readonly port: number;
  /** For `new ServiceBusClient(connectionString)`: plain AMQP on `port`. */
  readonly connectionString: string;
  /** Queue, topic, subscription (`<topic>/Subscriptions/<sub>`) or dead-letter path. */
  stats(entityPath: string): EntityStats;
  /** Dead-lettered messages of a queue or subscription (its own path or its DLQ path). */
  deadLetters(entityPath: string): InspectedMessage[];
  messages(entityPath: string, kind?: MessageListKind): InspectedMessage[];
  /**
   * Resolves with the entity's stats once `predicate` holds (polled every 10 ms); rejects after
   * `timeoutMs` (default 5000) with the last stats in the message.
   */
  waitFor(entityPath: string, predicate: (stats: EntityStats) => boolean, timeoutMs?: number): Promise<EntityStats>;
  /** Canonical paths of every queue, topic and subscription. */
  entityPaths(): string[];
  /** Open AMQP connections. */
  connectionCount(): number;
  close(): Promise<void>;
}
