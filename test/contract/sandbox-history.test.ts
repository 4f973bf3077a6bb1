import { createHash } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { createSandboxPort, historyDate } from "@connector/services/adapters/sandbox";
import { HistoryInconclusiveError } from "@connector/services/core/ports";
import { startAnyRunDouble, type AnyRunDouble, type AnyRunDoubleOptions } from "@connector/local/doubles/anyrun";

// Reconciling an uncertain submission with the account's history must not depend on the history's
// order or date format, neither of which ANY.RUN documents.

const apiKey = "history-test-anyrun-key-51c0";
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
let double: AnyRunDouble | undefined;

afterEach(async () => {
  await double?.close();
  double = undefined;
});

async function setup(options: AnyRunDoubleOptions) {
  let t = 1_760_000_000_000;
  double = await startAnyRunDouble({ apiKey, queuedMs: 0, runningMs: 0, now: () => t, ...options });
  const port = createSandboxPort({ baseUrl: double.url, apiKey });
  return { port, advance: (ms: number) => void (t += ms), at: () => new Date(t) };
}

describe.each([
  { historyOrder: "newest-first", historyDates: "iso" },
  { historyOrder: "oldest-first", historyDates: "iso" },
  { historyOrder: "newest-first", historyDates: "epoch-seconds" },
  { historyOrder: "oldest-first", historyDates: "epoch-seconds" },
] as const)("findTask with history $historyOrder, dates $historyDates", (order) => {
  it("adopts the newest matching task since the submission began, and nothing older", async () => {
    const { port, advance, at } = await setup(order);
    const sample = Buffer.from("MZ sample for history");
    const old = await port.submitUrl("https://phish.example/login", {});
    advance(60 * 60_000);
    const since = at();
    advance(1_000);
    const fresh = await port.submitUrl("https://phish.example/login", {});
    const file = await port.submitFile({ fileName: "s.exe", content: (async function* () { yield sample; })() as unknown as NodeJS.ReadableStream, size: sample.length }, {});
    for (let i = 0; i < 3; i++) await port.submitUrl(`https://other.example/${i}`, {});
    if (old.kind !== "task" || fresh.kind !== "task" || file.kind !== "task") throw new Error("expected tasks");

    expect(await port.findTask({ url: "https://phish.example/login", since })).toBe(fresh.taskId);
    // The same URL as the parser writes it (upper-case host) matches too.
    expect(await port.findTask({ url: "https://PHISH.example/login", since })).toBe(fresh.taskId);
    expect(await port.findTask({ sha256: sha256(sample).toUpperCase(), since })).toBe(file.taskId);
    expect(await port.findTask({ url: "https://never.example/", since })).toBeUndefined();
    // Only the hour-old task exists for this window: it is not adopted.
    expect(await port.findTask({ url: "https://phish.example/login", since: new Date(since.getTime() + 10 * 60_000) })).toBeUndefined();
  });
});

describe.each(["newest-first", "oldest-first"] as const)("findTask behind a long history (%s)", (historyOrder) => {
  it("reads past 300 tasks on both sides of the submission and still finds it", async () => {
    const { port, advance, at } = await setup({ historyOrder });
    for (let i = 0; i < 310; i++) await port.submitUrl(`https://older.example/${i}`, {});
    advance(60 * 60_000);
    const since = at();
    advance(1_000);
    const fresh = await port.submitUrl("https://phish.example/long", {});
    for (let i = 0; i < 310; i++) await port.submitUrl(`https://later.example/${i}`, {});
    if (fresh.kind !== "task") throw new Error("expected a task");
    expect(await port.findTask({ url: "https://phish.example/long", since })).toBe(fresh.taskId);
    expect(await port.findTask({ url: "https://never.example/", since })).toBeUndefined();
  }, 60_000);
});

describe("findTask when the window cannot be read to its end", () => {
  it("says so instead of answering 'not there'", async () => {
    const { port, advance, at } = await setup({ historyOrder: "oldest-first" });
    const since = at();
    advance(1_000);
    // Oldest first, the newest tasks are at the end, beyond the 5,000 the search reads.
    for (let i = 0; i < 5_001; i++) await port.submitUrl(`https://busy-account.example/${i}`, {});
    await expect(port.findTask({ url: "https://lost.example/", since })).rejects.toBeInstanceOf(HistoryInconclusiveError);
  }, 120_000);
});

describe("historyDate", () => {
  it("reads ISO strings, epoch seconds and milliseconds, and nothing else", () => {
    expect(historyDate("2026-12-04T05:00:00.000Z")).toBe(Date.UTC(2026, 11, 4, 5));
    expect(historyDate(1_764_824_400)).toBe(1_764_824_400_000);
    expect(historyDate(1_764_824_400_000)).toBe(1_764_824_400_000);
    expect(historyDate("1764824400")).toBe(1_764_824_400_000);
    expect(historyDate("yesterday")).toBeUndefined();
    expect(historyDate(undefined)).toBeUndefined();
  });
});
