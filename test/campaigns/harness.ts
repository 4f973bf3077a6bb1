import { terminalStatuses } from "@connector/shared/job-store";
import { allQueues, allTopics } from "@connector/shared/topology";
import { createLogger, type Logger } from "@connector/shared/logger";
import { startLocalRuntime, type LocalRuntime } from "@connector/local/runtime";
import type { QueueSpec, TopicSpec } from "@connector/local/servicebus/types";
import { commentKind } from "./counts.ts";
import { maliciousSets, prng, type CampaignIncident } from "./incidents.ts";
import { startFaultProxy, type DoubleName, type FaultProxy } from "./fault-proxy.ts";

/**
 * The campaign harness: a local runtime sized for many incidents, seeded with the campaign's
 * incidents, optionally behind fault-injecting proxies; pushing; waiting until every incident is
 * final on the Sentinel double; and settling until the pipeline is quiet before counting.
 */

/**
 * Settings every campaign lowers, through `startLocalRuntime({ env })`. Production defaults are
 * minutes; the doubles answer in milliseconds, so the waits shrink with them:
 * - ANALYSIS_POLL_SECONDS / LIVE_RESPONSE_POLL_SECONDS 1: poll sandbox tasks and Live Response
 *   actions every second (the sandbox double finishes a task in well under a second).
 * - RETRY_BASE_SECONDS 1, RETRY_MAX_SECONDS 5: backoff of rescheduled work; an injected 429 still
 *   sets the delay through its Retry-After.
 * - SUBMISSION_GRACE_SECONDS 5 (default 720 = upload timeout + margin): after a crash a job stays
 *   "submitting"; once this has passed, the next delivery reconciles with the sandbox history
 *   instead of waiting 12 minutes. A real POST to the double takes milliseconds, so 5 s still only
 *   reconciles submissions that are really dead.
 * - LIVE_RESPONSE_STARTS_PER_MINUTE 100 / LIVE_RESPONSE_MAX_SESSIONS 50 / LIVE_RESPONSE_INTENT_GRACE_SECONDS 5:
 *   the connector's own Live Response caps and its post-crash look-up grace (when the build has
 *   them; unknown settings are ignored), raised with the MDE double's limits below so that ~60
 *   collections fit in a minute.
 * - LOG_LEVEL warn: 50 restarts of a chatty host would fill memory.
 */
export const campaignEnv: Record<string, string> = {
  ANALYSIS_POLL_SECONDS: "1",
  LIVE_RESPONSE_POLL_SECONDS: "1",
  RETRY_BASE_SECONDS: "1",
  RETRY_MAX_SECONDS: "5",
  SUBMISSION_GRACE_SECONDS: "5",
  LIVE_RESPONSE_STARTS_PER_MINUTE: "100",
  LIVE_RESPONSE_MAX_SESSIONS: "50",
  LIVE_RESPONSE_INTENT_GRACE_SECONDS: "5",
  LOG_LEVEL: "warn",
};

export interface FaultOptions {
  rate: number;
  seed: number;
  retryAfterSeconds: number;
  /** Held this long, then dropped: past the connector's 30 s client timeout. */
  hangMs: number;
  /** Share of the timeouts that hang (the others drop the connection at once). */
  hangShare: number;
  /** Timeouts of every write may be processed with the answer lost (default: only the sandbox submission). */
  lostAnswerWrites?: boolean;
}

export interface CampaignRuntimeOptions {
  incidents: readonly CampaignIncident[];
  /** Lock duration of every queue and subscription (fractional allowed); default: the topology's 60 s. */
  lockDurationSeconds?: number;
  /** Event Grid retry-delay multiplier (default 0.05). */
  eventGridTimeScale?: number;
  /** Per-subscription Event Grid retry policy overrides. */
  eventGridRetryPolicy?: Readonly<Record<string, { maxDeliveryAttempts?: number; eventTimeToLiveMinutes?: number }>>;
  faults?: FaultOptions;
  env?: Record<string, string>;
  /** Time a sandbox task spends running (default 400 ms). */
  sandboxRunMs?: number;
  /** Seed the Sentinel double with the incidents (default true). */
  seedIncidents?: boolean;
  logger?: Logger;
}

export interface CampaignRuntime {
  runtime: LocalRuntime;
  proxies: FaultProxy[];
  incidents: readonly CampaignIncident[];
  close(): Promise<void>;
}

/** The topology's queues and subscriptions with another lock duration (production topology unchanged). */
export function topologyWithLock(lockDurationSeconds: number): { queues: QueueSpec[]; topics: TopicSpec[] } {
  return {
    queues: allQueues().map((q) => ({ ...q, lockDurationSeconds })),
    topics: allTopics().map((t) => ({ ...t, subscriptions: t.subscriptions.map((s) => ({ ...s, lockDurationSeconds })) })),
  };
}

