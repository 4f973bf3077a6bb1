import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ServiceBusClient } from "@azure/service-bus";
import { AzureKeyCredential, EventGridPublisherClient } from "@azure/eventgrid";
import type { EventGridEvent, InvocationContext } from "@azure/functions";
import { createLogger } from "@connector/shared/logger";
import type { FunctionDefinition } from "@connector/shared/function-definition";
import { eventGridTopics, eventTypes, queues, topics } from "@connector/shared/topology";
import { startAzurite, type AzuriteInstance } from "@connector/local/azurite";
import { startLocalEventGrid, type LocalEventGrid } from "@connector/local/eventgrid/index";
import { startFunctionsHost, type FunctionsHost } from "@connector/local/functions-host/index";
import { startServiceBusBroker, type LocalServiceBusBroker } from "@connector/local/servicebus/index";

const quiet = createLogger({ level: "error" });
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const isoPattern = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

async function waitFor<T>(what: string, probe: () => T | undefined | false, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface Call {
  input: unknown;
  context: InvocationContext;
}

let broker: LocalServiceBusBroker;
let azurite: AzuriteInstance;
let eg: LocalEventGrid;
let client: ServiceBusClient;

beforeAll(async () => {
  broker = await startServiceBusBroker({
    logger: quiet,
    queues: [
      { name: queues.incidentIntake.name, maxDeliveryCount: 5, lockDurationSeconds: 30, defaultMessageTtlDays: 14 },
      { name: queues.analysisWatch.name, maxDeliveryCount: 5, lockDurationSeconds: 1 },
      { name: queues.liveResponseWatch.name, maxDeliveryCount: 5, lockDurationSeconds: 1 },
    ],
    topics: [
      {
        name: topics.artifactCommands.name,
        subscriptions: [
          { name: "submit-url", filter: { kind: "url" } },
          { name: "collect-file", filter: { kind: "file" }, maxDeliveryCount: 3 },
        ],
      },
    ],
  });
  azurite = await startAzurite({ logger: quiet });
  eg = await startLocalEventGrid({ azurite, logger: quiet, timeScale: 0.001, jitter: false });
  client = new ServiceBusClient(broker.connectionString);
});

afterAll(async () => {
  await client?.close();
  await eg?.close();
  await azurite?.close();
  await broker?.close();
});

describe("functions host (in-process)", () => {
  let host: FunctionsHost;
  const intakeCalls: Call[] = [];
  const collectCalls: Call[] = [];
  const watchCalls: Call[] = [];
  const enrichCalls: { event: EventGridEvent; context: InvocationContext }[] = [];

  beforeAll(async () => {
    const definitions: FunctionDefinition[] = [
      {
        name: "intake",
        kind: "serviceBus",
        handler: async (input, context) => {
          intakeCalls.push({ input, context });
          if (context.triggerMetadata?.deliveryCount === 1) throw new Error("transient failure");
        },
      },
      {
        name: "collectFile",
        kind: "serviceBus",
        handler: async (input, context) => {
          collectCalls.push({ input, context });
          throw new Error("poison");
        },
      },
      {
        name: "watchAnalysis",
        kind: "serviceBus",
        handler: async (input, context) => {
          watchCalls.push({ input, context });
          await new Promise((r) => setTimeout(r, 2500)); // longer than the 1 s lock
        },
      },
      {
        name: "enrichIncident",
        kind: "eventGrid",
        handler: async (event, context) => {
          enrichCalls.push({ event, context });
          if (enrichCalls.length === 1) throw new Error("first delivery fails");
        },
      },
    ];
    host = await startFunctionsHost({
      functions: definitions,
      serviceBusConnectionString: broker.connectionString,
      eventGrid: eg,
      maxConcurrentCalls: 1,
      logger: quiet,
    });
  });
  afterAll(async () => {
    await host?.close();
  });

  it("calls a Service Bus handler with deliveryCount 1, abandons on a throw, redelivers with 2 and completes", async () => {
    const sender = client.createSender(queues.incidentIntake.name);
    await sender.sendMessages({
      body: { IncidentId: "inc-1", artifacts: [{ Kind: "file" }] },
      messageId: "msg-1",
      contentType: "application/json",
      correlationId: "corr-1",
      subject: "incident",
      timeToLive: 3_600_000,
      applicationProperties: { TenantId: "tenant-1", Attempt: 0 },
    });
    await sender.close();

    await waitFor("two intake invocations", () => intakeCalls.length >= 2);
    await waitFor("completion", () => broker.stats(queues.incidentIntake.name).active === 0);
    expect(intakeCalls).toHaveLength(2);

    const [first, second] = intakeCalls as [Call, Call];
    // The handler's input is the parsed body, keys untouched.
    expect(first.input).toEqual({ IncidentId: "inc-1", artifacts: [{ Kind: "file" }] });
    expect(first.context.functionName).toBe("intake");
    expect(first.context.invocationId).toMatch(uuidPattern);
    expect(second.context.invocationId).not.toBe(first.context.invocationId);

    const m1 = first.context.triggerMetadata!;
    const m2 = second.context.triggerMetadata!;
    expect(m1.deliveryCount).toBe(1);
    expect(m2.deliveryCount).toBe(2);
    expect(m1.messageId).toBe("msg-1");
    expect(m1.correlationId).toBe("corr-1");
    expect(m1.contentType).toBe("application/json");
    expect(m1.subject).toBe("incident");
    expect(typeof m1.sequenceNumber).toBe("number");
    expect(m2.sequenceNumber).toBe(m1.sequenceNumber);
    expect(m1.enqueuedTimeUtc).toMatch(isoPattern);
    expect(m1.expiresAtUtc).toMatch(isoPattern);
    expect(Date.parse(String(m1.expiresAtUtc)) - Date.parse(String(m1.enqueuedTimeUtc))).toBe(3_600_000);
    expect(m1.lockToken).toMatch(uuidPattern);
    // Camel-cased recursively, application properties included.
    expect(m1.applicationProperties).toEqual({ tenantId: "tenant-1", attempt: 0 });
    expect(m1.userProperties).toEqual({ tenantId: "tenant-1", attempt: 0 });
    expect(Object.keys(m1)).not.toContain("DeliveryCount");
    // The body's own fields merged in at the top level, camel-cased too.
    expect(m1.incidentId).toBe("inc-1");
    expect(m1.artifacts).toEqual([{ kind: "file" }]);

    expect(broker.stats(queues.incidentIntake.name)).toMatchObject({ active: 0, deadLetter: 0 });
    // The host records an invocation after its settlement resolves, so the broker can see the
    // completion a moment before the record exists.
    const intakeRecords = () => host.invocations().filter((r) => r.functionName === "intake");
    await waitFor("two intake records", () => intakeRecords().length >= 2);
    const records = intakeRecords();
    expect(records.map((r) => [r.outcome, r.deliveryCount])).toEqual([
      ["failed", 1],
      ["succeeded", 2],
    ]);
  });

  it("lets the broker dead-letter a poison message after maxDeliveryCount abandons", async () => {
    const sender = client.createSender(topics.artifactCommands.name);
    await sender.sendMessages({ body: { artifactId: "a-1" }, messageId: "cmd-1", applicationProperties: { kind: "file" } });
    await sender.close();
    const dlqPath = `${topics.artifactCommands.name}/Subscriptions/collect-file`;
    await waitFor("dead-letter", () => broker.deadLetters(dlqPath).length === 1);
    expect(collectCalls.map((c) => c.context.triggerMetadata?.deliveryCount)).toEqual([1, 2, 3]);
    expect(collectCalls.every((c) => (c.input as { artifactId: string }).artifactId === "a-1")).toBe(true);
    const [dead] = broker.deadLetters(dlqPath);
    expect(dead?.messageId).toBe("cmd-1");
    expect(dead?.deadLetterReason).toBe("MaxDeliveryCountExceeded");
  });

  it("renews the lock while a handler outlives it, so the message is completed once", async () => {
    const sender = client.createSender(queues.analysisWatch.name);
    await sender.sendMessages({ body: "plain text body", messageId: "watch-1" });
    await sender.close();
    await waitFor("watch invocation", () => host.invocations().find((r) => r.functionName === "watchAnalysis"), 10_000);
    await waitFor("completion", () => broker.stats(queues.analysisWatch.name).active === 0, 10_000);
    expect(watchCalls).toHaveLength(1);
    expect(watchCalls[0]!.input).toBe("plain text body");
    expect(watchCalls[0]!.context.triggerMetadata?.deliveryCount).toBe(1);
    expect(broker.stats(queues.analysisWatch.name)).toMatchObject({ active: 0, deadLetter: 0 });
  });

  it("invokes an Event Grid handler per event; a throw fails the delivery and Event Grid retries", async () => {
    const publisher = new EventGridPublisherClient(
      eg.topicEndpoint(eventGridTopics.analysis.name),
      "EventGrid",
      new AzureKeyCredential(eg.key),
      { allowInsecureConnection: true },
    );
    await publisher.send([
      {
        id: "evt-1",
        subject: "anyrun/tasks/t-1",
        eventType: eventTypes.analysisCompleted,
        dataVersion: "1.0",
        data: { TaskId: "t-1", verdict: "malicious" },
      },
    ]);
    await eg.idle();
    expect(enrichCalls).toHaveLength(2);
    const { event, context } = enrichCalls[1]!;
    expect(event).toMatchObject({
      id: "evt-1",
      subject: "anyrun/tasks/t-1",
      eventType: eventTypes.analysisCompleted,
      dataVersion: "1.0",
      metadataVersion: "1",
      data: { TaskId: "t-1", verdict: "malicious" },
    });
    expect(event.topic).toMatch(/\/providers\/Microsoft\.EventGrid\/topics\/analysis-events$/);
    expect(context.functionName).toBe("enrichIncident");
    expect(context.triggerMetadata?.id).toBe("evt-1");
    expect(eg.deliveries().filter((d) => d.eventId === "evt-1").map((d) => [d.outcome, d.httpStatus])).toEqual([
      ["GenericError", 500],
      ["Delivered", 200],
    ]);
  });
});

describe("functions host (child process)", () => {
  let dir: string;
  let resultFile: string;
  let definitionsFile: string;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "functions-host-"));
    resultFile = path.join(dir, "results.jsonl");
    definitionsFile = path.join(dir, "definitions.mjs");
    await writeFile(
      definitionsFile,
      `import { appendFileSync } from "node:fs";
const out = process.env.RESULT_FILE;
const note = (entry) => appendFileSync(out, JSON.stringify({ pid: process.pid, ...entry }) + "\\n");
export const allFunctions = [
  { name: "watchLiveResponse", kind: "serviceBus", handler: async (input, context) => {
      note({ fn: context.functionName, input, deliveryCount: context.triggerMetadata.deliveryCount, phase: "start" });
      if (input.slow) await new Promise((r) => setTimeout(r, 3000));
      note({ fn: context.functionName, input, deliveryCount: context.triggerMetadata.deliveryCount, phase: "done" });
  } },
  { name: "enrichIncident", kind: "eventGrid", handler: async (event, context) => {
      note({ fn: context.functionName, eventId: event.id, phase: "done" });
  } },
];
`,
    );
  });
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  });

  async function results(): Promise<Record<string, unknown>[]> {
    const text = await readFile(resultFile, "utf8").catch(() => "");
    return text
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  function startChild(): Promise<{ child: ChildProcess; ready: Record<string, unknown>; output: () => string }> {
    const child = spawn(process.execPath, ["--import", "tsx", "test/local/functions-host/main.ts"], {
      cwd: repoRoot,
      stdio: ["ignore", "pipe", "pipe", "ipc"],
      env: {
        ...process.env,
        SERVICEBUS_CONNECTION: broker.connectionString,
        LOCAL_EVENTGRID_URL: eg.url,
        LOCAL_EVENTGRID_KEY: eg.key,
        FUNCTIONS_HOST_DEFINITIONS_MODULE: definitionsFile,
        FUNCTIONS_HOST_MAX_CONCURRENT_CALLS: "1",
        RESULT_FILE: resultFile,
        LOG_LEVEL: "info",
      },
    });
    children.push(child);
    let output = "";
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`child not ready: ${output}`)), 20_000);
      child.stdout!.on("data", (chunk: Buffer) => {
        output += chunk.toString();
        for (const line of output.split("\n")) {
          if (!line.includes('"functions host ready"')) continue;
          clearTimeout(timer);
          resolve({ child, ready: JSON.parse(line) as Record<string, unknown>, output: () => output });
        }
      });
      child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
      child.once("exit", (code) => reject(new Error(`child exited ${code}: ${output}`)));
    });
  }

  function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
    return new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  }

  it("runs as a separate process, survives SIGKILL + restart (redelivery, Event Grid retry) and exits on SIGTERM", async () => {
    const first = await startChild();
    expect(first.ready).toMatchObject({ message: "functions host ready", functions: ["watchLiveResponse", "enrichIncident"] });
    expect(String(first.ready.webhookUrl)).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);

    // Event Grid → webhook of the child.
    const publisher = new EventGridPublisherClient(
      eg.topicEndpoint(eventGridTopics.analysis.name),
      "EventGrid",
      new AzureKeyCredential(eg.key),
      { allowInsecureConnection: true },
    );
    const analysisEvent = (id: string) => ({
      id,
      subject: `anyrun/tasks/${id}`,
      eventType: eventTypes.analysisCompleted,
      dataVersion: "1.0",
      data: { taskId: id },
    });
    await publisher.send([analysisEvent("child-evt-1")]);
    await eg.idle();
    expect((await results()).filter((r) => r.eventId === "child-evt-1")).toEqual([
      { pid: first.child.pid, fn: "enrichIncident", eventId: "child-evt-1", phase: "done" },
    ]);

    // A handler is running when the host is killed: the message comes back after the 1 s lock.
    const sender = client.createSender(queues.liveResponseWatch.name);
    await sender.sendMessages({ body: { slow: true, id: "lr-1" }, messageId: "lr-1" });
    const startedSlow = async () => (await results()).some((r) => (r.input as { id?: string } | undefined)?.id === "lr-1");
    const deadline = Date.now() + 10_000;
    while (!(await startedSlow())) {
      if (Date.now() > deadline) throw new Error("slow handler never started");
      await new Promise((r) => setTimeout(r, 20));
    }
    first.child.kill("SIGKILL");
    expect((await exited(first.child)).signal).toBe("SIGKILL");

    // While the host is down, an event cannot be delivered: Event Grid keeps retrying.
    await publisher.send([analysisEvent("child-evt-2")]);

    const second = await startChild();
    expect(second.child.pid).not.toBe(first.child.pid);
    await sender.sendMessages({ body: { slow: false, id: "lr-2" }, messageId: "lr-2" });
    await sender.close();

    const idOf = (r: Record<string, unknown>) => (r.input as { id?: string } | undefined)?.id;
    const finished = async () => {
      const r = await results();
      return (
        r.some((x) => x.pid === second.child.pid && idOf(x) === "lr-1" && x.phase === "done") &&
        r.some((x) => x.pid === second.child.pid && idOf(x) === "lr-2" && x.phase === "done") &&
        r.some((x) => x.eventId === "child-evt-2")
      );
    };
    const deadline2 = Date.now() + 20_000;
    while (!(await finished())) {
      if (Date.now() > deadline2) throw new Error(`restarted host did not catch up: ${JSON.stringify(await results())}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await eg.idle();
    const all = await results();
    // The message whose handler was killed comes back to the new host (after its 1 s lock) with deliveryCount 2.
    expect(all.filter((r) => idOf(r) === "lr-1").map((r) => [r.pid, r.deliveryCount, r.phase])).toEqual([
      [first.child.pid, 1, "start"],
      [second.child.pid, 2, "start"],
      [second.child.pid, 2, "done"],
    ]);
    expect(all.filter((r) => idOf(r) === "lr-2").map((r) => [r.pid, r.deliveryCount, r.phase])).toEqual([
      [second.child.pid, 1, "start"],
      [second.child.pid, 1, "done"],
    ]);
    // The event published while the host was down was retried until the restarted host took it.
    expect(all.filter((r) => r.eventId === "child-evt-2")).toEqual([
      { pid: second.child.pid, fn: "enrichIncident", eventId: "child-evt-2", phase: "done" },
    ]);
    const evt2 = eg.deliveries().filter((d) => d.eventId === "child-evt-2");
    expect(evt2.length).toBeGreaterThanOrEqual(2);
    expect(evt2.slice(0, -1).every((d) => d.outcome !== "Delivered")).toBe(true);
    expect(evt2.at(-1)?.outcome).toBe("Delivered");
    await waitFor("queue drained", () => broker.stats(queues.liveResponseWatch.name).active === 0);

    // Graceful stop: SIGTERM closes the receivers and exits 0.
    second.child.kill("SIGTERM");
    expect(await exited(second.child)).toEqual({ code: 0, signal: null });
    expect(second.output()).toContain('"functions host stopping"');
  }, 60_000);
});
