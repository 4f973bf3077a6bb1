import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ServiceBusClient } from "@azure/service-bus";
import { queues } from "@connector/shared/topology";
import { startLocalRuntime, type LocalRuntime } from "@connector/local/runtime";
import { sampleIncidents } from "@connector/local/samples";

/**
 * A setting the functions refuse stops the functions host when it loads them, with the setting's
 * name, and the incidents already queued wait there: none is dead-lettered for a configuration fault.
 */

let runtime: LocalRuntime;

beforeAll(async () => {
  runtime = await startLocalRuntime({ env: { MAX_ARTIFACTS_PER_INCIDENT: "500" } });
}, 60_000);

afterAll(async () => {
  await runtime?.close();
});

describe("an invalid setting", () => {
  it("stops the host at start-up with the setting's name, and leaves queued incidents where they are", async () => {
    const [sample] = sampleIncidents();
    await runtime.pushIncident(sample!.body, "bad-config-incident");
    await expect(runtime.startHost()).rejects.toThrow(/Invalid connector configuration: MAX_ARTIFACTS_PER_INCIDENT: Too big/);

    const client = new ServiceBusClient(runtime.broker.connectionString);
    try {
      const waiting = await client.createReceiver(queues.incidentIntake.name).peekMessages(10);
      const deadLettered = await client.createReceiver(queues.incidentIntake.name, { subQueueType: "deadLetter" }).peekMessages(10);
      expect(waiting.map((m) => m.messageId)).toEqual(["bad-config-incident"]);
      expect(deadLettered).toEqual([]);
    } finally {
      await client.close();
    }
  }, 90_000);
});
