import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { collectExitCodes, collectStatuses, resultMarker } from "@connector/shared/live-response/result";
import { defaultScriptsDir } from "@connector/local/doubles/mde";

/**
 * Drift guards between the two endpoint scripts and the TypeScript side that reads them (the .ps1
 * cannot run here; the MDE double emulates it, so the contract it emulates must stay in the file).
 */

const sh = readFileSync(join(defaultScriptsDir, "anyrun-collect.sh"), "utf8");
const ps1 = readFileSync(join(defaultScriptsDir, "anyrun-collect.ps1"), "utf8");
/** The code without comments (help block and # lines). */
const code = (text: string) => text.replace(/<#[\s\S]*?#>/g, "").replace(/^\s*#.*$/gm, "");

describe("collection scripts", () => {
  it("use the same status → exit code table as result.ts", () => {
    const shTable = Object.fromEntries([...sh.matchAll(/^\s+([a-z_]+)\) echo (\d+) ;;$/gm)].map((m) => [m[1]!, Number(m[2])]));
    // `*) echo 1` covers "error" in the bash script.
    expect({ ...shTable, error: 1 }).toEqual(collectExitCodes);
    const psBlock = /\$ExitCodes = @\{([\s\S]*?)\n\}/.exec(ps1)![1]!;
    const psTable = Object.fromEntries([...psBlock.matchAll(/'([a-z_]+)' = (\d+)/g)].map((m) => [m[1]!, Number(m[2])]));
    expect(psTable).toEqual(collectExitCodes);
    expect(Object.keys(collectExitCodes).sort()).toEqual([...collectStatuses].sort());
  });

  it("print the marker the parser looks for and send the blob headers the contract requires", () => {
    for (const script of [sh, ps1]) {
      expect(script).toMatch(/x-ms-blob-type'?\s*[:=]\s*'?\s*BlockBlob/);
      expect(script).toMatch(/x-ms-version'?\s*[:=]\s*'?\s*2021-04-10/);
      expect(code(script)).not.toMatch(/Invoke-Expression|\biex\b|\beval\b/);
    }
    expect(sh).toContain(`readonly MARKER="${resultMarker}"`);
    expect(ps1).toContain(`$Marker = '${resultMarker}'`);
    expect(sh).toMatch(/^set -euo pipefail$/m);
    expect(sh).toContain("--fail");
    expect(ps1).toContain("Remove-MpPreference -ExclusionPath");
    expect(ps1).toMatch(/MpCmdRun/);
  });

  it("accept only local paths: a drive path on Windows (no UNC or device path), no dot segments", () => {
    const check = /if \(\$originalPath -notmatch '([^']+)'/.exec(code(ps1))![1]!;
    expect(check).toBe("^[A-Za-z]:\\\\");
    expect(new RegExp(check).test("\\\\evil-host\\share\\a.exe")).toBe(false);
    expect(new RegExp(check).test("C:\\Users\\a.exe")).toBe(true);
    expect(code(ps1)).toContain("original path has dot segments");
    expect(code(sh)).toContain('*/../*|*/./*) finish bad_args "original path has dot segments"');
  });

  it("bash script parses (bash -n)", () => {
    const check = spawnSync("bash", ["-n", join(defaultScriptsDir, "anyrun-collect.sh")], { encoding: "utf8" });
    expect(check.stderr).toBe("");
    expect(check.status).toBe(0);
  });
});
