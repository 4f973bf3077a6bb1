/**
 * The local Service Bus broker under less friendly conditions: several brokers and connections,
 * clients that vanish without closing, unknown entities, oversized messages, shutdown with
 * clients still connected, and the CLI.
 */
import { spawn } from "node:child_process";
import type { Socket } from "node:net";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import rhea from "rhea";
import type { Connection } from "rhea";
import { ServiceBusClient, type ServiceBusReceivedMessage } from "@azure/service-bus";
import { createLogger, type LogLevel } from "@connector/shared/logger";
import { allQueues, allTopics } from "@connector/shared/topology";
import { startServiceBusBroker, type LocalServiceBusBroker, type ServiceBusBrokerOptions } from "@connector/local/servicebus/index";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function brokerWith(options: ServiceBusBrokerOptions = {}): Promise<LocalServiceBusBroker> {
  const broker = await startServiceBusBroker({ logger: createLogger({ level: "warn" }), ...options });
  cleanups.push(() => broker.close());
  return broker;
}

function clientFor(broker: LocalServiceBusBroker, timeoutInMs = 5000): ServiceBusClient {
  const client = new ServiceBusClient(broker.connectionString, { retryOptions: { maxRetries: 0, timeoutInMs } });
  cleanups.push(() => client.close());
  return client;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(check: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await sleep(20);
  }
}

/**
 * A bare rhea client that takes one message in peek-lock mode and then kills its TCP socket
 * without closing anything: a crashed function host.
 */
async function takeOneAndCrash(broker: LocalServiceBusBroker, queue: string): Promise<{ deliveryCount: number }> {
  const container = rhea.create_container();
  return new Promise((resolve, reject) => {
    const connection: Connection = container.connect({ host: broker.host, port: broker.port, reconnect: false });
    connection.on("disconnected", () => undefined);
    connection.on("error", () => undefined);
    connection.on("message", (ctx) => {
      const deliveryCount = Number((ctx.message as { delivery_count?: number }).delivery_count ?? 0);
      (connection as unknown as { socket: Socket }).socket.destroy();
      resolve({ deliveryCount });
    });
    connection.open_receiver({ source: { address: queue }, rcv_settle_mode: 1, autoaccept: false, credit_window: 1 });
    setTimeout(() => reject(new Error("no message for the crashing client")), 3000);
  });
}

describe("several brokers and connections", () => {
  it("runs two brokers side by side on OS-chosen ports, isolated from each other", async () => {
    const a = await brokerWith({ queues: [{ name: "shared-name" }] });
    const b = await brokerWith({ queues: [{ name: "shared-name" }] });
    expect(a.port).not.toBe(b.port);
    await clientFor(a).createSender("shared-name").sendMessages({ body: "for a" });
    await clientFor(b).createSender("shared-name").sendMessages([{ body: "for b" }, { body: "for b too" }]);
    expect(a.messages("shared-name").map((m) => m.body)).toEqual(["for a"]);
    expect(b.messages("shared-name").map((m) => m.body)).toEqual(["for b", "for b too"]);
  });

  it("takes the topology declarations as they are, and reports a port already in use", async () => {
    const a = await brokerWith({ includeTopology: false, queues: allQueues(), topics: allTopics() });
    expect(a.entityPaths().sort()).toEqual(
      [
        "analysis-watch",
        "artifact-commands",
        "artifact-commands/Subscriptions/collect-file",
        "artifact-commands/Subscriptions/submit-url",
        "incident-intake",
        "live-response-watch",
      ].sort(),
    );
    await expect(startServiceBusBroker({ port: a.port, logger: createLogger({ level: "error" }) })).rejects.toThrow(/EADDRINUSE/);
  });

  it("waitFor resolves when the entity reaches the wanted state and times out otherwise", async () => {
    const broker = await brokerWith({ includeTopology: false, queues: [{ name: "wait" }] });
    const waiting = broker.waitFor("wait", (s) => s.active === 2, 2000);
    const sender = clientFor(broker).createSender("wait");
    await sender.sendMessages({ body: 1 });
    await sender.sendMessages({ body: 2 });
    expect(await waiting).toMatchObject({ active: 2 });
    await expect(broker.waitFor("wait", (s) => s.deadLetter > 0, 100)).rejects.toThrow(/Timed out after 100 ms waiting on 'wait'/);
  });

  it("serves several SDK connections at once and counts them", async () => {
    const broker = await brokerWith({ queues: [{ name: "many" }] });
    const clients = [clientFor(broker), clientFor(broker), clientFor(broker)];
    await Promise.all(clients.map((c, i) => c.createSender("many").sendMessages({ body: i, messageId: `m${i}` })));
    expect(broker.connectionCount()).toBe(3);
    expect(
      broker
        .messages("many")
        .map((m) => m.messageId)
        .sort(),
    ).toEqual(["m0", "m1", "m2"]);
    await clients[0]?.close();
    await waitFor(() => broker.connectionCount() === 2);
  });
});

