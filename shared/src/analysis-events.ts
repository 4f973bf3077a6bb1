import { AzureKeyCredential, EventGridPublisherClient } from "@azure/eventgrid";
import { DefaultAzureCredential, type TokenCredential } from "@azure/identity";
import type { AnalysisCompleted } from "./messages.ts";
import { eventTypes } from "./topology.ts";

/** Publishes "analysis completed" events to the custom Event Grid topic (Event Grid schema). */
export class AnalysisEvents {
  constructor(private readonly client: EventGridPublisherClient<"EventGrid">) {}

  static fromConfig(config: { EVENTGRID_ENDPOINT: string; EVENTGRID_KEY?: string }, credential?: TokenCredential): AnalysisEvents {
    const insecure = config.EVENTGRID_ENDPOINT.startsWith("http://");
    const auth = config.EVENTGRID_KEY ? new AzureKeyCredential(config.EVENTGRID_KEY) : (credential ?? new DefaultAzureCredential());
    return new AnalysisEvents(
      new EventGridPublisherClient(config.EVENTGRID_ENDPOINT, "EventGrid", auth, { allowInsecureConnection: insecure }),
    );
  }

  /** The event id is deterministic per task and outcome, so a repeated publish is recognisable downstream. */
  async publishCompleted(data: AnalysisCompleted): Promise<void> {
    await this.client.send([
      {
        id: `${data.incident.incidentId}:${data.artifactId}:${data.taskId}:${data.outcome}`,
        eventType: eventTypes.analysisCompleted,
        subject: `/incidents/${data.incident.incidentId}/artifacts/${data.artifactId}`,
        dataVersion: "1.0",
        eventTime: new Date(),
        data,
      },
    ]);
  }
}
