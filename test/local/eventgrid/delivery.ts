/**
 * Push delivery of the local Event Grid: subscription filters, one event per delivery (the default
 * batch of one), the retry schedule with exponential backoff, retry policy (max attempts, event TTL)
 * and dead-lettering to a blob container, as Event Grid documents it
 * (event-grid/delivery-and-retry, manage-event-delivery).
 */
import { randomUUID } from "node:crypto";
import type { EventGridEvent } from "@azure/functions";
import type { EventGridSubscriptionDeclaration } from "@connector/shared/topology";
import type { Logger } from "@connector/shared/logger";
import { eventGridTime } from "./events.ts";

export interface DeliveryInfo {
  /** 1 on the first attempt. */
  readonly attempt: number;
}

/**
 * Delivers events to a subscriber. Resolves for success; rejects for failure, preferably with a
 * {@link DeliveryError} (or any error carrying a numeric `status` / `statusCode`).
 */
export type Deliver = (subscriptionName: string, events: EventGridEvent[], info: DeliveryInfo) => Promise<void>;

export class DeliveryError extends Error {
  override name = "DeliveryError";
  constructor(
    readonly status: number,
    message = `delivery failed with HTTP ${status}`,
  ) {
    super(message);
  }
}

/** Real schedule (seconds) after attempt 1, 2, …; the last step repeats. */
export const RETRY_SCHEDULE_SECONDS: readonly number[] = [10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600];

/** Azure-resource endpoints are not retried on these codes (400, 413; newer doc revisions add 403). */
export const NON_RETRYABLE_STATUSES: ReadonlySet<number> = new Set([400, 403, 413]);

export function statusOf(err: unknown): number | undefined {
  if (typeof err === "object" && err !== null) {
    const e = err as { status?: unknown; statusCode?: unknown };
    if (typeof e.status === "number") return e.status;
    if (typeof e.statusCode === "number") return e.statusCode;
  }
  return undefined;
}

export function outcomeFor(status: number | undefined, timedOut: boolean): string {
  if (timedOut || status === 408) return "TimedOut";
  switch (status) {
    case undefined:
    case 0:
      return "GenericError";
    case 400:
      return "BadRequest";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "NotFound";
    case 413:
      return "RequestEntityTooLarge";
    case 429:
    case 503:
      return "Busy";
    default:
      return "GenericError";
  }
}

function nonRetryableReason(status: number): string {
  switch (status) {
    case 400:
      return "UndeliverableDueToHttpBadRequest";
    case 403:
      return "UndeliverableDueToHttpForbidden";
    default:
      return "UndeliverableDueToHttpRequestEntityTooLarge";
  }
}