export async function startCampaignRuntime(options: CampaignRuntimeOptions): Promise<CampaignRuntime> {
  const logger = options.logger ?? createLogger({ service: "campaign", level: "error" });
  const bad = maliciousSets(options.incidents);
  const proxies: FaultProxy[] = [];
  const faults = options.faults;
  const runtime = await startLocalRuntime({
    logger,
    env: { ...campaignEnv, ...options.env },
    sandboxRunMs: options.sandboxRunMs ?? 400,
    anyrun: {
      knownBadSha256: bad.sha256,
      knownBadUrls: bad.urls,
      queuedMs: 100,
      // Slots are not what the campaigns exercise: no natural 429 from the sandbox.
      parallelSlots: 10_000,
    },
    mde: {
      pendingDelayMs: 100,
      // Limits of the double raised with the connector's caps (see campaignEnv).
      startCallsPerMinute: 10_000,
      maxConcurrentSessions: 1_000,
    },
    ...(options.lockDurationSeconds !== undefined ? { broker: topologyWithLock(options.lockDurationSeconds) } : {}),
    eventGrid: {
      timeScale: options.eventGridTimeScale ?? 0.05,
      ...(options.eventGridRetryPolicy ? { retryPolicy: options.eventGridRetryPolicy } : {}),
    },
    ...(faults
      ? {
          interpose: async (urls) => {
            const start = async (name: DoubleName, seedOffset: number) => {
              const proxy = await startFaultProxy(name, urls[name], {
                rate: faults.rate,
                random: prng(faults.seed + seedOffset),
                retryAfterSeconds: faults.retryAfterSeconds,
                hangMs: faults.hangMs,
                hangShare: faults.hangShare,
                ...(faults.lostAnswerWrites ? { lostAnswerWrites: true } : {}),
              });
              proxies.push(proxy);
              return proxy.url;
            };
            return {
              anyrun: await start("anyrun", 1),
              mde: await start("mde", 2),
              arm: await start("arm", 3),
              ti: await start("ti", 4),
              close: async () => {
                await Promise.all(proxies.map((p) => p.close()));
              },
            };
          },
        }
      : {}),
  });
  try {
    for (const incident of options.incidents) {
      for (const m of incident.machines) {
        runtime.mde.seedMachine({ id: m.id, osPlatform: m.osPlatform, osArchitecture: "64-bit", computerDnsName: m.name, healthStatus: "Active" });
      }
      if (options.seedIncidents ?? true) runtime.seed(incident);
      else for (const q of incident.quarantine) runtime.mde.seedQuarantine(q.deviceId, { originalPath: q.originalPath, content: q.content });
    }
  } catch (err) {
    await runtime.close();
    throw err;
  }
  return { runtime, proxies, incidents: options.incidents, close: () => runtime.close() };
}

/** An artifact is final on the Sentinel double once it has a result or a failure comment. */
export function openArtifacts(runtime: LocalRuntime, incident: CampaignIncident): string[] {
  const comments = runtime.sentinel.comments(incident.incidentId).map((c) => c.properties?.message ?? "");
  return incident.artifacts
    .filter((a) => !comments.some((m) => (commentKind(m) === "result" || commentKind(m) === "failure") && m.includes(a.key)))
    .map((a) => a.key);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Waits until every incident is final on the Sentinel double and its jobs are terminal (the job
 * table is read only to know when the connector has stopped writing, never for the figures).
 * Returns the incidents still open at the deadline, with their job statuses, for a diagnosis.
 */
export async function waitUntilFinal(
  ctx: CampaignRuntime,
  timeoutMs: number,
  pollMs = 500,
  finalAt?: Map<CampaignIncident, number>,
  slow?: { afterMs: number; report: (lines: string[]) => void },
): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  const slowAt = slow ? Date.now() + slow.afterMs : Infinity;
  let slowReported = false;
  const pending = new Set(ctx.incidents);
  for (;;) {
    if (slow && !slowReported && Date.now() > slowAt && pending.size > 0) {
      slowReported = true;
      slow.report(await describePending(ctx, pending));
    }
    for (const incident of [...pending]) {
      if (openArtifacts(ctx.runtime, incident).length > 0) continue;
      const jobs = await ctx.runtime.jobs.listByIncident(incident.incidentId);
      if (jobs.length > 0 && jobs.every((j) => terminalStatuses.has(j.status))) {
        pending.delete(incident);
        finalAt?.set(incident, Date.now());
      }
    }
    if (pending.size === 0) return [];
    if (Date.now() > deadline) return describePending(ctx, pending);
    await sleep(pollMs);
  }
}

