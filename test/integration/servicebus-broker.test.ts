/**
 * The local Service Bus broker, driven by the real @azure/service-bus SDK.
 *
 * One broker for the file (OS-chosen port); every test uses its own entities so tests do not see
 * each other's messages.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ServiceBusClient, isServiceBusError, type ServiceBusReceivedMessage, type ServiceBusReceiver } from "@azure/service-bus";
import { createLogger } from "@connector/shared/logger";
import { artifactKinds, queues as topologyQueues, topics as topologyTopics } from "@connector/shared/topology";
import { startServiceBusBroker, type LocalServiceBusBroker } from "@connector/local/servicebus/index";

const quietLogger = createLogger({ level: "warn", service: "servicebus-broker-test" });

let broker: LocalServiceBusBroker;
let client: ServiceBusClient;

beforeAll(async () => {
  broker = await startServiceBusBroker({
    logger: quietLogger,
    queues: [
      { name: "basic" },
      { name: "abandon" },
      { name: "max-delivery", maxDeliveryCount: 2 },
      { name: "dead-letter" },
      { name: "scheduled" },
      { name: "scheduled-cancel" },
      { name: "scheduled-send" },
      { name: "dedup", duplicateDetectionWindowMinutes: 1 },
      { name: "no-dedup" },
      { name: "batch" },
      { name: "peek" },
      { name: "lock-expiry", lockDurationSeconds: 0.6, maxDeliveryCount: 5 },
      { name: "renew", lockDurationSeconds: 1 },
      { name: "receive-and-delete" },
      { name: "drain" },
      { name: "subscribe" },
      { name: "defer" },
      { name: "ttl", deadLetterOnExpiration: true },
      { name: "competing" },
      { name: "bodies" },
    ],
    topics: [
      {
        name: "fanout",
        subscriptions: [
          { name: "everything", filter: true },
          { name: "urls", filter: { kind: "url" } },
          { name: "url-high", filter: { kind: "url", priority: "high" } },
          { name: "by-subject", filter: { "sys.subject": "special" } },
        ],
      },
    ],
  });
  client = new ServiceBusClient(broker.connectionString, { retryOptions: { timeoutInMs: 10_000 } });
});

afterAll(async () => {
  await client?.close();
  await broker?.close();
});

async function receiveAll(receiver: ServiceBusReceiver, count: number, maxWaitTimeInMs = 3000): Promise<ServiceBusReceivedMessage[]> {
  const out: ServiceBusReceivedMessage[] = [];
  const deadline = Date.now() + maxWaitTimeInMs;
  while (out.length < count && Date.now() < deadline) {
    const batch = await receiver.receiveMessages(count - out.length, { maxWaitTimeInMs: Math.max(100, deadline - Date.now()) });
    out.push(...batch);
  }
  return out;
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe("connection and topology", () => {
  it("advertises an OS-chosen port in an emulator connection string", () => {
    expect(broker.port).toBeGreaterThan(0);
    expect(broker.connectionString).toBe(
      `Endpoint=sb://127.0.0.1:${broker.port};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=local-development-key;UseDevelopmentEmulator=true`,
    );
  });

  it("creates the topology's entities next to the explicit ones", () => {
    const paths = broker.entityPaths();
    expect(paths).toEqual(
      expect.arrayContaining([
        topologyQueues.incidentIntake.name,
        topologyQueues.liveResponseWatch.name,
        topologyQueues.analysisWatch.name,
        topologyTopics.artifactCommands.name,
        `${topologyTopics.artifactCommands.name}/Subscriptions/submit-url`,
        `${topologyTopics.artifactCommands.name}/Subscriptions/collect-file`,
        "basic",
        "fanout/Subscriptions/url-high",
      ]),
    );
  });
});

describe("send, receive, settle", () => {
  it("delivers a message with its properties and the broker annotations, then completes it", async () => {
    const sender = client.createSender("basic");
    const before = Date.now();
    await sender.sendMessages({
      body: { incidentId: "inc-1", n: 42 },
      messageId: "basic-1",
      contentType: "application/json",
      subject: "incident",
      correlationId: "corr-1",
      applicationProperties: { tenant: "t1", attempt: 3, flag: true },
    });
    expect(broker.stats("basic")).toEqual({ active: 1, locked: 0, scheduled: 0, deferred: 0, deadLetter: 0, receivers: 0 });

    const receiver = client.createReceiver("basic");
    const [msg] = await receiveAll(receiver, 1);
    expect(msg).toBeDefined();
    const m = msg as ServiceBusReceivedMessage;
    expect(m.body).toEqual({ incidentId: "inc-1", n: 42 });
    expect(m.messageId).toBe("basic-1");
    expect(m.contentType).toBe("application/json");
    expect(m.subject).toBe("incident");
    expect(m.correlationId).toBe("corr-1");
    expect(m.applicationProperties).toEqual({ tenant: "t1", attempt: 3, flag: true });
    expect(m.deliveryCount).toBe(0);
    expect(m.sequenceNumber?.toNumber()).toBe(1);
    expect(m.enqueuedTimeUtc?.getTime()).toBeGreaterThanOrEqual(before - 5);
    expect(m.enqueuedTimeUtc?.getTime()).toBeLessThanOrEqual(Date.now());
    // Default lock duration: 60 s.
    const lockMs = (m.lockedUntilUtc?.getTime() ?? 0) - Date.now();
    expect(lockMs).toBeGreaterThan(55_000);
    expect(lockMs).toBeLessThanOrEqual(60_000);
    expect(m.lockToken).toMatch(uuidPattern);
    expect(m.state).toBe("active");
    expect(broker.stats("basic")).toMatchObject({ active: 1, locked: 1 });

    await receiver.completeMessage(m);
    expect(broker.stats("basic")).toEqual({ active: 0, locked: 0, scheduled: 0, deferred: 0, deadLetter: 0, receivers: 1 });
    expect(await receiver.receiveMessages(1, { maxWaitTimeInMs: 200 })).toEqual([]);
    await receiver.close();
    await sender.close();
  });

  it("round-trips binary, text and AMQP-value bodies", async () => {
    await client.createSender("bodies").sendMessages([
      { body: Buffer.from([0, 1, 2, 255]) },
      { body: "plain text" },
      { body: { nested: { list: [1, "two"] } } },
      { body: 7, bodyType: "value", messageAnnotations: { "x-custom": "kept" } },
    ]);
    const receiver = client.createReceiver("bodies");
    const got = await receiveAll(receiver, 4);
    expect(Buffer.isBuffer(got[0]?.body)).toBe(true);
    expect([...(got[0]?.body as Buffer)]).toEqual([0, 1, 2, 255]);
    expect(got[1]?.body).toBe("plain text");
    expect(got[2]?.body).toEqual({ nested: { list: [1, "two"] } });
    expect(got[3]?.body).toBe(7);
    expect(got[3]?._rawAmqpMessage.bodyType).toBe("value");
    expect(got[3]?._rawAmqpMessage.messageAnnotations?.["x-custom"]).toBe("kept");
    // The broker gives every message an id when the sender did not.
    expect(got.every((m) => typeof m.messageId === "string" && /^[0-9a-f]{32}$/.test(m.messageId))).toBe(true);
    await Promise.all(got.map((m) => receiver.completeMessage(m)));
    await receiver.close();
  });

  it("abandon increments deliveryCount, applies propertiesToModify and redelivers", async () => {
    const sender = client.createSender("abandon");
    await sender.sendMessages({ body: "retry me", messageId: "abandon-1", applicationProperties: { attempt: 0 } });
    const receiver = client.createReceiver("abandon", { maxAutoLockRenewalDurationInMs: 0 });

    const [first] = await receiveAll(receiver, 1);
    expect(first?.deliveryCount).toBe(0);
    await receiver.abandonMessage(first as ServiceBusReceivedMessage, { attempt: 1 });

    const [second] = await receiveAll(receiver, 1);
    expect(second?.messageId).toBe("abandon-1");
    expect(second?.body).toBe("retry me");
    expect(second?.deliveryCount).toBe(1);
    expect(second?.applicationProperties).toEqual({ attempt: 1 });
    expect(second?.sequenceNumber?.toNumber()).toBe(first?.sequenceNumber?.toNumber());
    expect(second?.lockToken).not.toBe(first?.lockToken);
    await receiver.completeMessage(second as ServiceBusReceivedMessage);
    expect(broker.stats("abandon").active).toBe(0);
    await receiver.close();
  });

  it("moves a message to the dead-letter queue when deliveries exceed maxDeliveryCount", async () => {
    await client.createSender("max-delivery").sendMessages({ body: { poison: true }, messageId: "poison-1" });
    const receiver = client.createReceiver("max-delivery", { maxAutoLockRenewalDurationInMs: 0 });
    const counts: number[] = [];
    for (let i = 0; i < 2; i++) {
      const [m] = await receiveAll(receiver, 1);
      counts.push(m?.deliveryCount ?? -1);
      await receiver.abandonMessage(m as ServiceBusReceivedMessage);
    }
    expect(counts).toEqual([0, 1]);
    expect(await receiver.receiveMessages(1, { maxWaitTimeInMs: 200 })).toEqual([]);
    expect(broker.stats("max-delivery")).toMatchObject({ active: 0, deadLetter: 1 });

    const [listed] = broker.deadLetters("max-delivery");
    expect(listed).toMatchObject({
      messageId: "poison-1",
      body: { poison: true },
      deadLetterReason: "MaxDeliveryCountExceeded",
      deadLetterErrorDescription: "Message could not be consumed after 2 delivery attempts.",
    });

    const dlq = client.createReceiver("max-delivery", { subQueueType: "deadLetter" });
    const [dead] = await receiveAll(dlq, 1);
    expect(dead?.messageId).toBe("poison-1");
    expect(dead?.body).toEqual({ poison: true });
    expect(dead?.deadLetterReason).toBe("MaxDeliveryCountExceeded");
    expect(dead?.deadLetterErrorDescription).toBe("Message could not be consumed after 2 delivery attempts.");
    expect(dead?.applicationProperties?.DeadLetterReason).toBe("MaxDeliveryCountExceeded");
    await dlq.completeMessage(dead as ServiceBusReceivedMessage);
    expect(broker.stats("max-delivery").deadLetter).toBe(0);
    await Promise.all([receiver.close(), dlq.close()]);
  });

  it("deadLetterMessage stores reason and description, readable on the dead-letter receiver", async () => {
    await client.createSender("dead-letter").sendMessages({ body: "bad", messageId: "dl-1", applicationProperties: { tenant: "t9" } });
    const receiver = client.createReceiver("dead-letter");
    const [m] = await receiveAll(receiver, 1);
    await receiver.deadLetterMessage(m as ServiceBusReceivedMessage, {
      deadLetterReason: "InvalidPayload",
      deadLetterErrorDescription: "incidentId missing",
    });
    expect(broker.stats("dead-letter")).toMatchObject({ active: 0, deadLetter: 1 });

    // Case-insensitive dead-letter path, as in Azure.
    const [listed] = broker.deadLetters("Dead-Letter/$deadletterqueue");
    expect(listed).toMatchObject({ messageId: "dl-1", deadLetterReason: "InvalidPayload", deadLetterErrorDescription: "incidentId missing" });

    const dlq = client.createReceiver("dead-letter", { subQueueType: "deadLetter" });
    const [dead] = await receiveAll(dlq, 1);
    expect(dead?.deadLetterReason).toBe("InvalidPayload");
    expect(dead?.deadLetterErrorDescription).toBe("incidentId missing");
    expect(dead?.applicationProperties).toEqual({
      tenant: "t9",
      DeadLetterReason: "InvalidPayload",
      DeadLetterErrorDescription: "incidentId missing",
    });
    await dlq.completeMessage(dead as ServiceBusReceivedMessage);
    await Promise.all([receiver.close(), dlq.close()]);
  });

  it("receiveAndDelete removes messages on delivery and gives no lock token", async () => {
    await client.createSender("receive-and-delete").sendMessages([
      { body: 1, messageId: "rad-1" },
      { body: 2, messageId: "rad-2" },
    ]);
    const receiver = client.createReceiver("receive-and-delete", { receiveMode: "receiveAndDelete" });
    const got = await receiveAll(receiver, 2);
    expect(got.map((m) => m.body)).toEqual([1, 2]);
    expect(got.map((m) => m.lockToken)).toEqual([undefined, undefined]);
    expect(broker.stats("receive-and-delete")).toMatchObject({ active: 0, locked: 0 });
    expect(await receiver.receiveMessages(1, { maxWaitTimeInMs: 200 })).toEqual([]);
    await receiver.close();
  });

  it("answers the drain at the end of receiveMessages so the link stays usable", async () => {
    const receiver = client.createReceiver("drain");
    const started = Date.now();
    expect(await receiver.receiveMessages(5, { maxWaitTimeInMs: 300 })).toEqual([]);
    // Unanswered, the SDK would wait 200 ms more for the drain and then close its link.
    expect(Date.now() - started).toBeLessThan(480);
    await new Promise((r) => setTimeout(r, 100));
    expect(broker.stats("drain").receivers).toBe(1);
    await client.createSender("drain").sendMessages({ body: "after drain" });
    const [m] = await receiver.receiveMessages(1, { maxWaitTimeInMs: 2000 });
    expect(m?.body).toBe("after drain");
    await receiver.completeMessage(m as ServiceBusReceivedMessage);
    await receiver.close();
    await new Promise((r) => setTimeout(r, 50));
    expect(broker.stats("drain").receivers).toBe(0);
  });

  it("subscribe() streams messages and auto-completes them", async () => {
    await client.createSender("subscribe").sendMessages([{ body: "a" }, { body: "b" }, { body: "c" }]);
    const receiver = client.createReceiver("subscribe");
    const bodies: unknown[] = [];
    await new Promise<void>((resolve, reject) => {
      const sub = receiver.subscribe({
        processMessage: async (m) => {
          bodies.push(m.body);
          if (bodies.length === 3) {
            setTimeout(() => void sub.close().then(resolve, reject), 50);
          }
        },
        processError: async (args) => reject(args.error),
      });
    });
    expect(bodies).toEqual(["a", "b", "c"]);
    expect(broker.stats("subscribe")).toMatchObject({ active: 0, locked: 0 });
    await receiver.close();
  });

  it("defers a message and settles it after receiveDeferredMessages (management link)", async () => {
    await client.createSender("defer").sendMessages({ body: "later", messageId: "defer-1" });
    const receiver = client.createReceiver("defer");
    const [m] = await receiveAll(receiver, 1);
    const seq = m?.sequenceNumber;
    await receiver.deferMessage(m as ServiceBusReceivedMessage);
    expect(broker.stats("defer")).toMatchObject({ active: 0, deferred: 1 });
    expect(await receiver.receiveMessages(1, { maxWaitTimeInMs: 200 })).toEqual([]);

    const [deferred] = await receiver.receiveDeferredMessages(seq as NonNullable<typeof seq>);
    expect(deferred?.messageId).toBe("defer-1");
    expect(deferred?.state).toBe("deferred");
    expect(deferred?.lockToken).toMatch(uuidPattern);
    await receiver.completeMessage(deferred as ServiceBusReceivedMessage);
    expect(broker.stats("defer")).toMatchObject({ active: 0, deferred: 0 });
    await receiver.close();
  });
});

describe("locks", () => {
  it("an unsettled message whose lock expires is redelivered with deliveryCount+1; the stale lock is lost", async () => {
    await client.createSender("lock-expiry").sendMessages({ body: "slow", messageId: "lock-1" });
    const receiver = client.createReceiver("lock-expiry", { maxAutoLockRenewalDurationInMs: 0 });
    const [first] = await receiveAll(receiver, 1);
    expect(first?.deliveryCount).toBe(0);
    const lockMs = (first?.lockedUntilUtc?.getTime() ?? 0) - Date.now();
    expect(lockMs).toBeGreaterThan(100);
    expect(lockMs).toBeLessThanOrEqual(600);

    await new Promise((r) => setTimeout(r, 800));
    const [second] = await receiveAll(receiver, 1);
    expect(second?.messageId).toBe("lock-1");
    expect(second?.deliveryCount).toBe(1);

    const error = await receiver.completeMessage(first as ServiceBusReceivedMessage).catch((e: unknown) => e);
    expect(isServiceBusError(error)).toBe(true);
    expect((error as { code?: string }).code).toBe("MessageLockLost");

    await receiver.completeMessage(second as ServiceBusReceivedMessage);
    expect(broker.stats("lock-expiry")).toMatchObject({ active: 0, deadLetter: 0 });
    await receiver.close();
  });

  it("renewMessageLock extends the lock past its original expiry", async () => {
    await client.createSender("renew").sendMessages({ body: "long job" });
    const receiver = client.createReceiver("renew", { maxAutoLockRenewalDurationInMs: 0 });
    const [m] = await receiveAll(receiver, 1);
    const original = m?.lockedUntilUtc?.getTime() ?? 0;
    await new Promise((r) => setTimeout(r, 500));
    const renewed = await receiver.renewMessageLock(m as ServiceBusReceivedMessage);
    expect(renewed.getTime()).toBeGreaterThan(original + 400);
    await new Promise((r) => setTimeout(r, 700)); // past the original expiry
    expect(broker.stats("renew")).toMatchObject({ active: 1, locked: 1 });
    await receiver.completeMessage(m as ServiceBusReceivedMessage);
    expect(broker.stats("renew")).toMatchObject({ active: 0, locked: 0 });
    await receiver.close();
  });
});

describe("topics", () => {
  it("fans out to the topology's subscriptions by the kind property", async () => {
    const topic = topologyTopics.artifactCommands.name;
    const sender = client.createSender(topic);
    await sender.sendMessages([
      { body: { artifact: "http://example.test" }, messageId: "art-url", applicationProperties: { kind: artifactKinds.url } },
      { body: { artifact: "C:\\evil.exe" }, messageId: "art-file", applicationProperties: { kind: artifactKinds.file } },
      { body: { artifact: "?" }, messageId: "art-other", applicationProperties: { kind: "other" } },
    ]);
    expect(broker.stats(`${topic}/Subscriptions/submit-url`).active).toBe(1);
    expect(broker.stats(`${topic}/Subscriptions/collect-file`).active).toBe(1);

    const urls = client.createReceiver(topic, "submit-url");
    const files = client.createReceiver(topic, "collect-file");
    const gotUrls = await receiveAll(urls, 1);
    const gotFiles = await receiveAll(files, 1);
    expect(gotUrls.map((m) => m.messageId)).toEqual(["art-url"]);
    expect(gotUrls[0]?.applicationProperties?.kind).toBe("url");
    expect(gotFiles.map((m) => m.messageId)).toEqual(["art-file"]);
    expect(await urls.receiveMessages(1, { maxWaitTimeInMs: 200 })).toEqual([]);
    expect(await files.receiveMessages(1, { maxWaitTimeInMs: 200 })).toEqual([]);
    await Promise.all([...gotUrls.map((m) => urls.completeMessage(m)), ...gotFiles.map((m) => files.completeMessage(m))]);
    expect(broker.stats(topic)).toMatchObject({ active: 0, scheduled: 0, deadLetter: 0 });
    await Promise.all([urls.close(), files.close(), sender.close()]);
  });

  it("applies match-all, multi-property and system-property filters", async () => {
    await client.createSender("fanout").sendMessages([
      { body: 1, applicationProperties: { kind: "url", priority: "high" } },
      { body: 2, applicationProperties: { kind: "url", priority: "low" } },
      { body: 3, applicationProperties: { kind: "file" }, subject: "special" },
    ]);
    const bodies = (path: string) => broker.messages(path).map((m) => m.body);
    expect(bodies("fanout/Subscriptions/everything")).toEqual([1, 2, 3]);
    expect(bodies("fanout/Subscriptions/urls")).toEqual([1, 2]);
    expect(bodies("fanout/Subscriptions/url-high")).toEqual([1]);
    expect(bodies("fanout/Subscriptions/by-subject")).toEqual([3]);
    // Same sequence number in every subscription copy.
    expect(broker.messages("fanout/Subscriptions/everything")[0]?.sequenceNumber).toBe(
      broker.messages("fanout/Subscriptions/url-high")[0]?.sequenceNumber,
    );

    // Scheduling on a topic holds the message in the topic until its time.
    const sender = client.createSender("fanout");
    const [seq] = await sender.scheduleMessages({ body: 4, applicationProperties: { kind: "url" } }, new Date(Date.now() + 60_000));
    expect(broker.stats("fanout").scheduled).toBe(1);
    expect(broker.messages("fanout", "scheduled").map((m) => m.body)).toEqual([4]);
    await sender.cancelScheduledMessages(seq as NonNullable<typeof seq>);
    expect(broker.stats("fanout").scheduled).toBe(0);
    expect(bodies("fanout/Subscriptions/urls")).toEqual([1, 2]);
  });

  it("dead-letters from a subscription into its own dead-letter queue", async () => {
    const topic = topologyTopics.artifactCommands.name;
    await client.createSender(topic).sendMessages({ body: "x", messageId: "sub-dl", applicationProperties: { kind: "url" } });
    const receiver = client.createReceiver(topic, "submit-url");
    const [m] = await receiveAll(receiver, 1);
    await receiver.deadLetterMessage(m as ServiceBusReceivedMessage, { deadLetterReason: "Unsupported", deadLetterErrorDescription: "no sandbox slot" });
    expect(broker.stats(`${topic}/Subscriptions/submit-url`)).toMatchObject({ active: 0, deadLetter: 1 });
    const dlq = client.createReceiver(topic, "submit-url", { subQueueType: "deadLetter" });
    const [dead] = await receiveAll(dlq, 1);
    expect(dead?.messageId).toBe("sub-dl");
    expect(dead?.deadLetterReason).toBe("Unsupported");
    expect(dead?.deadLetterErrorDescription).toBe("no sandbox slot");
    await dlq.completeMessage(dead as ServiceBusReceivedMessage);
    await Promise.all([receiver.close(), dlq.close()]);
  });
});

describe("scheduling", () => {
  it("scheduleMessages returns sequence numbers; messages become visible only at their time", async () => {
    const sender = client.createSender("scheduled");
    const at = new Date(Date.now() + 1200);
    const [seq] = await sender.scheduleMessages({ body: "wake up", messageId: "sch-1" }, at);
    expect(seq?.toNumber()).toBe(1);
    expect(broker.stats("scheduled")).toMatchObject({ active: 0, scheduled: 1 });

    const receiver = client.createReceiver("scheduled");
    const [peeked] = await receiver.peekMessages(5);
    expect(peeked?.state).toBe("scheduled");
    expect(peeked?.scheduledEnqueueTimeUtc?.getTime()).toBe(at.getTime());
    expect(await receiver.receiveMessages(1, { maxWaitTimeInMs: 300 })).toEqual([]);

    const [m] = await receiveAll(receiver, 1, 3000);
    expect(Date.now()).toBeGreaterThanOrEqual(at.getTime());
    expect(m?.messageId).toBe("sch-1");
    expect(m?.sequenceNumber?.toNumber()).toBe(1);
    expect(m?.scheduledEnqueueTimeUtc?.getTime()).toBe(at.getTime());
    expect(m?.enqueuedTimeUtc?.getTime()).toBeGreaterThanOrEqual(at.getTime());
    await receiver.completeMessage(m as ServiceBusReceivedMessage);
    await receiver.close();
  });

  it("cancelScheduledMessages removes a scheduled message; unknown sequence numbers are an error", async () => {
    const sender = client.createSender("scheduled-cancel");
    const at = new Date(Date.now() + 700);
    const seqs = await sender.scheduleMessages(
      [
        { body: "keep", messageId: "keep" },
        { body: "drop", messageId: "drop" },
      ],
      at,
    );
    expect(seqs.map((s) => s.toNumber())).toEqual([1, 2]);
    await sender.cancelScheduledMessages(seqs[1] as (typeof seqs)[number]);
    expect(broker.stats("scheduled-cancel").scheduled).toBe(1);

    const error = await sender.cancelScheduledMessages(seqs[1] as (typeof seqs)[number]).catch((e: unknown) => e);
    expect((error as { code?: string }).code).toBe("MessageNotFound");

    await new Promise((r) => setTimeout(r, 900));
    expect(broker.messages("scheduled-cancel").map((m) => m.messageId)).toEqual(["keep"]);
    expect(broker.stats("scheduled-cancel").scheduled).toBe(0);
  });

  it("a normal send with scheduledEnqueueTimeUtc is held until its time", async () => {
    const sender = client.createSender("scheduled-send");
    const at = new Date(Date.now() + 600);
    await sender.sendMessages([
      { body: "now", messageId: "now" },
      { body: "later", messageId: "later", scheduledEnqueueTimeUtc: at },
    ]);
    expect(broker.messages("scheduled-send").map((m) => m.messageId)).toEqual(["now"]);
    expect(broker.messages("scheduled-send", "scheduled").map((m) => m.messageId)).toEqual(["later"]);
    await new Promise((r) => setTimeout(r, 800));
    expect(broker.messages("scheduled-send").map((m) => m.messageId)).toEqual(["now", "later"]);
  });
});

describe("duplicate detection, batches, peek, TTL", () => {
  it("drops a second message with the same messageId inside the window (and accepts the send)", async () => {
    const sender = client.createSender("dedup");
    await sender.sendMessages({ body: "first", messageId: "job-1:attempt-1" });
    await sender.sendMessages({ body: "second copy", messageId: "job-1:attempt-1" });
    await sender.sendMessages({ body: "other", messageId: "job-1:attempt-2" });
    // Scheduling a duplicate returns the original sequence number and schedules nothing.
    const [seq] = await sender.scheduleMessages({ body: "dup", messageId: "job-1:attempt-2" }, new Date(Date.now() + 60_000));
    expect(seq?.toNumber()).toBe(2);
    expect(broker.messages("dedup").map((m) => m.body)).toEqual(["first", "other"]);
    expect(broker.stats("dedup").scheduled).toBe(0);

    await client.createSender("no-dedup").sendMessages([
      { body: 1, messageId: "same" },
      { body: 2, messageId: "same" },
    ]);
    expect(broker.stats("no-dedup").active).toBe(2);
  });

  it("unpacks batched sends (createMessageBatch and arrays)", async () => {
    const sender = client.createSender("batch");
    const batch = await sender.createMessageBatch();
    for (let i = 1; i <= 3; i++) {
      expect(batch.tryAddMessage({ body: { i }, messageId: `b-${i}`, applicationProperties: { i } })).toBe(true);
    }
    await sender.sendMessages(batch);
    await sender.sendMessages([{ body: { i: 4 } }, { body: { i: 5 } }]);
    const receiver = client.createReceiver("batch");
    const got = await receiveAll(receiver, 5);
    expect(got.map((m) => m.body)).toEqual([{ i: 1 }, { i: 2 }, { i: 3 }, { i: 4 }, { i: 5 }]);
    expect(got.slice(0, 3).map((m) => m.applicationProperties?.i)).toEqual([1, 2, 3]);
    expect(got.map((m) => m.sequenceNumber?.toNumber())).toEqual([1, 2, 3, 4, 5]);
    await Promise.all(got.map((m) => receiver.completeMessage(m)));
    await receiver.close();
  });

  it("peekMessages walks the queue without locking and honours fromSequenceNumber", async () => {
    await client.createSender("peek").sendMessages([{ body: "p1" }, { body: "p2" }, { body: "p3" }]);
    const receiver = client.createReceiver("peek");
    const firstTwo = await receiver.peekMessages(2);
    expect(firstTwo.map((m) => m.body)).toEqual(["p1", "p2"]);
    expect(firstTwo.map((m) => m.sequenceNumber?.toNumber())).toEqual([1, 2]);
    expect(firstTwo.map((m) => m.lockToken)).toEqual([undefined, undefined]);
    const next = await receiver.peekMessages(5);
    expect(next.map((m) => m.body)).toEqual(["p3"]);
    expect(await receiver.peekMessages(5)).toEqual([]);
    const [third] = firstTwo;
    const from = await receiver.peekMessages(5, { fromSequenceNumber: (third?.sequenceNumber as NonNullable<typeof third>["sequenceNumber"])!.add(1) });
    expect(from.map((m) => m.body)).toEqual(["p2", "p3"]);
    expect(broker.stats("peek")).toMatchObject({ active: 3, locked: 0 });

    // Locked messages are still peekable, and peeking the dead-letter queue works.
    const [locked] = await receiveAll(receiver, 1);
    expect((await receiver.peekMessages(1, { fromSequenceNumber: locked!.sequenceNumber! })).map((m) => m.body)).toEqual(["p1"]);
    const dlq = client.createReceiver("peek", { subQueueType: "deadLetter" });
    expect(await dlq.peekMessages(5)).toEqual([]);
    await Promise.all([receiver.close(), dlq.close()]);
  });

  it("expires messages past their time-to-live into the dead-letter queue", async () => {
    await client.createSender("ttl").sendMessages([
      { body: "short", messageId: "ttl-short", timeToLive: 150 },
      { body: "long", messageId: "ttl-long" },
    ]);
    await new Promise((r) => setTimeout(r, 300));
    expect(broker.messages("ttl").map((m) => m.messageId)).toEqual(["ttl-long"]);
    expect(broker.deadLetters("ttl")).toMatchObject([{ messageId: "ttl-short", deadLetterReason: "TTLExpiredException" }]);
  });
});

describe("several receivers", () => {
  it("competing receivers on separate connections each get distinct messages", async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `c-${i}`);
    await client.createSender("competing").sendMessages(ids.map((messageId) => ({ body: messageId, messageId })));
    const other = new ServiceBusClient(broker.connectionString);
    const r1 = client.createReceiver("competing");
    const r2 = other.createReceiver("competing");
    const drainAll = async (r: ServiceBusReceiver) => {
      const got: string[] = [];
      for (;;) {
        const batch = await r.receiveMessages(3, { maxWaitTimeInMs: 300 });
        if (batch.length === 0) return got;
        for (const m of batch) {
          got.push(String(m.messageId));
          await r.completeMessage(m);
        }
      }
    };
    const [a, b] = await Promise.all([drainAll(r1), drainAll(r2)]);
    expect([...a, ...b].sort()).toEqual([...ids].sort());
    expect(a.length).toBeGreaterThan(0);
    expect(b.length).toBeGreaterThan(0);
    expect(broker.stats("competing").active).toBe(0);
    await Promise.all([r1.close(), r2.close()]);
    await other.close();
  });
});
