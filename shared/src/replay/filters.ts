/**
 * Selection of dead letters: by entity, reason, age, id, and a limit. Shared by the Service Bus and
 * the Event Grid dead letters, the CLI and the HTTP function.
 */
import { z } from "zod";

export interface DeadLetterFilter {
  /** Entity names (Service Bus) or subscription names (Event Grid); empty = all. */
  readonly entities?: readonly string[];
  /** Matches the dead-letter reason: a case-insensitive substring, or the exact reason with `exactReason`. */
  readonly reason?: string;
  readonly exactReason?: boolean;
  /** Only dead letters at least this old (ms since enqueued / published). */
  readonly olderThanMs?: number;
  /** Only dead letters at most this old. */
  readonly newerThanMs?: number;
  /** Message ids (Service Bus) or event ids (Event Grid); empty = all. */
  readonly ids?: readonly string[];
  /** At most this many, oldest first. */
  readonly limit?: number;
}

const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** `90s`, `10m`, `2h`, `1d`, `1h30m`, `500ms` → milliseconds. */
export function parseDuration(text: string): number {
  const input = text.trim().toLowerCase();
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy;
  let total = 0;
  let consumed = 0;
  for (let m = re.exec(input); m; m = re.exec(input)) {
    total += Number(m[1]) * units[m[2]!]!;
    consumed = re.lastIndex;
  }
  if (input.length === 0 || consumed !== input.length) {
    throw new Error(`Invalid duration '${text}': use a number with a unit, e.g. 90s, 10m, 2h, 1d, 1h30m`);
  }
  return total;
}

/** Milliseconds → `45s`, `12m05s`, `3h02m`, `4d07h`. */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const pad = (n: number) => String(n).padStart(2, "0");
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${pad(s % 60)}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h${pad(m % 60)}m`;
  return `${Math.floor(h / 24)}d${pad(h % 24)}h`;
}

export function matchesReason(filter: DeadLetterFilter, reason: string | undefined): boolean {
  if (filter.reason === undefined || filter.reason === "") return true;
  const actual = (reason ?? "").toLowerCase();
  const wanted = filter.reason.toLowerCase();
  return filter.exactReason ? actual === wanted : actual.includes(wanted);
}

export function matchesAge(filter: DeadLetterFilter, ageMs: number): boolean {
  if (filter.olderThanMs !== undefined && ageMs < filter.olderThanMs) return false;
  if (filter.newerThanMs !== undefined && ageMs > filter.newerThanMs) return false;
  return true;
}

export function matchesId(filter: DeadLetterFilter, id: string | undefined): boolean {
  if (!filter.ids || filter.ids.length === 0) return true;
  return id !== undefined && filter.ids.includes(id);
}

const duration = z.union([z.number().nonnegative(), z.string().min(1)]).transform((v, ctx) => {
  if (typeof v === "number") return v;
  try {
    return parseDuration(v);
  } catch (err) {
    ctx.addIssue({ code: "custom", message: (err as Error).message });
    return z.NEVER;
  }
});
// An empty entry (`id=,`) or list (`"ids": []`) is refused, never read as "no filter": that would select everything.
const stringList = z
  .union([z.string().min(1), z.array(z.string().min(1)).min(1)])
  .transform((v) => (Array.isArray(v) ? v : v.split(",")).map((s) => s.trim()))
  .refine((list) => list.every((s) => s !== ""), { message: "empty value in the list" });

/**
 * The filters as JSON (the HTTP function's body and query): `entity` / `entities`, `reason`,
 * `exactReason`, `olderThan` / `newerThan` (duration text or ms), `id` / `ids`, `limit`.
 */
export const filterInputSchema = z
  .object({
    entity: stringList.optional(),
    entities: stringList.optional(),
    reason: z.string().trim().min(1).optional(),
    exactReason: z.union([z.boolean(), z.enum(["true", "false"]).transform((v) => v === "true")]).optional(),
    olderThan: duration.optional(),
    newerThan: duration.optional(),
    id: stringList.optional(),
    ids: stringList.optional(),
    limit: z.coerce.number().int().positive().optional(),
  })
  .strict();

export type FilterInput = z.input<typeof filterInputSchema>;

export function toFilter(input: z.output<typeof filterInputSchema>): DeadLetterFilter {
  const entities = [...(input.entity ?? []), ...(input.entities ?? [])];
  const ids = [...(input.id ?? []), ...(input.ids ?? [])];
  return {
    ...(entities.length ? { entities } : {}),
    ...(input.reason !== undefined ? { reason: input.reason } : {}),
    ...(input.exactReason !== undefined ? { exactReason: input.exactReason } : {}),
    ...(input.olderThan !== undefined ? { olderThanMs: input.olderThan } : {}),
    ...(input.newerThan !== undefined ? { newerThanMs: input.newerThan } : {}),
    ...(ids.length ? { ids } : {}),
    ...(input.limit !== undefined ? { limit: input.limit } : {}),
  };
}

/** Body of a resend / replay request: the filters plus an explicit `dryRun` (no default: the caller states intent). */
export const resendRequestSchema = filterInputSchema.extend({ dryRun: z.boolean() }).strict();
