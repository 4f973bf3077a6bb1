import net from "node:net";
import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ServiceBusClient, type ServiceBusMessage } from "@azure/service-bus";
import { createLogger } from "@connector/shared/logger";
import { eventGridTopics, queues, topics } from "@connector/shared/topology";
import { startAzurite, type AzuriteInstance } from "@connector/local/azurite";
import { startLocalEventGrid, type LocalEventGrid } from "@connector/local/eventgrid/index";
import { startFunctionsHost, type FunctionsHost } from "@connector/local/functions-host/index";
import { startServiceBusBroker, type LocalServiceBusBroker } from "@connector/local/servicebus/index";

const quiet = createLogger({ level: "error" });
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const cli = path.join(repoRoot, "services/src/replay/cli.ts");
const intake = queues.incidentIntake.name;

let broker: LocalServiceBusBroker;
let azurite: AzuriteInstance;
let eg: LocalEventGrid;
let client: ServiceBusClient;
let env: Record<string, string>;

async function deadLetter(queue: string, messages: ServiceBusMessage[], reason: string, description: string): Promise<void> {
  const sender = client.createSender(queue);
  await sender.sendMessages(messages);
  await sender.close();
  const receiver = client.createReceiver(queue);
  let got = 0;
  while (got < messages.length) {
    const batch = await receiver.receiveMessages(messages.length - got, { maxWaitTimeInMs: 2000 });
    if (batch.length === 0) throw new Error("messages did not arrive");
    for (const m of batch) await receiver.deadLetterMessage(m, { deadLetterReason: reason, deadLetterErrorDescription: description });
    got += batch.length;
  }
  await receiver.close();
}