/** For a diagnosis: each pending incident's open artifacts, job states and the messages still about it. */
async function describePending(ctx: CampaignRuntime, pending: Iterable<CampaignIncident>): Promise<string[]> {
  const out: string[] = [];
  const paths = [...allQueues().map((q) => q.name), ...allTopics().flatMap((t) => t.subscriptions.map((s) => `${t.name}/Subscriptions/${s.name}`))];
  for (const incident of pending) {
    const jobs = await ctx.runtime.jobs.listByIncident(incident.incidentId);
    const messages = paths.flatMap((p) =>
      (["active", "scheduled", "deadLetter"] as const).flatMap((kind) =>
        ctx.runtime.broker
          .messages(p, kind)
          .filter((m) => m.correlationId === incident.incidentId || JSON.stringify(m.body ?? "").includes(incident.incidentId))
          .map((m) => `${p}:${kind}:${String(m.messageId)}${m.locked ? ":locked" : ""}${m.scheduledEnqueueTimeUtc ? `@${m.scheduledEnqueueTimeUtc.toISOString().slice(11, 23)}` : ""}`),
      ),
    );
    const deliveries = ctx.runtime.eventGrid.deliveries().filter((d) => d.subject.includes(incident.incidentId) || d.eventId.includes(incident.incidentId));
    const lastDelivery = new Map<string, (typeof deliveries)[number]>();
    for (const d of deliveries) lastDelivery.set(`${d.subscription}:${d.eventId}`, d);
    const events = [...lastDelivery.values()].map((d) => `${d.subscription} attempt ${d.attempt} ${d.outcome}@${d.time.slice(11, 23)}`);
    out.push(
      `incident #${incident.incidentNumber} ${incident.incidentId} (${incident.shape}): open on Sentinel: ${openArtifacts(ctx.runtime, incident).join(", ") || "none"}; jobs: ${
        jobs.map((j) => `${j.artifactId}=${j.status}@${j.updatedAt.slice(11, 23)}${j.failure ? ` (${j.failure})` : ""}`).join(", ") || "none"
      }; messages: ${messages.join(", ") || "none"}; Event Grid: ${events.join(", ") || "none"}`,
    );
  }
  return out;
}

export interface BrokerActivity {
  active: number;
  locked: number;
  scheduled: number;
}

export function brokerActivity(runtime: LocalRuntime): BrokerActivity {
  const sum: BrokerActivity = { active: 0, locked: 0, scheduled: 0 };
  const paths = [...allQueues().map((q) => q.name), ...allTopics().flatMap((t) => t.subscriptions.map((s) => `${t.name}/Subscriptions/${s.name}`))];
  for (const p of paths) {
    const s = runtime.broker.stats(p);
    sum.active += s.active;
    sum.locked += s.locked;
    sum.scheduled += s.scheduled;
  }
  return sum;
}

export interface Settled {
  quiet: boolean;
  /** What was still busy when the wait gave up (empty when quiet). */
  busy: string[];
}

/**
 * After the last incident is final: waits (bounded) until no message is active or scheduled and
 * Event Grid has nothing pending, so that late duplicates would show in the counts. An event whose
 * deliveries failed while the host was down is retried on Event Grid's own schedule, whose steps
 * grow to 6 and 12 hours (108 s and 216 s at the campaigns' time scale of 0.005): the bound
 * covers one such step after the last kill.
 */
export async function settle(ctx: CampaignRuntime, maxMs = 240_000): Promise<Settled> {
  const deadline = Date.now() + maxMs;
  for (;;) {
    const a = brokerActivity(ctx.runtime);
    const egIdle = await Promise.race([ctx.runtime.eventGrid.idle().then(() => true), sleep(200).then(() => false)]);
    if (a.active === 0 && a.scheduled === 0 && egIdle) {
      await sleep(1_000);
      const b = brokerActivity(ctx.runtime);
      if (b.active === 0 && b.scheduled === 0) return { quiet: true, busy: [] };
    }
    if (Date.now() > deadline) return { quiet: false, busy: busyEntities(ctx.runtime) };
    await sleep(250);
  }
}

function busyEntities(runtime: LocalRuntime): string[] {
  const paths = [...allQueues().map((q) => q.name), ...allTopics().flatMap((t) => t.subscriptions.map((s) => `${t.name}/Subscriptions/${s.name}`))];
  const busy = paths.flatMap((p) => {
    const s = runtime.broker.stats(p);
    return s.active + s.locked + s.scheduled > 0 ? [`${p}: ${s.active} active, ${s.locked} locked, ${s.scheduled} scheduled`] : [];
  });
  for (const d of runtime.eventGrid.pendingDeliveries()) busy.push(`Event Grid ${d.subscription} ${d.eventId}: ${d.attempts} attempts, last ${d.lastOutcome || "none"}`);
  return busy;
}

export async function pushIncidents(runtime: LocalRuntime, incidents: readonly CampaignIncident[]): Promise<void> {
  for (const incident of incidents) await runtime.pushIncident(incident.body);
}

export function formatSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}
