import { AzureKeyCredential, EventGridPublisherClient } from "@azure/eventgrid";
import { ServiceBusClient, type ServiceBusMessage } from "@azure/service-bus";
import { BlobServiceClient } from "@azure/storage-blob";
import { shortDigest } from "@connector/shared/ids";
import { createLogger } from "@connector/shared/logger";
import type { IncidentRef } from "@connector/shared/messages";
import { eventTypes, queues, storageDefaults, topics } from "@connector/shared/topology";
import { ServiceBusDeadLetters } from "@connector/shared/replay/servicebus";
import { EventGridDeadLetters } from "@connector/shared/replay/eventgrid";
import type { LocalRuntime } from "@connector/local/runtime";
import { collectDeadLetters, countFigures, type DeadLetterInfo } from "./counts.ts";
import { generateIncidents, type CampaignIncident } from "./incidents.ts";
import { formatSeconds, openArtifacts, settle, startCampaignRuntime, waitUntilFinal, type CampaignRuntime } from "./harness.ts";

/**
 * Campaign 3 — poison. Malformed trigger bodies, commands and events must end in the right
 * dead-letter store with a reason that names the problem; valid messages that failed for a cause
 * that is then fixed must come through to enrichment when replayed with the replay core
 * (shared/src/replay: ServiceBusDeadLetters.resend, EventGridDeadLetters.replay).
 *
 * An Event Grid trigger cannot refuse an event (a function that throws answers 500), so the Event
 * Grid functions dead-letter invalid input themselves, at once, in Event Grid's own dead-letter
 * format with the reason (shared/src/eventgrid-dead-letters.ts). Events that fail for another
 * cause (Sentinel 404 here) are retried by Event Grid; knobs: the retry policy of
 * `enrich-incident` cut to 3 attempts (topology: 30 attempts / 24 h) and its schedule ×0.01, so
 * that shows within a second instead of a day.
 */

export interface PoisonCase {
  name: string;
  /** `queue`, `topic/Subscriptions/sub`, or `eventgrid:<subscription>`. */
  entity: string;
  reason: RegExp;
  /** What the description (Service Bus) or the host log (Event Grid) must say. */
  says: RegExp;
  found?: DeadLetterInfo;
  /** Event Grid only: the host's log line that names the problem. */
  logLine?: string;
}

export interface PoisonResult {
  cases: PoisonCase[];
  replays: { name: string; deadLettered: DeadLetterInfo | undefined; replayed: boolean; enriched: boolean }[];
  corrected: { name: string; enriched: boolean }[];
  leftAfter: DeadLetterInfo[];
  duplicates: { submissions: number; comments: number; indicators: number; liveResponses: number };
  durationMs: number;
  summary: string;
  details: string[];
  problems: string[];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function refOf(incident: CampaignIncident): IncidentRef {
  const body = incident.body as { workspaceId: string; workspaceInfo: { SubscriptionId: string; ResourceGroupName: string; WorkspaceName: string } };
  return {
    subscriptionId: body.workspaceInfo.SubscriptionId,
    resourceGroup: body.workspaceInfo.ResourceGroupName,
    workspaceName: body.workspaceInfo.WorkspaceName,
    workspaceId: body.workspaceId,
    incidentId: incident.incidentId,
    incidentNumber: incident.incidentNumber,
  };
}

/** The Service Bus dead letters now, and the Event Grid dead-letter blobs now (replay deletes those it replayed). */
export async function deadLettersNow(runtime: LocalRuntime): Promise<DeadLetterInfo[]> {
  const serviceBus = collectDeadLetters(runtime).filter((d) => !d.entity.startsWith("eventgrid:"));
  const container = BlobServiceClient.fromConnectionString(runtime.azurite.connectionString).getContainerClient(storageDefaults.eventGridDeadLetterContainer);
  const eventGrid: DeadLetterInfo[] = [];
  if (await container.exists()) {
    for await (const blob of container.listBlobsFlat()) {
      const events = JSON.parse((await container.getBlobClient(blob.name).downloadToBuffer()).toString("utf8")) as Record<string, unknown>[];
      for (const e of events) {
        eventGrid.push({
          entity: `eventgrid:${blob.name.split("/")[0]!.toLowerCase()}`,
          reason: String(e["deadLetterReason"]),
          description: `${String(e["lastDeliveryOutcome"])} (HTTP ${String(e["lastHttpStatusCode"])}) after ${String(e["deliveryAttempts"])} attempt(s)`,
          messageId: String(e["id"]),
          body: e["data"],
        });
      }
    }
  }
  return [...serviceBus, ...eventGrid];
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`poison campaign: ${what} did not happen within ${timeoutMs} ms`);
    await sleep(200);
  }
}

