import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { cleanScriptOutput, formatResultLine, parseCollectResult, resultMarker } from "@connector/shared/live-response/result";

const fixture = JSON.parse(
  readFileSync(join(import.meta.dirname, "..", "fixtures", "microsoft", "mde-runscript-transcript-file-content.json"), "utf8"),
) as { script_name: string; exit_code: number; script_output: string; script_errors: string };

const sha = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
const uploadedLine = formatResultLine({ status: "uploaded", sha256: sha, size: 68 });

describe("cleanScriptOutput", () => {
  it("drops the transcript banner and trailing NULs of the documented result file", () => {
    expect(fixture.script_output.startsWith("Transcript started, output file is")).toBe(true);
    expect(fixture.script_output.endsWith("\u0000")).toBe(true);
    expect(cleanScriptOutput(fixture.script_output)).toEqual(["C:\\windows\\TEMP\\OfficeClickToRun.dmp.zip", "51 MB"]);
  });
});

describe("parseCollectResult", () => {
  it("accepts the fixture's transcript framing around our result line", () => {
    const output = fixture.script_output.replace("51 MB\n", `51 MB\n${uploadedLine}\r\n`);
    const outcome = parseCollectResult({ ...fixture, script_name: "anyrun-collect.ps1", script_output: output });
    expect(outcome).toEqual({ ok: true, exitCode: 0, report: { status: "uploaded", sha256: sha, size: 68 } });
  });

  it("fails the documented example itself: no result line", () => {
    const outcome = parseCollectResult(fixture);
    expect(outcome.ok).toBe(false);
    if (outcome.ok) return;
    expect(outcome.reason).toBe("result_line_missing");
    expect(outcome.exitCode).toBe(0);
  });

  it("requires exit code 0 even when the line says uploaded", () => {
    const outcome = parseCollectResult({ ...fixture, exit_code: 1, script_output: `x\n${uploadedLine}\n` });
    expect(outcome).toMatchObject({ ok: false, reason: "exit_code_nonzero", exitCode: 1, status: "uploaded" });
  });

  it("reports the script's own failure status with its exit code", () => {
    const line = formatResultLine({ status: "hash_mismatch", sha256: sha, detail: "sha256 differs" });
    const outcome = parseCollectResult({ ...fixture, exit_code: 5, script_output: `anyrun-collect: restored by path\n${line}\n` });
    expect(outcome).toMatchObject({ ok: false, reason: "reported_failure", status: "hash_mismatch", exitCode: 5 });
    if (!outcome.ok) expect(outcome.message).toContain("hash_mismatch");
  });

  it("does not trust a result line that is not last, repeated, or malformed", () => {
    const notLast = parseCollectResult({ ...fixture, script_output: `${uploadedLine}\nsomething after\n` });
    expect(notLast).toMatchObject({ ok: false, reason: "result_line_ambiguous" });
    const twice = parseCollectResult({ ...fixture, script_output: `${uploadedLine}\n${uploadedLine}\n` });
    expect(twice).toMatchObject({ ok: false, reason: "result_line_ambiguous" });
    const garbage = parseCollectResult({ ...fixture, script_output: `${resultMarker} not*base64\n` });
    expect(garbage).toMatchObject({ ok: false, reason: "result_line_malformed" });
    const unknownStatus = Buffer.from(JSON.stringify({ status: "great_success" })).toString("base64url");
    expect(parseCollectResult({ ...fixture, script_output: `${resultMarker} ${unknownStatus}\n` })).toMatchObject({ ok: false, reason: "result_line_malformed" });
    const noHash = Buffer.from(JSON.stringify({ status: "uploaded" })).toString("base64url");
    expect(parseCollectResult({ ...fixture, script_output: `${resultMarker} ${noHash}\n` })).toMatchObject({ ok: false, reason: "result_line_malformed" });
  });

  it("ignores free text that merely mentions success, and stderr", () => {
    const outcome = parseCollectResult({ ...fixture, script_output: "uploaded OK status=uploaded\n", script_errors: uploadedLine });
    expect(outcome).toMatchObject({ ok: false, reason: "result_line_missing" });
  });

  it("rejects something that is not a RunScript result", () => {
    expect(parseCollectResult({ exit_code: "0" })).toMatchObject({ ok: false, reason: "result_file_invalid" });
    expect(parseCollectResult(null)).toMatchObject({ ok: false, reason: "result_file_invalid" });
  });
});
