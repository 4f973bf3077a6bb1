/** Human-readable output of the replay CLI: aligned tables, secrets redacted. */
import { redact } from "@connector/shared/logger";
import { formatAge } from "@connector/shared/replay/filters";
import type { DeadLetterDetail, DeadLetterSummary, EntityCount, ResendReport } from "@connector/shared/replay/servicebus";
import type { EventGridDeadLetter, EventGridDeadLetterDetail, EventReplayReport } from "@connector/shared/replay/eventgrid";


function cell(value: string, max: number): string {
  const clean = redact(value).replace(/\s+/g, " ").trim();
  return clean.length > max ? `${clean.slice(0, max - 1)}…` : clean;
}

/** Columns: [header, max width]; the last column is not padded. */
export function table(columns: readonly (readonly [string, number])[], rows: readonly (readonly string[])[]): string {
  const cells = rows.map((r) => columns.map(([, max], i) => cell(r[i] ?? "", max)));
  const widths = columns.map(([h], i) => Math.max(h.length, ...cells.map((r) => r[i]!.length)));
  const line = (r: readonly string[]) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(columns.map(([h]) => h)), ...cells.map(line)].join("\n");
}

function propertiesText(properties: Readonly<Record<string, string>>): string {
  return Object.entries(properties)
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
}

export function formatCounts(counts: readonly EntityCount[]): string {
  return table(
    [
      ["ENTITY", 60],
      ["DEAD LETTERS", 12],
      ["OLDEST", 10],
    ],
    counts.map((c) => [c.entity, String(c.count), c.oldestAgeMs === undefined ? "-" : formatAge(c.oldestAgeMs)]),
  );
}

export function formatList(counts: readonly EntityCount[], deadLetters: readonly DeadLetterSummary[]): string {
  const parts = [formatCounts(counts)];
  if (deadLetters.length > 0) {
    parts.push(
      table(
        [
          ["ENTITY", 40],
          ["SEQ", 20],
          ["MESSAGE ID", 128],
          ["REASON", 32],
          ["AGE", 8],
          ["DELIVERIES", 10],
          ["DESCRIPTION", 50],
          ["PROPERTIES", 40],
        ],
        deadLetters.map((d) => [d.entity, d.sequenceNumber, d.messageId, d.reason || "-", formatAge(d.ageMs), String(d.deliveryCount), d.description || "-", propertiesText(d.properties)]),
      ),
    );
  }
  parts.push(`${deadLetters.length} dead letter(s) selected.`);
  return parts.join("\n\n");
}

export function formatDetail(d: DeadLetterDetail): string {
  const rows: [string, string][] = [
    ["Entity", d.entity],
    ["Sequence number", d.sequenceNumber],
    ["Message id", d.messageId],
    ["Reason", d.reason || "-"],
    ["Description", d.description || "-"],
    ["Enqueued", `${d.enqueuedTimeUtc} (${formatAge(d.ageMs)} ago)`],
    ["Delivery count", String(d.deliveryCount)],
    ["Replayed before", String(d.replayCount)],
    ["Subject", d.subject ?? "-"],
    ["Correlation id", d.correlationId ?? "-"],
    ["Content type", d.contentType ?? "-"],
  ];
  if (d.deadLetterSource) rows.push(["Dead-letter source", d.deadLetterSource]);
  const width = Math.max(...rows.map(([k]) => k.length)) + 1;
  const props = Object.entries(d.applicationProperties).map(([k, v]) => `  ${k} = ${v instanceof Date ? v.toISOString() : typeof v === "object" ? JSON.stringify(v) : String(v)}`);
  return redact(
    [
      ...rows.map(([k, v]) => `${`${k}:`.padEnd(width)} ${v}`),
      "Application properties:",
      ...(props.length ? props : ["  (none)"]),
      `Body (${d.bodyKind}):`,
      d.body,
    ].join("\n"),
  );
}

const outcomeText: Record<string, string> = {
  resent: "resent",
  wouldResend: "would resend",
  refused: "REFUSED",
  sendFailed: "SEND FAILED (kept)",
  sentNotRemoved: "SENT, NOT REMOVED",
  notFound: "NOT FOUND",
  replayed: "replayed",
  wouldReplay: "would replay",
  failed: "FAILED (kept)",
  replayedBlobKept: "REPLAYED, BLOB KEPT",
};

