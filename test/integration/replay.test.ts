import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ServiceBusClient, type ServiceBusMessage } from "@azure/service-bus";
import functions from "@azure/functions";
import { createLogger } from "@connector/shared/logger";
import { queues, topics } from "@connector/shared/topology";
import { ServiceBusDeadLetters } from "@connector/shared/replay/servicebus";
import type { EventGridDeadLetters } from "@connector/shared/replay/eventgrid";
import { handleReplayRequest } from "@connector/services/replay/http-api";
import { startServiceBusBroker, type LocalServiceBusBroker } from "@connector/local/servicebus/index";

const quiet = createLogger({ level: "error" });
const intake = queues.incidentIntake.name;
const watch = queues.analysisWatch.name;
const commands = topics.artifactCommands.name;
const submitUrlPath = `${commands}/Subscriptions/submit-url`;
const collectFilePath = `${commands}/Subscriptions/collect-file`;

type Source = { queue: string } | { topic: string; subscription: string };

/** Sends the messages, receives them from the queue / subscription and dead-letters them with the reason. */
async function deadLetter(client: ServiceBusClient, source: Source, messages: ServiceBusMessage[], reason: string, description: string): Promise<void> {
  const sender = client.createSender("queue" in source ? source.queue : source.topic);
  await sender.sendMessages(messages);
  await sender.close();
  const receiver = "queue" in source ? client.createReceiver(source.queue) : client.createReceiver(source.topic, source.subscription);
  let got = 0;
  while (got < messages.length) {
    const batch = await receiver.receiveMessages(messages.length - got, { maxWaitTimeInMs: 2000 });
    if (batch.length === 0) throw new Error(`only ${got} of ${messages.length} messages arrived`);
    for (const m of batch) await receiver.deadLetterMessage(m, { deadLetterReason: reason, deadLetterErrorDescription: description });
    got += batch.length;
  }
  await receiver.close();
}

function command(id: string, kind: "url" | "file"): ServiceBusMessage {
  return {
    body: { incident: { incidentId: "inc-1" }, artifact: { artifactId: id, kind } },
    messageId: `inc-1:${id}:command`,
    correlationId: "inc-1",
    contentType: "application/json",
    applicationProperties: { kind, incidentId: "inc-1", artifactId: id },
  };
}

let broker: LocalServiceBusBroker;
let client: ServiceBusClient;
let core: ServiceBusDeadLetters;

beforeEach(async () => {
  // 4 KiB messages at most: lets a test make a re-send fail for real (the copy is a little larger).
  broker = await startServiceBusBroker({ logger: quiet, maxMessageSizeBytes: 4096 });
  client = new ServiceBusClient(broker.connectionString);
  core = new ServiceBusDeadLetters(client, { logger: quiet, receiveWaitMs: 500 });
});

afterEach(async () => {
  await client?.close();
  await broker?.close();
});

