import { createHash, randomUUID } from "node:crypto";
import { TableClient } from "@azure/data-tables";
import type { BlobServiceClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMdeClient, type MachineAction, type MdeClient } from "@connector/shared/clients/mde";
import { parseConfig } from "@connector/shared/config";
import { LocalTokenCredential } from "@connector/shared/credentials";
import { JobStore, type JobRecord } from "@connector/shared/job-store";
import { LiveResponseLimits, type LiveResponseLimitsOptions } from "@connector/shared/live-response/limits";
import { leaseHolderOf } from "@connector/shared/live-response/ownership";
import { createLogger } from "@connector/shared/logger";
import type { ArtifactCommand, FileArtifact, IncidentRef, LiveResponseWatch } from "@connector/shared/messages";
import { StagingStore } from "@connector/shared/staging";
import { handleCollectFile, type CollectDeps } from "@connector/services/core/collect-file";
import { handleLiveResponseWatch } from "@connector/services/core/watch-live-response";
import { settingsFrom } from "@connector/services/deps";
import { startAzurite, type AzuriteInstance } from "@connector/local/azurite";
import { startMdeDouble, type MdeDouble } from "@connector/local/doubles/mde";
import { ensureContainer } from "@connector/local/doubles/mde/storage";

/**
 * Live Response discipline of collectFile + watchLiveResponse, with the real cores against the MDE
 * double (Windows devices run the emulated collection script), Azurite (jobs, leases, staging) and
 * a fake bus that keeps scheduled messages (deduplicated by message id, as Service Bus duplicate
 * detection does) and delivers them when due.
 */

const scope = "https://api.securitycenter.microsoft.com/.default";
const container = "staging";
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const quiet = createLogger({ level: "error", sink: () => {} });

let azurite: AzuriteInstance;
let blobs: BlobServiceClient;
let jobStore: JobStore;
let staging: StagingStore;
let fast: MdeDouble; // actions start 30 ms after creation
let slow: MdeDouble; // actions stay Pending for a minute (a busy or slow device)
let failing: MdeDouble; // fails the command of a script that exits non-zero (instead of Succeeded + exit code)
let tableCounter = 0;
let deviceCounter = 0;

beforeAll(async () => {
  azurite = await startAzurite({ logger: quiet });
  blobs = await ensureContainer(azurite, container);
  jobStore = new JobStore(TableClient.fromConnectionString(azurite.connectionString, "jobs", { allowInsecureConnection: true }));
  await jobStore.ensureTable();
  staging = StagingStore.fromConfig({ STORAGE_CONNECTION: azurite.connectionString, STAGING_CONTAINER: container });
  fast = await startMdeDouble({ pendingDelayMs: 30, startCallsPerMinute: 1000 });
  slow = await startMdeDouble({ pendingDelayMs: 60_000, startCallsPerMinute: 1000 });
  failing = await startMdeDouble({ pendingDelayMs: 30, startCallsPerMinute: 1000, nonZeroExit: "failed" });
});

afterAll(async () => {
  await fast?.close();
  await slow?.close();
  await failing?.close();
  await azurite?.close();
});

// ------------------------------------------------------------------------------------------------
// Fixtures

const newDeviceId = () => (++deviceCounter).toString(16).padStart(40, "e");

function windowsDevice(mde: MdeDouble, healthStatus = "Active"): string {
  const id = newDeviceId();
  mde.seedMachine({ id, osPlatform: "Windows11", osArchitecture: "64-bit", computerDnsName: `win-${deviceCounter}`, healthStatus });
  return id;
}

