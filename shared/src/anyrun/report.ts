import { isIP } from "node:net";
import { z } from "zod";
import { describeIssues } from "../errors.ts";

export { describeIssues };
import type { components } from "../clients/generated/anyrun.ts";

/**
 * Reading ANY.RUN responses: zod schemas for the fields the connector reads (everything else passes
 * through untouched), and the rules that turn a report into an outcome. A verdict is only ever read
 * from a report whose `data.status` says it is final.
 */

const hashesSchema = z.looseObject({
  md5: z.string().optional(),
  sha1: z.string().optional(),
  sha256: z.string().optional(),
  ssdeep: z.string().optional(),
  head_hash: z.string().optional(),
});

export const verdictSchema = z.looseObject({
  score: z.number().min(0).max(100),
  threatLevel: z.union([z.literal(0), z.literal(1), z.literal(2)]),
  threatLevelText: z.string(),
});

/** Real reports carry `{tag, users}` objects; schema examples and history carry plain strings. */
const tagSchema = z.union([z.string(), z.looseObject({ tag: z.string(), users: z.unknown().optional() })]);

const mainObjectSchema = z.looseObject({
  type: z.string().optional(),
  filename: z.string().optional(),
  basename: z.string().optional(),
  url: z.string().optional(),
  permanentUrl: z.string().optional(),
  hashes: hashesSchema.optional(),
});

export const reportSchema = z.looseObject({
  error: z.boolean().optional(),
  data: z.looseObject({
    status: z.union([z.string(), z.number()]).optional(),
    analysis: z
      .looseObject({
        uuid: z.string().optional(),
        permanentUrl: z.string().optional(),
        creationText: z.string().optional(),
        scores: z
          .looseObject({
            verdict: verdictSchema.optional(),
            specs: z.record(z.string(), z.unknown()).optional(),
          })
          .optional(),
        tags: z.array(tagSchema).optional(),
        content: z.looseObject({ mainObject: mainObjectSchema.optional() }).optional(),
        reports: z.record(z.string(), z.string()).optional(),
      })
      .optional(),
    mitre: z
      .array(z.looseObject({ id: z.string().optional(), name: z.string().optional(), phases: z.array(z.string()).optional() }))
      .optional(),
    modified: z
      .looseObject({
        files: z
          .array(z.looseObject({ filename: z.string().optional(), threatLevel: z.string().optional(), hashes: hashesSchema.optional() }))
          .optional(),
      })
      .optional(),
  }),
});

export type AnyRunReport = z.infer<typeof reportSchema>;
export type Verdict = z.infer<typeof verdictSchema>;
export type MainObject = z.infer<typeof mainObjectSchema>;

// The zod reader and the OpenAPI description must describe the same shape.
type Assert<T extends true> = T;
export type _ReportMatchesSpec = Assert<AnyRunReport extends components["schemas"]["Report"] ? true : false>;

export type ReportState = "done" | "failed" | "pending";

/**
 * `data.status` → state. Final: "done" (real reports), "completed" or 100 (accepted by the hardened
 * fork). Failed: "failed", "error" or -1 (the monitor stream's failure code; in reports
 * **unverified**). Anything else (absent, "running", "queued", a percentage) is still pending.
 */
export function reportState(report: AnyRunReport): ReportState {
  const status = report.data.status;
  const s = typeof status === "string" ? status.trim().toLowerCase() : status;
  if (s === "done" || s === "completed" || s === 100 || s === "100") return "done";
  if (s === "failed" || s === "error" || s === -1 || s === "-1") return "failed";
  return "pending";
}

export function isReportFinal(report: AnyRunReport): boolean {
  return reportState(report) === "done";
}

/** Tag names of a report, whichever shape they arrive in. */
export function reportTags(report: AnyRunReport): string[] {
  return (report.data.analysis?.tags ?? []).map((t) => (typeof t === "string" ? t : t.tag)).filter((t) => t.length > 0);
}

export interface FinalReport {
  state: "done";
  taskId: string | undefined;
  permanentUrl: string | undefined;
  verdict: Verdict;
  tags: string[];
  mainObject: MainObject | undefined;
  /** MITRE technique ids (e.g. "T1129"). */
  mitre: string[];
}

export type ReportOutcome =
  | { state: "pending"; status: string | number | undefined }
  | { state: "failed"; status: string | number | undefined }
  | FinalReport;

export class InvalidReportError extends Error {
  override name = "InvalidReportError";
}

/**
 * What a report says. A verdict appears only in the `done` outcome; a final report without a
 * verdict is an `InvalidReportError` (no guessing).
 */
