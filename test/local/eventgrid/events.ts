/**
 * Event Grid schema helpers for the local Event Grid: resource ids, the validation a custom topic
 * applies to published events, and the `Microsoft.Storage.BlobCreated` event built from an upload
 * (shaped like test/fixtures/microsoft/eventgrid-blobcreated-eventgridschema.json).
 */
import { randomUUID } from "node:crypto";
import type { EventGridEvent } from "@azure/functions";
import { eventTypes } from "@connector/shared/topology";

export type { EventGridEvent };

export interface ResourceScope {
  /** Azure subscription id used in ARM ids. */
  readonly subscriptionId: string;
  readonly resourceGroup: string;
}

export const defaultScope: ResourceScope = {
  subscriptionId: "00000000-0000-0000-0000-000000000000",
  resourceGroup: "local-rg",
};

export function storageAccountResourceId(scope: ResourceScope, account: string): string {
  return `/subscriptions/${scope.subscriptionId}/resourceGroups/${scope.resourceGroup}/providers/Microsoft.Storage/storageAccounts/${account}`;
}

export function customTopicResourceId(scope: ResourceScope, topicName: string): string {
  return `/subscriptions/${scope.subscriptionId}/resourceGroups/${scope.resourceGroup}/providers/Microsoft.EventGrid/topics/${topicName}`;
}

/** ISO 8601 with seven fractional digits, as Event Grid writes `eventTime`. */
export function eventGridTime(date: Date = new Date()): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, ".$10000Z");
}

/** Maximum size of one publish request and of one event (Event Grid schema). */
export const MAX_PUBLISH_BYTES = 1024 * 1024;

export interface PublishValidationError {
  readonly status: 400 | 413;
  readonly code: string;
  readonly message: string;
}

const requiredStringFields = ["id", "subject", "eventType", "eventTime", "dataVersion"] as const;

/**
 * Validates a publish request body for a custom topic in Event Grid schema and completes the
 * events (`topic` = the topic's ARM id, `metadataVersion` = "1"). Returns an error instead of the
 * events when the real service would answer 400/413.
 */
export function validatePublishedEvents(
  body: unknown,
  rawLength: number,
  topicResourceId: string,
): { events: EventGridEvent[] } | { error: PublishValidationError } {
  if (rawLength > MAX_PUBLISH_BYTES) {
    return { error: { status: 413, code: "RequestEntityTooLarge", message: `The request size ${rawLength} exceeds the maximum of ${MAX_PUBLISH_BYTES} bytes.` } };
  }
  if (!Array.isArray(body)) {
    return { error: { status: 400, code: "InputJsonInvalid", message: "The request body must be a JSON array of events in the Event Grid schema." } };
  }
  if (body.length === 0) {
    return { error: { status: 400, code: "InputJsonInvalid", message: "The request body contains no events." } };
  }
  const events: EventGridEvent[] = [];
  for (const [index, raw] of body.entries()) {
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      return { error: { status: 400, code: "InputJsonInvalid", message: `Event at index ${index} is not a JSON object.` } };
    }
    const event = raw as Record<string, unknown>;
    for (const field of requiredStringFields) {
      const value = event[field];
      const mayBeEmpty = field === "dataVersion";
      if (typeof value !== "string" || (!mayBeEmpty && value.length === 0)) {
        return {
          error: { status: 400, code: "InputJsonInvalid", message: `Event at index ${index}: required property '${field}' is missing or not a string.` },
        };
      }
    }
    if (!("data" in event) || event.data === undefined) {
      return { error: { status: 400, code: "InputJsonInvalid", message: `Event at index ${index}: required property 'data' is missing.` } };
    }
    if (Number.isNaN(Date.parse(event.eventTime as string))) {
      return { error: { status: 400, code: "InputJsonInvalid", message: `Event at index ${index}: 'eventTime' is not a valid date-time.` } };
    }
    if (event.topic !== undefined && (typeof event.topic !== "string" || event.topic.toLowerCase() !== topicResourceId.toLowerCase())) {
      return {
        error: { status: 400, code: "InputJsonInvalid", message: `Event at index ${index}: 'topic' must be omitted or equal the topic's resource id.` },
      };
    }
    if (Buffer.byteLength(JSON.stringify(event)) > MAX_PUBLISH_BYTES) {
      return { error: { status: 413, code: "RequestEntityTooLarge", message: `Event at index ${index} exceeds the maximum event size.` } };
    }
    events.push({
      ...(event as unknown as EventGridEvent),
      topic: topicResourceId,
      metadataVersion: "1",
    });
  }
  return { events };
}

let sequence = 0n;
/** A 48-character opaque sequencer, increasing for every event raised by this process. */
export function nextSequencer(): string {
  sequence += 1n;
  return "0".repeat(32) + sequence.toString(16).toUpperCase().padStart(16, "0");
}

export interface BlobCreatedParams {
  readonly scope: ResourceScope;
  readonly account: string;
  readonly container: string;
  /** Decoded blob name. */
  readonly blobName: string;
  readonly api: "PutBlob" | "PutBlockList";
  readonly clientRequestId: string | undefined;
  readonly requestId: string | undefined;
  /** ETag header of the write response (quotes are removed). */
  readonly eTag: string | undefined;
  readonly contentType: string;
  readonly contentLength: number;
  readonly accessTier: string;
  /** The blob URL without any query string. */
  readonly url: string;
  readonly time?: Date;
}

export function buildBlobCreatedEvent(p: BlobCreatedParams): EventGridEvent {
  return {
    topic: storageAccountResourceId(p.scope, p.account),
    subject: `/blobServices/default/containers/${p.container}/blobs/${p.blobName}`,
    eventType: eventTypes.blobCreated,
    id: randomUUID(),
    data: {
      api: p.api,
      clientRequestId: p.clientRequestId ?? "",
      requestId: p.requestId ?? randomUUID(),
      eTag: (p.eTag ?? "").replace(/^"(.*)"$/, "$1"),
      contentType: p.contentType,
      contentLength: p.contentLength,
      blobType: "BlockBlob",
      accessTier: p.accessTier,
      url: p.url,
      sequencer: nextSequencer(),
      storageDiagnostics: { batchId: randomUUID() },
    },
    dataVersion: "",
    metadataVersion: "1",
    eventTime: eventGridTime(p.time),
  };
}
