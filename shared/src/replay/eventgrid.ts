/**
 * Event Grid dead letters: the blobs Event Grid writes to the dead-letter container
 * (`<SUBSCRIPTION-UPPER>/YYYY/M/D/H/<guid>.json`, each a JSON array of events with
 * `deadLetterReason`, `deliveryAttempts`, `lastDeliveryOutcome`, `lastHttpStatusCode`,
 * `publishTime`, `lastDeliveryAttemptTime`): list, show, replay.
 *
 * Replay, per event, by the kind of topic it came from:
 * - custom topic (analysis-events): re-published to the topic with the publisher client, with the
 *   SAME event id (the handlers are idempotent by job state, and the id lets them recognise it).
 *   Publishing reaches every subscription of the topic whose filter matches, so the topology is
 *   checked first: when another subscription would get the event too, it is refused.
 * - system topic (storage BlobCreated): nothing can publish to a system topic, so the event is
 *   handed to a `redeliverBlobCreated` port — the `submitFile` function run in-process (see
 *   services/src/replay/redeliver.ts).
 * A blob is deleted only when every event in it was replayed; when only some were, it is rewritten
 * (ETag-conditional) with the ones that were not.
 */
import type { ContainerClient } from "@azure/storage-blob";
import type { EventGridPublisherClient } from "@azure/eventgrid";
import type { EventGridEvent } from "@azure/functions";
import { createLogger, redact, type Logger } from "../logger.ts";
import { allEventGridTopics, type EventGridSubscriptionDeclaration, type EventGridTopicDeclaration } from "../topology.ts";
import { matchesAge, matchesId, matchesReason, type DeadLetterFilter } from "./filters.ts";
import { UnknownEntityError } from "./entities.ts";

export interface EventGridDeadLetter {
  readonly blobName: string;
  /** Position of the event in the blob's array. */
  readonly index: number;
  /** Topology subscription name (lower case), or the blob's first path segment when unknown. */
  readonly subscription: string;
  readonly topic?: string;
  readonly topicSource?: EventGridTopicDeclaration["source"];
  readonly id: string;
  readonly eventType: string;
  readonly subject: string;
  readonly eventTime: string;
  readonly deadLetterReason: string;
  readonly deliveryAttempts: number;
  readonly lastDeliveryOutcome: string;
  readonly lastHttpStatusCode: number;
  readonly publishTime: string;
  readonly lastDeliveryAttemptTime: string;
  /** Since `publishTime` (when Event Grid accepted the event). */
  readonly ageMs: number;
}

export interface EventGridDeadLetterDetail extends EventGridDeadLetter {
  /** The event as it would be delivered (dead-letter fields removed), secrets redacted. */
  readonly event: Record<string, unknown>;
}

export type EventReplayOutcome = "replayed" | "wouldReplay" | "refused" | "failed" | "replayedBlobKept" | "notFound";

export interface EventReplayResult {
  readonly blobName: string;
  readonly subscription: string;
  readonly id: string;
  readonly eventType: string;
  readonly reason: string;
  readonly outcome: EventReplayOutcome;
  /** `publish:<topic>` or `redeliver:<subscription>`. */
  readonly via?: string;
  readonly error?: string;
}

export interface EventReplayReport {
  readonly dryRun: boolean;
  readonly selected: number;
  readonly replayed: number;
  readonly failed: number;
  readonly blobsDeleted: number;
  readonly results: readonly EventReplayResult[];
}

/** Re-delivers a BlobCreated event to the function its subscription triggers. */
export type BlobCreatedRedelivery = (subscription: string, event: EventGridEvent) => Promise<void>;

export interface EventGridDeadLettersOptions {
  /** Re-publishes custom-topic events (EVENTGRID_ENDPOINT / EVENTGRID_KEY). */
  readonly publisher?: Pick<EventGridPublisherClient<"EventGrid">, "send">;
  readonly redeliverBlobCreated?: BlobCreatedRedelivery;
  /** Said when a BlobCreated event cannot be re-delivered here (no `redeliverBlobCreated`). */
  readonly noRedeliveryHint?: string;
  readonly logger?: Logger;
  readonly now?: () => number;
}

