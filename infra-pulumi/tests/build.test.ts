import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
// @ts-expect-error - plain ESM build script without type declarations
import { buildFunctions } from "../build/build-functions.mjs";
// @ts-expect-error - plain ESM build script without type declarations
import { createZip } from "../build/zip.mjs";
import { readZip } from "./helpers/read-zip.ts";

const fixture = path.resolve(__dirname, "fixtures/functions-entry.mts");

describe("functions package build", () => {
  let dir: string;
  let first: { zipPath: string; sha256: string; outDir: string };

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "functions-build-"));
    first = await buildFunctions({
      entry: fixture,
      outDir: path.join(dir, "functions"),
      zipPath: path.join(dir, "functions.zip"),
      log: () => {},
    });
  }, 60_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("zips the bundle with host.json and package.json at the root", () => {
    const entries = readZip(readFileSync(first.zipPath));
    expect([...entries.keys()]).toEqual(["host.json", "index.js", "package.json"]);
    expect(JSON.parse(entries.get("host.json")!.toString())).toMatchObject({
      version: "2.0",
      extensionBundle: { id: "Microsoft.Azure.Functions.ExtensionBundle", version: "[4.*, 5.0.0)" },
      extensions: { serviceBus: { autoCompleteMessages: false, maxAutoLockRenewalDuration: "00:05:00" } },
    });
    const pkg = JSON.parse(entries.get("package.json")!.toString());
    expect(pkg).toMatchObject({ main: "index.js", type: "module" });
    expect(pkg).not.toHaveProperty("dependencies");
    expect(entries.get("index.js")!.equals(readFileSync(path.join(first.outDir, "index.js")))).toBe(true);
  });

  it("produces a self-contained ESM bundle that Node loads without node_modules", () => {
    const out = execFileSync(
      process.execPath,
      ["--input-type=module", "-e", `const m = await import(${JSON.stringify(path.join(first.outDir, "index.js"))}); console.log(m.registeredQueue);`],
      { cwd: dir, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
    );
    expect(out.trim()).toBe("incident-intake");
    const bundle = readFileSync(path.join(first.outDir, "index.js"), "utf8");
    expect(bundle).toContain('require("@azure/functions-core")');
    expect(bundle).not.toMatch(/from\s+["']@azure\/functions["']/);
  });

  it("is reproducible: the same sources give the same package hash", async () => {
    const again = await buildFunctions({
      entry: fixture,
      outDir: path.join(dir, "functions-again"),
      zipPath: path.join(dir, "functions-again.zip"),
      log: () => {},
    });
    expect(again.sha256).toBe(first.sha256);
  });

  it("fails clearly when the entry point is missing", async () => {
    await expect(buildFunctions({ entry: path.join(dir, "missing.ts"), log: () => {} })).rejects.toThrow(
      /Functions entry point not found/,
    );
  });
});

describe("zip writer", () => {
  it("round-trips stored and deflated entries in name order", () => {
    const random = Buffer.from(Array.from({ length: 64 }, (_, i) => (i * 37 + 11) % 256));
    const zip = createZip([
      { name: "b/text.txt", data: "hello ".repeat(100) },
      { name: "a.bin", data: random },
    ]) as Buffer;
    const entries = readZip(zip);
    expect([...entries.keys()]).toEqual(["a.bin", "b/text.txt"]);
    expect(entries.get("a.bin")!.equals(random)).toBe(true);
    expect(entries.get("b/text.txt")!.toString()).toBe("hello ".repeat(100));
    expect(zip.length).toBeLessThan(600 + 64);
  });

  it("rejects unsafe or duplicate names", () => {
    expect(() => createZip([{ name: "../x", data: "" }])).toThrow(/invalid entry name/);
    expect(() => createZip([{ name: "/abs", data: "" }])).toThrow(/invalid entry name/);
    expect(() => createZip([{ name: "x", data: "" }, { name: "x", data: "" }])).toThrow(/duplicate/);
  });
});