function runCli(args: string[], extraEnv: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", cli, ...args], {
      cwd: repoRoot,
      env: { PATH: process.env.PATH ?? "", ...env, ...extraEnv },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
    child.once("error", reject);
    child.once("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

beforeAll(async () => {
  broker = await startServiceBusBroker({ logger: quiet });
  azurite = await startAzurite({ logger: quiet });
  eg = await startLocalEventGrid({ azurite, logger: quiet, timeScale: 0.001, jitter: false });
  client = new ServiceBusClient(broker.connectionString);
  env = {
    SERVICEBUS_CONNECTION: broker.connectionString,
    STORAGE_CONNECTION: eg.storageConnectionString,
    EVENTGRID_ENDPOINT: eg.topicEndpoint(eventGridTopics.analysis.name),
    EVENTGRID_KEY: eg.key,
    AZURE_CREDENTIAL: "local",
    LOG_LEVEL: "error",
  };
});

afterAll(async () => {
  await client?.close();
  await eg?.close();
  await azurite?.close();
  await broker?.close();
});

describe("replay CLI (tsx, against the local broker)", () => {
  it("lists dead letters per entity in a table with the reason, shows one, dry-runs and resends", async () => {
    await deadLetter(intake, [{ body: { incident: "broken", sas: "https://a.blob.core.windows.net/c/b?sv=1&sig=topsecret" }, messageId: "cli-1", applicationProperties: { source: "playbook", note: "https://a.blob.core.windows.net/c/b?sv=1&sig=propsecret" } }], "InvalidInput", "object.id: Required");

    const list = await runCli(["list"]);
    expect(list.stderr).toBe("");
    expect(list.code).toBe(0);
    const lines = list.stdout.split("\n");
    expect(lines[0]).toMatch(/^ENTITY\s+DEAD LETTERS\s+OLDEST$/);
    expect(lines.find((l) => l.startsWith(intake))).toMatch(new RegExp(`^${intake}\\s+1\\s+\\d+s$`));
    expect(lines.find((l) => l.startsWith("artifact-commands/submit-url"))).toMatch(/^artifact-commands\/submit-url\s+0\s+-$/);
    const header = lines.find((l) => l.startsWith("ENTITY  ") && l.includes("REASON"))!;
    expect(header).toMatch(/^ENTITY\s+SEQ\s+MESSAGE ID\s+REASON\s+AGE\s+DELIVERIES\s+DESCRIPTION\s+PROPERTIES$/);
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^${intake}\\s+1\\s+cli-1\\s+InvalidInput\\s+\\d+s\\s+0\\s+object\\.id: Required\\s+source=playbook`)));
    expect(list.stdout).toContain("1 dead letter(s) selected.");

    const json = await runCli(["list", "--reason", "invalid", "--json"]);
    expect(JSON.parse(json.stdout).deadLetters).toEqual([expect.objectContaining({ entity: intake, messageId: "cli-1", reason: "InvalidInput" })]);
    expect(json.stdout).not.toContain("propsecret");
    const showJson = await runCli(["show", intake, "cli-1", "--json"]);
    expect(showJson.stdout).toContain("sig=REDACTED");
    expect(showJson.stdout).not.toMatch(/topsecret|propsecret/);

    const show = await runCli(["show", intake, "cli-1"]);
    expect(show.code).toBe(0);
    expect(show.stdout).toMatch(/^Reason:\s+InvalidInput$/m);
    expect(show.stdout).toContain('"sas": "https://a.blob.core.windows.net/c/b?sv=1&sig=REDACTED"');
    expect(show.stdout).not.toContain("topsecret");

    const dry = await runCli(["resend", "--entity", intake, "--dry-run"]);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/would resend\s+incident-intake\s+cli-1:replay:1/);
    expect(dry.stdout).toContain("Nothing was changed.");
    expect(broker.stats(intake)).toMatchObject({ active: 0, deadLetter: 1 });

    const refused = await runCli(["resend", "--entity", intake]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain("add --yes to proceed");
    expect(broker.stats(intake).deadLetter).toBe(1);

    const done = await runCli(["resend", "--entity", intake, "--yes"]);
    expect(done.code).toBe(0);
    expect(done.stdout).toMatch(/resent\s+incident-intake\s+cli-1:replay:1/);
    expect(done.stdout).toContain("Resent 1 of 1 selected dead letter(s); 0 not resent.");
    expect(broker.stats(intake)).toMatchObject({ active: 1, deadLetter: 0 });
    expect(broker.messages(intake, "active")[0]!.messageId).toBe("cli-1:replay:1");
  });

  it("exits 2 on bad arguments (with usage) and on an unknown entity, 1 when it cannot reach the dead letters", async () => {
    const bad = await runCli(["list", "--older-than", "soon"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--older-than: Invalid duration 'soon'");
    expect(bad.stderr).toContain("Usage: npm run replay");
    const unknown = await runCli(["list", "--entity", "nope"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("Unknown entity 'nope'");
    const unknownEg = await runCli(["eventgrid", "list", "--entity", "nope"]);
    expect(unknownEg.code).toBe(2);
    expect(unknownEg.stderr).toContain("Unknown Event Grid topic or subscription 'nope'");
    // An empty filter value (an unset shell variable) is refused, never read as "everything".
    for (const args of [["--id", ""], ["--id", ","], ["--reason", ""], ["--entity", ""]]) {
      const empty = await runCli(["resend", ...args, "--dry-run"]);
      expect(empty.code, args.join(" ")).toBe(2);
      expect(empty.stdout).not.toContain("would resend");
    }
    const noConnection = await runCli(["list"], { SERVICEBUS_CONNECTION: "" });
    expect(noConnection.code).toBe(1);
    // Nothing listens on a port just freed: the message says why fetch failed.
    const closed = await new Promise<number>((resolve) => {
      const server = net.createServer().listen(0, "127.0.0.1", () => {
        const { port } = server.address() as net.AddressInfo;
        server.close(() => resolve(port));
      });
    });
    const unreachable = await runCli(["list", "--function-url", `http://127.0.0.1:${closed}/api`], { REPLAY_FUNCTION_KEY: "k" });
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toMatch(/replay: fetch failed \(.*ECONNREFUSED.*\)/);
  });
});

describe("operator HTTP function through the local functions host", () => {
  let host: FunctionsHost;
  const key = "function-key-for-tests";

  beforeAll(async () => {
    Object.assign(process.env, env);
    const { replay } = await import("@connector/services/functions/replay");
    host = await startFunctionsHost({ functions: [replay], httpKeys: { functionKey: key, masterKey: "master-key-for-tests" }, logger: quiet });
  });
  afterAll(async () => {
    await host?.close();
  });

  it("refuses calls without a valid key (401) and serves list / resend with one", async () => {
    await deadLetter(queues.liveResponseWatch.name, [{ body: { poll: 1 }, messageId: "http-host-1" }], "MaxDeliveryCountExceeded", "poll kept failing");
    const base = `${host.httpUrl}/ops/deadletters`;

    expect((await fetch(base)).status).toBe(401);
    expect((await fetch(base, { headers: { "x-functions-key": "wrong" } })).status).toBe(401);
    expect((await fetch(`${base}/resend`, { method: "POST", body: JSON.stringify({ dryRun: false }) })).status).toBe(401);
    expect(broker.stats(queues.liveResponseWatch.name).deadLetter).toBe(1);

    const viaQuery = await fetch(`${base}?code=${key}&entity=${queues.liveResponseWatch.name}`);
    expect(viaQuery.status).toBe(200);
    const listed = (await viaQuery.json()) as { deadLetters: { messageId: string; reason: string }[] };
    expect(listed.deadLetters).toEqual([expect.objectContaining({ messageId: "http-host-1", reason: "MaxDeliveryCountExceeded" })]);

    const master = await fetch(`${base}/list?reason=MaxDelivery`, { headers: { "x-functions-key": "master-key-for-tests" } });
    expect(master.status).toBe(200);

    const eventGrid = await fetch(`${base}/eventgrid`, { headers: { "x-functions-key": key } });
    expect(eventGrid.status).toBe(200);
    expect(await eventGrid.json()).toEqual({ deadLetters: [] });

    const resend = await fetch(`${base}/resend`, {
      method: "POST",
      headers: { "x-functions-key": key, "content-type": "application/json" },
      body: JSON.stringify({ ids: ["http-host-1"], dryRun: false }),
    });
    expect(resend.status).toBe(200);
    expect(await resend.json()).toMatchObject({ resent: 1, results: [{ messageId: "http-host-1", outcome: "resent", target: queues.liveResponseWatch.name, newMessageId: "http-host-1:replay:1" }] });
    expect(broker.stats(queues.liveResponseWatch.name)).toMatchObject({ active: 1, deadLetter: 0 });
    expect(host.invocations().filter((i) => i.functionName === "replay").map((i) => i.httpStatus)).toEqual([200, 200, 200, 200]);

    // The CLI through the function: the same table, with the key from REPLAY_FUNCTION_KEY.
    await deadLetter(queues.analysisWatch.name, [{ body: 1, messageId: "remote-1" }], "InvalidInput", "x");
    const remote = await runCli(["list", "--entity", queues.analysisWatch.name, "--function-url", base], { REPLAY_FUNCTION_KEY: key, SERVICEBUS_CONNECTION: "" });
    expect(remote.code).toBe(0);
    expect(remote.stdout).toMatch(/analysis-watch\s+\d+\s+remote-1\s+InvalidInput/);
    const remoteNoKey = await runCli(["list", "--function-url", base], { REPLAY_FUNCTION_KEY: "wrong" });
    expect(remoteNoKey.code).toBe(1);
    expect(remoteNoKey.stderr).toContain("operator function answered 401");
  });

  it("the topic route is unknown without /api and a method outside the trigger's is refused", async () => {
    expect((await fetch(`${host.httpUrl!.replace(/\/api$/, "")}/ops/deadletters?code=${key}`)).status).toBe(404);
    expect((await fetch(`${host.httpUrl}/ops/deadletters?code=${key}`, { method: "DELETE" })).status).toBe(405);
    expect(topics.artifactCommands.subscriptions).toHaveLength(2);
  });
});
