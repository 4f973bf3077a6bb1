import * as azure from "@pulumi/azure-native";
import * as pulumi from "@pulumi/pulumi";
import { assignRole } from "./roles.ts";
import type { ConnectorStorage } from "./storage.ts";
import {
  allEventGridTopics,
  functionTriggers,
  storageDefaults,
  subjectPrefixFor,
  type EventGridSubscriptionDeclaration,
  type EventGridTopicDeclaration,
} from "./topology.ts";

export interface EventGridTopicsArgs {
  readonly resourceGroupName: pulumi.Input<string>;
  readonly location: string;
  readonly subscriptionId: string;
  readonly customTopicName: (topologyName: string) => string;
  readonly storage: ConnectorStorage;
  readonly tags: Record<string, string>;
}

export interface EventGridSubscriptionsArgs {
  readonly resourceGroupName: pulumi.Input<string>;
  readonly storage: ConnectorStorage;
  readonly topics: ConnectorEventGridTopics;
  readonly functionAppId: pulumi.Input<string>;
  /** Resources the event subscriptions must wait for (package upload, host storage role). */
  readonly functionsReady: pulumi.Input<pulumi.Resource>[];
}

/** Which function of the topology receives an Event Grid subscription. */
export function functionForEventSubscription(topic: string, subscription: string): string {
  const match = Object.entries(functionTriggers).find(
    ([, t]) => t.type === "eventGrid" && t.topic === topic && t.subscription === subscription,
  );
  if (!match) throw new Error(`No function of the topology listens to Event Grid ${topic}/${subscription}`);
  return match[0];
}

type AnyTopic = azure.eventgrid.SystemTopic | azure.eventgrid.Topic;

/**
 * Event Grid topics: the storage system topic of the staging account and the custom "analysis
 * completed" topic our code publishes to. Each topic's own identity may write dead-lettered
 * events into the staging account's dead-letter container (and nothing else).
 */
export class ConnectorEventGridTopics extends pulumi.ComponentResource {
  readonly topics = new Map<string, AnyTopic>();
  readonly deadLetterRoles = new Map<string, pulumi.Resource>();
  /** The custom topic our code publishes to (EVENTGRID_ENDPOINT). */
  readonly analysisTopic: azure.eventgrid.Topic;

  constructor(name: string, args: EventGridTopicsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("anyrun:connector:EventGridTopics", name, {}, opts);
    let analysisTopic: azure.eventgrid.Topic | undefined;
    const deadLetterContainerId = args.storage.deadLetterContainer.id; // the resource, so its grant waits for it
    for (const declared of allEventGridTopics()) {
      let topic: AnyTopic;
      if (declared.source === "storage") {
        topic = new azure.eventgrid.SystemTopic(
          `systemtopic-${declared.name}`,
          {
            resourceGroupName: args.resourceGroupName,
            systemTopicName: declared.name,
            location: args.location,
            source: args.storage.stagingAccount.id,
            topicType: "Microsoft.Storage.StorageAccounts",
            identity: { type: "SystemAssigned" },
            tags: args.tags,
          },
          { parent: this },
        );
      } else {
        topic = new azure.eventgrid.Topic(
          `topic-${declared.name}`,
          {
            resourceGroupName: args.resourceGroupName,
            topicName: args.customTopicName(declared.name),
            location: args.location,
            inputSchema: "EventGridSchema",
            disableLocalAuth: true,
            minimumTlsVersionAllowed: "1.2",
            publicNetworkAccess: "Enabled",
            identity: { type: "SystemAssigned" },
            tags: args.tags,
          },
          { parent: this },
        );
        analysisTopic = topic;
      }
      this.topics.set(declared.name, topic);
      this.deadLetterRoles.set(
        declared.name,
        assignRole(
          `deadletter-writer-${declared.name}`,
          args.subscriptionId,
          {
            principalId: topic.identity.apply((i) => i?.principalId ?? ""),
            principalType: "ServicePrincipal",
            role: "storageBlobDataContributor",
            scope: deadLetterContainerId,
            description: `Event Grid topic ${declared.name}: write dead-lettered events`,
          },
          { parent: this },
        ),
      );
    }
    if (!analysisTopic) throw new Error("The topology declares no custom Event Grid topic for analysis events");
    this.analysisTopic = analysisTopic;
    this.registerOutputs({});
  }
}

/**
 * Event Grid subscriptions of the topology, each delivering to its function (one event per
 * delivery) with the declared retry policy and dead-lettering with the topic's identity.
 */
export class ConnectorEventGridSubscriptions extends pulumi.ComponentResource {
  readonly subscriptions = new Map<string, azure.eventgrid.SystemTopicEventSubscription | azure.eventgrid.EventSubscription>();

  constructor(name: string, args: EventGridSubscriptionsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("anyrun:connector:EventGridSubscriptions", name, {}, opts);
    for (const declared of allEventGridTopics()) {
      const topic = args.topics.topics.get(declared.name);
      const deadLetterRole = args.topics.deadLetterRoles.get(declared.name);
      if (!topic || !deadLetterRole) throw new Error(`Event Grid topic ${declared.name} was not created`);
      for (const sub of declared.subscriptions) {
        this.subscriptions.set(`${declared.name}/${sub.name}`, this.subscribe(declared, sub, topic, args, deadLetterRole));
      }
    }
    this.registerOutputs({});
  }

  private subscribe(
    declared: EventGridTopicDeclaration,
    sub: EventGridSubscriptionDeclaration,
    topic: AnyTopic,
    args: EventGridSubscriptionsArgs,
    deadLetterRole: pulumi.Resource,
  ) {
    const functionName = functionForEventSubscription(declared.name, sub.name);
    const subjectBeginsWith = subjectPrefixFor(sub, storageDefaults.stagingContainer);
    const common = {
      eventSubscriptionName: sub.name,
      destination: {
        endpointType: "AzureFunction" as const,
        resourceId: pulumi.interpolate`${args.functionAppId}/functions/${functionName}`,
        maxEventsPerBatch: 1,
        preferredBatchSizeInKilobytes: 64,
      },
      eventDeliverySchema: "EventGridSchema",
      filter: {
        includedEventTypes: [...sub.includedEventTypes],
        ...(subjectBeginsWith ? { subjectBeginsWith } : {}),
        ...(sub.dataApiIn
          ? { advancedFilters: [{ operatorType: "StringIn" as const, key: "data.api", values: [...sub.dataApiIn] }] }
          : {}),
      },
      retryPolicy: {
        maxDeliveryAttempts: sub.maxDeliveryAttempts,
        eventTimeToLiveInMinutes: sub.eventTimeToLiveMinutes,
      },
      deadLetterWithResourceIdentity: {
        identity: { type: "SystemAssigned" },
        deadLetterDestination: {
          endpointType: "StorageBlob" as const,
          resourceId: args.storage.stagingAccount.id,
          blobContainerName: storageDefaults.eventGridDeadLetterContainer,
        },
      },
    };
    const opts = { parent: this, dependsOn: [deadLetterRole, ...args.functionsReady] };
    if (declared.source === "storage") {
      return new azure.eventgrid.SystemTopicEventSubscription(
        `eventsub-${declared.name}-${sub.name}`,
        { ...common, resourceGroupName: args.resourceGroupName, systemTopicName: topic.name },
        opts,
      );
    }
    return new azure.eventgrid.EventSubscription(
      `eventsub-${declared.name}-${sub.name}`,
      { ...common, scope: topic.id },
      opts,
    );
  }
}