const deadLetterFields = ["deadLetterReason", "deliveryAttempts", "lastDeliveryOutcome", "lastHttpStatusCode", "publishTime", "lastDeliveryAttemptTime"] as const;

/** The event without Event Grid's dead-letter fields. */
export function deliverableEvent(raw: Record<string, unknown>): EventGridEvent {
  const event: Record<string, unknown> = { ...raw };
  for (const f of deadLetterFields) delete event[f];
  return event as unknown as EventGridEvent;
}

function subscriptionOf(blobName: string): { subscription: string; declaration?: EventGridSubscriptionDeclaration; topic?: EventGridTopicDeclaration } {
  const first = (blobName.split("/")[0] ?? "").toLowerCase();
  for (const topic of allEventGridTopics()) {
    const declaration = topic.subscriptions.find((s) => s.name.toLowerCase() === first);
    if (declaration) return { subscription: declaration.name, declaration, topic };
  }
  return { subscription: first };
}

/** Which subscriptions of the topic would receive a re-published event (types and subject filters). */
function receivingSubscriptions(topic: EventGridTopicDeclaration, event: EventGridEvent): string[] {
  return topic.subscriptions
    .filter((s) => {
      if (s.includedEventTypes.length > 0 && !s.includedEventTypes.some((t) => t.toLowerCase() === event.eventType.toLowerCase())) return false;
      if (s.subjectBeginsWith && !s.subjectBeginsWith.includes("{") && !event.subject.toLowerCase().startsWith(s.subjectBeginsWith.toLowerCase())) return false;
      return true;
    })
    .map((s) => s.name);
}

function str(v: unknown): string {
  return typeof v === "string" ? v : v === undefined || v === null ? "" : String(v);
}

interface LoadedBlob {
  readonly name: string;
  readonly etag: string | undefined;
  readonly events: Record<string, unknown>[];
}

export class EventGridDeadLetters {
  private readonly logger: Logger;
  private readonly now: () => number;

  constructor(
    private readonly container: ContainerClient,
    private readonly options: EventGridDeadLettersOptions = {},
  ) {
    this.logger = options.logger ?? createLogger({ service: "replay" });
    this.now = options.now ?? Date.now;
  }

  async list(filter: DeadLetterFilter = {}): Promise<EventGridDeadLetter[]> {
    const wanted = (filter.entities ?? []).map((e) => e.toLowerCase());
    const known = allEventGridTopics().flatMap((t) => [t.name, ...t.subscriptions.map((s) => s.name)]);
    const unknown = wanted.filter((w) => !known.includes(w));
    if (unknown.length) throw new UnknownEntityError(`Unknown Event Grid topic or subscription '${unknown.join("', '")}'. Known: ${known.join(", ")}`);
    const found: EventGridDeadLetter[] = [];
    for (const name of await this.blobNames()) {
      const blob = await this.load(name);
      if (!blob) continue;
      blob.events.forEach((raw, index) => {
        const entry = this.entry(blob.name, index, raw);
        if (wanted.length > 0 && !wanted.includes(entry.subscription) && !(entry.topic && wanted.includes(entry.topic))) return;
        if (matchesReason(filter, entry.deadLetterReason) && matchesAge(filter, entry.ageMs) && matchesId(filter, entry.id)) found.push(entry);
      });
    }
    found.sort((a, b) => b.ageMs - a.ageMs || a.blobName.localeCompare(b.blobName) || a.index - b.index);
    return filter.limit === undefined ? found : found.slice(0, filter.limit);
  }

  /** The events of one dead-letter blob; undefined when it does not exist. */
  async show(blobName: string): Promise<EventGridDeadLetterDetail[] | undefined> {
    const blob = await this.load(blobName);
    if (!blob) return undefined;
    return blob.events.map((raw, index) => ({
      ...this.entry(blob.name, index, raw),
      event: JSON.parse(redact(JSON.stringify(deliverableEvent(raw)))) as Record<string, unknown>,
    }));
  }

