import { randomUUID } from "node:crypto";
import type { BlobServiceClient } from "@azure/storage-blob";
import type { EventGridEvent } from "@azure/functions";
import { storageDefaults } from "./topology.ts";

/**
 * Dead-letters an Event Grid event that can never be processed, at once and with its reason.
 *
 * A function behind an Event Grid subscription cannot answer 400: a throw is a 500, which Event
 * Grid retries for up to 24 hours before dead-lettering with a generic reason. So the function
 * writes the event itself, in Event Grid's own dead-letter format and place
 * (`<SUBSCRIPTION-UPPER>/YYYY/M/D/H/<guid>.json`, an array with `deadLetterReason` and the delivery
 * fields), where `npm run replay -- eventgrid …` finds and replays it like any other.
 */
export class EventGridDeadLetterWriter {
  constructor(
    private readonly service: BlobServiceClient,
    private readonly containerName: string = storageDefaults.eventGridDeadLetterContainer,
  ) {}

  async write(subscription: string, event: EventGridEvent, reason: string, description: string, deliveryAttempts: number, now = new Date()): Promise<string> {
    const blobName = `${subscription.toUpperCase()}/${now.getUTCFullYear()}/${now.getUTCMonth() + 1}/${now.getUTCDate()}/${now.getUTCHours()}/${randomUUID()}.json`;
    const entry = {
      ...event,
      deadLetterReason: reason,
      deliveryAttempts,
      lastDeliveryOutcome: description.slice(0, 1024),
      lastHttpStatusCode: 400,
      publishTime: event.eventTime,
      lastDeliveryAttemptTime: now.toISOString(),
    };
    const container = this.service.getContainerClient(this.containerName);
    await container.createIfNotExists();
    const body = JSON.stringify([entry]);
    await container.getBlockBlobClient(blobName).upload(body, Buffer.byteLength(body), { blobHTTPHeaders: { blobContentType: "application/json" } });
    return blobName;
  }
}