async function submitToSandbox(runtime: LocalRuntime, url: string): Promise<string> {
  const res = await fetch(`${runtime.anyrun.url}/v1/analysis`, {
    method: "POST",
    headers: { Authorization: `API-Key ${runtime.anyrun.apiKey}`, "content-type": "application/json" },
    body: JSON.stringify({ obj_type: "url", obj_url: url }),
  });
  const body = (await res.json()) as { data?: { taskid?: string } };
  if (!res.ok || !body.data?.taskid) throw new Error(`the sandbox double refused the task: HTTP ${res.status}`);
  return body.data.taskid;
}

export async function runPoisonCampaign(options: { seed?: number; log?: (line: string) => void } = {}): Promise<PoisonResult> {
  const log = options.log ?? (() => undefined);
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31);
  // Five valid incidents: one is the corrected version of a malformed body per fixable case.
  const incidents = generateIncidents(5, { runId: `p${seed.toString(36)}`, seed, windowsShare: 0.2, linuxShare: 0, mixedShare: 0, maliciousShare: 0.5 });
  const file = incidents.find((i) => i.shape === "windows-file")!;
  const [notFound, unknownJob, unknownEventJob, corrected] = incidents.filter((i) => i !== file);
  if (!notFound || !unknownJob || !unknownEventJob || !corrected) throw new Error("poison campaign: incident generation changed");
  log(`poison campaign: seed ${seed}`);

  const ctx: CampaignRuntime = await startCampaignRuntime({
    incidents,
    seedIncidents: false,
    eventGridTimeScale: 0.01,
    eventGridRetryPolicy: { "enrich-incident": { maxDeliveryAttempts: 3 } },
  });
  const { runtime } = ctx;
  const sb = new ServiceBusClient(runtime.broker.connectionString);
  const commands = sb.createSender(topics.artifactCommands.name);
  const publisher = new EventGridPublisherClient(runtime.env.EVENTGRID_ENDPOINT!, "EventGrid", new AzureKeyCredential(runtime.env.EVENTGRID_KEY!), { allowInsecureConnection: true });
  const quiet = createLogger({ service: "replay", level: "error" });
  const started = Date.now();
  try {
    // Every incident exists in Sentinel except the one whose 404 is the cause to fix.
    for (const i of incidents) if (i !== notFound) runtime.seed(i);
    await runtime.startHost();

    // ---------------------------------------------------------------- malformed input
    const intakeDlq = queues.incidentIntake.name;
    const urlDlq = `${topics.artifactCommands.name}/Subscriptions/submit-url`;
    const fileDlq = `${topics.artifactCommands.name}/Subscriptions/collect-file`;
    const cases: PoisonCase[] = [];
    const malformed = (name: string, entity: string, reason: RegExp, says: RegExp) => cases.push({ name, entity, reason, says });

    await runtime.pushIncident("this is not a JSON object", "poison-not-json");
    malformed("trigger body that is not JSON", intakeDlq, /^InvalidIncidentTrigger$/, /Not a Sentinel incident trigger body: \(root\): .*expected object/);
    await runtime.pushIncident([{ object: {} }], "poison-array");
    malformed("trigger body that is a JSON array", intakeDlq, /^InvalidIncidentTrigger$/, /Not a Sentinel incident trigger body: \(root\): .*expected object/);
    const noWorkspace = structuredClone(corrected.body);
    delete noWorkspace["workspaceInfo"];
    await runtime.pushIncident(noWorkspace, "poison-no-workspaceinfo");
    malformed("trigger body without workspaceInfo", intakeDlq, /^InvalidIncidentTrigger$/, /workspaceInfo/);
    const wrongId = structuredClone(file.body) as { object: { id: string } };
    wrongId.object.id = wrongId.object.id.replace("/Incidents/", "/Alerts/");
    await runtime.pushIncident(wrongId, "poison-wrong-object-id");
    malformed("trigger body whose object.id is not an incident", intakeDlq, /^InvalidIncidentTrigger$/, /object\.id is not an incident resource id/);

    const urlCommand: ServiceBusMessage = {
      body: { artifact: { kind: "url", artifactId: "url-x", url: "https://example.org/" }, attempt: 0 },
      messageId: "poison-url-command",
      contentType: "application/json",
      applicationProperties: { kind: "url" },
    };
    await commands.sendMessages(urlCommand);
    malformed("URL command without its incident", urlDlq, /^InvalidInput$/, /Not an artifact command: incident/);
    const fileArtifact = { kind: "file", artifactId: "file-x", fileName: "a.exe", directory: "C:\\x", hashes: {}, deviceId: "not-a-device" };
    await commands.sendMessages({ body: { incident: refOf(file), artifact: fileArtifact, attempt: 0 }, messageId: "poison-file-command", contentType: "application/json", applicationProperties: { kind: "file" } });
    malformed("file command with a malformed device id", fileDlq, /^InvalidInput$/, /deviceId/);
    await sb.createSender(queues.analysisWatch.name).sendMessages({ body: { incident: refOf(corrected), artifactId: "url-x", attempt: 0 }, messageId: "poison-analysis-watch", contentType: "application/json" });
    malformed("analysis poll without task id and deadline", queues.analysisWatch.name, /^InvalidInput$/, /Not an analysis watch message: .*taskId/);
    await sb.createSender(queues.liveResponseWatch.name).sendMessages({ body: "poll everything", messageId: "poison-live-response-watch", contentType: "text/plain" });
    malformed("Live Response poll that is plain text", queues.liveResponseWatch.name, /^InvalidInput$/, /Live Response watch/i);

    await publisher.send([
      { id: "poison-event-bad-data", eventType: eventTypes.analysisCompleted, subject: "/incidents/poison", dataVersion: "1.0", eventTime: new Date(), data: { incident: refOf(corrected), outcome: "exploded" } },
    ]);
    malformed("analysis-completed event with bad data", "eventgrid:enrich-incident", /^InvalidInput$/, /Not an analysis-completed event: .*artifactId/);

    // ---------------------------------------------------------------- valid input, failing for a cause we then fix
    // 1. Sentinel answers 404 for the incident (not seeded yet): the started comment cannot be posted.
    await runtime.pushIncident(notFound.body, `replay-not-found-${notFound.index}`);
    // 2. A URL command whose job row is missing (UnknownJob).
    const orphan = unknownJob.artifacts[0]!;
    const orphanArtifact = { kind: "url" as const, artifactId: `url-${shortDigest(orphan.key)}`, url: orphan.key };
    await commands.sendMessages({
      body: { incident: refOf(unknownJob), artifact: orphanArtifact, attempt: 0 },
      messageId: `${unknownJob.incidentId}:${orphanArtifact.artifactId}:command`,
      contentType: "application/json",
      correlationId: unknownJob.incidentId,
      applicationProperties: { kind: "url", incidentId: unknownJob.incidentId, artifactId: orphanArtifact.artifactId },
    });
    // 3. An analysis-completed event for a finished sandbox task whose job row is missing.
    const lateTarget = unknownEventJob.artifacts[0]!;
    const lateArtifact = { kind: "url" as const, artifactId: `url-${shortDigest(lateTarget.key)}`, url: lateTarget.key };
    const lateTask = await submitToSandbox(runtime, lateTarget.key);
    const lateEventId = `${unknownEventJob.incidentId}:${lateArtifact.artifactId}:${lateTask}:done`;
    await publisher.send([
      {
        id: lateEventId,
        eventType: eventTypes.analysisCompleted,
        subject: `/incidents/${unknownEventJob.incidentId}/artifacts/${lateArtifact.artifactId}`,
        dataVersion: "1.0",
        eventTime: new Date(),
        data: { incident: refOf(unknownEventJob), artifactId: lateArtifact.artifactId, taskId: lateTask, outcome: "done" },
      },
    ]);

    // ---------------------------------------------------------------- the dead letters, with their reasons
    const expectedSb = cases.filter((c) => !c.entity.startsWith("eventgrid:")).length;
    const snapshot = await waitFor("the dead letters", 60_000, async () => {
      const all = await deadLettersNow(runtime);
      const intakeNotFound = all.some((d) => d.entity === intakeDlq && d.reason === "IncidentNotFound");
      const orphaned = all.some((d) => d.entity === urlDlq && d.reason === "UnknownJob");
      const eventGridCount = all.filter((d) => d.entity === "eventgrid:enrich-incident").length;
      const sbCount = all.filter((d) => !d.entity.startsWith("eventgrid:")).length;
      // Event Grid: the bad event, the event without its job, and the not-found incident's enrichment (its result comment meets the 404 too).
      return intakeNotFound && orphaned && eventGridCount >= 3 && sbCount >= expectedSb + 2 ? all : undefined;
    });
    const before = snapshot;
    const hostLog = runtime.hostOutput();
    const taken = new Set<DeadLetterInfo>();
    for (const c of cases) {
      const match = before.find((d) => !taken.has(d) && d.entity === c.entity && c.reason.test(d.reason) && c.says.test(d.description) && (!c.entity.startsWith("eventgrid:") || d.messageId === "poison-event-bad-data"));
      if (match) {
        taken.add(match);
        c.found = match;
      }
      if (c.entity.startsWith("eventgrid:")) c.logLine = hostLog.split("\n").find((l) => c.says.test(l))?.slice(0, 400);
    }
    const replayCase = (name: string, pick: (d: DeadLetterInfo) => boolean) => ({ name, deadLettered: before.find(pick) });
    const notFoundIntake = replayCase("incident that Sentinel did not know (404): intake", (d) => d.entity === intakeDlq && d.reason === "IncidentNotFound");
    const notFoundEvents = before.filter((d) => d.entity === "eventgrid:enrich-incident" && (d.body as { incident?: { incidentId?: string } } | undefined)?.incident?.incidentId === notFound.incidentId);
    const orphanCommand = replayCase("URL command without its job (UnknownJob)", (d) => d.entity === urlDlq && d.reason === "UnknownJob");
    const orphanEvent = replayCase("analysis-completed event without its job", (d) => d.entity === "eventgrid:enrich-incident" && d.messageId === lateEventId);

    // ---------------------------------------------------------------- fix the causes, replay, send corrected bodies
    runtime.seed(notFound);
    await runtime.jobs.create({ incidentId: unknownJob.incidentId, artifactId: orphanArtifact.artifactId, status: "queued", incident: refOf(unknownJob), artifact: orphanArtifact });
    await runtime.jobs.create({
      incidentId: unknownEventJob.incidentId,
      artifactId: lateArtifact.artifactId,
      status: "completed",
      incident: refOf(unknownEventJob),
      artifact: lateArtifact,
      taskId: lateTask,
      taskUrl: `https://app.any.run/tasks/${lateTask}`,
    });

    const serviceBusReplay = new ServiceBusDeadLetters(sb, { receiveWaitMs: 500, logger: quiet });
    const sbIds = [notFoundIntake.deadLettered?.messageId, orphanCommand.deadLettered?.messageId].filter((x): x is string => !!x);
    const sbReport = await serviceBusReplay.resend({ entities: [intakeDlq, urlDlq], ids: sbIds }, { dryRun: false });
    const eventReplay = new EventGridDeadLetters(BlobServiceClient.fromConnectionString(runtime.azurite.connectionString).getContainerClient(storageDefaults.eventGridDeadLetterContainer), { publisher, logger: quiet });
    const egIds = [orphanEvent.deadLettered?.messageId, ...notFoundEvents.map((d) => d.messageId)].filter((x): x is string => !!x);
    const egReport = await eventReplay.replay({ entities: ["enrich-incident"], ids: egIds }, { dryRun: false });
    const replayedSb = new Set(sbReport.results.filter((r) => r.outcome === "resent").map((r) => r.messageId));
    const replayedEg = new Set(egReport.results.filter((r) => r.outcome === "replayed").map((r) => r.id));

    // Corrected versions of the two malformed trigger bodies that had a valid incident behind them.
    await runtime.pushIncident(corrected.body, `corrected-${corrected.index}`);
    await runtime.pushIncident(file.body, `corrected-${file.index}`);

    const unfinished = await waitUntilFinal({ ...ctx, incidents }, 90_000);
    await settle(ctx, 15_000);
    const enriched = (i: CampaignIncident) => openArtifacts(runtime, i).length === 0 && runtime.sentinel.comments(i.incidentId).some((c) => /ANY\.RUN Sandbox verdict/.test(c.properties?.message ?? ""));
    const replays = [
      { ...notFoundIntake, replayed: replayedSb.has(notFoundIntake.deadLettered?.messageId ?? "-") && notFoundEvents.every((d) => replayedEg.has(d.messageId ?? "-")), enriched: enriched(notFound) && runtime.sentinel.comments(notFound.incidentId).some((c) => /analysis started/.test(c.properties?.message ?? "")) },
      { ...orphanCommand, replayed: replayedSb.has(orphanCommand.deadLettered?.messageId ?? "-"), enriched: enriched(unknownJob) },
      { ...orphanEvent, replayed: replayedEg.has(orphanEvent.deadLettered?.messageId ?? "-"), enriched: enriched(unknownEventJob) },
    ];
    const correctedResults = [
      { name: "corrected body of the trigger without workspaceInfo", enriched: enriched(corrected) },
      { name: "corrected body of the trigger with a wrong object.id", enriched: enriched(file) },
    ];
    const leftAfter = await deadLettersNow(runtime);
    const figures = countFigures(runtime, incidents);
    const durationMs = Date.now() - started;

    const problems: string[] = [];
    for (const c of cases) {
      if (!c.found) {
        const there = before.filter((d) => d.entity === c.entity).map((d) => `${d.messageId} ${d.reason}: ${d.description}`);
        problems.push(`${c.name}: no dead letter in ${c.entity} with a reason matching ${c.reason} that says ${c.says}; there: ${there.join(" | ")}`);
      }
      if (c.entity.startsWith("eventgrid:") && !c.logLine) problems.push(`${c.name}: the host log does not say ${c.says}`);
    }
    for (const r of replays) {
      if (!r.deadLettered) problems.push(`${r.name}: was not dead-lettered`);
      if (!r.replayed) problems.push(`${r.name}: the replay did not resend it`);
      if (!r.enriched) problems.push(`${r.name}: not enriched after the replay`);
    }
    for (const c of correctedResults) if (!c.enriched) problems.push(`${c.name}: not enriched`);
    problems.push(...unfinished.map((u) => `unfinished: ${u}`));
    const malformedLeft = cases.filter((c) => c.found && leftAfter.some((d) => d.entity === c.found!.entity && d.messageId === c.found!.messageId)).length;
    const replayedLeft = leftAfter.filter((d) => [...replayedSb, ...replayedEg].includes(d.messageId ?? "")).length;
    if (malformedLeft !== cases.length) problems.push(`${cases.length - malformedLeft} malformed dead letter(s) vanished without a fix`);
    if (replayedLeft !== 0) problems.push(`${replayedLeft} replayed dead letter(s) still in a dead-letter store`);
    if (leftAfter.length !== cases.length) problems.push(`${leftAfter.length} dead letters left, expected only the ${cases.length} malformed ones`);
    const duplicates = {
      submissions: figures.duplicateSubmissions,
      comments: figures.duplicateComments,
      indicators: figures.duplicateIndicators,
      liveResponses: figures.duplicateLiveResponses,
    };
    for (const [k, v] of Object.entries(duplicates)) if (v !== 0) problems.push(`${v} duplicate ${k}`);

    const sbCases = cases.filter((c) => !c.entity.startsWith("eventgrid:"));
    const summary =
      `poison campaign: ${cases.filter((c) => c.found).length} of ${cases.length} malformed inputs dead-lettered with their reason (${sbCases.length} Service Bus, ${cases.length - sbCases.length} Event Grid), ` +
      `${replays.filter((r) => r.replayed).length} of ${replays.length} replayed after the fix and ${replays.filter((r) => r.enriched).length} enriched, ` +
      `${correctedResults.filter((c) => c.enriched).length} of ${correctedResults.length} corrected bodies enriched, ` +
      `${duplicates.submissions} duplicate submissions, ${duplicates.comments} duplicate comments, ${duplicates.indicators} duplicate indicators, ` +
      `${leftAfter.length} dead letters left (${formatSeconds(durationMs)})`;
    const details = [
      ...cases.map((c) => `  ${c.found ? "✓" : "✗"} ${c.name} → ${c.entity}: ${c.found ? `${c.found.reason}: ${c.found.description.slice(0, 160)}` : "not found"}${c.logLine ? `\n      host log: ${c.logLine.slice(0, 240)}` : ""}`),
      ...replays.map((r) => `  ${r.replayed && r.enriched ? "✓" : "✗"} ${r.name}: dead-lettered as ${r.deadLettered?.entity ?? "?"} ${r.deadLettered?.reason ?? "?"}${r.deadLettered?.description ? ` (${r.deadLettered.description.slice(0, 120)})` : ""}; replayed ${r.replayed}, enriched ${r.enriched}`),
      `  replay: Service Bus ${sbReport.resent}/${sbReport.selected} resent, Event Grid ${egReport.replayed}/${egReport.selected} re-published (replay core of shared/src/replay)`,
    ];
    return { cases, replays, corrected: correctedResults, leftAfter, duplicates, durationMs, summary, details, problems };
  } finally {
    await commands.close().catch(() => undefined);
    await sb.close().catch(() => undefined);
    await ctx.close();
  }
}
