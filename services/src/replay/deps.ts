import { createLogger, type Logger } from "@connector/shared/logger";
import type { TokenCredential } from "@azure/identity";
import type { BlobCreatedRedelivery, EventGridDeadLetters } from "@connector/shared/replay/eventgrid";
import { ServiceBusDeadLetters } from "@connector/shared/replay/servicebus";
import { serviceBusClientFrom } from "@connector/shared/replay/clients";
import { needsCredential, type ReplaySettings } from "@connector/shared/replay/settings";

export interface ReplayCore {
  readonly serviceBus: ServiceBusDeadLetters;
  /** Built on first use (loads the storage and Event Grid SDKs). */
  eventGrid(): Promise<EventGridDeadLetters>;
  close(): Promise<void>;
}

/**
 * The replay core from the replay settings: one Service Bus client, and on demand the dead-letter
 * container and the publisher of the custom topic. An Entra ID credential (managed identity in
 * Azure, `az login` on a workstation) is created only when a connection has no string or key.
 */
export async function buildReplayCore(
  settings: ReplaySettings,
  options: { logger?: Logger; redeliverBlobCreated?: BlobCreatedRedelivery; noRedeliveryHint?: string } = {},
): Promise<ReplayCore> {
  const logger = options.logger ?? createLogger({ service: "replay", level: settings.LOG_LEVEL });
  const credential: TokenCredential | undefined = needsCredential(settings)
    ? (await import("@connector/shared/credentials")).createCredential(settings)
    : undefined;
  const client = serviceBusClientFrom(settings, credential);
  let eventGrid: Promise<EventGridDeadLetters> | undefined;
  const buildEventGrid = async () => {
    const [{ EventGridDeadLetters }, clients] = await Promise.all([import("@connector/shared/replay/eventgrid"), import("@connector/shared/replay/eventgrid-clients")]);
    const publisher = clients.eventGridPublisherFrom(settings, credential);
    return new EventGridDeadLetters(clients.deadLetterContainerFrom(settings, credential), {
      ...(publisher ? { publisher } : {}),
      ...(options.redeliverBlobCreated ? { redeliverBlobCreated: options.redeliverBlobCreated } : {}),
      ...(options.noRedeliveryHint ? { noRedeliveryHint: options.noRedeliveryHint } : {}),
      logger,
    });
  };
  return {
    serviceBus: new ServiceBusDeadLetters(client, { logger }),
    eventGrid: () =>
      (eventGrid ??= buildEventGrid().catch((err: unknown) => {
        eventGrid = undefined;
        throw err;
      })),
    close: () => client.close(),
  };
}