describe("listing and showing dead letters", () => {
  it("lists every dead letter with entity, reason, description, age and delivery count", async () => {
    const started = Date.now();
    await deadLetter(client, { queue: intake }, [{ body: { bad: true }, messageId: "body-1", subject: "incident" }], "InvalidInput", "object.id: Required");
    await deadLetter(client, { topic: commands, subscription: "submit-url" }, [command("url-1", "url")], "SandboxRefused", "ANY.RUN answered 422");

    const listed = await core.list();
    expect(listed.map((d) => [d.entity, d.messageId, d.reason, d.description])).toEqual([
      [intake, "body-1", "InvalidInput", "object.id: Required"],
      ["artifact-commands/submit-url", "inc-1:url-1:command", "SandboxRefused", "ANY.RUN answered 422"],
    ]);
    const [first, second] = listed;
    expect(first!.subject).toBe("incident");
    expect(first!.deliveryCount).toBe(0);
    expect(Date.parse(first!.enqueuedTimeUtc)).toBeGreaterThanOrEqual(started - 1000);
    expect(first!.ageMs).toBeGreaterThanOrEqual(0);
    expect(first!.ageMs).toBeLessThan(30_000);
    // The dead-letter properties are reported as reason/description, not among the properties.
    expect(second!.properties).toEqual({ kind: "url", incidentId: "inc-1", artifactId: "url-1" });
    expect(second!.correlationId).toBe("inc-1");

    // Peeking changed nothing.
    expect(broker.stats(intake).deadLetter).toBe(1);
    expect(broker.stats(submitUrlPath).deadLetter).toBe(1);
  });

  it("selects exactly by entity, reason (substring or exact), age, id and limit", async () => {
    await deadLetter(client, { queue: intake }, [{ body: 1, messageId: "old-1" }, { body: 2, messageId: "old-2" }], "InvalidInput", "first");
    await new Promise((r) => setTimeout(r, 1500));
    await deadLetter(client, { queue: intake }, [{ body: 3, messageId: "new-1" }], "MaxDeliveryCountExceeded", "second");
    await deadLetter(client, { queue: watch }, [{ body: 4, messageId: "watch-1" }], "InvalidInputOfWatch", "third");
    await deadLetter(client, { topic: commands, subscription: "collect-file" }, [command("file-1", "file")], "InvalidInput", "fourth");

    const ids = async (filter: Parameters<ServiceBusDeadLetters["list"]>[0]) => (await core.list(filter)).map((d) => d.messageId);
    expect(await ids({ entities: [intake] })).toEqual(["old-1", "old-2", "new-1"]);
    expect(await ids({ entities: ["collect-file"] })).toEqual(["inc-1:file-1:command"]);
    expect(await ids({ entities: ["artifact-commands/Subscriptions/collect-file", watch] })).toEqual(["watch-1", "inc-1:file-1:command"]);
    expect(await ids({ reason: "invalidinput" })).toEqual(["old-1", "old-2", "watch-1", "inc-1:file-1:command"]);
    expect(await ids({ reason: "InvalidInput", exactReason: true })).toEqual(["old-1", "old-2", "inc-1:file-1:command"]);
    expect(await ids({ olderThanMs: 1000 })).toEqual(["old-1", "old-2"]);
    expect(await ids({ newerThanMs: 1000 })).toEqual(["new-1", "watch-1", "inc-1:file-1:command"]);
    expect(await ids({ ids: ["new-1", "watch-1", "absent"] })).toEqual(["new-1", "watch-1"]);
    expect(await ids({ limit: 2 })).toEqual(["old-1", "old-2"]);
    expect(await ids({ entities: [intake], reason: "Max", newerThanMs: 60_000 })).toEqual(["new-1"]);
    await expect(core.list({ entities: ["no-such-queue"] })).rejects.toThrow(/Unknown entity 'no-such-queue'/);
  });

  it("shows one dead letter in full, by sequence number or message id, with secrets redacted", async () => {
    await deadLetter(
      client,
      { queue: intake },
      [{ body: { incidentId: "inc-9", uploadUrl: "https://acct.blob.core.windows.net/s/x.bin?sv=2024&sig=abcdef123456" }, messageId: "show-1", contentType: "application/json", applicationProperties: { incidentId: "inc-9" } }],
      "InvalidInput",
      "object.id: Required",
    );
    const bySeq = await core.show(intake, "1");
    const byId = await core.show(intake, "show-1");
    expect({ ...byId, ageMs: 0 }).toEqual({ ...bySeq, ageMs: 0 });
    expect(bySeq).toMatchObject({ entity: intake, sequenceNumber: "1", messageId: "show-1", reason: "InvalidInput", contentType: "application/json", bodyKind: "json" });
    expect(bySeq!.body).toBe(JSON.stringify({ incidentId: "inc-9", uploadUrl: "https://acct.blob.core.windows.net/s/x.bin?sv=2024&sig=REDACTED" }, null, 2));
    expect(bySeq!.applicationProperties).toMatchObject({ incidentId: "inc-9", DeadLetterReason: "InvalidInput" });
    expect(await core.show(intake, "nope")).toBeUndefined();
    expect(await core.show(intake, "99")).toBeUndefined();
  });
});