/** Delivers to an HTTP webhook the way Event Grid does (JSON array, `aeg-*` headers). */
export function webhookDeliverer(url: string, timeoutMs = 30_000): Deliver {
  return async (subscriptionName, events, info) => {
    let response: Response;
    try {
      response = await fetch(url, {
        method: "POST",
        headers: {
          "content-type": "application/json; charset=utf-8",
          "aeg-event-type": "Notification",
          "aeg-subscription-name": subscriptionName.toUpperCase(),
          "aeg-delivery-count": String(info.attempt - 1),
          "aeg-data-version": events[0]?.dataVersion ?? "",
          "aeg-metadata-version": "1",
        },
        body: JSON.stringify(events),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      if ((err as Error).name === "TimeoutError") throw new DeliveryError(408, "webhook did not answer in time");
      throw new DeliveryError(0, `webhook unreachable: ${(err as Error).message}`);
    }
    await response.arrayBuffer().catch(() => undefined);
    if (!response.ok) throw new DeliveryError(response.status);
  };
}

export interface RetryPolicy {
  readonly maxDeliveryAttempts: number;
  readonly eventTimeToLiveMinutes: number;
}

/** An event accepted by a topic (before subscription filters). */
export interface PublishedRecord {
  readonly topic: string;
  readonly event: EventGridEvent;
  readonly time: string;
}

export interface DeliveryRecord {
  readonly subscription: string;
  readonly eventId: string;
  readonly eventType: string;
  readonly subject: string;
  readonly attempt: number;
  readonly time: string;
  readonly outcome: "Delivered" | string;
  readonly httpStatus?: number;
  readonly error?: string;
}

/** The dead-lettered event as written to the blob (event fields + Event Grid's dead-letter fields). */
export type DeadLetteredEvent = EventGridEvent & {
  deadLetterReason: string;
  deliveryAttempts: number;
  lastDeliveryOutcome: string;
  lastHttpStatusCode: number;
  publishTime: string;
  lastDeliveryAttemptTime: string;
};

export interface DeadLetterRecord {
  readonly subscription: string;
  /** Blob name inside the dead-letter container. */
  readonly blobName: string;
  readonly container: string;
  readonly event: DeadLetteredEvent;
}

export type DeadLetterWriter = (container: string, blobName: string, content: string) => Promise<void>;

export interface DispatcherSubscription {
  readonly topic: string;
  readonly declaration: EventGridSubscriptionDeclaration;
  readonly subjectBeginsWith: string | undefined;
  readonly policy: RetryPolicy;
}

export interface DispatcherOptions {
  readonly subscriptions: readonly DispatcherSubscription[];
  readonly resolveDeliverer: (subscriptionName: string) => Deliver | undefined;
  readonly writeDeadLetter: DeadLetterWriter;
  readonly deadLetterContainer: string;
  /** Multiplies every retry delay and the event TTL. 1 = real time. */
  readonly timeScale: number;
  readonly deliveryTimeoutMs: number;
  readonly jitter: boolean;
  readonly logger: Logger;
}

export function matches(sub: DispatcherSubscription, event: EventGridEvent): boolean {
  const decl = sub.declaration;
  if (decl.includedEventTypes.length > 0) {
    const type = event.eventType.toLowerCase();
    if (!decl.includedEventTypes.some((t) => t.toLowerCase() === type)) return false;
  }
  if (sub.subjectBeginsWith && !event.subject.toLowerCase().startsWith(sub.subjectBeginsWith.toLowerCase())) return false;
  if (decl.dataApiIn && decl.dataApiIn.length > 0) {
    const api = (event.data as { api?: unknown } | undefined)?.api;
    if (typeof api !== "string" || !decl.dataApiIn.some((a) => a.toLowerCase() === api.toLowerCase())) return false;
  }
  return true;
}

interface PendingDelivery {
  readonly sub: DispatcherSubscription;
  readonly event: EventGridEvent;
  readonly publishedAt: number;
  attempts: number;
  lastStatus: number;
  lastOutcome: string;
  lastAttemptAt: number;
  timer?: NodeJS.Timeout;
}

/** Routes published events to matching subscriptions and drives delivery, retry and dead-lettering. */
export class Dispatcher {
  private readonly pending = new Set<PendingDelivery>();
  private readonly log: DeliveryRecord[] = [];
  private readonly dead: DeadLetterRecord[] = [];
  private readonly raised: PublishedRecord[] = [];
  private readonly inFlight = new Set<Promise<unknown>>();
  private idleWaiters: (() => void)[] = [];
  private closed = false;

  constructor(private readonly options: DispatcherOptions) {}

  /** Queues every event for each subscription of `topic` whose filters match. Returns the number of deliveries queued. */
  publish(topic: string, events: readonly EventGridEvent[]): number {
    if (this.closed) return 0;
    for (const event of events) this.raised.push({ topic, event, time: new Date().toISOString() });
    let queued = 0;
    for (const sub of this.options.subscriptions) {
      if (sub.topic !== topic) continue;
      for (const event of events) {
        if (!matches(sub, event)) continue;
        const item: PendingDelivery = {
          sub,
          event,
          publishedAt: Date.now(),
          attempts: 0,
          lastStatus: 0,
          lastOutcome: "",
          lastAttemptAt: 0,
        };
        this.pending.add(item);
        this.schedule(item, 0);
        queued++;
      }
    }
    return queued;
  }

  published(): PublishedRecord[] {
    return [...this.raised];
  }

  deliveries(): DeliveryRecord[] {
    return [...this.log];
  }

  deadLetters(): DeadLetterRecord[] {
    return [...this.dead];
  }

  /** Deliveries still waiting for an attempt or a retry (diagnostics). */
  pendingDeliveries(): { subscription: string; eventId: string; attempts: number; lastOutcome: string }[] {
    return [...this.pending].map((p) => ({ subscription: p.sub.declaration.name, eventId: p.event.id, attempts: p.attempts, lastOutcome: p.lastOutcome }));
  }

  /** Resolves when no delivery is pending or in flight. */
  idle(): Promise<void> {
    if (this.pending.size === 0 && this.inFlight.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const item of this.pending) clearTimeout(item.timer);
    this.pending.clear();
    await Promise.allSettled([...this.inFlight]);
    this.notifyIdle();
  }

  private notifyIdle(): void {
    if (this.pending.size === 0 && this.inFlight.size === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  private track<T>(promise: Promise<T>): Promise<T> {
    this.inFlight.add(promise);
    void promise.finally(() => {
      this.inFlight.delete(promise);
      this.notifyIdle();
    });
    return promise;
  }

  private schedule(item: PendingDelivery, delayMs: number): void {
    item.timer = setTimeout(() => {
      item.timer = undefined;
      if (this.closed) return;
      void this.track(this.attempt(item));
    }, delayMs);
  }

  private ttlMs(item: PendingDelivery): number {
    return item.sub.policy.eventTimeToLiveMinutes * 60_000 * this.options.timeScale;
  }

  private async attempt(item: PendingDelivery): Promise<void> {
    const { sub, event } = item;
    const name = sub.declaration.name;
    item.attempts++;
    item.lastAttemptAt = Date.now();
    let status: number | undefined;
    let timedOut = false;
    let errorText: string | undefined;
    const deliver = this.options.resolveDeliverer(name);
    if (!deliver) {
      status = 404;
      errorText = "no subscriber registered for this subscription";
    } else {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          deliver(name, [event], { attempt: item.attempts }),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => {
              timedOut = true;
              reject(new DeliveryError(408, "subscriber did not answer in time"));
            }, this.options.deliveryTimeoutMs);
          }),
        ]);
        clearTimeout(timer);
        this.record(item, "Delivered", 200);
        this.pending.delete(item);
        return;
      } catch (err) {
        clearTimeout(timer);
        status = statusOf(err) ?? 500;
        errorText = err instanceof Error ? err.message : String(err);
      }
    }
    if (this.closed) return;
    const outcome = outcomeFor(status, timedOut);
    item.lastStatus = status ?? 0;
    item.lastOutcome = outcome;
    this.record(item, outcome, status, errorText);
    this.options.logger.warn("event delivery failed", {
      subscription: name,
      eventId: event.id,
      attempt: item.attempts,
      httpStatus: status,
      outcome,
    });

    if (status !== undefined && NON_RETRYABLE_STATUSES.has(status)) {
      await this.deadLetter(item, nonRetryableReason(status));
      return;
    }
    if (item.attempts >= sub.policy.maxDeliveryAttempts) {
      await this.deadLetter(item, "MaxDeliveryAttemptsExceeded");
      return;
    }
    const step = RETRY_SCHEDULE_SECONDS[Math.min(item.attempts - 1, RETRY_SCHEDULE_SECONDS.length - 1)] ?? 10;
    let delay = step * 1000 * this.options.timeScale;
    if (this.options.jitter) delay += Math.random() * delay * 0.1;
    const ttlLeft = item.publishedAt + this.ttlMs(item) - Date.now();
    if (delay >= ttlLeft) {
      item.timer = setTimeout(() => {
        item.timer = undefined;
        if (!this.closed) void this.track(this.deadLetter(item, "TimeToLiveExceeded"));
      }, Math.max(0, ttlLeft));
      return;
    }
    this.schedule(item, delay);
  }

  private record(item: PendingDelivery, outcome: string, status: number | undefined, error?: string): void {
    this.log.push({
      subscription: item.sub.declaration.name,
      eventId: item.event.id,
      eventType: item.event.eventType,
      subject: item.event.subject,
      attempt: item.attempts,
      time: new Date().toISOString(),
      outcome,
      ...(status !== undefined ? { httpStatus: status } : {}),
      ...(error !== undefined ? { error } : {}),
    });
  }

  private async deadLetter(item: PendingDelivery, reason: string): Promise<void> {
    this.pending.delete(item);
    const now = new Date();
    const name = item.sub.declaration.name;
    const deadLettered: DeadLetteredEvent = {
      ...item.event,
      deadLetterReason: reason,
      deliveryAttempts: item.attempts,
      lastDeliveryOutcome: item.lastOutcome,
      lastHttpStatusCode: item.lastStatus,
      publishTime: eventGridTime(new Date(item.publishedAt)),
      lastDeliveryAttemptTime: eventGridTime(new Date(item.lastAttemptAt || item.publishedAt)),
    };
    const blobName = [
      name.toUpperCase(),
      now.getUTCFullYear(),
      now.getUTCMonth() + 1,
      now.getUTCDate(),
      now.getUTCHours(),
      `${randomUUID()}.json`,
    ].join("/");
    const container = this.options.deadLetterContainer;
    this.dead.push({ subscription: name, blobName, container, event: deadLettered });
    try {
      await this.options.writeDeadLetter(container, blobName, JSON.stringify([deadLettered]));
      this.options.logger.warn("event dead-lettered", { subscription: name, eventId: item.event.id, reason, blobName });
    } catch (err) {
      this.options.logger.error("writing dead-lettered event failed", { subscription: name, eventId: item.event.id, error: err });
    }
  }
}
