import { createHash } from "node:crypto";
import { sampleEntities, sha256, triggerBody, type QuarantinedFile } from "@connector/local/samples";

/**
 * Generated campaign incidents: every URL and every file is distinct (its own URL, its own bytes,
 * its own device), so every sandbox task, Live Response action, comment and indicator seen on the
 * doubles can be attributed to exactly one artifact of one incident.
 */

export type IncidentShape = "url" | "windows-file" | "linux-file" | "mixed";

export interface CampaignArtifact {
  kind: "url" | "file";
  /** The URL, or the file name (unique in the run). */
  key: string;
  /** SHA-256 of the file's bytes (files only). */
  sha256?: string;
  os?: "windows" | "linux";
  deviceId?: string;
  malicious: boolean;
}

export interface CampaignMachine {
  id: string;
  osPlatform: string;
  name: string;
}

export interface CampaignIncident {
  index: number;
  incidentId: string;
  incidentNumber: number;
  shape: IncidentShape;
  body: Record<string, unknown>;
  quarantine: QuarantinedFile[];
  machines: CampaignMachine[];
  artifacts: CampaignArtifact[];
}

/** A small deterministic PRNG (mulberry32), so a campaign's incident mix and fault draws are reproducible from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const hex = (text: string, length: number) => createHash("sha256").update(text).digest("hex").slice(0, length);

function uuidFrom(text: string): string {
  const h = hex(text, 32);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

export interface GenerateOptions {
  /** Distinguishes the runs of one process (URLs, names, ids). */
  runId: string;
  seed: number;
  /** Shares of the shapes; the rest of the incidents are URL-only. Defaults: Windows 0.3, Linux 0.08, mixed 0.25. */
  windowsShare?: number;
  /** Each Linux file costs a real bash process running anyrun-collect.sh: keep this modest. */
  linuxShare?: number;
  mixedShare?: number;
  /** Share of artifacts the sandbox double reports as malicious (default 0.4). */
  maliciousShare?: number;
  /** First incident number (default 5000). */
  firstNumber?: number;
}

/**
 * N incidents whose shapes are spread evenly over the run (not clustered), each with distinct
 * artifacts. Linux shares are rounded so that at least one Linux incident exists when N ≥ 10.
 */
export function generateIncidents(count: number, options: GenerateOptions): CampaignIncident[] {
  const random = prng(options.seed);
  const linux = Math.max(count >= 10 ? 1 : 0, Math.round(count * (options.linuxShare ?? 0.08)));
  const windows = Math.round(count * (options.windowsShare ?? 0.3));
  const mixed = Math.round(count * (options.mixedShare ?? 0.25));
  const shapes: IncidentShape[] = [];
  for (let i = 0; i < count; i++) shapes.push(i < linux ? "linux-file" : i < linux + windows ? "windows-file" : i < linux + windows + mixed ? "mixed" : "url");
  // Fisher-Yates with the seeded PRNG: the shapes interleave through the run.
  for (let i = shapes.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [shapes[i], shapes[j]] = [shapes[j]!, shapes[i]!];
  }
  const maliciousShare = options.maliciousShare ?? 0.4;
  const firstNumber = options.firstNumber ?? 5000;
  return shapes.map((shape, index) => buildIncident(index, shape, options.runId, firstNumber + index, () => random() < maliciousShare));
}

function buildIncident(index: number, shape: IncidentShape, runId: string, incidentNumber: number, malicious: () => boolean): CampaignIncident {
  const incidentId = uuidFrom(`${runId}:incident:${index}`);
  const tag = `${runId}-${index}`;
  const entities: unknown[] = [];
  const artifacts: CampaignArtifact[] = [];
  const quarantine: QuarantinedFile[] = [];
  const machines: CampaignMachine[] = [];

  const addUrl = () => {
    const u = new URL(`https://cmp-${tag}.example.org/landing/${index}/page.html?c=${runId}`).toString();
    entities.push(sampleEntities.url(u));
    artifacts.push({ kind: "url", key: u, malicious: malicious() });
  };
  const addFile = (os: "windows" | "linux") => {
    const deviceId = hex(`${runId}:device:${index}:${os}`, 40);
    const name = os === "windows" ? `cmp${index}-${runId}.exe` : `cmp${index}-${runId}.bin`;
    const directory = os === "windows" ? `C:\\Users\\user${index}\\Downloads` : `/home/user${index}/Downloads`;
    const content = Buffer.concat([
      Buffer.from(os === "windows" ? "MZ" : "\x7fELF", "latin1"),
      Buffer.alloc(30, 0x90),
      Buffer.from(`campaign sample ${tag} (${os})\n`, "latin1"),
    ]);
    const digest = sha256(content);
    const machine = { id: deviceId, osPlatform: os === "windows" ? "Windows11" : "Linux", name: `${os === "windows" ? "win" : "lnx"}-${tag}` };
    machines.push(machine);
    entities.push(
      sampleEntities.host({ id: deviceId, name: machine.name }, os === "windows" ? "Windows" : "Linux"),
      sampleEntities.file({ id: deviceId }, directory, name),
      sampleEntities.fileHash("SHA256", digest),
    );
    quarantine.push({ deviceId, originalPath: os === "windows" ? `${directory}\\${name}` : `${directory}/${name}`, content });
    artifacts.push({ kind: "file", key: name, sha256: digest, os, deviceId, malicious: malicious() });
  };

  if (shape === "url") addUrl();
  else if (shape === "windows-file") addFile("windows");
  else if (shape === "linux-file") addFile("linux");
  else {
    addUrl();
    addFile("windows");
  }
  return {
    index,
    incidentId,
    incidentNumber,
    shape,
    body: triggerBody(incidentId, incidentNumber, `Campaign ${runId} incident ${index} (${shape})`, entities),
    quarantine,
    machines,
    artifacts,
  };
}

export function maliciousSets(incidents: readonly CampaignIncident[]): { sha256: string[]; urls: string[] } {
  const all = incidents.flatMap((i) => i.artifacts).filter((a) => a.malicious);
  return { sha256: all.flatMap((a) => (a.sha256 ? [a.sha256] : [])), urls: all.filter((a) => a.kind === "url").map((a) => a.key) };
}

export function shapeCounts(incidents: readonly CampaignIncident[]): Record<IncidentShape, number> {
  const counts: Record<IncidentShape, number> = { url: 0, "windows-file": 0, "linux-file": 0, mixed: 0 };
  for (const i of incidents) counts[i.shape]++;
  return counts;
}
