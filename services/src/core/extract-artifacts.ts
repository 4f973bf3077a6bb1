import type { SentinelEntity } from "@connector/shared/incident-trigger";
import type { Artifact, FileArtifact, Hashes, HashOnlyArtifact, UrlArtifact } from "@connector/shared/messages";
import { shortDigest } from "@connector/shared/ids";

/**
 * Turns an incident's entities into the artifacts we analyse:
 * - every Url entity with an http(s) URL → a URL artifact;
 * - every File entity with a path and the MDE device id of its host → a file to collect, carrying
 *   the hashes of its FileHash entities;
 * - FileHash entities (or files) with no host or path → hash-only artifacts, reported on the
 *   incident but never sent to Live Response.
 * Artifacts are de-duplicated within the incident by their normalised identity.
 */

export interface Extraction {
  artifacts: Artifact[];
  /** Entities we looked at but could not use, with the reason (reported in the started comment). */
  ignored: { kind: string; reason: string }[];
}

const deviceIdPattern = /^[0-9a-f]{40}$/;

function str(value: unknown): string | undefined {
  return typeof value === "string" && value.trim() !== "" ? value.trim() : undefined;
}

function additional(entity: SentinelEntity): Record<string, unknown> {
  const data = entity.properties["additionalData"];
  return data && typeof data === "object" ? (data as Record<string, unknown>) : {};
}