async function fileJob(mde: MdeDouble, deviceId: string, name = "invoice.exe"): Promise<{ command: ArtifactCommand; incident: IncidentRef; artifact: FileArtifact }> {
  const incidentId = randomUUID();
  const content = Buffer.from(`MZ sample ${incidentId}`);
  const directory = "C:\\Users\\alice\\Downloads";
  mde.seedQuarantine(deviceId, { originalPath: `${directory}\\${name}`, content });
  const incident: IncidentRef = { subscriptionId: "sub", resourceGroup: "rg", workspaceName: "ws", workspaceId: randomUUID(), incidentId, incidentNumber: ++deviceCounter };
  const artifact: FileArtifact = { kind: "file", artifactId: `file-${sha256(content).slice(0, 24)}`, fileName: name, directory, hashes: { sha256: sha256(content) }, deviceId };
  await jobStore.create({ incidentId, artifactId: artifact.artifactId, status: "queued", incident, artifact });
  return { command: { incident, artifact, attempt: 0 }, incident, artifact };
}

interface Scheduled {
  id: string;
  kind: "command" | "watch";
  body: ArtifactCommand | LiveResponseWatch;
  at: number;
}

/** Scheduled messages, deduplicated by the ids the real Bus gives them. */
class FakeBus {
  readonly queue: Scheduled[] = [];
  private readonly seen = new Set<string>();
  private push(id: string, kind: Scheduled["kind"], body: Scheduled["body"], at: Date) {
    if (this.seen.has(id)) return;
    this.seen.add(id);
    this.queue.push({ id, kind, body: structuredClone(body), at: at.getTime() });
  }
  async sendArtifactCommand(command: ArtifactCommand) {
    this.scheduleArtifactCommand(command, new Date());
  }
  async scheduleArtifactCommand(command: ArtifactCommand, at: Date) {
    const suffix = command.attempt ? `:retry:${command.attempt}` : "";
    this.push(`${command.incident.incidentId}:${command.artifact.artifactId}:command${suffix}`, "command", command, at);
  }
  async scheduleAnalysisWatch() {
    throw new Error("collection never schedules an analysis watch");
  }
  async scheduleLiveResponseWatch(watch: LiveResponseWatch, at: Date) {
    this.push(`${watch.incident.incidentId}:${watch.artifactId}:lr:${watch.machineActionId}:${watch.attempt}`, "watch", watch, at);
  }
  take(kind: Scheduled["kind"], incidentId?: string): Scheduled | undefined {
    const i = this.queue.findIndex((m) => m.kind === kind && (!incidentId || m.body.incident.incidentId === incidentId));
    return i < 0 ? undefined : this.queue.splice(i, 1)[0];
  }
}

interface Harness {
  deps: CollectDeps;
  bus: FakeBus;
  limits: LiveResponseLimits;
  comments: { incidentId: string; message: string }[];
  client: MdeClient;
  /** Delivers due messages (concurrently, as several instances would) until `done()` or timeout. */
  drain(done: () => Promise<boolean>, timeoutMs?: number): Promise<void>;
}

const unused = () => {
  throw new Error("not used by Live Response collection");
};

