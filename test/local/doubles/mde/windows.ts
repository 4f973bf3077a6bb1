import { createHash, randomUUID } from "node:crypto";
import { decodeCollectArgs, expectedHash, type CollectArgs } from "@connector/shared/live-response/args";
import { collectExitCodes, formatResultLine, type CollectReport, type CollectStatus } from "@connector/shared/live-response/result";

/**
 * TypeScript emulation of services/scripts/anyrun-collect.ps1 for the MDE double's Windows devices
 * (PowerShell cannot run here). It follows the script's documented behaviour step by step:
 * decode the envelope, take the file from its original path if present, else "MpCmdRun -Restore
 * -FilePath <orig> -Path <tmp>" from the device's fake quarantine (paths compare case-insensitively,
 * as on NTFS), verify the hash, PUT the bytes to the SAS URL with the script's headers, and print the
 * same result line. The output is wrapped like a real RunScript result: transcript banner first,
 * NULs last.
 */

export interface WindowsQuarantineEntry {
  threatId: string;
  threatName: string;
  originalPath: string;
  content: Buffer;
}

export interface WindowsDevice {
  quarantine: readonly WindowsQuarantineEntry[];
  /** Files present on the device's disk, by path. */
  files: ReadonlyMap<string, Buffer>;
}

export interface EmulatedRun {
  exitCode: number;
  stdout: string;
  stderr: string;
  report: CollectReport;
  /** What the emulated MpCmdRun / Defender cmdlets were asked to do (for assertions). */
  calls: string[];
}

const sha = (algorithm: string, bytes: Buffer) => createHash(algorithm).update(bytes).digest("hex");

function transcriptBanner(): string {
  const id = randomUUID().replace(/-/g, "").slice(0, 20).toUpperCase();
  return `Transcript started, output file is C:\\ProgramData\\Microsoft\\Windows Defender Advanced Threat Protection\\Temp\\PSScriptOutputs\\PSScript_Transcript_{${id}}.txt`;
}

function findFile(files: ReadonlyMap<string, Buffer>, path: string): Buffer | undefined {
  const wanted = path.toLowerCase();
  for (const [p, content] of files) if (p.toLowerCase() === wanted) return content;
  return undefined;
}

export async function emulateWindowsCollect(
  args: string | undefined,
  device: WindowsDevice,
  fetchImpl: typeof fetch = fetch,
): Promise<EmulatedRun> {
  const lines: string[] = [];
  const calls: string[] = [];
  const step = (text: string) => lines.push(`anyrun-collect: ${text}`);

  const finish = (status: CollectStatus, detail?: string, extra: { sha256?: string; size?: number } = {}): EmulatedRun => {
    const report: CollectReport = { status, ...extra, ...(detail ? { detail } : {}) };
    lines.push(formatResultLine(report));
    return {
      exitCode: collectExitCodes[status],
      stdout: `${transcriptBanner()}\n${lines.join("\n")}\n\u0000\u0000\u0000`,
      stderr: "",
      report,
      calls,
    };
  };

  let decoded: CollectArgs;
  try {
    decoded = decodeCollectArgs(args ?? "");
  } catch {
    return finish("bad_args", "envelope");
  }
  if (decoded.os !== "windows") return finish("bad_args", "envelope os");
  if (!/^[A-Za-z]:\\/.test(decoded.originalPath) || decoded.originalPath.includes('"')) {
    return finish("bad_args", "original path not a local drive path");
  }
  const expected = expectedHash(decoded);
  let mismatchSha256: string | undefined;
  const matches = (bytes: Buffer): boolean => {
    if (!expected) return true;
    if (sha(expected.algorithm, bytes) === expected.value) return true;
    mismatchSha256 = sha("sha256", bytes);
    return false;
  };

  let chosen: Buffer | undefined;
  const onDisk = findFile(device.files, decoded.originalPath);
  if (onDisk) {
    step("file present at its original path");
    if (matches(onDisk)) chosen = onDisk;
  }
  let foundInQuarantine = false;
  if (!chosen) {
    calls.push("Add-MpPreference -ExclusionPath <private folder>");
    calls.push("MpCmdRun.exe -Restore -FilePath <original path> -Path <private folder>");
    const wanted = decoded.originalPath.toLowerCase();
    const restored = device.quarantine.filter((e) => e.originalPath.toLowerCase() === wanted);
    if (restored.length > 0) {
      foundInQuarantine = true;
      step("restored by path");
    }
    for (const entry of restored) {
      if (matches(entry.content)) {
        chosen = entry.content;
        break;
      }
    }
    calls.push("Remove-MpPreference -ExclusionPath <private folder>");
  }
  if (!chosen) {
    if (mismatchSha256) return finish("hash_mismatch", `${expected!.algorithm} differs`, { sha256: mismatchSha256 });
    if (foundInQuarantine) return finish("restore_failed", "restore produced no usable file");
    return finish("not_found", "not at original path and not in quarantine");
  }

  const sha256 = sha("sha256", chosen);
  const size = chosen.length;
  step("uploading");
  let status = 0;
  try {
    const response = await fetchImpl(decoded.uploadUrl, {
      method: "PUT",
      headers: {
        "x-ms-blob-type": "BlockBlob",
        "x-ms-version": "2021-04-10",
        "Content-Type": "application/octet-stream",
      },
      body: new Uint8Array(chosen),
      redirect: "manual",
    });
    status = response.status;
    await response.body?.cancel();
  } catch {
    status = 0;
  }
  if (status < 200 || status > 299) return finish("upload_failed", `http ${status}`, {});
  return finish("uploaded", undefined, { sha256, size });
}
