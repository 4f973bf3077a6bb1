/**
 * `npm run replay -- <command>`: list, show and re-send dead letters (Service Bus) and dead-lettered
 * events (Event Grid). Tables and results go to stdout, progress and logs to stderr.
 * Exit codes: 0 done, 1 failed (or some messages could not be re-sent), 2 usage error.
 */
import { createInterface } from "node:readline/promises";
import { parseArgs } from "node:util";
import { ConfigError } from "@connector/shared/config";
import { createLogger, redact, redactValue, type LogLevel } from "@connector/shared/logger";
import { UnknownEntityError, deadLetterEntities } from "@connector/shared/replay/entities";
import { parseDuration, type DeadLetterFilter } from "@connector/shared/replay/filters";
import { getReplaySettings } from "@connector/shared/replay/settings";
import { directBackend, remoteBackend, type ReplayBackend } from "./backend.ts";
import { formatDetail, formatEventDetail, formatEventList, formatEventReplay, formatList, formatResend } from "./format.ts";

const usage = `Usage: npm run replay -- <command> [options]

Service Bus dead letters (every queue and topic subscription of the topology):
  list   [filters] [--json]                 dead letters per entity, with reason and age
  show   <entity> <sequenceNumber|messageId> [--json]
                                            one dead letter in full (body pretty-printed, secrets redacted)
  resend [filters] [--dry-run] [--yes] [--progress-every N] [--json]
                                            send copies back to the original entity, then remove them

Event Grid dead letters (blobs in the eventgrid-deadletters container):
  eventgrid list   [filters] [--json]
  eventgrid show   <blobName> [--json]
  eventgrid replay [filters] [--dry-run] [--yes] [--json]
                                            custom-topic events are re-published with the same id;
                                            BlobCreated events are re-delivered to submitFile

Filters:
  --entity E        entity (repeatable):
                      ${deadLetterEntities().map((e) => e.name).join("\n                      ")}
                    for eventgrid: a subscription (submit-file, enrich-incident) or a topic
  --reason R        dead-letter reason contains R (case-insensitive); with --exact: equals R
  --older-than D    at least this old, e.g. 10m, 2h, 1d, 1h30m
  --newer-than D    at most this old
  --id ID           message id / event id (repeatable, or comma-separated)
  --limit N         at most N, the oldest first

Connection (environment):
  SERVICEBUS_CONNECTION (connection string) or SERVICEBUS_NAMESPACE (<ns>.servicebus.windows.net, Entra ID)
  STORAGE_CONNECTION or STORAGE_BLOB_URL    the account Event Grid dead-letters into
  EVENTGRID_ENDPOINT [+ EVENTGRID_KEY]      the analysis-events topic (re-publishing)
  --function-url URL                        run through the operator HTTP function instead
                                            (https://<app>.azurewebsites.net/api/ops/deadletters),
                                            with its key in REPLAY_FUNCTION_KEY

Examples:
  npm run replay -- list --entity incident-intake --reason Invalid
  npm run replay -- show incident-intake 3
  npm run replay -- resend --entity artifact-commands/submit-url --older-than 10m --dry-run
  npm run replay -- resend --id 'inc-1:art-1:command' --yes
`;

class UsageError extends Error {}

const out = (text: string) => process.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
const err = (text: string) => process.stderr.write(text.endsWith("\n") ? text : `${text}\n`);

const options = {
  entity: { type: "string", multiple: true },
  reason: { type: "string" },
  exact: { type: "boolean" },
  "older-than": { type: "string" },
  "newer-than": { type: "string" },
  id: { type: "string", multiple: true },
  limit: { type: "string" },
  json: { type: "boolean" },
  "dry-run": { type: "boolean" },
  yes: { type: "boolean", short: "y" },
  "progress-every": { type: "string" },
  "function-url": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

type Values = ReturnType<typeof parseArgs<{ options: typeof options; allowPositionals: true }>>["values"];

function positiveInt(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`--${name} must be a positive integer`);
  return n;
}

function duration(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  try {
    return parseDuration(value);
  } catch (e) {
    throw new UsageError(`--${name}: ${(e as Error).message}`);
  }
}

function filterFrom(values: Values): DeadLetterFilter {
  // An empty filter value (an unset shell variable, say) must never widen the selection to everything.
  const ids = (values.id ?? []).flatMap((v) => v.split(",")).map((v) => v.trim());
  if (ids.some((id) => id === "")) throw new UsageError("--id: empty message id (give one or more ids, comma-separated)");
  if (values.reason !== undefined && values.reason.trim() === "") throw new UsageError("--reason: empty");
  if (values.entity?.some((e) => e.trim() === "")) throw new UsageError("--entity: empty");
  const olderThanMs = duration("older-than", values["older-than"]);
  const newerThanMs = duration("newer-than", values["newer-than"]);
  const limit = positiveInt("limit", values.limit);
  return {
    ...(values.entity?.length ? { entities: values.entity } : {}),
    ...(values.reason !== undefined ? { reason: values.reason } : {}),
    ...(values.exact ? { exactReason: true } : {}),
    ...(olderThanMs !== undefined ? { olderThanMs } : {}),
    ...(newerThanMs !== undefined ? { newerThanMs } : {}),
    ...(ids.length ? { ids } : {}),
    ...(limit !== undefined ? { limit } : {}),
  };
}

async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(`${question} [y/N] `)).trim());
  } finally {
    rl.close();
  }
}

