import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/**
 * What the double serves for a task: reports built from the recorded fixtures in
 * test/fixtures/anyrun/, and hand-made IoC arrays and history entries (no real ones are public).
 */

const fixtureDir = fileURLToPath(new URL("../../../fixtures/anyrun/", import.meta.url));

export const reportFixtures = {
  malicious: { file: "report_malicious_file_2020.json", taskIds: ["4649c7fc-5780-476a-86b0-b89e424339bc"] },
  clean: {
    file: "report_clean_file_2021.json",
    // The source anonymised the task id; its pcap link kept another task's id.
    taskIds: ["44d88612-fea8-a8f3-6de8-2e1278abb02f", "824b58ce-d7dd-4755-936c-a39d92d63d82"],
  },
} as const;

const cache = new Map<string, string>();
/** The fixture's raw JSON text (read once). */
export function fixtureText(kind: keyof typeof reportFixtures): string {
  const { file } = reportFixtures[kind];
  let text = cache.get(file);
  if (text === undefined) {
    text = readFileSync(fixtureDir + file, "utf8");
    cache.set(file, text);
  }
  return text;
}

export type TaskPhase = "queued" | "running" | "done" | "failed";

export interface ReportTask {
  taskId: string;
  kind: "file" | "url";
  fileName?: string;
  url?: string;
  hashes: { md5: string; sha1: string; sha256: string };
  malicious: boolean;
  /** Tags shown on a malicious report. */
  tags: readonly string[];
  userTags: readonly string[];
  fields: Readonly<Record<string, string>>;
  submittedAt: number;
  env: { os: string; version: string; bitness: number };
}

const appUrl = (id: string) => `https://app.any.run/tasks/${id}`;
const apiReport = (id: string, what: string) => `https://api.any.run/report/${id}/${what}`;
const contentUrl = (id: string, what: string) => `https://content.any.run/tasks/${id}/${what}`;

function reportLinks(id: string): Record<string, string> {
  return {
    IOC: apiReport(id, "ioc/json"),
    MISP: apiReport(id, "summary/misp"),
    HTML: apiReport(id, "summary/html"),
    graph: contentUrl(id, "graph"),
  };
}

function mainObjectOf(task: ReportTask): Record<string, unknown> {
  if (task.kind === "url") {
    return { type: "url", url: task.url, hashes: { ...task.hashes } };
  }
  const ext = task.fileName?.includes(".") ? task.fileName.split(".").pop() : undefined;
  return {
    type: "file",
    permanentUrl: contentUrl(task.taskId, `download/files/${task.taskId}`),
    filename: task.fileName,
    basename: task.fileName,
    hashes: { ...task.hashes },
    info: ext ? { ext } : {},
  };
}

function analysisOptions(task: ReportTask): Record<string, unknown> {
  const f = task.fields;
  return {
    timeout: f.opt_timeout ? Number(f.opt_timeout) : task.kind === "url" ? 120 : 240,
    additionalTime: 0,
    fakeNet: f.opt_network_fakenet === "true",
    heavyEvasion: f.opt_kernel_heavyevasion === "true",
    mitm: f.opt_network_mitm === "true",
    tor: { used: f.opt_network_tor === "true", geo: f.opt_network_geo ?? "fastest" },
    presentation: false,
    video: true,
    hideSource: f.opt_privacy_hidesource === "true",
    network: f.opt_network_connect !== "false",
    privacy: f.opt_privacy_type ?? "bylink",
    privateSample: false,
    automatization: { uac: f.auto_confirm_uac !== "false" },
  };
}

/**
 * The report body for `GET /v1/analysis/{id}` in a given phase.
 *
 * - done: the recorded malicious or clean report, every occurrence of the recorded task id replaced
 *   by this task's id (uuid, permanentUrl, report/content links), mainObject replaced by the
 *   submitted object with hashes of the uploaded bytes (of the URL's UTF-8 text for URL tasks, as
 *   the web app shows hashes for URL objects too), creation time and options taken from the
 *   submission, `error: false` added (recorded samples lack it; live responses are expected to carry
 *   it), and for malicious reports `analysis.tags` as `{tag, users}` objects (the recording has none;
 *   the type of `users` is not public, the double sends 1). Everything else (environment, processes,
 *   incidents, dropped files, counters) stays as recorded, e.g. Windows 7 32-bit whatever was asked.
 * - queued / running / failed: hand-made, since no unfinished report is public. They carry the
 *   envelope, uuid, links, options and mainObject, empty processes/network/mitre, `data.status`
 *   "queued" / "running" / "failed" and **no final verdict**: queued and failed have no `scores` at
 *   all; running has an all-zero verdict (score 0, threatLevel 0, "No threats detected"), the trap
 *   a client falls into if it reads a verdict without checking the status.
 */