describe("clients that disappear", () => {
  it("keeps a crashed client's message locked until the lock expires (Azure behaviour), then redelivers it", async () => {
    const broker = await brokerWith({ queues: [{ name: "crash", lockDurationSeconds: 1 }] });
    const client = clientFor(broker);
    await client.createSender("crash").sendMessages({ body: "work", messageId: "crash-1" });
    await waitFor(() => broker.connectionCount() === 1);

    const crashed = await takeOneAndCrash(broker, "crash");
    expect(crashed.deliveryCount).toBe(0);
    await waitFor(() => broker.connectionCount() === 1); // only the SDK client is left
    expect(broker.stats("crash")).toMatchObject({ active: 1, locked: 1, receivers: 0 });

    const receiver = client.createReceiver("crash", { maxAutoLockRenewalDurationInMs: 0 });
    const [m] = await receiver.receiveMessages(1, { maxWaitTimeInMs: 3000 });
    expect(m?.messageId).toBe("crash-1");
    expect(m?.deliveryCount).toBe(1);
    await receiver.completeMessage(m as ServiceBusReceivedMessage);
    expect(broker.stats("crash")).toMatchObject({ active: 0, locked: 0 });
  });

  it("with releaseLocksOnDetach, returns a crashed client's message at once", async () => {
    const broker = await brokerWith({ releaseLocksOnDetach: true, queues: [{ name: "crash-release" }] });
    const client = clientFor(broker);
    await client.createSender("crash-release").sendMessages({ body: "work", messageId: "cr-1" });
    await takeOneAndCrash(broker, "crash-release");
    await waitFor(() => broker.stats("crash-release").locked === 0);
    const receiver = client.createReceiver("crash-release");
    const [m] = await receiver.receiveMessages(1, { maxWaitTimeInMs: 1000 });
    expect(m?.messageId).toBe("cr-1");
    expect(m?.deliveryCount).toBe(1);
    await receiver.completeMessage(m as ServiceBusReceivedMessage);
  });

  it("keeps the lock of a message whose receiver closed; it can still be settled by lock token", async () => {
    const broker = await brokerWith({ queues: [{ name: "closed-receiver" }] });
    const client = clientFor(broker);
    await client.createSender("closed-receiver").sendMessages({ body: "x", messageId: "cr" });
    const receiver = client.createReceiver("closed-receiver");
    const [m] = await receiver.receiveMessages(1, { maxWaitTimeInMs: 1000 });
    // Closing the receiver detaches its link; Azure keeps the lock until it expires.
    await receiver.close();
    await waitFor(() => broker.stats("closed-receiver").receivers === 0);
    expect(broker.stats("closed-receiver")).toMatchObject({ active: 1, locked: 1 });
    expect(m?.lockToken).toBeDefined();
  });

  it("ends cleanly while SDK clients are still connected; their next call fails instead of hanging", async () => {
    const broker = await startServiceBusBroker({ logger: createLogger({ level: "warn" }), queues: [{ name: "shutdown" }] });
    const client = clientFor(broker, 2000);
    const sender = client.createSender("shutdown");
    await sender.sendMessages({ body: "before" });
    const receiver = client.createReceiver("shutdown");
    const [m] = await receiver.receiveMessages(1, { maxWaitTimeInMs: 1000 });
    expect(m?.body).toBe("before");

    const started = Date.now();
    await broker.close();
    expect(Date.now() - started).toBeLessThan(1000);
    expect(broker.connectionCount()).toBe(0);
    await broker.close(); // idempotent

    const error = await sender.sendMessages({ body: "after" }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(Error);
  });
});

describe("flow control", () => {
  it("answers a drain even when the receiver's credit is already used up", async () => {
    const broker = await brokerWith({ includeTopology: false, queues: [{ name: "drain-zero" }] });
    await clientFor(broker).createSender("drain-zero").sendMessages({ body: "only one" });
    const container = rhea.create_container();
    const connection: Connection = container.connect({ host: broker.host, port: broker.port, reconnect: false });
    cleanups.push(async () => {
      connection.close();
      await sleep(20);
    });
    const receiver = connection.open_receiver({ source: { address: "drain-zero" }, rcv_settle_mode: 1, autoaccept: false, credit_window: 0 });
    const got = new Promise<void>((resolve) => receiver.once("message", () => resolve()));
    receiver.once("receiver_open", () => receiver.add_credit(1));
    await got;
    // The broker has no credit left for this link; a drain must still be answered.
    const drained = new Promise<boolean>((resolve) => {
      receiver.once("receiver_drained", () => resolve(true));
      setTimeout(() => resolve(false), 1000);
    });
    receiver.drain_credit();
    expect(await drained).toBe(true);
    expect(broker.stats("drain-zero")).toMatchObject({ active: 1, locked: 1, receivers: 1 });
  });
});

describe("refusals", () => {
  it("refuses unknown entities with MessagingEntityNotFound", async () => {
    const broker = await brokerWith({ includeTopology: false, queues: [{ name: "known" }] });
    expect(broker.entityPaths()).toEqual(["known"]);
    const client = clientFor(broker);
    const sendError = await client
      .createSender("unknown-queue")
      .sendMessages({ body: 1 })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect((sendError as { code?: string }).code).toBe("MessagingEntityNotFound");
    const receiveError = await client
      .createReceiver("unknown-queue")
      .receiveMessages(1, { maxWaitTimeInMs: 500 })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect((receiveError as { code?: string }).code).toBe("MessagingEntityNotFound");
    expect(() => broker.stats("unknown-queue")).toThrow(/Unknown entity 'unknown-queue'/);
  });

  it("rejects a message larger than the advertised maximum", async () => {
    const broker = await brokerWith({ includeTopology: false, maxMessageSizeBytes: 4096, queues: [{ name: "small" }] });
    const sender = clientFor(broker).createSender("small");
    const error = await sender.sendMessages({ body: "x".repeat(10_000) }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((error as { code?: string }).code).toBe("MessageSizeExceeded");
    const batch = await sender.createMessageBatch();
    expect(batch.maxSizeInBytes).toBe(4096);
    expect(batch.tryAddMessage({ body: "x".repeat(5000) })).toBe(false);
    await sender.sendMessages({ body: "fits" });
    expect(broker.messages("small").map((m) => m.body)).toEqual(["fits"]);
  });

  it("refuses session receivers (sessions are not implemented)", async () => {
    const broker = await brokerWith({ includeTopology: false, queues: [{ name: "sessions" }] });
    const error = await clientFor(broker)
      .acceptSession("sessions", "s1")
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(Error);
    expect(String((error as Error).message)).toMatch(/Sessions are not supported/);
  });
});

describe("logging", () => {
  it("logs protocol chatter at debug level only", async () => {
    const lines: { level: LogLevel; line: string }[] = [];
    const logger = createLogger({ level: "debug", sink: (level, line) => lines.push({ level, line }) });
    const broker = await brokerWith({ logger, includeTopology: false, queues: [{ name: "logged" }] });
    await clientFor(broker).createSender("logged").sendMessages({ body: 1 });
    const infoOrAbove = lines.filter((l) => l.level !== "debug").map((l) => JSON.parse(l.line).message);
    expect(infoOrAbove).toEqual(["service bus broker listening"]);
    expect(lines.some((l) => l.level === "debug" && l.line.includes('"message received"'))).toBe(true);
  });
});

describe("CLI", () => {
  it("starts on the given port, prints the connection string and stops on SIGTERM", async () => {
    const main = fileURLToPath(new URL("../local/servicebus/main.ts", import.meta.url));
    const tsx = fileURLToPath(new URL("../../node_modules/.bin/tsx", import.meta.url));
    const child = spawn(tsx, [main, "--port", "0"], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, LOG_LEVEL: "warn" } });
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    try {
      const connectionString = await new Promise<string>((resolve, reject) => {
        let out = "";
        child.stdout.on("data", (chunk: Buffer) => {
          out += chunk.toString("utf8");
          const line = out.split("\n")[0];
          if (out.includes("\n") && line) resolve(line);
        });
        child.on("exit", (code) => reject(new Error(`CLI exited early with ${code}`)));
      });
      expect(connectionString).toMatch(/^Endpoint=sb:\/\/127\.0\.0\.1:\d+;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=[^;]+;UseDevelopmentEmulator=true$/);
      const client = new ServiceBusClient(connectionString, { retryOptions: { maxRetries: 0, timeoutInMs: 5000 } });
      await client.createSender("incident-intake").sendMessages({ body: { incidentId: "cli" } });
      const [peeked] = await client.createReceiver("incident-intake").peekMessages(1);
      expect(peeked?.body).toEqual({ incidentId: "cli" });
      await client.close();
    } finally {
      child.kill("SIGTERM");
    }
    expect(await exited).toBe(0);
  }, 20_000);
});
