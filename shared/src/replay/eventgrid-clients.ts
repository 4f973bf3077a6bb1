import { BlobServiceClient, type ContainerClient } from "@azure/storage-blob";
import { AzureKeyCredential, EventGridPublisherClient } from "@azure/eventgrid";
import type { TokenCredential } from "@azure/identity";
import { ConfigError } from "../config.ts";
import { storageDefaults } from "../topology.ts";
import type { ReplaySettings } from "./settings.ts";

/** The container Event Grid dead-letters into (the Pulumi program points every subscription at it). */
export function deadLetterContainerFrom(
  settings: ReplaySettings,
  credential: TokenCredential | undefined,
  container: string = storageDefaults.eventGridDeadLetterContainer,
): ContainerClient {
  if (settings.STORAGE_CONNECTION) return BlobServiceClient.fromConnectionString(settings.STORAGE_CONNECTION).getContainerClient(container);
  if (settings.STORAGE_BLOB_URL && credential) return new BlobServiceClient(settings.STORAGE_BLOB_URL, credential).getContainerClient(container);
  throw new ConfigError("Set STORAGE_CONNECTION or STORAGE_BLOB_URL (the account Event Grid dead-letters into)");
}

/** Publisher of the custom topic (analysis-events); undefined when EVENTGRID_ENDPOINT is not set. */
export function eventGridPublisherFrom(settings: ReplaySettings, credential: TokenCredential | undefined): EventGridPublisherClient<"EventGrid"> | undefined {
  if (!settings.EVENTGRID_ENDPOINT) return undefined;
  const auth = settings.EVENTGRID_KEY ? new AzureKeyCredential(settings.EVENTGRID_KEY) : credential;
  if (!auth) throw new ConfigError("Set EVENTGRID_KEY, or use an Entra ID credential, to publish to EVENTGRID_ENDPOINT");
  return new EventGridPublisherClient(settings.EVENTGRID_ENDPOINT, "EventGrid", auth, {
    allowInsecureConnection: settings.EVENTGRID_ENDPOINT.startsWith("http://"),
  });
}
