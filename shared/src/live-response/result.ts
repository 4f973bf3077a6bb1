import { z } from "zod";

/**
 * Reading what the collection scripts (services/scripts/anyrun-collect.{sh,ps1}) report.
 *
 * A RunScript result is `{script_name, exit_code, script_output, script_errors}`. On Windows the
 * output starts with a PowerShell transcript banner and may end with NULs. Our scripts end their
 * stdout with exactly one machine-readable line:
 *
 *   ANYRUN_COLLECT_RESULT <base64url(JSON)>      JSON = {status, sha256?, size?, detail?}
 *
 * Success needs BOTH exit_code 0 and that line (the last non-empty line of the output) saying
 * `uploaded` with the SHA-256 and size of what was uploaded. Nothing else in the output is trusted:
 * free text, stderr and MDE's command `errors[]` are for humans only.
 */

export const resultMarker = "ANYRUN_COLLECT_RESULT";

/**
 * What a script reports, with its exit code:
 * uploaded 0 · error 1 (unexpected failure) · bad_args 2 · not_found 3 · restore_failed 4 ·
 * hash_mismatch 5 · upload_failed 6 · tool_missing 7 (no mdatp / MpCmdRun / curl / hash tool).
 */
export const collectStatuses = [
  "uploaded",
  "error",
  "bad_args",
  "not_found",
  "restore_failed",
  "hash_mismatch",
  "upload_failed",
  "tool_missing",
] as const;
export type CollectStatus = (typeof collectStatuses)[number];

export const collectExitCodes: Record<CollectStatus, number> = {
  uploaded: 0,
  error: 1,
  bad_args: 2,
  not_found: 3,
  restore_failed: 4,
  hash_mismatch: 5,
  upload_failed: 6,
  tool_missing: 7,
};

export const collectReportSchema = z.object({
  status: z.enum(collectStatuses),
  /** SHA-256 of the bytes the script uploaded (or found, for hash_mismatch). */
  sha256: z.string().regex(/^[0-9a-f]{64}$/).optional(),
  size: z.number().int().nonnegative().optional(),
  /** Short fixed-vocabulary hint written by the script (never incident data, never the URL). */
  detail: z.string().max(200).optional(),
});
export type CollectReport = z.infer<typeof collectReportSchema>;

/** The RunScript result file served through GetLiveResponseResultDownloadLink. */
export const runScriptResultSchema = z.object({
  script_name: z.string(),
  exit_code: z.number().int(),
  script_output: z.string(),
  script_errors: z.string(),
});
export type RunScriptResult = z.infer<typeof runScriptResultSchema>;

export type CollectFailureReason =
  /** The result file is not a RunScript result. */
  | "result_file_invalid"
  /** No result line: the script did not run to its end, or is not ours. */
  | "result_line_missing"
  /** More than one result line, or the result line is not the last line. */
  | "result_line_ambiguous"
  /** The result line does not decode to a valid report. */
  | "result_line_malformed"
  /** The script reported a failure (see `status`). */
  | "reported_failure"
  /** The report says uploaded but the exit code is not 0. */
  | "exit_code_nonzero";

export type CollectOutcome =
  | { ok: true; exitCode: 0; report: CollectReport & { status: "uploaded"; sha256: string; size: number } }
  | { ok: false; reason: CollectFailureReason; exitCode?: number; status?: CollectStatus; report?: CollectReport; message: string };

const transcriptBanner = /^\s*Transcript started, output file is .*$/;
const transcriptEnd = /^\s*Transcript stopped, output file is .*$/;

/** script_output without the transcript banner, NULs and blank lines, split into lines. */
export function cleanScriptOutput(output: string): string[] {
  const lines = output
    .replace(/\u0000+/g, "")
    .replace(/^\uFEFF/, "")
    .split(/\r?\n|\r/)
    .map((l) => l.replace(/\s+$/, ""));
  const firstContent = lines.findIndex((l) => l.trim() !== "");
  if (firstContent >= 0 && transcriptBanner.test(lines[firstContent]!)) lines.splice(firstContent, 1);
  const kept = lines.filter((l) => l.trim() !== "");
  if (kept.length > 0 && transcriptEnd.test(kept[kept.length - 1]!)) kept.pop();
  return kept;
}

/** The result line the scripts print (used by the MDE double's Windows emulation and tests). */
export function formatResultLine(report: CollectReport): string {
  const parsed = collectReportSchema.parse(report);
  return `${resultMarker} ${Buffer.from(JSON.stringify(parsed), "utf8").toString("base64url")}`;
}

function decodeReport(payload: string): CollectReport | undefined {
  if (!/^[A-Za-z0-9_-]+={0,2}$/.test(payload)) return undefined;
  try {
    const json: unknown = JSON.parse(Buffer.from(payload.replace(/=+$/, ""), "base64url").toString("utf8"));
    const parsed = collectReportSchema.safeParse(json);
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** Decides from a downloaded RunScript result whether the collection succeeded. Never throws. */
export function parseCollectResult(resultFile: unknown): CollectOutcome {
  const file = runScriptResultSchema.safeParse(resultFile);
  if (!file.success) return { ok: false, reason: "result_file_invalid", message: "not a RunScript result file" };
  const exitCode = file.data.exit_code;
  const lines = cleanScriptOutput(file.data.script_output);
  const markerLines = lines.map((l, i) => ({ l: l.trim(), i })).filter(({ l }) => l === resultMarker || l.startsWith(`${resultMarker} `));
  if (markerLines.length === 0) {
    return { ok: false, reason: "result_line_missing", exitCode, message: `no ${resultMarker} line (exit code ${exitCode})` };
  }
  if (markerLines.length > 1 || markerLines[0]!.i !== lines.length - 1) {
    return { ok: false, reason: "result_line_ambiguous", exitCode, message: `the ${resultMarker} line must be the only one and the last` };
  }
  const payload = markerLines[0]!.l.slice(resultMarker.length).trim();
  const report = decodeReport(payload);
  if (!report) return { ok: false, reason: "result_line_malformed", exitCode, message: "the result line does not decode to a report" };
  if (report.status !== "uploaded") {
    return {
      ok: false,
      reason: "reported_failure",
      exitCode,
      status: report.status,
      report,
      message: `script reported ${report.status}${report.detail ? ` (${report.detail})` : ""}, exit code ${exitCode}`,
    };
  }
  if (exitCode !== 0) {
    return { ok: false, reason: "exit_code_nonzero", exitCode, status: report.status, report, message: `script reported uploaded but exited ${exitCode}` };
  }
  if (report.sha256 === undefined || report.size === undefined) {
    return { ok: false, reason: "result_line_malformed", exitCode, status: report.status, report, message: "uploaded report lacks sha256 or size" };
  }
  return { ok: true, exitCode: 0, report: { ...report, status: "uploaded", sha256: report.sha256, size: report.size } };
}
