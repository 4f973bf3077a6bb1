import { describe, expect, it } from "vitest";
import { planLibrarySync, sha256Hex, syncLibrary, type LibraryApi, type LocalScript } from "../scripts/library-sync.ts";

const script = (fileName: string, text: string): LocalScript => ({
  fileName,
  content: new TextEncoder().encode(text),
  description: `collect (${fileName})`,
  hasParameters: true,
  parametersDescription: "supplied by the connector",
});

/** An in-memory MDE library with the API's behaviour: upload with OverrideIfExists replaces. */
function fakeLibrary(initial: Record<string, string>) {
  const files = new Map(Object.entries(initial).map(([name, text]) => [name, sha256Hex(new TextEncoder().encode(text))]));
  const uploads: Parameters<LibraryApi["uploadLibraryFile"]>[0][] = [];
  const api: LibraryApi = {
    async listLibraryFiles() {
      return [...files].map(([fileName, sha256]) => ({ fileName, sha256: sha256.toUpperCase() }));
    },
    async uploadLibraryFile(options) {
      uploads.push(options);
      if (files.has(options.fileName) && !options.overrideIfExists) throw new Error("exists");
      files.set(options.fileName, sha256Hex(options.content));
      return {};
    },
  };
  return { api, uploads, files };
}

describe("Live Response library sync", () => {
  it("uploads only missing or changed scripts, with OverrideIfExists", async () => {
    const lib = fakeLibrary({ "anyrun-collect.ps1": "old body", "anyrun-collect.sh": "same body", "other.ps1": "x" });
    const log: string[] = [];
    const result = await syncLibrary(
      lib.api,
      [script("anyrun-collect.ps1", "new body"), script("anyrun-collect.sh", "same body"), script("extra.sh", "fresh")],
      (line) => log.push(line),
    );
    expect(result).toEqual({ uploaded: ["anyrun-collect.ps1", "extra.sh"], unchanged: ["anyrun-collect.sh"] });
    expect(lib.uploads.map((u) => [u.fileName, new TextDecoder().decode(u.content), u.overrideIfExists])).toEqual([
      ["anyrun-collect.ps1", "new body", true],
      ["extra.sh", "fresh", true],
    ]);
    expect(lib.uploads[0]).toMatchObject({ description: "collect (anyrun-collect.ps1)", hasParameters: true });
    expect(lib.files.get("anyrun-collect.ps1")).toBe(sha256Hex(new TextEncoder().encode("new body")));
    expect(log).toEqual([
      "anyrun-collect.sh: unchanged (SHA-256 matches), skipped",
      "anyrun-collect.ps1: uploaded (changed)",
      "extra.sh: uploaded (missing)",
    ]);
  });

  it("is a no-op the second time", async () => {
    const lib = fakeLibrary({});
    const scripts = [script("anyrun-collect.ps1", "a"), script("anyrun-collect.sh", "b")];
    await syncLibrary(lib.api, scripts);
    const again = await syncLibrary(lib.api, scripts);
    expect(again).toEqual({ uploaded: [], unchanged: ["anyrun-collect.ps1", "anyrun-collect.sh"] });
    expect(lib.uploads).toHaveLength(2);
  });

  it("fails when the library does not hold the uploaded bytes afterwards", async () => {
    const lib = fakeLibrary({});
    const broken: LibraryApi = { listLibraryFiles: lib.api.listLibraryFiles, uploadLibraryFile: async () => ({}) };
    await expect(syncLibrary(broken, [script("anyrun-collect.sh", "a")])).rejects.toThrow(
      "Library still differs after upload: anyrun-collect.sh",
    );
  });

  it("matches names case-insensitively and rejects names the library refuses", () => {
    const plan = planLibrarySync([script("Collect.PS1", "z")], [{ fileName: "collect.ps1", sha256: sha256Hex(new TextEncoder().encode("z")) }]);
    expect(plan).toEqual({ upload: [], unchanged: ["Collect.PS1"] });
    expect(() => planLibrarySync([script("bad name.ps1", "z")], [])).toThrow(/may contain only/);
    const big: LocalScript = { ...script("big.sh", ""), content: new Uint8Array(20 * 1024 * 1024 + 1) };
    expect(() => planLibrarySync([big], [])).toThrow(/20 MB/);
  });
});
