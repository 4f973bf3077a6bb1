/**
 * `npm start`: runs the connector on this machine, on its embedded default (no cloud account).
 * Starts the local runtime, pushes the sample incidents (or the trigger bodies given as file
 * arguments), waits until each is done and prints what each incident received.
 * Exits 0 when every incident ended as expected.
 */
import { readFileSync } from "node:fs";
import { startLocalRuntime } from "./runtime.ts";
import { sampleIncidents, type SampleIncident } from "./samples.ts";
import { checkExpectations, formatOutcome, readOutcome, waitForIncident } from "./outcomes.ts";

const out = (line: string) => process.stdout.write(line + "\n");

function userIncidents(paths: string[]): SampleIncident[] {
  return paths.map((path) => ({ name: path, body: JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>, quarantine: [], expect: [] }));
}

async function main(): Promise<number> {
  const files = process.argv.slice(2);
  const incidents = files.length ? userIncidents(files) : sampleIncidents();
  out(`Starting the local runtime (Azurite, Service Bus broker, Event Grid, functions host, ANY.RUN/MDE/Sentinel doubles)…`);
  const runtime = await startLocalRuntime();
  let failures = 0;
  try {
    await runtime.startHost();
    for (const incident of incidents) {
      try {
        runtime.seed(incident);
      } catch (err) {
        out(`! ${incident.name}: cannot seed the Sentinel double: ${(err as Error).message}`);
      }
      await runtime.pushIncident(incident.body);
      out(`→ pushed ${incident.name}`);
    }
    for (const incident of incidents) {
      let problems: string[];
      try {
        const jobs = await waitForIncident(runtime, incident.body, 120_000);
        const outcome = readOutcome(runtime, incident.body, jobs);
        out("");
        out(formatOutcome(outcome));
        problems = files.length ? [] : checkExpectations(outcome, incident.expect);
      } catch (err) {
        problems = [(err as Error).message];
      }
      if (problems.length) {
        failures++;
        for (const p of problems) out(`  ✗ ${p}`);
      } else {
        out(`  ✓ as expected`);
      }
    }
  } finally {
    await runtime.close();
  }
  out("");
  out(failures ? `${failures} of ${incidents.length} incident(s) did not end as expected.` : `All ${incidents.length} incident(s) ended as expected.`);
  return failures ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`npm start failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exit(1);
  },
);
