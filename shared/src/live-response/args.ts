/**
 * The one argument the connector passes to its Live Response collection scripts
 * (services/scripts/anyrun-collect.sh and anyrun-collect.ps1).
 *
 * MDE hands `Args` to PowerShell (through a cmd layer) on Windows and to bash elsewhere, and rejects
 * or re-interprets shell metacharacters. So no incident-supplied string (file path, file name) and
 * no secret (the SAS URL) is ever written into `Args` as text: every free-text field is base64url
 * encoded and the fields are joined by dots. The whole envelope matches ^[A-Za-z0-9._-]+$.
 *
 * Format, version 1 — exactly 8 dot-separated fields, in this order:
 *
 *   v1 . <os> . <b64u(uploadUrl)> . <b64u(originalPath)> . <b64u(fileName)> . <sha256> . <sha1> . <md5>
 *
 * - `os`: `windows` | `linux` | `macos` (the script refuses an envelope meant for another OS).
 * - `b64u(x)`: base64url of the UTF-8 bytes of x, without padding (RFC 4648 §5).
 * - hashes: lowercase hex, or an empty field when unknown. The script verifies the first present one
 *   of sha256, sha1, md5.
 *
 * A fixed field list (instead of base64url JSON) lets the bash script decode it with `base64 -d`
 * alone: no JSON parser (python3 and jq are not guaranteed on endpoints) and no eval.
 */

export const collectArgsVersion = "v1";
export const collectArgsPattern = /^[A-Za-z0-9._-]+$/;
const fieldCount = 8;
const b64uPattern = /^[A-Za-z0-9_-]*$/;

export type CollectOs = "windows" | "linux" | "macos";
export const collectOses: readonly CollectOs[] = ["windows", "linux", "macos"];

export interface CollectArgs {
  /** Blob-scoped create/write SAS URL the script PUTs the file to. Secret: never logged. */
  uploadUrl: string;
  /** Path of the file on the endpoint when it was detected (where Defender quarantined it from). */
  originalPath: string;
  fileName: string;
  sha256?: string;
  sha1?: string;
  md5?: string;
  os: CollectOs;
}

const hashPatterns = {
  sha256: /^[0-9a-f]{64}$/,
  sha1: /^[0-9a-f]{40}$/,
  md5: /^[0-9a-f]{32}$/,
} as const;

export class CollectArgsError extends Error {
  override name = "CollectArgsError";
}

function b64u(text: string): string {
  return Buffer.from(text, "utf8").toString("base64url");
}

function fromB64u(field: string, name: string): string {
  if (!b64uPattern.test(field) || field.length % 4 === 1) throw new CollectArgsError(`${name} is not base64url`);
  const bytes = Buffer.from(field, "base64url");
  // Reject non-canonical encodings so that exactly one envelope exists per value.
  if (bytes.toString("base64url") !== field) throw new CollectArgsError(`${name} is not canonical base64url`);
  const text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  return text;
}