describe("resending dead letters", () => {
  it("--dry-run says what would happen and changes nothing", async () => {
    await deadLetter(client, { queue: intake }, [{ body: 1, messageId: "dry-1" }], "InvalidInput", "x");
    await deadLetter(client, { topic: commands, subscription: "submit-url" }, [command("url-2", "url")], "InvalidInput", "y");
    const report = await core.resend({}, { dryRun: true });
    expect(report).toMatchObject({ dryRun: true, selected: 2, resent: 0, failed: 0 });
    expect(report.results.map((r) => [r.messageId, r.outcome, r.target, r.newMessageId])).toEqual([
      ["dry-1", "wouldResend", intake, "dry-1:replay:1"],
      ["inc-1:url-2:command", "wouldResend", commands, "inc-1:url-2:command:replay:1"],
    ]);
    expect(broker.stats(intake)).toMatchObject({ active: 0, deadLetter: 1 });
    expect(broker.stats(submitUrlPath)).toMatchObject({ active: 0, deadLetter: 1 });
    expect(broker.deadLetters(intake)[0]!.deliveryCount).toBe(0);
  });

  it("re-sends to the original queue without the dead-letter properties, with a new deterministic id, then removes the dead letter", async () => {
    await deadLetter(
      client,
      { queue: intake },
      [
        { body: { incident: "A" }, messageId: "msg-a", correlationId: "corr-a", subject: "incident", contentType: "application/json", applicationProperties: { tenant: "t1", "x-opt-deadletter-source": "x" } },
        { body: { incident: "B" }, messageId: "msg-b" },
      ],
      "InvalidInput",
      "object.id: Required",
    );
    const report = await core.resend({ ids: ["msg-a"] }, { dryRun: false });
    expect(report).toMatchObject({ dryRun: false, selected: 1, resent: 1, failed: 0 });
    expect(report.results[0]).toMatchObject({ messageId: "msg-a", outcome: "resent", target: intake, newMessageId: "msg-a:replay:1" });

    const active = broker.messages(intake, "active");
    expect(active).toHaveLength(1);
    const copy = active[0]!;
    expect(copy.messageId).toBe("msg-a:replay:1");
    expect(copy.body).toEqual({ incident: "A" });
    expect(copy.correlationId).toBe("corr-a");
    expect(copy.subject).toBe("incident");
    expect(copy.contentType).toBe("application/json");
    expect(copy.applicationProperties).toEqual({ tenant: "t1", replayedFrom: "msg-a", replayCount: 1 });

    // The resent dead letter is gone; the other one stays (abandoned once: delivery count 1).
    const left = broker.deadLetters(intake);
    expect(left.map((m) => m.messageId)).toEqual(["msg-b"]);
    expect(left[0]!.deadLetterReason).toBe("InvalidInput");

    // Dead-lettered again and replayed again: the id counts on from the original.
    const receiver = client.createReceiver(intake);
    const [again] = await receiver.receiveMessages(1, { maxWaitTimeInMs: 2000 });
    await receiver.deadLetterMessage(again!, { deadLetterReason: "StillInvalid", deadLetterErrorDescription: "again" });
    await receiver.close();
    const second = await core.resend({ reason: "StillInvalid" }, { dryRun: false });
    expect(second.results[0]).toMatchObject({ messageId: "msg-a:replay:1", outcome: "resent", newMessageId: "msg-a:replay:2" });
    expect(broker.messages(intake, "active")[0]!.applicationProperties).toEqual({ tenant: "t1", replayedFrom: "msg-a", replayCount: 2 });
  });

  it("reaches a selected dead letter behind unselected ones and leaves those in place", async () => {
    await deadLetter(client, { queue: intake }, [1, 2, 3, 4].map((n) => ({ body: { n }, messageId: `row-${n}` })), "InvalidInput", `row`);
    const report = await core.resend({ ids: ["row-3"] }, { dryRun: false });
    expect(report.results).toEqual([expect.objectContaining({ messageId: "row-3", outcome: "resent", newMessageId: "row-3:replay:1" })]);
    expect(broker.messages(intake, "active").map((m) => m.messageId)).toEqual(["row-3:replay:1"]);
    const left = broker.deadLetters(intake);
    expect(left.map((m) => [m.messageId, m.deadLetterReason, m.locked])).toEqual([
      ["row-1", "InvalidInput", false],
      ["row-2", "InvalidInput", false],
      ["row-4", "InvalidInput", false],
    ]);
    // Nothing was abandoned twice or lost: a second run finds the rest.
    expect((await core.resend({}, { dryRun: false })).resent).toBe(3);
    expect(broker.stats(intake)).toMatchObject({ active: 4, deadLetter: 0 });
  });

  it("a replay repeated after a crash between send and complete does not deliver twice (duplicate detection on the deterministic id)", async () => {
    await deadLetter(client, { queue: intake }, [{ body: { n: 1 }, messageId: "crash-1" }], "InvalidInput", "x");
    // What the crashed run already sent before it could complete the dead letter:
    const sender = client.createSender(intake);
    await sender.sendMessages({ body: { n: 1 }, messageId: "crash-1:replay:1", applicationProperties: { replayedFrom: "crash-1", replayCount: 1 } });
    await sender.close();

    const report = await core.resend({}, { dryRun: false });
    expect(report.results[0]).toMatchObject({ outcome: "resent", newMessageId: "crash-1:replay:1" });
    expect(broker.messages(intake, "active").map((m) => m.messageId)).toEqual(["crash-1:replay:1"]);
    expect(broker.stats(intake).deadLetter).toBe(0);
  });

  it("keeps the dead letter when the send fails, and reports it", async () => {
    // The largest message that fits the 4 KiB limit as sent (measured with the SDK's own batch
    // sizing); its copy carries a longer id and the replay properties, and does not fit.
    const bigId = `big-${"i".repeat(60)}`;
    const sizing = client.createSender(intake);
    let lo = 0;
    let hi = 4096;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      if ((await sizing.createMessageBatch()).tryAddMessage({ body: "x".repeat(mid), messageId: bigId })) lo = mid;
      else hi = mid - 1;
    }
    await sizing.close();
    await deadLetter(client, { queue: intake }, [{ body: "x".repeat(lo), messageId: bigId }], "InvalidInput", "x");
    await deadLetter(client, { queue: intake }, [{ body: "small", messageId: "small-1" }], "InvalidInput", "x");
    const progress: number[] = [];
    const report = await core.resend({}, { dryRun: false, progressEvery: 1, onProgress: (p) => progress.push(p.processed) });
    expect(report).toMatchObject({ selected: 2, resent: 1, failed: 1 });
    const failed = report.results.find((r) => r.messageId === bigId)!;
    expect(failed.outcome).toBe("sendFailed");
    expect(failed.error).toMatch(/too big|size|MessageSizeExceeded/i);
    expect(report.results.find((r) => r.messageId === "small-1")!.outcome).toBe("resent");
    expect(progress).toEqual([1, 2, 2]);

    expect(broker.deadLetters(intake).map((m) => [m.messageId, m.deadLetterReason])).toEqual([[bigId, "InvalidInput"]]);
    expect(broker.messages(intake, "active").map((m) => m.messageId)).toEqual(["small-1:replay:1"]);
  });

  it("a subscription's dead letter goes back through the topic to that subscription only", async () => {
    await deadLetter(client, { topic: commands, subscription: "submit-url" }, [command("url-3", "url")], "SandboxRefused", "422");
    await deadLetter(client, { topic: commands, subscription: "collect-file" }, [command("file-3", "file")], "InvalidInput", "bad file");

    const report = await core.resend({ entities: ["artifact-commands/submit-url"] }, { dryRun: false });
    expect(report.results).toEqual([
      expect.objectContaining({ entity: "artifact-commands/submit-url", outcome: "resent", target: commands, newMessageId: "inc-1:url-3:command:replay:1" }),
    ]);
    expect(broker.messages(submitUrlPath, "active").map((m) => [m.messageId, m.applicationProperties])).toEqual([
      ["inc-1:url-3:command:replay:1", { kind: "url", incidentId: "inc-1", artifactId: "url-3", replayedFrom: "inc-1:url-3:command", replayCount: 1 }],
    ]);
    expect(broker.stats(submitUrlPath).deadLetter).toBe(0);
    // The other subscription got nothing, and its own dead letter is untouched.
    expect(broker.stats(collectFilePath)).toMatchObject({ active: 0, deadLetter: 1 });
  });

  it("reports progress on long runs and a summary at the end", async () => {
    const many = Array.from({ length: 25 }, (_, i) => ({ body: { i }, messageId: `bulk-${i}` }));
    await deadLetter(client, { queue: watch }, many, "MaxDeliveryCountExceeded", "poll kept failing");
    const progress: string[] = [];
    const report = await core.resend({ entities: [watch] }, { dryRun: false, progressEvery: 10, onProgress: (p) => progress.push(`${p.processed}/${p.total}:${p.resent}`) });
    expect(progress).toEqual(["10/25:10", "20/25:20", "25/25:25"]);
    expect(report).toMatchObject({ selected: 25, resent: 25, failed: 0 });
    expect(broker.stats(watch)).toMatchObject({ active: 25, deadLetter: 0 });
  });
});