export function readReport(report: AnyRunReport): ReportOutcome {
  const state = reportState(report);
  if (state !== "done") return { state, status: report.data.status };
  const analysis = report.data.analysis;
  const verdict = analysis?.scores?.verdict;
  if (!verdict) throw new InvalidReportError("final report has no data.analysis.scores.verdict");
  return {
    state: "done",
    taskId: analysis?.uuid,
    permanentUrl: analysis?.permanentUrl,
    verdict,
    tags: reportTags(report),
    mainObject: analysis?.content?.mainObject,
    mitre: (report.data.mitre ?? []).flatMap((m) => (m.id ? [m.id] : [])),
  };
}

/** Parses a report body; throws `InvalidReportError` naming the first problems. */
export function parseReport(body: unknown): AnyRunReport {
  const result = reportSchema.safeParse(body);
  if (!result.success) throw new InvalidReportError(describeIssues(result.error));
  return result.data;
}


// ---------------------------------------------------------------- IoCs

export const knownIocTypes = ["ip", "domain", "url", "sha256"] as const;
export type IocType = (typeof knownIocTypes)[number];

const iocEntrySchema = z.looseObject({
  category: z.string(),
  type: z.string(),
  name: z.string().optional(),
  ioc: z.string().min(1),
  reputation: z.union([z.literal(0), z.literal(1), z.literal(2)]),
  discoveringEntryId: z.string().optional(),
});

export interface AnyRunIoc {
  category: string;
  type: IocType;
  name?: string;
  ioc: string;
  /** 0 = unknown, 1 = suspicious, 2 = malicious. */
  reputation: 0 | 1 | 2;
  discoveringEntryId?: string;
  /** For `ip`: the address family, detected here (whether `ip` carries IPv6 is unverified). */
  ipVersion?: 4 | 6;
}

export interface IocReadResult {
  iocs: AnyRunIoc[];
  /** Entries left out, by reason: unknown type, malformed entry, `ip` that is not an address. */
  skipped: { unknownType: Record<string, number>; malformed: number; invalidIp: number };
}

/**
 * Reads the bare IoC array. Unknown types and malformed entries are skipped and counted, never
 * fatal; only a body that is not an array is an error (`InvalidReportError`).
 */
export function readIocs(body: unknown): IocReadResult {
  if (!Array.isArray(body)) throw new InvalidReportError("IoC response is not a JSON array");
  const result: IocReadResult = { iocs: [], skipped: { unknownType: {}, malformed: 0, invalidIp: 0 } };
  for (const raw of body) {
    const parsed = iocEntrySchema.safeParse(raw);
    if (!parsed.success) {
      result.skipped.malformed++;
      continue;
    }
    const entry = parsed.data;
    const type = entry.type.toLowerCase();
    if (!(knownIocTypes as readonly string[]).includes(type)) {
      result.skipped.unknownType[entry.type] = (result.skipped.unknownType[entry.type] ?? 0) + 1;
      continue;
    }
    const ioc: AnyRunIoc = {
      category: entry.category,
      type: type as IocType,
      ioc: entry.ioc,
      reputation: entry.reputation,
      ...(entry.name !== undefined ? { name: entry.name } : {}),
      ...(entry.discoveringEntryId !== undefined ? { discoveringEntryId: entry.discoveringEntryId } : {}),
    };
    if (type === "ip") {
      const family = isIP(entry.ioc.replace(/^\[|\]$/g, ""));
      if (family !== 4 && family !== 6) {
        result.skipped.invalidIp++;
        continue;
      }
      ioc.ipVersion = family;
    }
    result.iocs.push(ioc);
  }
  return result;
}

// ---------------------------------------------------------------- history / user

export const historySchema = z.looseObject({
  error: z.boolean().optional(),
  data: z.looseObject({
    tasks: z.array(
      z.looseObject({
        uuid: z.string().optional(),
        verdict: z.string().optional(),
        name: z.string().optional(),
        related: z.string().optional(),
        date: z.union([z.string(), z.number()]).optional(),
        tags: z.array(tagSchema).optional(),
        hashes: hashesSchema.optional(),
        json: z.string().optional(),
        misp: z.string().optional(),
        pcap: z.string().optional(),
        file: z.string().optional(),
      }),
    ),
  }),
});
export type AnyRunHistory = z.infer<typeof historySchema>;
export type AnyRunHistoryTask = AnyRunHistory["data"]["tasks"][number];
export type _HistoryMatchesSpec = Assert<AnyRunHistory extends components["schemas"]["History"] ? true : false>;

const limitsSchema = z.looseObject({
  minute: z.number().int().optional(),
  hour: z.number().int().optional(),
  day: z.number().int().optional(),
  month: z.number().int().optional(),
});

export const userSchema = z.looseObject({
  error: z.boolean().optional(),
  data: z.looseObject({
    limits: z.looseObject({
      web: limitsSchema.optional(),
      api: limitsSchema.optional(),
      parallels: z.looseObject({ total: z.number().int(), available: z.number().int() }).optional(),
    }),
  }),
});
export type AnyRunUser = z.infer<typeof userSchema>;
export type _UserMatchesSpec = Assert<AnyRunUser extends components["schemas"]["User"] ? true : false>;
