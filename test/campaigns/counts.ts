import { decodeCollectArgs } from "@connector/shared/live-response/args";
import { allQueues, allTopics } from "@connector/shared/topology";
import type { LocalRuntime } from "@connector/local/runtime";
import type { CampaignArtifact, CampaignIncident } from "./incidents.ts";

/**
 * What the campaign left on the doubles, counted from the doubles themselves (never from the
 * connector's job table): sandbox tasks per artifact, Live Response actions per artifact, comments
 * per incident by kind, TI indicators and upload requests, and every dead letter.
 */

export type CommentKind = "started" | "result" | "failure" | "other";

export function commentKind(message: string): CommentKind {
  if (/ANY\.RUN Sandbox verdict:/.test(message)) return "result";
  if (/ANY\.RUN Sandbox: analysis failed/.test(message)) return "failure";
  if (/ANY\.RUN Sandbox: analysis started|no URL or file the sandbox can analyse/.test(message)) return "started";
  return "other";
}

export interface ArtifactOutcome {
  incidentId: string;
  artifact: CampaignArtifact;
  results: string[];
  failures: string[];
  tasks: number;
  liveResponses: number;
}

export interface DeadLetterInfo {
  entity: string;
  reason: string;
  description: string;
  messageId?: string;
  body: unknown;
}

export interface Figures {
  incidents: number;
  artifacts: number;
  /** Incidents whose every artifact got a result comment with the expected verdict. */
  enriched: number;
  /** Incidents with at least one artifact ended by an explicit failure comment (the others enriched). */
  failedWithComment: number;
  /** Incidents where some artifact has neither a result nor a failure comment. */
  unfinished: string[];
  wrongVerdicts: string[];
  missingLabels: string[];
  sandboxTasks: number;
  /** POST /v1/analysis requests that reached the double (whatever their outcome). */
  submissionRequests: number;
  duplicateSubmissions: number;
  /** Enriched artifacts with no sandbox task at all (a verdict from nowhere). */
  enrichedWithoutTask: number;
  foreignTasks: number;
  liveResponses: number;
  duplicateLiveResponses: number;
  comments: number;
  duplicateComments: number;
  /** Artifacts with both a result and a failure comment. */
  conflictingComments: number;
  missingStartedComments: number;
  indicatorsStored: number;
  /** Stored indicators that repeat an observable (same pattern under another id). */
  duplicateIndicators: number;
  /** Malicious enriched artifacts without the indicator of their main object. */
  missingIndicators: number;
  uploadRequests: number;
  /** Upload requests beyond the first that carried a task's indicators (same ids: an idempotent re-upload). */
  repeatedUploads: number;
  deadLetters: DeadLetterInfo[];
  perArtifact: ArtifactOutcome[];
}

/** Every dead-letter queue of the topology plus the Event Grid dead-letter store. */
export function collectDeadLetters(runtime: LocalRuntime): DeadLetterInfo[] {
  const out: DeadLetterInfo[] = [];
  const entities = [
    ...allQueues().map((q) => q.name),
    ...allTopics().flatMap((t) => t.subscriptions.map((s) => `${t.name}/Subscriptions/${s.name}`)),
  ];
  for (const entity of entities) {
    for (const m of runtime.broker.deadLetters(entity)) {
      out.push({
        entity,
        reason: m.deadLetterReason ?? "",
        description: m.deadLetterErrorDescription ?? "",
        ...(m.messageId !== undefined ? { messageId: String(m.messageId) } : {}),
        body: m.body,
      });
    }
  }
  for (const d of runtime.eventGrid.deadLetters()) {
    out.push({
      entity: `eventgrid:${d.subscription}`,
      reason: d.event.deadLetterReason,
      description: `${d.event.lastDeliveryOutcome} (HTTP ${d.event.lastHttpStatusCode}) after ${d.event.deliveryAttempts} attempt(s)`,
      messageId: d.event.id,
      body: d.event.data,
    });
  }
  return out;
}

function liveResponseKey(action: { requestorComment?: string | null; commands?: { command?: { params?: { key: string; value: string }[] } }[] | null }): string | undefined {
  for (const c of action.commands ?? []) {
    const args = c.command?.params?.find((p) => p.key === "Args")?.value;
    if (!args) continue;
    try {
      return decodeCollectArgs(args).fileName;
    } catch {
      // not our envelope
    }
  }
  return undefined;
}