function checkUrl(url: string): void {
  // The script hands the URL to curl through a quoted config line: no quotes, backslashes, spaces or
  // control characters may appear in it (a SAS URL from the SDK never has them).
  if (!/^https?:\/\/[!#-[\]-~]+$/.test(url)) throw new CollectArgsError("uploadUrl must be an http(s) URL without spaces, quotes or backslashes");
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new CollectArgsError("uploadUrl is not a URL");
  }
  if (parsed.username || parsed.password) throw new CollectArgsError("uploadUrl must not carry credentials");
}

function checkText(value: string, name: string): void {
  if (!value) throw new CollectArgsError(`${name} is empty`);
  if (value.includes("\u0000")) throw new CollectArgsError(`${name} contains NUL`);
}

/**
 * Only a path on the endpoint's own disks: a drive path on Windows (never a UNC or device path,
 * which would make the script reach out, as SYSTEM, to a host the incident names), an absolute path
 * elsewhere; no `.` or `..` segments.
 */
export function assertLocalPath(path: string, os: CollectOs): void {
  const local = os === "windows" ? /^[A-Za-z]:\\/.test(path) && !path.includes('"') : path.startsWith("/") && !path.startsWith("//");
  if (!local) throw new CollectArgsError(os === "windows" ? "originalPath must be a local drive path (C:\\…) without quotes, not a network or device path" : "originalPath must be an absolute local path");
  if (path.split(/[\\/]/).some((segment) => segment === ".." || segment === ".")) throw new CollectArgsError("originalPath must not contain . or .. segments");
  // Kernel pseudo-filesystems and the macOS network automount are not where a detected file lives.
  if (os !== "windows" && /^\/(proc|sys|dev|net)\//.test(path)) throw new CollectArgsError("originalPath must not be on a pseudo or network filesystem (/proc, /sys, /dev, /net)");
}

function checkHash(kind: keyof typeof hashPatterns, value: string | undefined): string {
  if (value === undefined || value === "") return "";
  const lower = value.toLowerCase();
  if (!hashPatterns[kind].test(lower)) throw new CollectArgsError(`${kind} is not a ${kind} hex digest`);
  return lower;
}

/** Builds the opaque `Args` string for anyrun-collect.{sh,ps1}. Throws CollectArgsError on bad input. */
export function encodeCollectArgs(args: CollectArgs): string {
  if (!collectOses.includes(args.os)) throw new CollectArgsError("os must be windows, linux or macos");
  checkUrl(args.uploadUrl);
  checkText(args.originalPath, "originalPath");
  checkText(args.fileName, "fileName");
  if (/[/\\]/.test(args.fileName)) throw new CollectArgsError("fileName must not contain a path separator");
  assertLocalPath(args.originalPath, args.os);
  const fields = [
    collectArgsVersion,
    args.os,
    b64u(args.uploadUrl),
    b64u(args.originalPath),
    b64u(args.fileName),
    checkHash("sha256", args.sha256),
    checkHash("sha1", args.sha1),
    checkHash("md5", args.md5),
  ];
  const envelope = fields.join(".");
  if (!collectArgsPattern.test(envelope)) throw new CollectArgsError("envelope has characters outside [A-Za-z0-9._-]");
  return envelope;
}

/** Reverses encodeCollectArgs (tests, the MDE double's Windows emulation). Strict: throws on anything else. */
export function decodeCollectArgs(envelope: string): CollectArgs {
  if (!collectArgsPattern.test(envelope)) throw new CollectArgsError("envelope has characters outside [A-Za-z0-9._-]");
  const fields = envelope.split(".");
  if (fields.length !== fieldCount) throw new CollectArgsError(`envelope must have ${fieldCount} fields`);
  const [version, os, url, path, name, sha256, sha1, md5] = fields as [string, string, string, string, string, string, string, string];
  if (version !== collectArgsVersion) throw new CollectArgsError(`unsupported envelope version ${version}`);
  if (!collectOses.includes(os as CollectOs)) throw new CollectArgsError("unknown os");
  const decoded: CollectArgs = {
    os: os as CollectOs,
    uploadUrl: fromB64u(url, "uploadUrl"),
    originalPath: fromB64u(path, "originalPath"),
    fileName: fromB64u(name, "fileName"),
  };
  checkUrl(decoded.uploadUrl);
  checkText(decoded.originalPath, "originalPath");
  checkText(decoded.fileName, "fileName");
  assertLocalPath(decoded.originalPath, decoded.os);
  const h256 = checkHash("sha256", sha256);
  const h1 = checkHash("sha1", sha1);
  const h5 = checkHash("md5", md5);
  if (h256 !== sha256 || h1 !== sha1 || h5 !== md5) throw new CollectArgsError("hashes must be lowercase hex");
  if (h256) decoded.sha256 = h256;
  if (h1) decoded.sha1 = h1;
  if (h5) decoded.md5 = h5;
  return decoded;
}

/** The hash the scripts verify: sha256 if given, else sha1, else md5. */
export function expectedHash(args: Pick<CollectArgs, "sha256" | "sha1" | "md5">): { algorithm: "sha256" | "sha1" | "md5"; value: string } | undefined {
  if (args.sha256) return { algorithm: "sha256", value: args.sha256.toLowerCase() };
  if (args.sha1) return { algorithm: "sha1", value: args.sha1.toLowerCase() };
  if (args.md5) return { algorithm: "md5", value: args.md5.toLowerCase() };
  return undefined;
}
