// Runs the whole Vitest suite and ends with the plain line CI reads: "N passed, N failed".
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const dir = mkdtempSync(join(tmpdir(), "vitest-report-"));
const report = join(dir, "report.json");
const child = spawn(
  process.execPath,
  ["node_modules/vitest/vitest.mjs", "run", "--reporter=default", "--reporter=json", `--outputFile.json=${report}`, ...process.argv.slice(2)],
  { stdio: ["inherit", "pipe", "inherit"], env: { ...process.env, ...(process.stdout.isTTY ? { FORCE_COLOR: "1" } : {}) } },
);
// Everything Vitest prints, except its note about the JSON report (a temporary file removed below).
createInterface({ input: child.stdout }).on("line", (line) => {
  if (!line.startsWith("JSON report written to")) process.stdout.write(line + "\n");
});
const status = await new Promise((resolve) => child.on("close", (code) => resolve(code ?? 1)));

let passed = 0;
let failed = 0;
let skipped = 0;
try {
  const json = JSON.parse(readFileSync(report, "utf8"));
  passed = json.numPassedTests;
  // A file that failed to load has no failed test of its own: count it as one failure.
  const brokenFiles = (json.testResults ?? []).filter((r) => r.status === "failed" && !r.assertionResults?.some((a) => a.status === "failed")).length;
  failed = json.numFailedTests + brokenFiles;
  skipped = json.numPendingTests + json.numTodoTests;
} catch {
  failed = 1;
}
rmSync(dir, { recursive: true, force: true });
if (status !== 0 && failed === 0) failed = 1;
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
process.exit(status);
