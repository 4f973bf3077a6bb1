/**
 * Structured logs: one JSON object per line, with the correlation ids of the incident and artifact
 * being worked on. Every line passes through `redact`, so a SAS signature, bearer token or API key
 * that reaches a log call never reaches the output.
 */

export type LogLevel = "debug" | "info" | "warn" | "error";
const order: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, unknown>;
export type LogSink = (level: LogLevel, line: string) => void;

const secretValues = new Set<string>();

/** Registers a literal secret (e.g. the ANY.RUN API key) so that it is masked wherever it appears. */
export function registerSecret(value: string | undefined): void {
  if (value && value.length >= 6) secretValues.add(value);
}

// Values end before a backslash too: in serialised JSON a following `\"` must stay intact.
const patterns: [RegExp, string][] = [
  [/([?&]sig=)[^&\s"'<>\\]+/gi, "$1REDACTED"],
  // The same inside a URL-encoded URL (e.g. a SAS URL carried as a query parameter).
  [/((?:%26|%3F)sig%3D)(?:(?!%26)[^&\s"'<>\\])+/gi, "$1REDACTED"],
  [/(AccountKey=)[^;\s"'\\]+/gi, "$1REDACTED"],
  [/(SharedAccessKey=)[^;\s"'\\]+/gi, "$1REDACTED"],
  [/(Bearer\s+)[A-Za-z0-9._~+/=-]+/gi, "$1REDACTED"],
  [/(API-Key\s+)[^\s"',\\]+/gi, "$1REDACTED"],
  [/(aeg-sas-key["']?\s*[:=]\s*["']?)[^"',\s\\]+/gi, "$1REDACTED"],
  // Azure Functions keys: the `code` query parameter and the x-functions-key header.
  [/([?&]code=)[^&\s"'<>\\]+/gi, "$1REDACTED"],
  [/(x-functions-key["']?\s*[:=]\s*["']?)[^"',\s\\]+/gi, "$1REDACTED"],
  // JSON properties that name a secret: "apiKey": "…", "client_secret": "…", "password": "…".
  [/("(?:api[-_]?key|client[-_]?secret|password|access[-_]?token|refresh[-_]?token)"\s*:\s*")[^"\\]+/gi, "$1REDACTED"],
];

export function redact(text: string): string {
  let out = text;
  for (const [re, replacement] of patterns) out = out.replace(re, replacement);
  for (const secret of secretValues) out = out.split(secret).join("REDACTED");
  return out;
}

/** The same, applied to every string inside a value (before it is serialised). */
export function redactValue<T>(value: T): T {
  if (typeof value === "string") return redact(value) as T;
  if (Array.isArray(value)) return value.map((v) => redactValue(v)) as T;
  if (value && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactValue(v)])) as T;
  }
  return value;
}

const stdoutSink: LogSink = (_level, line) => {
  process.stdout.write(line + "\n");
};

export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  /** A logger whose lines all carry `fields` too (e.g. incidentId, artifactId). */
  child(fields: LogFields): Logger;
}

function serialiseError(err: unknown): unknown {
  if (err instanceof Error) return { name: err.name, message: err.message };
  return err;
}

export function createLogger(
  options: { level?: LogLevel; sink?: LogSink; fields?: LogFields; service?: string } = {},
): Logger {
  const level = options.level ?? ((process.env.LOG_LEVEL as LogLevel | undefined) ?? "info");
  const sink = options.sink ?? stdoutSink;
  const base: LogFields = { ...(options.service ? { service: options.service } : {}), ...options.fields };

  const write = (lvl: LogLevel, message: string, fields?: LogFields) => {
    if (order[lvl] < (order[level] ?? 20)) return;
    const record: LogFields = { time: new Date().toISOString(), level: lvl, message, ...base };
    for (const [k, v] of Object.entries(fields ?? {})) record[k] = k === "error" || v instanceof Error ? serialiseError(v) : v;
    sink(lvl, redact(JSON.stringify(record)));
  };

  return {
    debug: (m, f) => write("debug", m, f),
    info: (m, f) => write("info", m, f),
    warn: (m, f) => write("warn", m, f),
    error: (m, f) => write("error", m, f),
    child: (fields) => createLogger({ level, sink, fields: { ...base, ...fields } }),
  };
}
