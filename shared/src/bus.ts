import { ServiceBusClient, type ServiceBusMessage, type ServiceBusSender } from "@azure/service-bus";
import { DefaultAzureCredential, type TokenCredential } from "@azure/identity";
import type { AnalysisWatch, ArtifactCommand, LiveResponseWatch } from "./messages.ts";
import { queues, topics } from "./topology.ts";

/**
 * Everything the functions send over Service Bus. Every message gets a deterministic messageId so
 * that a send repeated after a crash is dropped by duplicate detection instead of being processed
 * twice; polls carry their attempt number in the id.
 */
export class Bus {
  private readonly senders = new Map<string, ServiceBusSender>();

  constructor(private readonly client: ServiceBusClient) {}

  static fromConfig(config: { SERVICEBUS_CONNECTION?: string; SERVICEBUS_NAMESPACE?: string }, credential?: TokenCredential): Bus {
    if (config.SERVICEBUS_CONNECTION) return new Bus(new ServiceBusClient(config.SERVICEBUS_CONNECTION));
    if (!config.SERVICEBUS_NAMESPACE) throw new Error("No Service Bus connection configured");
    return new Bus(new ServiceBusClient(config.SERVICEBUS_NAMESPACE, credential ?? new DefaultAzureCredential()));
  }

  private sender(entity: string): ServiceBusSender {
    let sender = this.senders.get(entity);
    if (!sender) {
      sender = this.client.createSender(entity);
      this.senders.set(entity, sender);
    }
    return sender;
  }

  async sendArtifactCommand(command: ArtifactCommand): Promise<void> {
    await this.sender(topics.artifactCommands.name).sendMessages(artifactMessage(command));
  }

  /** The same command again later: after a busy device, a throttled API or a transient fault. */
  async scheduleArtifactCommand(command: ArtifactCommand, at: Date): Promise<void> {
    await this.sender(topics.artifactCommands.name).scheduleMessages(artifactMessage(command), at);
  }

  async scheduleLiveResponseWatch(watch: LiveResponseWatch, at: Date): Promise<void> {
    const id = `${watch.incident.incidentId}:${watch.artifactId}:lr:${watch.machineActionId}:${watch.attempt}`;
    await this.sender(queues.liveResponseWatch.name).scheduleMessages(
      json(watch, id, watch.incident.incidentId, { incidentId: watch.incident.incidentId, artifactId: watch.artifactId }),
      at,
    );
  }

  async scheduleAnalysisWatch(watch: AnalysisWatch, at: Date): Promise<void> {
    const id = `${watch.incident.incidentId}:${watch.artifactId}:task:${watch.taskId}:${watch.attempt}`;
    await this.sender(queues.analysisWatch.name).scheduleMessages(
      json(watch, id, watch.incident.incidentId, { incidentId: watch.incident.incidentId, artifactId: watch.artifactId }),
      at,
    );
  }

  async close(): Promise<void> {
    await Promise.all([...this.senders.values()].map((s) => s.close()));
    await this.client.close();
  }
}

function artifactMessage(command: ArtifactCommand): ServiceBusMessage {
  const { incident, artifact } = command;
  const suffix = command.attempt ? `:retry:${command.attempt}` : "";
  return json(command, `${incident.incidentId}:${artifact.artifactId}:command${suffix}`, incident.incidentId, {
    kind: artifact.kind,
    incidentId: incident.incidentId,
    artifactId: artifact.artifactId,
  });
}

function json(body: unknown, messageId: string, correlationId: string, applicationProperties: Record<string, string>): ServiceBusMessage {
  return { body, messageId: messageId.slice(0, 128), correlationId, contentType: "application/json", applicationProperties };
}
