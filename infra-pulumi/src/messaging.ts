import * as azure from "@pulumi/azure-native";
import * as pulumi from "@pulumi/pulumi";
import { isoDays, isoMinutes, isoSeconds } from "./naming.ts";
import { allQueues, allTopics } from "./topology.ts";

export interface MessagingArgs {
  readonly resourceGroupName: pulumi.Input<string>;
  readonly namespaceName: string;
  readonly tags: Record<string, string>;
}

/**
 * The Service Bus namespace and every queue, topic, subscription and filter of the topology.
 * Standard tier (topics and duplicate detection need it); SAS keys disabled, Entra ID only.
 */
export class ConnectorMessaging extends pulumi.ComponentResource {
  readonly namespace: azure.servicebus.Namespace;
  /** FQDN for `ServiceBusConnection__fullyQualifiedNamespace` and SERVICEBUS_NAMESPACE. */
  readonly fullyQualifiedNamespace: string;
  readonly queues = new Map<string, azure.servicebus.Queue>();
  readonly topics = new Map<string, azure.servicebus.Topic>();
  /** Keyed `<topic>/<subscription>`. */
  readonly subscriptions = new Map<string, azure.servicebus.Subscription>();
  readonly rules = new Map<string, azure.servicebus.DefaultRule>();

  constructor(name: string, args: MessagingArgs, opts?: pulumi.ComponentResourceOptions) {
    super("anyrun:connector:Messaging", name, {}, opts);
    const parent = { parent: this };

    this.namespace = new azure.servicebus.Namespace(
      "servicebus",
      {
        resourceGroupName: args.resourceGroupName,
        namespaceName: args.namespaceName,
        sku: { name: "Standard", tier: "Standard" },
        disableLocalAuth: true,
        minimumTlsVersion: "1.2",
        publicNetworkAccess: "Enabled",
        tags: args.tags,
      },
      parent,
    );
    this.fullyQualifiedNamespace = `${args.namespaceName}.servicebus.windows.net`;
    const ns = { resourceGroupName: args.resourceGroupName, namespaceName: this.namespace.name };

    for (const queue of allQueues()) {
      this.queues.set(
        queue.name,
        new azure.servicebus.Queue(
          `queue-${queue.name}`,
          {
            ...ns,
            queueName: queue.name,
            maxDeliveryCount: queue.maxDeliveryCount,
            lockDuration: isoSeconds(queue.lockDurationSeconds),
            requiresDuplicateDetection: true,
            duplicateDetectionHistoryTimeWindow: isoMinutes(queue.duplicateDetectionWindowMinutes),
            deadLetteringOnMessageExpiration: queue.deadLetterOnExpiration,
            defaultMessageTimeToLive: isoDays(queue.defaultMessageTtlDays),
            requiresSession: false,
            enablePartitioning: false,
            enableBatchedOperations: true,
          },
          parent,
        ),
      );
    }

    for (const topic of allTopics()) {
      const topicResource = new azure.servicebus.Topic(
        `topic-${topic.name}`,
        {
          ...ns,
          topicName: topic.name,
          requiresDuplicateDetection: true,
          duplicateDetectionHistoryTimeWindow: isoMinutes(topic.duplicateDetectionWindowMinutes),
          defaultMessageTimeToLive: isoDays(topic.defaultMessageTtlDays),
          enablePartitioning: false,
          enableBatchedOperations: true,
        },
        parent,
      );
      this.topics.set(topic.name, topicResource);

      for (const sub of topic.subscriptions) {
        const key = `${topic.name}/${sub.name}`;
        const subscription = new azure.servicebus.Subscription(
          `subscription-${topic.name}-${sub.name}`,
          {
            ...ns,
            topicName: topicResource.name,
            subscriptionName: sub.name,
            maxDeliveryCount: sub.maxDeliveryCount,
            lockDuration: isoSeconds(sub.lockDurationSeconds),
            deadLetteringOnMessageExpiration: sub.deadLetterOnExpiration,
            deadLetteringOnFilterEvaluationExceptions: sub.deadLetterOnFilterEvaluationExceptions,
            defaultMessageTimeToLive: isoDays(topic.defaultMessageTtlDays),
            requiresSession: false,
            enableBatchedOperations: true,
          },
          parent,
        );
        this.subscriptions.set(key, subscription);
        // Azure creates every subscription with a `$Default` rule (1=1) that lets everything
        // through; whether adding another rule removes it is reported both ways. So the `$Default`
        // rule itself is given the correlation filter: exactly one rule, the declared one.
        this.rules.set(
          key,
          new azure.servicebus.DefaultRule(
            `rule-${topic.name}-${sub.name}`,
            {
              ...ns,
              topicName: topicResource.name,
              subscriptionName: subscription.name,
              filterType: "CorrelationFilter",
              correlationFilter: { properties: { ...sub.filter } },
            },
            parent,
          ),
        );
      }
    }

    this.registerOutputs({ namespace: this.namespace.name });
  }
}