export function buildReport(task: ReportTask, phase: TaskPhase): Record<string, unknown> {
  const creation = task.submittedAt;
  const analysisBase = {
    uuid: task.taskId,
    permanentUrl: appUrl(task.taskId),
    reports: reportLinks(task.taskId),
    sandbox: { name: "ANY.RUN - Interactive Sandbox", plan: { name: "Enterprise" } },
    duration: 0,
    creation,
    creationText: new Date(creation).toISOString(),
    tags: [] as unknown[],
    options: analysisOptions(task),
  };
  if (phase !== "done") {
    const analysis: Record<string, unknown> = {
      ...analysisBase,
      content: { mainObject: mainObjectOf(task), pcap: { present: false }, video: { present: false }, screenshots: [] },
    };
    if (phase === "running") {
      analysis.scores = { verdict: { score: 0, threatLevel: 0, threatLevelText: "No threats detected" }, specs: {} };
    }
    return {
      error: false,
      data: {
        analysis,
        processes: [],
        network: { connections: [], dnsRequests: [], httpRequests: [], threats: [] },
        modified: {},
        incidents: [],
        mitre: [],
        debugStrings: [],
        status: phase,
      },
    };
  }

  const kind = task.malicious ? "malicious" : "clean";
  let text = fixtureText(kind);
  for (const recorded of reportFixtures[kind].taskIds) text = text.split(recorded).join(task.taskId);
  const report = JSON.parse(text) as { data: Record<string, unknown> & { analysis: Record<string, unknown> & { content: Record<string, unknown> } } };
  const analysis = report.data.analysis;
  analysis.creation = creation;
  analysis.creationText = analysisBase.creationText;
  analysis.options = analysisBase.options;
  analysis.reports = analysisBase.reports;
  analysis.permanentUrl = analysisBase.permanentUrl;
  analysis.uuid = task.taskId;
  analysis.content.mainObject = mainObjectOf(task);
  analysis.tags = task.malicious ? task.tags.map((tag) => ({ tag, users: 1 })) : [];
  return { error: false, ...report };
}

/**
 * Hand-made IoC array for `GET /report/{id}/ioc/json` (no real one is public), derived from the
 * served report: the main object (sha256 for files, url for URL tasks) with reputation 2 when
 * malicious and 0 when clean; dropped files with a sha256 (reputation 2 when their threatLevel is
 * HIGH on a malicious task, else 0); and for malicious tasks a few network IoCs in documentation
 * ranges (a domain, an IPv4, a URL, an IPv6 as type "ip"). Clean tasks get reputation 0 only.
 */
export function buildIocs(task: ReportTask, report: Record<string, unknown>): Record<string, unknown>[] {
  const iocs: Record<string, unknown>[] = [];
  if (task.kind === "file") {
    iocs.push({ category: "Main object", type: "sha256", name: task.fileName, ioc: task.hashes.sha256, reputation: task.malicious ? 2 : 0 });
  } else {
    iocs.push({ category: "Main object", type: "url", ioc: task.url, reputation: task.malicious ? 2 : 0 });
  }
  const data = report.data as { modified?: { files?: { filename?: string; threatLevel?: string; hashes?: { sha256?: string } }[] } };
  for (const file of data.modified?.files ?? []) {
    const sha256 = file.hashes?.sha256;
    if (!sha256) continue;
    iocs.push({
      category: "Dropped executable file",
      type: "sha256",
      name: file.filename?.split(/[\\/]/).pop(),
      ioc: sha256,
      reputation: task.malicious && file.threatLevel === "HIGH" ? 2 : 0,
    });
  }
  if (task.malicious) {
    iocs.push(
      { category: "DNS requests", type: "domain", ioc: "c2.malicious.example", reputation: 2 },
      { category: "Connections", type: "ip", ioc: "203.0.113.45", reputation: 2 },
      { category: "HTTP/HTTPS requests", type: "url", ioc: "http://c2.malicious.example/gate.php", reputation: 2 },
      { category: "Connections", type: "ip", ioc: "2001:db8::bad:1", reputation: 1 },
      { category: "DNS requests", type: "domain", ioc: "cdn.suspicious.example", reputation: 1 },
    );
  }
  return iocs;
}

/** A history entry (shape of the recorded Rapid7 example; verdict only once the task is done). */
export function historyEntry(task: ReportTask, phase: TaskPhase): Record<string, unknown> {
  const verdict = phase === "done" ? (task.malicious ? "Malicious activity" : "No threats detected") : undefined;
  return {
    uuid: task.taskId,
    ...(verdict ? { verdict } : {}),
    name: task.kind === "file" ? task.fileName : task.url,
    related: appUrl(task.taskId),
    date: new Date(task.submittedAt).toISOString(),
    tags: [...task.userTags],
    hashes: { ...task.hashes },
    json: apiReport(task.taskId, "summary/json"),
    misp: apiReport(task.taskId, "summary/misp"),
    pcap: contentUrl(task.taskId, "download/pcap"),
    file: contentUrl(task.taskId, `download/files/${task.taskId}`),
  };
}
