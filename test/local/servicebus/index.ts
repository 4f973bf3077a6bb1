/** Local Service Bus broker for tests and manual runs: see broker.ts. */
export { startServiceBusBroker } from "./broker.ts";
export type {
  EntityStats,
  InspectedMessage,
  LocalServiceBusBroker,
  MessageListKind,
  QueueSpec,
  ServiceBusBrokerOptions,
  SubscriptionFilter,
  SubscriptionSpec,
  TopicSpec,
} from "./types.ts";