  async replay(filter: DeadLetterFilter, options: { dryRun: boolean }): Promise<EventReplayReport> {
    const selected = await this.list(filter);
    const results: EventReplayResult[] = [];
    let blobsDeleted = 0;
    const byBlob = new Map<string, EventGridDeadLetter[]>();
    for (const s of selected) byBlob.set(s.blobName, [...(byBlob.get(s.blobName) ?? []), s]);

    for (const [blobName, entries] of byBlob) {
      if (options.dryRun) {
        for (const e of entries) {
          const plan = this.plan(e, deliverableEvent({ id: e.id, eventType: e.eventType, subject: e.subject }));
          results.push({ ...baseOf(e), ...(plan.ok ? { outcome: "wouldReplay", via: plan.via } : { outcome: "refused", error: plan.reason }) });
        }
        continue;
      }
      const blob = await this.load(blobName);
      if (!blob) {
        for (const e of entries) results.push({ ...baseOf(e), outcome: "notFound", error: "the dead-letter blob is gone" });
        continue;
      }
      const done = new Set<number>();
      const blobResults: EventReplayResult[] = [];
      for (const e of entries) {
        const raw = blob.events[e.index];
        if (!raw || str(raw["id"]) !== e.id) {
          blobResults.push({ ...baseOf(e), outcome: "notFound", error: "the event is no longer in the blob" });
          continue;
        }
        const result = await this.replayOne(e, deliverableEvent(raw));
        if (result.outcome === "replayed") done.add(e.index);
        blobResults.push(result);
      }
      if (done.size > 0) {
        const remaining = blob.events.filter((_, i) => !done.has(i));
        try {
          const client = this.container.getBlockBlobClient(blob.name);
          const conditions = blob.etag ? { ifMatch: blob.etag } : {};
          if (remaining.length === 0) {
            await client.delete({ conditions });
            blobsDeleted++;
          } else {
            const text = JSON.stringify(remaining);
            await client.upload(text, Buffer.byteLength(text), { conditions, blobHTTPHeaders: { blobContentType: "application/json" } });
          }
        } catch (err) {
          const error = `replayed, but the dead-letter blob could not be updated: ${errorText(err)}`;
          this.logger.warn("dead-letter blob kept", { blobName: blob.name, error });
          for (let i = 0; i < blobResults.length; i++) {
            const r = blobResults[i]!;
            if (r.outcome === "replayed") blobResults[i] = { ...r, outcome: "replayedBlobKept", error };
          }
        }
      }
      results.push(...blobResults);
    }
    const replayed = results.filter((r) => r.outcome === "replayed").length;
    const failed = results.filter((r) => r.outcome !== "replayed" && r.outcome !== "wouldReplay").length;
    return { dryRun: options.dryRun, selected: selected.length, replayed, failed, blobsDeleted, results };
  }

  private plan(entry: EventGridDeadLetter, event: EventGridEvent): { ok: true; via: string } | { ok: false; reason: string } {
    const topic = allEventGridTopics().find((t) => t.name === entry.topic);
    if (!topic) return { ok: false, reason: `subscription ${entry.subscription} is not in the topology` };
    if (topic.source === "custom") {
      const receivers = receivingSubscriptions(topic, event);
      if (!receivers.includes(entry.subscription)) return { ok: false, reason: `re-published to ${topic.name}, the event would not reach ${entry.subscription}` };
      const others = receivers.filter((r) => r !== entry.subscription);
      if (others.length > 0) return { ok: false, reason: `re-published to ${topic.name}, the event would also reach ${others.join(", ")}` };
      if (!this.options.publisher) return { ok: false, reason: "no Event Grid publisher configured (EVENTGRID_ENDPOINT)" };
      return { ok: true, via: `publish:${topic.name}` };
    }
    if (!this.options.redeliverBlobCreated) {
      return { ok: false, reason: `${topic.name} is a system topic (no publishing): ${this.options.noRedeliveryHint ?? "its events need in-process redelivery to the function, not available here"}` };
    }
    return { ok: true, via: `redeliver:${entry.subscription}` };
  }