describe("operator HTTP API (handler called with a constructed request)", () => {
  function request(method: string, action: string | undefined, init: { query?: string; body?: unknown; headers?: Record<string, string> } = {}) {
    return new functions.HttpRequest({
      method,
      url: `http://localhost/api/ops/deadletters/${action ?? ""}${init.query ? `?${init.query}` : ""}`,
      headers: { ...(init.body !== undefined ? { "content-type": "application/json" } : {}), ...init.headers },
      params: action ? { action } : {},
      ...(init.body !== undefined ? { body: { string: JSON.stringify(init.body) } } : {}),
    });
  }
  const principal = (roles: string[]) =>
    Buffer.from(JSON.stringify({ auth_typ: "aad", claims: [{ typ: "name", val: "Ops Person" }, ...roles.map((r) => ({ typ: "roles", val: r }))], name_typ: "name", role_typ: "roles" })).toString("base64");
  const eventGridUnused = async (): Promise<EventGridDeadLetters> => {
    throw new Error("not used here");
  };

  it("lists as JSON with per-entity counts, resends with dryRun, and rejects bad input", async () => {
    await deadLetter(client, { queue: intake }, [{ body: 1, messageId: "http-1" }], "InvalidInput", "x");
    const deps = { serviceBus: core, eventGrid: eventGridUnused, settings: { REPLAY_REQUIRE_PRINCIPAL: false, REPLAY_ALLOWED_ROLES: "" }, logger: quiet };

    const list = await handleReplayRequest(request("GET", undefined, { query: "reason=Invalid" }), deps);
    expect(list.status).toBe(200);
    const listed = JSON.parse(String(list.body)) as { byEntity: { entity: string; count: number }[]; deadLetters: { messageId: string }[] };
    expect(listed.deadLetters.map((d) => d.messageId)).toEqual(["http-1"]);
    expect(listed.byEntity.find((e) => e.entity === intake)!.count).toBe(1);
    expect(listed.byEntity).toHaveLength(5);

    expect((await handleReplayRequest(request("POST", "resend", { body: { ids: ["http-1"] } }), deps)).status).toBe(400); // dryRun is required
    expect((await handleReplayRequest(request("GET", "resend"), deps)).status).toBe(405);
    expect((await handleReplayRequest(request("GET", "list", { query: "olderThan=soon" }), deps)).status).toBe(400);
    expect((await handleReplayRequest(request("GET", "list", { query: "entity=nope" }), deps)).status).toBe(400);
    expect((await handleReplayRequest(request("GET", "frobnicate"), deps)).status).toBe(404);

    const dry = await handleReplayRequest(request("POST", "resend", { body: { ids: ["http-1"], dryRun: true } }), deps);
    expect(JSON.parse(String(dry.body))).toMatchObject({ dryRun: true, selected: 1, results: [{ outcome: "wouldResend", newMessageId: "http-1:replay:1" }] });
    expect(broker.stats(intake).deadLetter).toBe(1);

    const done = await handleReplayRequest(request("POST", "resend", { body: { entity: intake, ids: "http-1", dryRun: false } }), deps);
    expect(JSON.parse(String(done.body))).toMatchObject({ dryRun: false, selected: 1, resent: 1, results: [{ outcome: "resent" }] });
    expect(broker.stats(intake)).toMatchObject({ active: 1, deadLetter: 0 });
  });

  it("with REPLAY_REQUIRE_PRINCIPAL and REPLAY_ALLOWED_ROLES: 401 without an Entra principal, 403 without the role", async () => {
    const deps = { serviceBus: core, eventGrid: eventGridUnused, settings: { REPLAY_REQUIRE_PRINCIPAL: true, REPLAY_ALLOWED_ROLES: "DeadLetter.Replay" }, logger: quiet };
    expect((await handleReplayRequest(request("GET", "list"), deps)).status).toBe(401);
    expect((await handleReplayRequest(request("GET", "list", { headers: { "x-ms-client-principal": "not base64 json" } }), deps)).status).toBe(401);
    expect((await handleReplayRequest(request("GET", "list", { headers: { "x-ms-client-principal": principal(["Reader"]) } }), deps)).status).toBe(403);
    expect((await handleReplayRequest(request("GET", "list", { headers: { "x-ms-client-principal": principal(["DeadLetter.Replay"]) } }), deps)).status).toBe(200);
  });
});