export function countFigures(runtime: LocalRuntime, incidents: readonly CampaignIncident[]): Figures {
  const tasks = runtime.anyrun.tasks();
  const tasksByKey = new Map<string, number>();
  let foreignTasks = 0;
  const keyOfTask = new Map<string, string>();
  for (const i of incidents) for (const a of i.artifacts) keyOfTask.set(a.kind === "url" ? `url:${a.key}` : `sha:${a.sha256}`, a.key);
  for (const t of tasks) {
    const key = t.kind === "url" ? keyOfTask.get(`url:${t.url}`) : keyOfTask.get(`sha:${t.hashes.sha256}`);
    if (!key) foreignTasks++;
    else tasksByKey.set(key, (tasksByKey.get(key) ?? 0) + 1);
  }
  const submissionRequests = runtime.anyrun.requests().filter((r) => r.method === "POST" && r.path === "/v1/analysis").length;

  const actionsByKey = new Map<string, number>();
  const actions = runtime.mde.actions();
  for (const a of actions) {
    const key = liveResponseKey(a as never);
    if (key) actionsByKey.set(key, (actionsByKey.get(key) ?? 0) + 1);
  }

  const perArtifact: ArtifactOutcome[] = [];
  const unfinished: string[] = [];
  const wrongVerdicts: string[] = [];
  const missingLabels: string[] = [];
  let enriched = 0;
  let failedWithComment = 0;
  let comments = 0;
  let duplicateComments = 0;
  let conflictingComments = 0;
  let missingStartedComments = 0;
  let missingIndicators = 0;
  let enrichedWithoutTask = 0;

  const workspaceIds = new Set(incidents.map((i) => (i.body as { workspaceId: string }).workspaceId));
  const stored = [...workspaceIds].flatMap((w) => runtime.sentinel.indicators(w));
  const patterns = stored.map((s) => String(s["pattern"] ?? ""));

  for (const incident of incidents) {
    const all = runtime.sentinel.comments(incident.incidentId).map((c) => c.properties?.message ?? "");
    comments += all.length;
    const started = all.filter((m) => commentKind(m) === "started").length;
    if (started === 0) missingStartedComments++;
    if (started > 1) duplicateComments += started - 1;
    const labels = (runtime.sentinel.incident(incident.incidentId)?.properties?.labels ?? []).map((l) => l.labelName);
    let allEnriched = true;
    let anyFailed = false;
    let anyOpen = false;
    for (const artifact of incident.artifacts) {
      const mentions = (m: string) => m.includes(artifact.key);
      const results = all.filter((m) => commentKind(m) === "result" && mentions(m));
      const failures = all.filter((m) => commentKind(m) === "failure" && mentions(m));
      const outcome: ArtifactOutcome = {
        incidentId: incident.incidentId,
        artifact,
        results,
        failures,
        tasks: tasksByKey.get(artifact.key) ?? 0,
        liveResponses: actionsByKey.get(artifact.key) ?? 0,
      };
      perArtifact.push(outcome);
      if (results.length > 1) duplicateComments += results.length - 1;
      if (failures.length > 1) duplicateComments += failures.length - 1;
      if (results.length > 0 && failures.length > 0) conflictingComments++;
      if (results.length === 0) allEnriched = false;
      if (failures.length > 0) anyFailed = true;
      if (results.length === 0 && failures.length === 0) anyOpen = true;
      if (results.length > 0) {
        const verdict = artifact.malicious ? "Malicious activity" : "No threats detected";
        if (!results[0]!.includes(`<td>Verdict</td><td>${verdict}</td>`)) wrongVerdicts.push(`${incident.incidentId} ${artifact.key}: expected ${verdict}`);
        if (!labels.includes(`ANY.RUN: ${verdict}`)) missingLabels.push(`${incident.incidentId}: no label "ANY.RUN: ${verdict}"`);
        if (outcome.tasks === 0) enrichedWithoutTask++;
        const main = artifact.kind === "file" ? artifact.sha256! : artifact.key;
        if (artifact.malicious && !patterns.some((p) => p.includes(main))) missingIndicators++;
      }
    }
    if (anyOpen) unfinished.push(`${incident.incidentId} (#${incident.incidentNumber}, ${incident.shape})`);
    else if (allEnriched) enriched++;
    else if (anyFailed) failedWithComment++;
  }

  const byPattern = new Map<string, number>();
  for (const p of patterns) byPattern.set(p, (byPattern.get(p) ?? 0) + 1);
  const duplicateIndicators = [...byPattern.values()].reduce((n, c) => n + Math.max(0, c - 1), 0);

  // Upload requests per task: an accepted request "carries" a task when one of its objects refers to the task.
  const uploads = runtime.sentinel.uploadsWithObjects().filter((u) => u.status === 200);
  const uploadsByTask = new Map<string, number>();
  for (const u of uploads) {
    const taskUrls = new Set(
      u.objects.flatMap((o) => ((o["external_references"] as { url?: string }[] | undefined) ?? []).flatMap((r) => (r.url ? [r.url.replace(/\/$/, "")] : []))),
    );
    for (const t of taskUrls) uploadsByTask.set(t, (uploadsByTask.get(t) ?? 0) + 1);
  }
  const repeatedUploads = [...uploadsByTask.values()].reduce((n, c) => n + Math.max(0, c - 1), 0);

  return {
    incidents: incidents.length,
    artifacts: perArtifact.length,
    enriched,
    failedWithComment,
    unfinished,
    wrongVerdicts,
    missingLabels,
    sandboxTasks: tasks.length,
    submissionRequests,
    duplicateSubmissions: [...tasksByKey.values()].reduce((n, c) => n + Math.max(0, c - 1), 0),
    enrichedWithoutTask,
    foreignTasks,
    liveResponses: actions.length,
    duplicateLiveResponses: [...actionsByKey.values()].reduce((n, c) => n + Math.max(0, c - 1), 0),
    comments,
    duplicateComments,
    conflictingComments,
    missingStartedComments,
    indicatorsStored: stored.length,
    duplicateIndicators,
    missingIndicators,
    uploadRequests: uploads.length,
    repeatedUploads,
    deadLetters: collectDeadLetters(runtime),
    perArtifact,
  };
}

/** Artifacts with more than one task or Live Response, for a failure message. */
export function duplicateDetails(figures: Figures): string[] {
  return figures.perArtifact
    .filter((a) => a.tasks > 1 || a.liveResponses > 1 || a.results.length > 1 || a.failures.length > 1)
    .map((a) => `${a.incidentId} ${a.artifact.key}: ${a.tasks} task(s), ${a.liveResponses} live response(s), ${a.results.length} result / ${a.failures.length} failure comment(s)`);
}
