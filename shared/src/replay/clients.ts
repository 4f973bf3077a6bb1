/**
 * The clients of the replay tools, from the replay settings. The Service Bus client is always
 * needed; the Event Grid side (storage, publisher) lives in ./eventgrid-clients.ts and is loaded
 * only when an Event Grid command runs (these SDKs take a while to load in a CLI).
 */
import { ServiceBusClient } from "@azure/service-bus";
import type { TokenCredential } from "@azure/identity";
import { ConfigError } from "../config.ts";
import type { ReplaySettings } from "./settings.ts";

export function serviceBusClientFrom(settings: ReplaySettings, credential: TokenCredential | undefined): ServiceBusClient {
  if (settings.SERVICEBUS_CONNECTION) return new ServiceBusClient(settings.SERVICEBUS_CONNECTION);
  if (settings.SERVICEBUS_NAMESPACE && credential) return new ServiceBusClient(settings.SERVICEBUS_NAMESPACE, credential);
  throw new ConfigError("Set SERVICEBUS_CONNECTION (connection string) or SERVICEBUS_NAMESPACE (<name>.servicebus.windows.net, Entra ID)");
}
