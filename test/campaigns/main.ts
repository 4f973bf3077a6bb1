/**
 * `npm run campaign -- [crash|faults|poison|all] [--incidents N] [--kills K] [--seed S]`
 *
 * Runs the scripted campaigns of issue 4 on the local runtime and prints each one's figures:
 * - crash: SIGKILL the functions host at K random moments while N incidents go through (default 100 / 50);
 * - faults: 10 % of the requests to every double get a 5xx, a 429 with Retry-After or a timeout (default 40 incidents);
 * - poison: malformed trigger bodies, commands and events end in dead letters with reasons; after the
 *   cause is fixed, replay brings the replayable ones through to enrichment.
 * Exits 0 when every campaign met its figures.
 */
import { runCrashCampaign } from "./crash.ts";
import { runFaultsCampaign } from "./faults.ts";
import { runPoisonCampaign } from "./poison.ts";
import { crashProblems, faultsProblems } from "./expectations.ts";

const out = (line: string) => process.stdout.write(line + "\n");
const usage = "usage: npm run campaign -- [crash|faults|poison|all] [--incidents N] [--kills K] [--seed S]";

class UsageError extends Error {}

function parseArgs(argv: string[]): { which: string[]; incidents?: number; kills?: number; seed?: number } {
  const which: string[] = [];
  let incidents: number | undefined;
  let kills: number | undefined;
  let seed: number | undefined;
  const int = (name: string, v: string | undefined) => {
    const n = Number(v);
    if (v === undefined || v === "" || !Number.isInteger(n) || n < 0) throw new UsageError(`${name} needs a non-negative integer`);
    return n;
  };
  // Both `--incidents 20` and `--incidents=20`.
  const split = argv.flatMap((a) => (/^--[a-z]+=/.test(a) ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a]));
  for (let i = 0; i < split.length; i++) {
    const a = split[i]!;
    if (a === "--help" || a === "-h") throw new UsageError("");
    if (a === "--incidents") incidents = int(a, split[++i]);
    else if (a === "--kills") kills = int(a, split[++i]);
    else if (a === "--seed") seed = int(a, split[++i]);
    else if (["crash", "faults", "poison", "all"].includes(a)) which.push(a);
    else throw new UsageError(`unknown argument ${a}`);
  }
  // `npm run campaign crash --incidents=20` (without `--`) hands the flag to npm, which passes it on as npm_config_incidents.
  const fromNpm = (name: string) => process.env[`npm_config_${name}`];
  if (incidents === undefined && fromNpm("incidents")) incidents = int("--incidents", fromNpm("incidents"));
  if (kills === undefined && fromNpm("kills")) kills = int("--kills", fromNpm("kills"));
  if (seed === undefined && fromNpm("seed")) seed = int("--seed", fromNpm("seed"));
  const all = which.length === 0 || which.includes("all");
  return { which: all ? ["crash", "faults", "poison"] : which, ...(incidents !== undefined ? { incidents } : {}), ...(kills !== undefined ? { kills } : {}), ...(seed !== undefined ? { seed } : {}) };
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  let failed = 0;
  const report = (summary: string, details: string[], problems: string[]) => {
    out(summary);
    for (const d of details) out(d);
    for (const p of problems) out(`  ✗ ${p}`);
    if (problems.length) failed++;
  };
  for (const which of args.which) {
    if (which === "crash") {
      const r = await runCrashCampaign({ incidents: args.incidents ?? 100, kills: args.kills ?? 50, ...(args.seed !== undefined ? { seed: args.seed } : {}), log: out });
      report(r.summary, r.details, crashProblems(r));
    } else if (which === "faults") {
      const r = await runFaultsCampaign({ incidents: args.incidents ?? 40, ...(args.seed !== undefined ? { seed: args.seed } : {}), log: out });
      report(r.summary, r.details, faultsProblems(r));
    } else {
      const r = await runPoisonCampaign({ ...(args.seed !== undefined ? { seed: args.seed } : {}), log: out });
      report(r.summary, r.details, r.problems);
    }
  }
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`${err.message ? `${err.message}\n` : ""}${usage}\n`);
      process.exit(err.message ? 2 : 0);
    }
    process.stderr.write(`campaign failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