/** Without --yes: a TTY is asked after a dry run; anything else is refused. */
async function mayProceed(values: Values, what: string, preview: () => Promise<{ text: string; count: number }>): Promise<boolean> {
  if (values.yes) return true;
  if (!process.stdin.isTTY) throw new UsageError(`${what} changes the dead letters: add --yes to proceed, or --dry-run to only see what it would do`);
  const { text, count } = await preview();
  out(text);
  if (count === 0) return false;
  return confirm(`Proceed with ${count}?`);
}

async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  const [command, ...rest] = positionals;
  if (values.help || command === undefined || command === "help") {
    out(usage);
    return command === undefined && !values.help ? 2 : 0;
  }
  const known = ["list", "show", "resend", "eventgrid"];
  if (!known.includes(command)) throw new UsageError(`unknown command '${command}'`);
  const sub = command === "eventgrid" ? rest.shift() : undefined;
  if (command === "eventgrid" && !["list", "show", "replay"].includes(sub ?? "")) throw new UsageError("eventgrid needs list, show or replay");
  const filter = filterFrom(values);
  const dryRun = Boolean(values["dry-run"]);
  const progressEvery = positiveInt("progress-every", values["progress-every"]) ?? 100;
  if (command === "show" && rest.length !== 2) throw new UsageError("show needs <entity> <sequenceNumber|messageId>");
  if (sub === "show" && rest.length !== 1) throw new UsageError("eventgrid show needs <blobName>");
  if (!(command === "show" || sub === "show") && rest.length > 0) throw new UsageError(`unexpected argument '${rest[0]}'`);

  const logger = createLogger({
    service: "replay",
    level: (process.env.LOG_LEVEL as LogLevel | undefined) ?? "warn",
    sink: (_level, line) => err(line),
  });
  let backend: ReplayBackend;
  if (values["function-url"] !== undefined && !/^https?:\/\/\S+$/.test(values["function-url"])) {
    throw new UsageError("--function-url needs the operator function's http(s) URL");
  }
  if (values["function-url"]) {
    const key = process.env.REPLAY_FUNCTION_KEY;
    if (!key) throw new UsageError("--function-url needs the function key in REPLAY_FUNCTION_KEY (kept off the command line)");
    backend = remoteBackend(values["function-url"], key);
  } else {
    backend = await directBackend(getReplaySettings(), logger);
  }

  try {
    if (command === "list") {
      const result = await backend.list(filter);
      out(values.json ? JSON.stringify(redactValue(result), null, 2) : formatList(result.byEntity, result.deadLetters));
      return 0;
    }
    if (command === "show") {
      const detail = await backend.show(rest[0]!, rest[1]!);
      if (!detail) {
        err(`No dead letter ${rest[1]} in ${rest[0]}.`);
        return 1;
      }
      out(values.json ? JSON.stringify(redactValue(detail), null, 2) : formatDetail(detail));
      return 0;
    }
    if (command === "resend") {
      if (!dryRun) {
        const go = await mayProceed(values, "resend", async () => {
          const preview = await backend.resend(filter, { dryRun: true });
          return { text: formatResend(preview), count: preview.results.filter((r) => r.outcome === "wouldResend").length };
        });
        if (!go) {
          err("Nothing resent.");
          return 0;
        }
      }
      const report = await backend.resend(filter, {
        dryRun,
        progressEvery,
        onProgress: (p) => {
          if (p.processed < p.total) err(`resend: ${p.processed}/${p.total} processed (${p.resent} resent, ${p.failed} not resent)`);
        },
      });
      out(values.json ? JSON.stringify(redactValue(report), null, 2) : formatResend(report));
      return report.failed > 0 ? 1 : 0;
    }
    if (sub === "list") {
      const entries = await backend.eventList(filter);
      out(values.json ? JSON.stringify(redactValue(entries), null, 2) : formatEventList(entries));
      return 0;
    }
    if (sub === "show") {
      const events = await backend.eventShow(rest[0]!);
      if (!events) {
        err(`No dead-letter blob ${rest[0]}.`);
        return 1;
      }
      out(values.json ? JSON.stringify(redactValue(events), null, 2) : formatEventDetail(rest[0]!, events));
      return 0;
    }
    if (!dryRun) {
      const go = await mayProceed(values, "eventgrid replay", async () => {
        const preview = await backend.eventReplay(filter, { dryRun: true });
        return { text: formatEventReplay(preview), count: preview.results.filter((r) => r.outcome === "wouldReplay").length };
      });
      if (!go) {
        err("Nothing replayed.");
        return 0;
      }
    }
    const report = await backend.eventReplay(filter, { dryRun });
    out(values.json ? JSON.stringify(redactValue(report), null, 2) : formatEventReplay(report));
    return report.failed > 0 ? 1 : 0;
  } finally {
    await backend.close();
  }
}

run(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      err(`replay: ${(e as Error).message}\n\n${usage}`);
      process.exit(2);
    }
    if (e instanceof UnknownEntityError) {
      // A misspelt entity is a usage error like any other argument.
      err(`replay: ${e.message}`);
      process.exit(2);
    }
    // fetch says only "fetch failed"; the reason (refused, DNS, TLS) is its cause.
    const cause = e instanceof Error && e.cause instanceof Error ? ` (${e.cause.message})` : "";
    err(`replay: ${redact(e instanceof Error ? e.message + cause : String(e))}`);
    process.exit(1);
  },
);
