import type { FaultRecord } from "./fault-proxy.ts";
import { countFigures, duplicateDetails, type Figures } from "./counts.ts";
import { generateIncidents, shapeCounts } from "./incidents.ts";
import { formatSeconds, pushIncidents, settle, startCampaignRuntime, waitUntilFinal } from "./harness.ts";

/**
 * Campaign 2 — faults. Every double (ANY.RUN, MDE, Sentinel ARM, Sentinel TI) sits behind a proxy
 * that gives 10 % of the requests a fault: a 5xx, a 429 with Retry-After, or a timeout. A timed-out
 * write (POST/PUT: sandbox submission, Live Response start, comment, incident, TI upload) was
 * processed with its answer lost (2/3) or dropped unprocessed (1/3); a timed-out read is held past
 * the connector's 30 s client timeout and then dropped (1/3) or dropped at once (2/3). Every incident must end enriched or with an
 * explicit failure comment, with no duplicates and no dead letter.
 *
 * Knobs beyond the common campaign settings (harness.ts):
 * - Retry-After 2 s on injected 429s (the connector honours it; real services say 30–60 s).
 * - Event Grid retry schedule ×0.005 (as in the crash campaign): about half of the enrichment
 *   deliveries meet a fault in one of their five or six calls and are retried on Event Grid's
 *   schedule, compressed.
 * - The MDE result file is fetched from the double's own storage-like link, outside the proxy (in
 *   Azure that link points at a storage account, not at the API).
 */

export interface FaultsOptions {
  incidents: number;
  seed?: number;
  /** Share of faulted requests per double (default 0.1). */
  rate?: number;
  finalTimeoutMs?: number;
  /**
   * A timed-out write of any double may have been processed, its answer lost (Live Response starts,
   * comments, incident PUTs, TI uploads, sandbox submissions). Default true; false keeps that to the
   * sandbox submission.
   */
  lostAnswerWrites?: boolean;
  log?: (line: string) => void;
}

export interface FaultsResult {
  seed: number;
  figures: Figures;
  faults: FaultRecord[];
  /** Requests each double received while faults were on. */
  requests: Record<string, number>;
  unfinished: string[];
  settled: boolean;
  durationMs: number;
  summary: string;
  details: string[];
}

export async function runFaultsCampaign(options: FaultsOptions): Promise<FaultsResult> {
  const log = options.log ?? (() => undefined);
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31);
  const rate = options.rate ?? 0.1;
  const incidents = generateIncidents(options.incidents, { runId: `f${seed.toString(36)}`, seed });
  log(`faults campaign: seed ${seed}, ${incidents.length} incidents ${JSON.stringify(shapeCounts(incidents))}, ${Math.round(rate * 100)} % faults on every double`);

  const ctx = await startCampaignRuntime({
    incidents,
    eventGridTimeScale: 0.005,
    faults: { rate, seed, retryAfterSeconds: 2, hangMs: 31_000, hangShare: 1 / 3, lostAnswerWrites: options.lostAnswerWrites ?? true },
  });
  const { runtime } = ctx;
  try {
    await runtime.startHost();
    const started = Date.now();
    await pushIncidents(runtime, incidents);
    const slowReport: string[] = [];
    const unfinished = await waitUntilFinal(ctx, options.finalTimeoutMs ?? 240_000, 500, undefined, {
      afterMs: 90_000,
      report: (lines) => {
        slowReport.push(...lines.map((l) => `  (informational: slow to recover, still converging) still open after 90 s: ${l}`));
        for (const l of slowReport) log(l);
      },
    });
    // Faults stop only now: a late duplicate would still have to get through them.
    const requests = Object.fromEntries(ctx.proxies.map((p) => [p.double, p.stats().requests]));
    for (const p of ctx.proxies) p.setEnabled(false);
    const { quiet: settled, busy } = await settle(ctx);
    const durationMs = Date.now() - started;
    const figures = countFigures(runtime, incidents);
    const faults = ctx.proxies.flatMap((p) => p.stats().faults);
    const totalRequests = Object.values(requests).reduce((a, b) => a + b, 0);
    const byKind = (k: string) => faults.filter((f) => f.kind === k).length;
    const summary =
      `faults campaign: ${figures.incidents} incidents, ${faults.length} faults in ${totalRequests} requests ` +
      `(${byKind("5xx")} 5xx, ${byKind("429")} 429, ${byKind("timeout")} timeouts), ${figures.enriched} enriched, ${figures.failedWithComment} failed with comment, ` +
      `${figures.duplicateSubmissions} duplicate submissions, ${figures.duplicateLiveResponses} duplicate live responses, ` +
      `${figures.duplicateComments} duplicate comments, ${figures.duplicateIndicators} duplicate indicators, ${figures.deadLetters.length} dead letters ` +
      `(${formatSeconds(durationMs)}, seed ${seed})`;
    const perDouble = ctx.proxies
      .map((p) => {
        const f = p.stats().faults;
        return `${p.double} ${f.length}/${requests[p.double]}`;
      })
      .join(", ");
    const lostAnswers = faults.filter((f) => f.timeoutMode === "lostAnswer");
    const lostByTarget = new Map<string, number>();
    for (const f of lostAnswers) {
      const path = f.path.replace(/^\/subscriptions\/.*\/Microsoft\.SecurityInsights/, "…").replace(/[0-9a-f]{8}-[0-9a-f-]{27}|[0-9a-f]{40}/g, "{id}");
      const target = `${f.double} ${f.method} ${path}`;
      lostByTarget.set(target, (lostByTarget.get(target) ?? 0) + 1);
    }
    const lost = [...lostByTarget].map(([k, n]) => `${n}× ${k}`).join(", ") || "none";
    const submissionResets = faults.filter((f) => f.timeoutMode === "reset" && f.double === "anyrun" && f.method === "POST" && f.path === "/v1/analysis").length;
    const details = [
      `  faults per double (faulted/requests): ${perDouble}; timeouts: ${faults.filter((f) => f.timeoutMode === "hang").length} held past the client timeout, ${faults.filter((f) => f.timeoutMode === "reset").length} dropped at once (${submissionResets} of them submissions); processed with the answer lost: ${lost}`,
      `  artifacts ${figures.artifacts}: sandbox tasks ${figures.sandboxTasks} (submission requests ${figures.submissionRequests}), live responses ${figures.liveResponses}, comments ${figures.comments}, indicators stored ${figures.indicatorsStored}, TI upload requests ${figures.uploadRequests} (repeated uploads ${figures.repeatedUploads}); unfinished ${figures.unfinished.length}, settled ${settled}`,
      ...slowReport,
      ...unfinished.map((u) => `  unfinished: ${u}`),
      ...busy.map((b) => `  not settled: ${b}`),
      ...duplicateDetails(figures).map((d) => `  duplicate: ${d}`),
      ...figures.deadLetters.map((d) => `  dead letter: ${d.entity} ${d.reason}: ${d.description}`),
      ...figures.perArtifact.flatMap((a) => a.failures.map((f) => `  failure comment on ${a.artifact.key}: ${f.replace(/<[^>]+>/g, " ").replace(/\s+/g, " ").trim().slice(0, 200)}`)),
      ...figures.wrongVerdicts.map((w) => `  wrong verdict: ${w}`),
    ];
    return { seed, figures, faults, requests, unfinished, settled, durationMs, summary, details };
  } finally {
    await ctx.close();
  }
}
