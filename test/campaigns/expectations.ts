import type { Figures } from "./counts.ts";
import type { CrashResult } from "./crash.ts";
import type { FaultsResult } from "./faults.ts";

/** What the CLI checks (the tests assert the same figures one by one). */

function common(f: Figures): string[] {
  const problems: string[] = [];
  const zero = (name: string, value: number) => {
    if (value !== 0) problems.push(`${value} ${name}`);
  };
  zero("duplicate submissions", f.duplicateSubmissions);
  zero("duplicate live responses", f.duplicateLiveResponses);
  zero("duplicate comments", f.duplicateComments);
  zero("conflicting result/failure comments", f.conflictingComments);
  zero("duplicate indicators", f.duplicateIndicators);
  zero("dead letters", f.deadLetters.length);
  zero("unfinished incidents", f.unfinished.length);
  zero("wrong verdicts", f.wrongVerdicts.length);
  zero("missing verdict labels", f.missingLabels.length);
  zero("malicious artifacts without their indicator", f.missingIndicators);
  zero("verdicts without a sandbox task", f.enrichedWithoutTask);
  zero("incidents without their started comment", f.missingStartedComments);
  zero("sandbox tasks of no campaign artifact", f.foreignTasks);
  return problems;
}

export function crashProblems(r: CrashResult): string[] {
  const problems = common(r.figures);
  if (r.figures.enriched !== r.figures.incidents) problems.push(`${r.figures.enriched} of ${r.figures.incidents} incidents enriched`);
  if (!r.settled) problems.push("the pipeline did not go quiet after the last incident");
  return problems;
}

export function faultsProblems(r: FaultsResult): string[] {
  const problems = common(r.figures);
  if (r.figures.enriched + r.figures.failedWithComment !== r.figures.incidents) {
    problems.push(`${r.figures.enriched} enriched + ${r.figures.failedWithComment} failed with comment ≠ ${r.figures.incidents} incidents`);
  }
  if (r.faults.length === 0) problems.push("no fault was injected");
  for (const kind of ["5xx", "429", "timeout"]) if (!r.faults.some((f) => f.kind === kind)) problems.push(`no ${kind} fault was injected`);
  if (!r.settled) problems.push("the pipeline did not go quiet after the last incident");
  return problems;
}