export function formatResend(report: ResendReport): string {
  const rows = report.results.map((r) => [r.entity, r.sequenceNumber, r.messageId, r.reason || "-", outcomeText[r.outcome] ?? r.outcome, r.target ?? "-", r.newMessageId ?? "-", r.error ?? ""]);
  const summary = report.dryRun
    ? `Dry run: ${report.results.filter((r) => r.outcome === "wouldResend").length} of ${report.selected} selected dead letter(s) would be resent${report.failed ? `, ${report.failed} refused` : ""}. Nothing was changed.`
    : `Resent ${report.resent} of ${report.selected} selected dead letter(s); ${report.failed} not resent.`;
  if (rows.length === 0) return summary;
  return `${table(
    [
      ["ENTITY", 40],
      ["SEQ", 20],
      ["MESSAGE ID", 128],
      ["REASON", 32],
      ["OUTCOME", 20],
      ["SENT TO", 30],
      ["NEW MESSAGE ID", 128],
      ["ERROR", 80],
    ],
    rows,
  )}\n\n${summary}`;
}

export function formatEventList(entries: readonly EventGridDeadLetter[]): string {
  if (entries.length === 0) return "0 dead-lettered event(s) selected.";
  return `${table(
    [
      ["SUBSCRIPTION", 24],
      ["EVENT ID", 128],
      ["EVENT TYPE", 40],
      ["REASON", 40],
      ["ATTEMPTS", 8],
      ["LAST OUTCOME", 20],
      ["HTTP", 4],
      ["AGE", 8],
      ["BLOB", 100],
    ],
    entries.map((e) => [e.subscription, e.id, e.eventType, e.deadLetterReason || "-", String(e.deliveryAttempts), e.lastDeliveryOutcome || "-", String(e.lastHttpStatusCode || "-"), formatAge(e.ageMs), e.blobName]),
  )}\n\n${entries.length} dead-lettered event(s) selected.`;
}

export function formatEventDetail(blobName: string, events: readonly EventGridDeadLetterDetail[]): string {
  return redact(
    [
      `Blob: ${blobName}`,
      ...events.flatMap((e, i) => [
        "",
        `Event ${i + 1} of ${events.length}`,
        `  Subscription:      ${e.subscription}${e.topic ? ` (topic ${e.topic}, ${e.topicSource})` : ""}`,
        `  Reason:            ${e.deadLetterReason}`,
        `  Delivery attempts: ${e.deliveryAttempts}, last outcome ${e.lastDeliveryOutcome} (HTTP ${e.lastHttpStatusCode})`,
        `  Published:         ${e.publishTime} (${formatAge(e.ageMs)} ago), last attempt ${e.lastDeliveryAttemptTime}`,
        "  Event:",
        JSON.stringify(e.event, null, 2)
          .split("\n")
          .map((l) => `    ${l}`)
          .join("\n"),
      ]),
    ].join("\n"),
  );
}

export function formatEventReplay(report: EventReplayReport): string {
  const summary = report.dryRun
    ? `Dry run: ${report.results.filter((r) => r.outcome === "wouldReplay").length} of ${report.selected} selected event(s) would be replayed${report.failed ? `, ${report.failed} refused` : ""}. Nothing was changed.`
    : `Replayed ${report.replayed} of ${report.selected} selected event(s); ${report.failed} not replayed; ${report.blobsDeleted} dead-letter blob(s) deleted.`;
  if (report.results.length === 0) return summary;
  return `${table(
    [
      ["SUBSCRIPTION", 24],
      ["EVENT ID", 128],
      ["REASON", 40],
      ["OUTCOME", 20],
      ["VIA", 40],
      ["ERROR", 100],
    ],
    report.results.map((r) => [r.subscription, r.id, r.reason || "-", outcomeText[r.outcome] ?? r.outcome, r.via ?? "-", r.error ?? ""]),
  )}\n\n${summary}`;
}