/** Lower-cases scheme and host, drops the default port and the fragment; keeps path and query as sent. */
export function normaliseUrl(raw: string): string | undefined {
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch {
    return undefined;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return undefined;
  url.hash = "";
  return url.toString();
}

function hashOf(entity: SentinelEntity): Hashes {
  const algorithm = str(entity.properties["algorithm"])?.toUpperCase();
  const value = str(entity.properties["hashValue"])?.toLowerCase();
  if (!value) return {};
  if ((algorithm === "SHA256" || algorithm === "SHA256AC") && /^[0-9a-f]{64}$/.test(value)) return { sha256: value };
  if (algorithm === "SHA1" && /^[0-9a-f]{40}$/.test(value)) return { sha1: value };
  if (algorithm === "MD5" && /^[0-9a-f]{32}$/.test(value)) return { md5: value };
  // "Unknown" algorithm: infer from the length.
  if (/^[0-9a-f]{64}$/.test(value)) return { sha256: value };
  if (/^[0-9a-f]{40}$/.test(value)) return { sha1: value };
  if (/^[0-9a-f]{32}$/.test(value)) return { md5: value };
  return {};
}

function isEmpty(h: Hashes): boolean {
  return !h.sha256 && !h.sha1 && !h.md5;
}

function hashKey(h: Hashes): string {
  return h.sha256 ?? h.sha1 ?? h.md5 ?? "";
}

/** Entity ids in trigger payloads may be truncated to `…/Entities/`; only full ids can be resolved. */
function resolvableId(id: string | undefined): string | undefined {
  return id && !/\/entities\/?$/i.test(id) ? id.toLowerCase() : undefined;
}

/** A drive letter or a backslash: a Windows path, where case does not matter. */
function windowsStyle(directory: string): boolean {
  return /^[A-Za-z]:/.test(directory) || directory.includes("\\");
}

/** One spelling per folder: Windows paths case-folded with backslashes; no trailing separator. */
function normaliseDirectory(directory: string): string {
  const unified = windowsStyle(directory) ? directory.replace(/\//g, "\\").toLowerCase() : directory;
  return unified.replace(/[\\/]+$/, "") || unified.slice(0, 1);
}

export interface ExtractOptions {
  /** Collect a File entity with no hash (nothing can then check the collected file). Default false. */
  collectFilesWithoutHash?: boolean;
}

export function extractArtifacts(entities: readonly SentinelEntity[], options: ExtractOptions = {}): Extraction {
  const ignored: Extraction["ignored"] = [];
  const byId = new Map<string, SentinelEntity>();
  for (const e of entities) {
    const id = resolvableId(e.id);
    if (id) byId.set(id, e);
  }
  const files = entities.filter((e) => e.kind === "File");
  const fileHashes = entities.filter((e) => e.kind === "FileHash");
  const hosts = entities.filter((e) => e.kind === "Host");
  const usedHashEntities = new Set<SentinelEntity>();

  const hostDeviceId = (host: SentinelEntity | undefined) => {
    const id = str(additional(host ?? { kind: "", properties: {} })["MdatpDeviceId"])?.toLowerCase();
    return id && deviceIdPattern.test(id) ? id : undefined;
  };
  const hostsWithDevice = hosts.filter((h) => hostDeviceId(h));

  const artifacts = new Map<string, Artifact>();
  const add = (artifact: Artifact) => {
    const known = artifacts.get(artifact.artifactId);
    if (!known) artifacts.set(artifact.artifactId, artifact);
    // Two File entities of one file: keep every hash either carries.
    else if (known.kind === "file" && artifact.kind === "file") known.hashes = { ...artifact.hashes, ...known.hashes };
  };

  for (const e of entities.filter((x) => x.kind === "Url")) {
    const raw = str(e.properties["url"]);
    const url = raw ? normaliseUrl(raw) : undefined;
    if (!url) {
      ignored.push({ kind: "Url", reason: "not an http(s) URL" });
      continue;
    }
    if (url.length < 5 || url.length > 512) {
      ignored.push({ kind: "Url", reason: url.length > 512 ? "URL longer than the 512 characters the sandbox accepts" : "URL shorter than the 5 characters the sandbox accepts" });
      continue;
    }
    const artifact: UrlArtifact = { kind: "url", artifactId: `url-${shortDigest(url)}`, url };
    add(artifact);
  }

  for (const file of files) {
    // Hashes: resolvable references first; with a single File entity every FileHash belongs to it.
    const refs = Array.isArray(file.properties["fileHashEntityIds"]) ? (file.properties["fileHashEntityIds"] as unknown[]) : [];
    let hashEntities = refs
      .map((r) => (typeof r === "string" ? byId.get(resolvableId(r) ?? "") : undefined))
      .filter((x): x is SentinelEntity => x !== undefined && x.kind === "FileHash");
    if (hashEntities.length === 0 && files.length === 1) hashEntities = fileHashes;
    // Several files, several hashes and no references: which hash is whose cannot be told.
    const hashUnattributable = hashEntities.length === 0 && fileHashes.length > 0;
    const hashes: Hashes = Object.assign({}, ...hashEntities.map(hashOf));
    hashEntities.forEach((h) => usedHashEntities.add(h));

    const hostRef = resolvableId(str(file.properties["hostEntityId"]));
    const ownDeviceId = str(additional(file)["MdatpDeviceId"])?.toLowerCase();
    const deviceId =
      (ownDeviceId && deviceIdPattern.test(ownDeviceId) ? ownDeviceId : undefined) ??
      hostDeviceId(hostRef ? byId.get(hostRef) : undefined) ??
      (hostsWithDevice.length === 1 ? hostDeviceId(hostsWithDevice[0]) : undefined);
    const fileName = str(file.properties["fileName"]);
    const directory = str(file.properties["directory"]);

    const collectable = fileName && directory && deviceId;
    if (collectable && isEmpty(hashes) && !options.collectFilesWithoutHash) {
      ignored.push({
        kind: "File",
        reason: hashUnattributable
          ? "its hash cannot be told apart from the other files' (no fileHashEntityIds), so it is not collected (COLLECT_FILES_WITHOUT_HASH)"
          : "no hash to check the collected file against, so it is not collected (COLLECT_FILES_WITHOUT_HASH)",
      });
    } else if (collectable) {
      const host = hostsWithDevice.find((h) => hostDeviceId(h) === deviceId);
      // The file on the device, not what is known of it: a later trigger that adds a SHA-256 to a
      // SHA-1, or spells the folder with a trailing separator, names the same file.
      const identity = `${deviceId}|${normaliseDirectory(directory)}|${windowsStyle(directory) ? fileName.toLowerCase() : fileName}`;
      const artifact: FileArtifact = {
        kind: "file",
        artifactId: `file-${shortDigest(identity)}`,
        fileName,
        directory,
        hashes,
        deviceId,
        ...(host ? { hostName: str(host.properties["hostName"]) ?? str(host.properties["friendlyName"]) } : {}),
      };
      add(artifact);
    } else if (!isEmpty(hashes)) {
      const missing = !deviceId ? "no MDE device" : "no file path";
      const artifact: HashOnlyArtifact = {
        kind: "hash",
        artifactId: `hash-${shortDigest(hashKey(hashes))}`,
        ...(fileName ? { fileName } : {}),
        hashes,
        reason: `${missing}: the file cannot be collected with Live Response`,
      };
      add(artifact);
    } else {
      ignored.push({ kind: "File", reason: "no host, path or hash to work with" });
    }
  }

  for (const h of fileHashes) {
    if (usedHashEntities.has(h)) continue;
    const hashes = hashOf(h);
    if (isEmpty(hashes)) {
      ignored.push({ kind: "FileHash", reason: "unrecognised hash value" });
      continue;
    }
    const artifact: HashOnlyArtifact = {
      kind: "hash",
      artifactId: `hash-${shortDigest(hashKey(hashes))}`,
      hashes,
      reason:
        files.length > 1
          ? "not linked to one of the incident's File entities (no fileHashEntityIds): the file cannot be collected with Live Response"
          : "hash only (no file path or host): the file cannot be collected with Live Response",
    };
    add(artifact);
  }

  // A file and a bare hash of the same sample: the file wins.
  const fileHashKeys = new Set([...artifacts.values()].filter((a) => a.kind === "file").map((a) => hashKey(a.hashes)).filter(Boolean));
  for (const [id, a] of artifacts) {
    if (a.kind === "hash" && fileHashKeys.has(hashKey(a.hashes))) artifacts.delete(id);
  }

  return { artifacts: [...artifacts.values()], ignored };
}
