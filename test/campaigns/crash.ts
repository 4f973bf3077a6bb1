import { countFigures, duplicateDetails, type Figures } from "./counts.ts";
import { generateIncidents, prng, shapeCounts, type CampaignIncident } from "./incidents.ts";
import { brokerActivity, formatSeconds, openArtifacts, settle, startCampaignRuntime, waitUntilFinal } from "./harness.ts";

/**
 * Campaign 1 — crash. Incidents arrive steadily while the functions host (a child process) is
 * SIGKILLed at random moments and restarted each time; afterwards every incident must end enriched,
 * with no duplicate submission, Live Response, comment or indicator, and nothing dead-lettered.
 *
 * Knobs beyond the common campaign settings (harness.ts):
 * - lock duration 5 s on every queue and subscription (topology: 60 s): a message locked by the
 *   killed host comes back when its lock expires, as in Azure; 5 s keeps 50 kills from costing
 *   50 minutes. The SDK renews a 5 s lock every 2.5 s while a handler runs.
 * - Event Grid retry schedule ×0.005 (10 s → 0.05 s, 5 min → 1.5 s, 1 h → 18 s; TTL 24 h → 7 min):
 *   deliveries that hit a dead host are retried on Event Grid's real schedule, compressed; an event
 *   that meets the host down seven times in a row waits 18 s for its next attempt.
 */

export interface CrashOptions {
  incidents: number;
  kills: number;
  seed?: number;
  /** Host uptime before each kill, drawn uniformly from this range (ms). */
  uptimeMs?: [number, number];
  /** How long every incident may take to become final after the last kill. */
  finalTimeoutMs?: number;
  log?: (line: string) => void;
}

export interface KillRecord {
  /** ms since the first push. */
  at: number;
  uptimeMs: number;
  /** Messages locked (in flight or prefetched by the host) when it was killed. */
  lockedAtKill: number;
  /** Pushed incidents not yet final on the Sentinel double when the host was killed. */
  openAtKill: number;
  restartMs: number;
}

export interface CrashResult {
  seed: number;
  figures: Figures;
  kills: KillRecord[];
  unfinished: string[];
  settled: boolean;
  durationMs: number;
  summary: string;
  details: string[];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function runCrashCampaign(options: CrashOptions): Promise<CrashResult> {
  const log = options.log ?? (() => undefined);
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31);
  const random = prng(seed ^ 0x5eed);
  const [minUp, maxUp] = options.uptimeMs ?? [200, 1500];
  const incidents = generateIncidents(options.incidents, { runId: `k${seed.toString(36)}`, seed });
  log(`crash campaign: seed ${seed}, ${incidents.length} incidents ${JSON.stringify(shapeCounts(incidents))}, ${options.kills} kills`);

  const ctx = await startCampaignRuntime({ incidents, lockDurationSeconds: 5, eventGridTimeScale: 0.005 });
  const { runtime } = ctx;
  try {
    await runtime.startHost();
    const started = Date.now();
    // Incidents arrive over all but the last two kill cycles, so kills keep hitting fresh work.
    const cycles = Math.max(1, options.kills - 2);
    let pushed = 0;
    const kills: KillRecord[] = [];
    for (let k = 0; k < options.kills; k++) {
      const target = Math.min(incidents.length, Math.round(((k + 1) * incidents.length) / cycles));
      while (pushed < target) await runtime.pushIncident(incidents[pushed++]!.body);
      const uptimeMs = Math.round(minUp + random() * (maxUp - minUp));
      await sleep(uptimeMs);
      const lockedAtKill = brokerActivity(runtime).locked;
      const openAtKill = incidents.slice(0, pushed).filter((i) => openArtifacts(runtime, i).length > 0).length;
      const at = Date.now() - started;
      await runtime.killHost();
      const t = Date.now();
      await runtime.startHost();
      kills.push({ at, uptimeMs, lockedAtKill, openAtKill, restartMs: Date.now() - t });
    }
    while (pushed < incidents.length) await runtime.pushIncident(incidents[pushed++]!.body);
    const killPhaseMs = Date.now() - started;
    log(`crash campaign: ${kills.length} kills done after ${formatSeconds(killPhaseMs)}; waiting for every incident to be final`);

    const finalAt = new Map<CampaignIncident, number>();
    const slowReport: string[] = [];
    // Long enough for one 12-hour step of Event Grid's retry schedule (216 s at this time scale).
    const unfinished = await waitUntilFinal(ctx, options.finalTimeoutMs ?? 300_000, 500, finalAt, {
      afterMs: 15_000,
      report: (lines) => {
        slowReport.push(...lines.map((l) => `  (informational: slow to recover, still converging) still open 15 s after the kill phase (${new Date().toISOString().slice(11, 23)}): ${l}`));
        for (const l of slowReport) log(l);
      },
    });
    const slowest = [...finalAt].sort((a, b) => b[1] - a[1]).slice(0, 3);
    const { quiet: settled, busy } = await settle(ctx);
    const durationMs = Date.now() - started;
    const figures = countFigures(runtime, incidents);
    const deadLetters = figures.deadLetters.length;
    const summary =
      `crash campaign: ${figures.incidents} incidents, ${kills.length} kills, ${figures.enriched} enriched, ` +
      `${figures.duplicateSubmissions} duplicate submissions, ${figures.duplicateLiveResponses} duplicate live responses, ` +
      `${figures.duplicateComments} duplicate comments, ${figures.duplicateIndicators} duplicate indicators, ${deadLetters} dead letters ` +
      `(${formatSeconds(durationMs)}, seed ${seed})`;
    const hit = kills.filter((k) => k.openAtKill > 0).length;
    const locked = kills.filter((k) => k.lockedAtKill > 0).length;
    const avgRestart = kills.reduce((n, k) => n + k.restartMs, 0) / Math.max(1, kills.length);
    const details = [
      `  artifacts ${figures.artifacts}: sandbox tasks ${figures.sandboxTasks} (submission requests ${figures.submissionRequests}), live responses ${figures.liveResponses}, comments ${figures.comments}, indicators stored ${figures.indicatorsStored}, TI upload requests ${figures.uploadRequests} (repeated uploads of the same ids ${figures.repeatedUploads})`,
      `  kills: ${hit}/${kills.length} with incidents in flight (${locked} with locked messages), mean host restart ${formatSeconds(avgRestart)}, kill phase ${formatSeconds(killPhaseMs)}; failed with comment ${figures.failedWithComment}, unfinished ${figures.unfinished.length}, settled ${settled}`,
      `  last incidents final ${slowest.map(([i, t]) => `#${i.incidentNumber} (${i.shape}) at +${formatSeconds(t - started - killPhaseMs)}`).join(", ")} after the kill phase`,
      ...slowReport,
      ...unfinished.map((u) => `  unfinished: ${u}`),
      ...busy.map((b) => `  not settled: ${b}`),
      ...duplicateDetails(figures).map((d) => `  duplicate: ${d}`),
      ...figures.deadLetters.map((d) => `  dead letter: ${d.entity} ${d.reason}: ${d.description}`),
      ...figures.wrongVerdicts.map((w) => `  wrong verdict: ${w}`),
    ];
    return { seed, figures, kills, unfinished, settled, durationMs, summary, details };
  } finally {
    await ctx.close();
  }
}
