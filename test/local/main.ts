/**
 * `npm start`: runs the connector on this machine, on its embedded default (no cloud account).
 * Starts the local runtime, pushes the sample incidents (or the trigger bodies given as file
 * arguments), waits until each is done and prints what each incident received.
 * Exits 0 when every incident ended as expected (for your own files: when each reached a final
 * state — analysed, failed with a comment, or dead-lettered with a reason).
 */
import { readFileSync } from "node:fs";
import { queues } from "@connector/shared/topology";
import { terminalStatuses } from "@connector/shared/job-store";
import { createLogger } from "@connector/shared/logger";
import { startLocalRuntime, type LocalRuntime } from "./runtime.ts";
import { sampleIncidents, type SampleIncident } from "./samples.ts";
import { checkExpectations, formatOutcome, incidentIdOf, readOutcome, waitForIncident } from "./outcomes.ts";

const out = (line: string) => process.stdout.write(line + "\n");

interface Run {
  incident: SampleIncident;
  /** Set for the user's own files: their bodies are pushed as they are, without expectations. */
  userFile?: string;
  messageId: string;
}

function readUserIncidents(paths: string[]): { runs: Run[]; unreadable: number } {
  const runs: Run[] = [];
  let unreadable = 0;
  paths.forEach((path, i) => {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (err) {
      out(`✗ ${path}: cannot read the file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
      unreadable++;
      return;
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (err) {
      out(`✗ ${path}: not JSON (${(err as Error).message})`);
      unreadable++;
      return;
    }
    runs.push({ incident: { name: path, body: body as Record<string, unknown>, quarantine: [], expect: [] }, userFile: path, messageId: `user-incident-${i + 1}` });
  });
  return { runs, unreadable };
}

/** Waits for the incident's jobs to end, or for the intake to dead-letter its body. */
async function waitForRun(runtime: LocalRuntime, run: Run, timeoutMs: number) {
  let incidentId: string | undefined;
  try {
    incidentId = incidentIdOf(run.incident.body);
  } catch {
    incidentId = undefined;
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const dead = runtime.broker.deadLetters(queues.incidentIntake.name).find((m) => String(m.messageId) === run.messageId);
    if (dead) return { deadLetter: { reason: dead.deadLetterReason ?? "", description: dead.deadLetterErrorDescription ?? "" } };
    if (incidentId) {
      const jobs = await runtime.jobs.listByIncident(incidentId).catch(() => []);
      const noArtifacts = runtime.sentinel.comments(incidentId).some((c) => /no URL or file the sandbox can analyse/.test(c.properties?.message ?? ""));
      if ((jobs.length > 0 && jobs.every((j) => terminalStatuses.has(j.status))) || (jobs.length === 0 && noArtifacts)) {
        return { outcome: readOutcome(runtime, run.incident.body, await waitForIncident(runtime, run.incident.body, 1000)) };
      }
    }
    if (Date.now() > deadline) {
      const jobs = incidentId ? await runtime.jobs.listByIncident(incidentId).catch(() => []) : [];
      const byStatus = new Map<string, number>();
      for (const j of jobs) byStatus.set(j.status, (byStatus.get(j.status) ?? 0) + 1);
      const states = [...byStatus].map(([status, n]) => `${n} ${status}`).join(", ");
      throw new Error(`not finished after ${timeoutMs / 1000} s${states ? ` (artifacts: ${states})` : " (no artifact recorded)"}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

const usage = `Usage: npm start [-- [--keep] [incident.json …]]

Without files: runs the sample incidents through the local pipeline and checks each outcome.
With files: pushes your own Sentinel incident trigger bodies (see
test/fixtures/microsoft/sentinel-incident-trigger-body.COMPOSITE.json) and prints what each got.
--keep: leave the local runtime up afterwards (e.g. for npm run replay); Ctrl-C stops it.
LOCAL_RUNTIME_VERBOSE=1 also shows the functions host's logs.`;

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  if (args.includes("--help") || args.includes("-h")) {
    out(usage);
    return 0;
  }
  const unknown = args.filter((a) => a.startsWith("--") && a !== "--keep");
  if (unknown.length) {
    out(`Unknown option ${unknown.join(", ")}.

${usage}`);
    return 2;
  }
  // --keep: leave the local runtime up afterwards (e.g. to try `npm run replay` on its dead letters).
  const keep = args.includes("--keep");
  const files = args.filter((a) => a !== "--keep");
  const { runs, unreadable }: { runs: Run[]; unreadable: number } = files.length
    ? readUserIncidents(files)
    : { runs: sampleIncidents().map((incident, i) => ({ incident, messageId: `sample-incident-${i + 1}` })), unreadable: 0 };
  if (runs.length === 0) {
    out("Nothing to run.");
    return 1;
  }
  out(`Starting the local runtime (Azurite, Service Bus broker, Event Grid, functions host, ANY.RUN/MDE/Sentinel doubles)…`);
  let stopping = false;
  let parked = false;
  let runtime: LocalRuntime | undefined;
  // `on`, not `once`: a terminal's Ctrl-C reaches npm, tsx and this process, and tsx relays it
  // again; a second signal without a listener would exit in the middle of the clean-up. Set before
  // the runtime starts: a signal while it starts stops it as soon as it is up.
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    out(`\n${signal}: stopping the local runtime…`);
    // Ctrl-C is how a --keep run is meant to end.
    const code = parked ? 0 : 130;
    if (runtime) void runtime.close().finally(() => process.exit(code));
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  process.on("SIGHUP", stop);

  // The runtime's own logs (Event Grid retries and the like) go to stderr, so that stdout stays the
  // human-readable outcome; below error level only with LOCAL_RUNTIME_VERBOSE.
  runtime = await startLocalRuntime({
    logger: createLogger({ service: "local-runtime", level: process.env.LOCAL_RUNTIME_VERBOSE ? "info" : "error", sink: (_level, line) => void process.stderr.write(line + "\n") }),
  });
  if (stopping) {
    await runtime.close();
    return 130;
  }

  let failures = unreadable;
  try {
    await runtime.startHost();
    if (files.length) {
      // The fake Defender quarantine holds the samples' files for your own incidents too.
      for (const q of sampleIncidents().flatMap((sample) => sample.quarantine)) runtime.mde.seedQuarantine(q.deviceId, { originalPath: q.originalPath, content: q.content });
    }
    const pushed: Run[] = [];
    for (const run of runs) {
      try {
        runtime.seed(run.incident);
      } catch {
        // Not shaped like an incident: nothing to seed; the intake will say what is wrong with it.
      }
      try {
        await runtime.pushIncident(run.incident.body, run.messageId);
      } catch (err) {
        // The queue refused it (too large even without its entity lists, …): this one only.
        out(`✗ ${run.incident.name}: the intake queue refused it (${(err as Error).message})`);
        failures++;
        continue;
      }
      pushed.push(run);
      out(`→ pushed ${run.incident.name}`);
    }
    for (const run of pushed) {
      let problems: string[] = [];
      out("");
      try {
        const result = await waitForRun(runtime, run, 120_000);
        if (result.deadLetter) {
          out(`${run.incident.name}: rejected by the intake and dead-lettered`);
          out(`  reason: ${result.deadLetter.reason}`);
          out(`  ${result.deadLetter.description}`);
          if (!run.userFile) problems.push("a sample incident was dead-lettered");
          else {
            out("  ✓ finished: dead-lettered with its reason");
            continue;
          }
        } else {
          out(formatOutcome(result.outcome));
          if (!run.userFile) problems = checkExpectations(result.outcome, run.incident.expect);
          else if (result.outcome.jobs.some((j) => j.status === "failed" && j.artifact.kind === "file" && j.machineActionId)) {
            out("  note: for a Linux or macOS host the local MDE double runs the real endpoint script on this machine (the file is looked for at its path here, then in the fake Defender quarantine, which holds only the samples' files); a Windows host is emulated and holds only the samples' files");
          }
        }
      } catch (err) {
        if (stopping) break;
        out(`${run.incident.name}`);
        problems = [(err as Error).message];
      }
      if (problems.length) {
        failures++;
        for (const p of problems) out(`  ✗ ${p}`);
      } else {
        out(run.userFile ? "  ✓ finished" : "  ✓ as expected");
      }
    }
    if (keep && !stopping) {
      out("");
      out("The local runtime stays up (--keep). In another terminal, for example:");
      for (const name of ["SERVICEBUS_CONNECTION", "STORAGE_CONNECTION", "EVENTGRID_ENDPOINT", "EVENTGRID_KEY"]) {
        out(`  export ${name}='${runtime.env[name]}'`);
      }
      out("  npm run --silent replay -- list");
      out("Press Ctrl-C to stop it.");
      parked = true;
      await new Promise(() => undefined); // until SIGINT / SIGTERM
    }
  } finally {
    await runtime.close();
  }
  out("");
  const total = runs.length + unreadable;
  out(failures ? `${failures} of ${total} incident(s) did not end as expected.` : `All ${total} incident(s) ended as expected.`);
  return failures ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`npm start failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