  private async replayOne(entry: EventGridDeadLetter, event: EventGridEvent): Promise<EventReplayResult> {
    const plan = this.plan(entry, event);
    if (!plan.ok) return { ...baseOf(entry), outcome: "refused", error: plan.reason };
    try {
      if (plan.via.startsWith("publish:")) {
        await this.options.publisher!.send([
          {
            id: event.id,
            eventType: event.eventType,
            subject: event.subject,
            dataVersion: event.dataVersion ?? "",
            eventTime: event.eventTime ? new Date(event.eventTime) : new Date(this.now()),
            data: event.data,
          },
        ]);
      } else {
        await this.options.redeliverBlobCreated!(entry.subscription, event);
      }
    } catch (err) {
      const error = errorText(err);
      this.logger.warn("event replay failed; the dead letter stays", { blobName: entry.blobName, eventId: entry.id, error });
      return { ...baseOf(entry), outcome: "failed", via: plan.via, error };
    }
    this.logger.info("dead-lettered event replayed", { blobName: entry.blobName, eventId: entry.id, via: plan.via });
    return { ...baseOf(entry), outcome: "replayed", via: plan.via };
  }

  private async blobNames(): Promise<string[]> {
    const names: string[] = [];
    try {
      for await (const item of this.container.listBlobsFlat()) if (item.name.toLowerCase().endsWith(".json")) names.push(item.name);
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return [];
      throw err;
    }
    return names.sort();
  }

  private async load(name: string): Promise<LoadedBlob | undefined> {
    let buffer: Buffer;
    let etag: string | undefined;
    try {
      const client = this.container.getBlobClient(name);
      const props = await client.getProperties();
      etag = props.etag;
      buffer = await client.downloadToBuffer(0, undefined, { conditions: etag ? { ifMatch: etag } : {} });
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return undefined;
      throw err;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(buffer.toString("utf8"));
    } catch {
      this.logger.warn("dead-letter blob is not JSON; skipped", { blobName: name });
      return undefined;
    }
    const events = (Array.isArray(parsed) ? parsed : [parsed]).filter((e): e is Record<string, unknown> => typeof e === "object" && e !== null);
    return { name, etag, events };
  }

  private entry(blobName: string, index: number, raw: Record<string, unknown>): EventGridDeadLetter {
    const where = subscriptionOf(blobName);
    const publishTime = str(raw["publishTime"]) || str(raw["eventTime"]);
    const published = Date.parse(publishTime);
    return {
      blobName,
      index,
      subscription: where.subscription,
      ...(where.topic ? { topic: where.topic.name, topicSource: where.topic.source } : {}),
      id: str(raw["id"]),
      eventType: str(raw["eventType"]),
      subject: str(raw["subject"]),
      eventTime: str(raw["eventTime"]),
      deadLetterReason: str(raw["deadLetterReason"]),
      deliveryAttempts: Number(raw["deliveryAttempts"] ?? 0),
      lastDeliveryOutcome: str(raw["lastDeliveryOutcome"]),
      lastHttpStatusCode: Number(raw["lastHttpStatusCode"] ?? 0),
      publishTime,
      lastDeliveryAttemptTime: str(raw["lastDeliveryAttemptTime"]),
      ageMs: Number.isNaN(published) ? 0 : Math.max(0, this.now() - published),
    };
  }
}

function baseOf(e: EventGridDeadLetter): Pick<EventReplayResult, "blobName" | "subscription" | "id" | "eventType" | "reason"> {
  return { blobName: e.blobName, subscription: e.subscription, id: e.id, eventType: e.eventType, reason: e.deadLetterReason };
}

function errorText(err: unknown): string {
  return redact(err instanceof Error ? err.message : String(err));
}