async function harness(mde: MdeDouble, options: { limits?: Partial<LiveResponseLimitsOptions>; jobs?: JobStore; now?: () => Date; graceSeconds?: number } = {}): Promise<Harness> {
  const settings = settingsFrom(
    parseConfig({ SERVICEBUS_CONNECTION: "Endpoint=sb://local/", STORAGE_CONNECTION: azurite.connectionString, EVENTGRID_ENDPOINT: "http://127.0.0.1/", ANYRUN_API_KEY: "not-a-real-key" }),
  );
  settings.liveResponsePollSeconds = 0.05;
  settings.retry = { baseSeconds: 0.05, maxSeconds: 0.3, maxAttempts: 60 };
  const bus = new FakeBus();
  const limits = new LiveResponseLimits(TableClient.fromConnectionString(azurite.connectionString, `liveresponse${++tableCounter}`, { allowInsecureConnection: true }), {
    maxSessions: 25,
    startsPerWindow: 10,
    ...options.limits,
  });
  await limits.ensureTable();
  const comments: Harness["comments"] = [];
  const client = createMdeClient({ baseUrl: mde.url, credential: new LocalTokenCredential(), scope, logger: quiet });
  const deps: CollectDeps = {
    jobs: options.jobs ?? jobStore,
    bus,
    events: { publishCompleted: unused },
    staging,
    sandbox: { submitUrl: unused, submitFile: unused, getReport: unused, getIocs: unused, taskUrl: unused, findTask: unused },
    endpoints: client,
    incidents: {
      listEntities: unused,
      putComment: async (ref, _id, message) => {
        comments.push({ incidentId: ref.incidentId, message });
      },
      listCommentIds: unused,
      addLabels: unused,
    },
    threatIntel: { uploadStixObjects: unused },
    settings,
    logger: quiet,
    liveResponse: { limits, intentGraceSeconds: options.graceSeconds ?? 120 },
    ...(options.now ? { now: options.now } : {}),
  };
  const drain = async (done: () => Promise<boolean>, timeoutMs = 15_000) => {
    const until = Date.now() + timeoutMs;
    const inFlight = new Set<Promise<void>>();
    while (!(await done())) {
      if (Date.now() > until) throw new Error(`not done after ${timeoutMs} ms; queue: ${bus.queue.map((m) => m.id).join(", ")}`);
      const due = bus.queue.filter((m) => m.at <= Date.now());
      for (const message of due) {
        bus.queue.splice(bus.queue.indexOf(message), 1);
        const run = (message.kind === "command" ? handleCollectFile(message.body, deps) : handleLiveResponseWatch(message.body, deps)).then(
          () => undefined,
          () => {
            bus.queue.push({ ...message, at: Date.now() }); // abandoned: delivered again
          },
        );
        inFlight.add(run);
        void run.finally(() => inFlight.delete(run));
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    await Promise.all(inFlight);
  };
  return { deps, bus, limits, comments, client, drain };
}

const job = async (incidentId: string, artifactId: string): Promise<JobRecord> => (await jobStore.get(incidentId, artifactId))!;
const actionsOn = (mde: MdeDouble, deviceId: string): MachineAction[] => mde.actions().filter((a) => a.machineId === deviceId);

/** The job store of a process killed once, as it records the action MDE has just accepted. */
function killedWhenRecordingTheAction(): JobStore {
  let crashes = 1;
  return new Proxy(jobStore, {
    get(target, prop, receiver) {
      if (prop === "update") {
        return async (...args: Parameters<JobStore["update"]>) => {
          if (args[2].machineActionId && crashes-- > 0) throw new Error("process killed after runliveresponse");
          return target.update(...args);
        };
      }
      const value = Reflect.get(target, prop, receiver) as unknown;
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

// ------------------------------------------------------------------------------------------------

describe("one Live Response session per device", () => {
  it("runs two incidents' files on the same device one after the other; both finish and the leases are given back", async () => {
    const h = await harness(fast);
    const device = windowsDevice(fast);
    const a = await fileJob(fast, device, "a.exe");
    const b = await fileJob(fast, device, "b.exe");
    const first = await Promise.all([handleCollectFile(a.command, h.deps), handleCollectFile(b.command, h.deps)]);
    expect(first.sort()).toEqual(["retrying", "started"]);

    await h.drain(async () => (await job(a.incident.incidentId, a.artifact.artifactId)).status === "uploaded" && (await job(b.incident.incidentId, b.artifact.artifactId)).status === "uploaded");

    const actions = actionsOn(fast, device).sort((x, y) => Date.parse(x.creationDateTimeUtc!) - Date.parse(y.creationDateTimeUtc!));
    expect(actions.map((x) => x.status)).toEqual(["Succeeded", "Succeeded"]);
    // Never two at once: the second was created only after the first had ended.
    expect(Date.parse(actions[1]!.creationDateTimeUtc!)).toBeGreaterThanOrEqual(Date.parse(actions[0]!.lastUpdateDateTimeUtc!));
    // ... and it was our lease that held it back: MDE never had to refuse a start on this device.
    expect(fast.startCalls().filter((c) => c.machineId === device).map((c) => c.status)).toEqual([201, 201]);
    for (const x of [a, b]) {
      const record = await job(x.incident.incidentId, x.artifact.artifactId);
      expect(actions.map((y) => y.id)).toContain(record.machineActionId);
      expect(await blobs.getContainerClient(container).getBlobClient(record.blobName!).exists()).toBe(true);
    }
    expect(await h.limits.deviceLease(device)).toBeUndefined();
    expect((await h.limits.usage()).sessions).toEqual([]);
  });

  it("holds a command back while the tenant-wide session cap is reached, and spaces starts by the start-rate window", async () => {
    const h = await harness(fast, { limits: { maxSessions: 1, startsPerWindow: 2 } });
    const a = await fileJob(fast, windowsDevice(fast));
    const b = await fileJob(fast, windowsDevice(fast));
    const c = await fileJob(fast, windowsDevice(fast));
    expect(await handleCollectFile(a.command, h.deps)).toBe("started");
    expect(await handleCollectFile(b.command, h.deps)).toBe("retrying");
    expect(fast.startCalls().filter((x) => x.machineId === b.artifact.deviceId)).toEqual([]);
    expect((await job(b.incident.incidentId, b.artifact.artifactId)).status).toBe("queued");

    await h.drain(async () => (await job(b.incident.incidentId, b.artifact.artifactId)).status === "uploaded");
    expect((await job(a.incident.incidentId, a.artifact.artifactId)).status).toBe("uploaded");

    // Two starts spent in this minute: the third is rescheduled for when the oldest leaves the window.
    const before = Date.now();
    expect(await handleCollectFile(c.command, h.deps)).toBe("retrying");
    const retry = h.bus.take("command", c.incident.incidentId)!;
    expect(retry.body).toMatchObject({ attempt: 1 });
    expect(retry.at - before).toBeGreaterThan(50_000);
    expect(retry.at - before).toBeLessThanOrEqual(61_000);
    expect(fast.startCalls().filter((x) => x.machineId === c.artifact.deviceId)).toEqual([]);
  });
});

describe("giving the device back", () => {
  it("releases the leases when the action ends after BlobCreated already moved the job on", async () => {
    const h = await harness(fast);
    const device = windowsDevice(fast);
    const x = await fileJob(fast, device);
    expect(await handleCollectFile(x.command, h.deps)).toBe("started");
    const record = await job(x.incident.incidentId, x.artifact.artifactId);
    await fast.settled(record.machineActionId!);
    // submitFile got the sample first (the script uploads before the action is final).
    await jobStore.update(x.incident.incidentId, x.artifact.artifactId, { status: "submitted", taskId: "t-1" });
    expect((await h.limits.deviceLease(device))?.holder).toBe(leaseHolderOf({ incidentId: x.incident.incidentId, artifactId: x.artifact.artifactId }));

    expect(await handleLiveResponseWatch(h.bus.take("watch", x.incident.incidentId)!.body, h.deps)).toBe("skipped");
    expect(await h.limits.deviceLease(device)).toBeUndefined();
    expect((await h.limits.usage()).sessions).toEqual([]);
    expect((await job(x.incident.incidentId, x.artifact.artifactId)).status).toBe("submitted");
    expect(h.comments).toEqual([]);
  });
});

describe("crash-safe start", () => {
  it("gives the device back when the job moved on before a crashed start could record its action", async () => {
    const h = await harness(fast, { jobs: killedWhenRecordingTheAction() });
    const device = windowsDevice(fast);
    const x = await fileJob(fast, device);
    await expect(handleCollectFile(x.command, h.deps)).rejects.toThrow("process killed");
    expect((await h.limits.deviceLease(device))?.holder).toBe(leaseHolderOf({ incidentId: x.incident.incidentId, artifactId: x.artifact.artifactId }));
    // The script uploaded anyway and the sample went all the way before the command came back.
    await fast.settled(actionsOn(fast, device)[0]!.id);
    await jobStore.update(x.incident.incidentId, x.artifact.artifactId, { status: "enriched" });

    expect(await handleCollectFile(x.command, h.deps)).toBe("skipped");
    expect(await h.limits.deviceLease(device)).toBeUndefined();
    expect((await h.limits.usage()).sessions).toEqual([]);
    // The next file on that device starts at once.
    const next = await fileJob(fast, device, "second.exe");
    expect(await handleCollectFile(next.command, h.deps)).toBe("started");
    expect(actionsOn(fast, device)).toHaveLength(2);
  });

  it("watches the recorded action again when a crash lost its first poll and the job moved on, so the device is given back", async () => {
    const h = await harness(fast);
    const schedule = h.bus.scheduleLiveResponseWatch.bind(h.bus);
    h.bus.scheduleLiveResponseWatch = async () => {
      throw new Error("process killed before the first poll was scheduled");
    };
    const device = windowsDevice(fast);
    const x = await fileJob(fast, device);
    await expect(handleCollectFile(x.command, h.deps)).rejects.toThrow("process killed");
    h.bus.scheduleLiveResponseWatch = schedule;
    const recorded = await job(x.incident.incidentId, x.artifact.artifactId);
    expect(recorded.machineActionId).toBeDefined();
    await fast.settled(recorded.machineActionId!);
    await jobStore.update(x.incident.incidentId, x.artifact.artifactId, { status: "enriched" });

    expect(await handleCollectFile(x.command, h.deps)).toBe("skipped");
    expect((await h.limits.deviceLease(device))?.holder).toBeDefined();
    expect(await handleLiveResponseWatch(h.bus.take("watch", x.incident.incidentId)!.body, h.deps)).toBe("skipped");
    expect(await h.limits.deviceLease(device)).toBeUndefined();
    expect((await h.limits.usage()).sessions).toEqual([]);
    expect(actionsOn(fast, device)).toHaveLength(1);
  });

  it("adopts the action a crashed delivery started instead of opening a second one", async () => {
    const h = await harness(fast, { jobs: killedWhenRecordingTheAction() });
    const device = windowsDevice(fast);
    const x = await fileJob(fast, device);

    await expect(handleCollectFile(x.command, h.deps)).rejects.toThrow("process killed");
    const intent = await job(x.incident.incidentId, x.artifact.artifactId);
    expect(intent).toMatchObject({ status: "collecting", blobName: expect.any(String) });
    expect(intent.machineActionId).toBeUndefined();
    expect(actionsOn(fast, device)).toHaveLength(1);

    // The same message again (the host redelivers it).
    expect(await handleCollectFile(x.command, h.deps)).toBe("adopted");
    const ours = actionsOn(fast, device)[0]!;
    expect((await job(x.incident.incidentId, x.artifact.artifactId)).machineActionId).toBe(ours.id);
    expect(ours.requestorComment).toContain(`[anyrun-job:${x.incident.incidentId}/${x.artifact.artifactId}]`);
    // Yet another redelivery changes nothing (the first poll is already scheduled under the same id).
    expect(await handleCollectFile(x.command, h.deps)).toBe("skipped");
    expect(h.bus.queue.filter((m) => m.kind === "watch")).toHaveLength(1);

    await h.drain(async () => (await job(x.incident.incidentId, x.artifact.artifactId)).status === "uploaded");
    expect(actionsOn(fast, device)).toHaveLength(1);
    expect(fast.startCalls().filter((c) => c.machineId === device)).toHaveLength(1);
    expect(await h.limits.deviceLease(device)).toBeUndefined();
  });

  it("after a start with an unknown outcome, waits out the grace, then starts exactly one action", async () => {
    let clock = Date.now();
    const h = await harness(fast, { now: () => new Date(clock), graceSeconds: 60 });
    const device = windowsDevice(fast);
    const x = await fileJob(fast, device);
    fast.injectFault({ operation: "runLiveResponse", status: 500, code: "InternalServerError" });
    clock = Date.now();

    expect(await handleCollectFile(x.command, h.deps)).toBe("retrying");
    expect((await job(x.incident.incidentId, x.artifact.artifactId)).status).toBe("collecting");
    expect((await h.limits.deviceLease(device))?.holder).toBe(leaseHolderOf({ incidentId: x.incident.incidentId, artifactId: x.artifact.artifactId }));

    // Within the grace nothing is started: the first call might still turn into an action.
    const retry = h.bus.take("command", x.incident.incidentId)!;
    expect(await handleCollectFile(retry.body, h.deps)).toBe("retrying");
    expect(fast.startCalls().filter((c) => c.machineId === device).map((c) => c.status)).toEqual([500]);

    clock += 61_000;
    const again = h.bus.take("command", x.incident.incidentId)!;
    expect(await handleCollectFile(again.body, h.deps)).toBe("started");
    expect(fast.startCalls().filter((c) => c.machineId === device).map((c) => c.status)).toEqual([500, 201]);
    expect(actionsOn(fast, device)).toHaveLength(1);
  });
});

describe("devices we must not or cannot use", () => {
  it("treats ActiveRequestAlreadyExists from someone else's action as busy, retries later, and never cancels that action", async () => {
    const h = await harness(slow, { graceSeconds: 0 });
    const device = windowsDevice(slow);
    const foreign = await h.client.runScript(device, { scriptName: "anyrun-collect.ps1", args: "v1", comment: "Analyst: manual triage" });
    const x = await fileJob(slow, device);

    expect(await handleCollectFile(x.command, h.deps)).toBe("retrying");
    expect(slow.startCalls().filter((c) => c.machineId === device).map((c) => [c.status, c.code ?? null])).toEqual([
      [201, null],
      [400, "ActiveRequestAlreadyExists"],
    ]);
    expect((await job(x.incident.incidentId, x.artifact.artifactId)).status).toBe("queued");
    expect(await h.limits.deviceLease(device)).toBeUndefined();
    expect((await h.limits.usage()).sessions).toEqual([]);
    const retry = h.bus.take("command", x.incident.incidentId)!;
    expect(retry.body).toMatchObject({ attempt: 1 });

    // A delivery that finds an old intent: the foreign action is not "ours" and is not adopted.
    await jobStore.update(x.incident.incidentId, x.artifact.artifactId, { status: "collecting" });
    expect(await handleCollectFile(retry.body, h.deps)).toBe("retrying");
    expect((await job(x.incident.incidentId, x.artifact.artifactId)).machineActionId).toBeUndefined();

    // Even a job pointing at the foreign action (it never should) does not cancel it at the deadline.
    await jobStore.update(x.incident.incidentId, x.artifact.artifactId, { machineActionId: foreign.id });
    const late = { ...h.deps, now: () => new Date(Date.now() + 3_600_000) };
    const watch: LiveResponseWatch = { incident: x.incident, artifactId: x.artifact.artifactId, machineActionId: foreign.id, attempt: 5, deadline: new Date().toISOString() };
    expect(await handleLiveResponseWatch(watch, late)).toBe("failed");
    expect(h.comments.map((c) => c.message).join("\n")).toContain("was not started by the connector and was left alone");

    const after = slow.actions().find((a) => a.id === foreign.id)!;
    expect(after.status).toBe("Pending");
    expect(after.cancellationRequestor).toBeNull();
    expect(actionsOn(slow, device)).toHaveLength(1);
  });

  it("cancels our own action when our deadline passes, posts the failure and gives the device back", async () => {
    let clock = Date.now();
    const h = await harness(slow, { now: () => new Date(clock) });
    const device = windowsDevice(slow);
    const x = await fileJob(slow, device);
    expect(await handleCollectFile(x.command, h.deps)).toBe("started");

    const poll = h.bus.take("watch", x.incident.incidentId)!;
    expect(await handleLiveResponseWatch(poll.body, h.deps)).toBe("pending");
    clock += 30 * 60_000 + 1000;
    const next = h.bus.take("watch", x.incident.incidentId)!;
    expect(await handleLiveResponseWatch(next.body, h.deps)).toBe("failed");

    const ours = actionsOn(slow, device)[0]!;
    expect(ours).toMatchObject({ status: "Cancelled", cancellationComment: "ANY.RUN connector: collection deadline passed" });
    const record = await job(x.incident.incidentId, x.artifact.artifactId);
    expect(record.status).toBe("failed");
    expect(record.failure).toBe("Live Response did not finish before the deadline (status Pending); the action was cancelled.");
    expect(h.comments).toHaveLength(1);
    expect(h.comments[0]).toMatchObject({ incidentId: x.incident.incidentId });
    expect(h.comments[0]!.message).toContain("did not finish before the deadline");
    expect(await h.limits.deviceLease(device)).toBeUndefined();
    expect((await h.limits.usage()).sessions).toEqual([]);
    expect(h.bus.queue.filter((m) => m.kind === "watch")).toEqual([]);
  });

  it.each([
    ["the action succeeds with the exit code in the result file (documented)", () => fast],
    ["the service fails the command", () => failing],
  ])("says what the endpoint script reported when it could not collect the file: %s", async (_, which) => {
    const mde = which();
    const h = await harness(mde);
    const device = windowsDevice(mde);
    const x = await fileJob(mde, device, "gone.exe");
    // Same job, but the quarantine holds another path: the script ends not_found (exit 3).
    const missing: ArtifactCommand = { ...x.command, artifact: { ...x.artifact, fileName: "not-in-quarantine.exe" } };
    await jobStore.update(x.incident.incidentId, x.artifact.artifactId, { artifact: missing.artifact });
    expect(await handleCollectFile(missing, h.deps)).toBe("started");
    await h.drain(async () => (await job(x.incident.incidentId, x.artifact.artifactId)).status === "failed", 20_000);
    const record = await job(x.incident.incidentId, x.artifact.artifactId);
    expect(record.failure).toMatch(/^The file could not be collected from the endpoint: the script reported not_found.*exit code 3\.$/);
    expect(h.comments.map((c) => c.message).join("\n")).toContain("the script reported not_found");
    expect(await h.limits.deviceLease(device)).toBeUndefined();
  });

  it("refuses a network path before it costs a session or a start call", async () => {
    const h = await harness(fast);
    const device = windowsDevice(fast);
    const x = await fileJob(fast, device, "a.exe");
    const unc: ArtifactCommand = { ...x.command, artifact: { ...x.artifact, directory: "\\\\evil-host\\share" } };
    await jobStore.update(x.incident.incidentId, x.artifact.artifactId, { artifact: unc.artifact });
    expect(await handleCollectFile(unc, h.deps)).toBe("failed");
    const record = await job(x.incident.incidentId, x.artifact.artifactId);
    expect(record.failure).toMatch(/^The file cannot be collected: originalPath must be a local drive path/);
    expect(fast.startCalls().filter((c) => c.machineId === device)).toEqual([]);
    expect(await h.limits.usage()).toEqual({ sessions: [], starts: 0 });
    expect(await h.limits.deviceLease(device)).toBeUndefined();
  });

  it("reports an inactive device on the incident without starting anything", async () => {
    const h = await harness(fast);
    const device = windowsDevice(fast, "Inactive");
    const x = await fileJob(fast, device);
    expect(await handleCollectFile(x.command, h.deps)).toBe("failed");
    const record = await job(x.incident.incidentId, x.artifact.artifactId);
    expect(record.status).toBe("failed");
    expect(record.failure).toMatch(/^The device win-\d+ is Inactive: Live Response cannot reach it\.$/);
    expect(h.comments.map((c) => c.incidentId)).toEqual([x.incident.incidentId]);
    expect(h.comments[0]!.message).toContain("is Inactive: Live Response cannot reach it.");
    expect(fast.startCalls().filter((c) => c.machineId === device)).toEqual([]);
    expect(await h.limits.deviceLease(device)).toBeUndefined();
    expect(h.bus.queue).toEqual([]);
  });
});
