import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { extractArtifacts, normaliseUrl } from "@connector/services/core/extract-artifacts";
import { parseIncidentTrigger, InvalidInputError, type SentinelEntity } from "@connector/shared/incident-trigger";

const fixture = (name: string) => JSON.parse(readFileSync(new URL(`../fixtures/microsoft/${name}`, import.meta.url), "utf8"));

describe("parseIncidentTrigger", () => {
  it("reads the incident reference and entities of the trigger body", () => {
    const parsed = parseIncidentTrigger(fixture("sentinel-incident-trigger-body.COMPOSITE.json"));
    expect(parsed.incident).toEqual({
      subscriptionId: "00000000-0000-0000-0000-000000000000",
      resourceGroup: "rg-example",
      workspaceName: "example-workspace",
      workspaceId: "22222222-2222-2222-2222-222222222222",
      incidentId: "33333333-3333-3333-3333-333333333333",
      incidentNumber: 9,
      title: "'EICAR_Test_File' malware was prevented",
    });
    expect(parsed.entities.map((e) => e.kind)).toEqual(["Host", "File", "FileHash"]);
    expect(parsed.eventType).toBe("Create");
  });

  it("rejects a body that is not an incident trigger, naming the problem", () => {
    expect(() => parseIncidentTrigger({ hello: "world" })).toThrow(InvalidInputError);
    expect(() => parseIncidentTrigger({ hello: "world" })).toThrow(/workspaceId/);
    const bad = fixture("sentinel-incident-trigger-body.COMPOSITE.json");
    bad.object.id = "/subscriptions/x/whatever";
    expect(() => parseIncidentTrigger(bad)).toThrow(/not an incident resource id/);
  });
});

describe("extractArtifacts", () => {
  it("turns the real MDE Linux EICAR entities into one file with its SHA-1 and device id", () => {
    const entities = fixture("sentinel-trigger-relatedEntities-mde-linux-eicar.json") as SentinelEntity[];
    const { artifacts, ignored } = extractArtifacts(entities);
    expect(ignored).toEqual([]);
    expect(artifacts).toHaveLength(1);
    expect(artifacts[0]).toMatchObject({
      kind: "file",
      fileName: "eicar.com",
      directory: "/home/azureuser",
      hashes: { sha1: "3395856ce81f2b7382dee72602f798b642f14140" },
      deviceId: "1111111111111111111111111111111111111111",
      hostName: "examplelinuxvm",
    });
    expect(artifacts[0]!.artifactId).toMatch(/^file-[0-9a-f]{24}$/);
  });

  it("gives the same artifact id on every run and de-duplicates repeated entities", () => {
    const url = { kind: "Url", properties: { url: "HTTPS://Example.COM/a?b=1#frag" } };
    const first = extractArtifacts([url, { ...url }, { kind: "Url", properties: { url: "https://example.com/a?b=1" } }]);
    expect(first.artifacts).toHaveLength(1);
    expect(first.artifacts[0]).toMatchObject({ kind: "url", url: "https://example.com/a?b=1" });
    expect(extractArtifacts([url]).artifacts[0]!.artifactId).toBe(first.artifacts[0]!.artifactId);
  });

  it("reports a hash without host or path as hash-only, and a file on no MDE device too", () => {
    const { artifacts } = extractArtifacts([
      { kind: "FileHash", properties: { algorithm: "SHA256", hashValue: "E923636F1093C414AAB39F846E9D7A372BEEFA7B628B28179197E539C56AA0F0" } },
    ]);
    expect(artifacts).toEqual([
      expect.objectContaining({ kind: "hash", hashes: { sha256: "e923636f1093c414aab39f846e9d7a372beefa7b628b28179197e539c56aa0f0" } }),
    ]);
    const noHost = extractArtifacts([
      { kind: "File", properties: { fileName: "a.exe", directory: "C:\\x" } },
      { kind: "FileHash", properties: { algorithm: "MD5", hashValue: "44d88612fea8a8f36de82e1278abb02f" } },
    ]);
    expect(noHost.artifacts).toEqual([expect.objectContaining({ kind: "hash", fileName: "a.exe", reason: expect.stringContaining("no MDE device") })]);
  });

  it("ignores non-http URLs and overlong ones with a reason", () => {
    const { artifacts, ignored } = extractArtifacts([
      { kind: "Url", properties: { url: "javascript:alert(1)" } },
      { kind: "Url", properties: { url: `https://example.com/${"a".repeat(600)}` } },
    ]);
    expect(artifacts).toEqual([]);
    expect(ignored.map((i) => i.reason)).toEqual(["not an http(s) URL", "URL longer than the 512 characters the sandbox accepts"]);
  });

  it("keeps two files on different hosts apart and drops a bare hash that a file already carries", () => {
    const sha = "a".repeat(64);
    const { artifacts } = extractArtifacts([
      { kind: "Host", properties: { hostName: "h1", additionalData: { MdatpDeviceId: "b".repeat(40) } } },
      { kind: "File", properties: { fileName: "x.exe", directory: "C:\\t", additionalData: { MdatpDeviceId: "b".repeat(40) } } },
      { kind: "File", properties: { fileName: "x.exe", directory: "C:\\t", additionalData: { MdatpDeviceId: "c".repeat(40) } } },
      { kind: "FileHash", properties: { algorithm: "SHA256", hashValue: sha } },
    ], { collectFilesWithoutHash: true });
    expect(artifacts.filter((a) => a.kind === "file")).toHaveLength(2);
    expect(artifacts.filter((a) => a.kind === "hash")).toHaveLength(1);
  });

  it("falls back to the file's Host when its own device id is malformed", () => {
    const { artifacts } = extractArtifacts([
      { kind: "Host", properties: { hostName: "h1", additionalData: { MdatpDeviceId: "d".repeat(40) } } },
      { kind: "File", properties: { fileName: "x.exe", directory: "C:\\t", additionalData: { MdatpDeviceId: "not-a-device" } } },
      { kind: "FileHash", properties: { algorithm: "SHA256", hashValue: "e".repeat(64) } },
    ]);
    expect(artifacts).toEqual([expect.objectContaining({ kind: "file", deviceId: "d".repeat(40), hostName: "h1" })]);
  });

  it("does not collect a file that comes without any hash unless told to", () => {
    const entities = [
      { kind: "File", properties: { fileName: "salaries.xlsx", directory: "C:\\Users\\bob\\Documents", additionalData: { MdatpDeviceId: "b".repeat(40) } } },
    ];
    const off = extractArtifacts(entities);
    expect(off.artifacts).toEqual([]);
    expect(off.ignored).toEqual([{ kind: "File", reason: "no hash to check the collected file against, so it is not collected (COLLECT_FILES_WITHOUT_HASH)" }]);
    const on = extractArtifacts(entities, { collectFilesWithoutHash: true });
    expect(on.artifacts).toEqual([expect.objectContaining({ kind: "file", fileName: "salaries.xlsx", hashes: {} })]);
  });

  it("says why when several files and hashes come without references to tell which hash is whose", () => {
    const device = { additionalData: { MdatpDeviceId: "b".repeat(40) } };
    const { artifacts, ignored } = extractArtifacts([
      { kind: "File", properties: { fileName: "a.exe", directory: "C:\\t", ...device } },
      { kind: "File", properties: { fileName: "b.exe", directory: "C:\\t", ...device } },
      { kind: "FileHash", properties: { algorithm: "SHA256", hashValue: "e".repeat(64) } },
      { kind: "FileHash", properties: { algorithm: "SHA256", hashValue: "f".repeat(64) } },
    ]);
    expect(ignored.map((i) => i.reason)).toEqual([
      "its hash cannot be told apart from the other files' (no fileHashEntityIds), so it is not collected (COLLECT_FILES_WITHOUT_HASH)",
      "its hash cannot be told apart from the other files' (no fileHashEntityIds), so it is not collected (COLLECT_FILES_WITHOUT_HASH)",
    ]);
    expect(artifacts.map((a) => (a.kind === "hash" ? a.reason : a.kind))).toEqual([
      "not linked to one of the incident's File entities (no fileHashEntityIds): the file cannot be collected with Live Response",
      "not linked to one of the incident's File entities (no fileHashEntityIds): the file cannot be collected with Live Response",
    ]);
  });

  it("names a file by device and path, not by the hashes known of it or the folder's spelling", () => {
    const device = { additionalData: { MdatpDeviceId: "b".repeat(40) } };
    const sha1 = { kind: "FileHash", properties: { algorithm: "SHA1", hashValue: "a".repeat(40) } };
    const sha256 = { kind: "FileHash", properties: { algorithm: "SHA256", hashValue: "e".repeat(64) } };
    const idOf = (directory: string, fileName: string, hashes: unknown[]) =>
      extractArtifacts([{ kind: "File", properties: { fileName, directory, ...device } }, ...(hashes as never[])]).artifacts.find((a) => a.kind === "file")?.artifactId;
    const first = idOf("C:\\Drop", "b.exe", [sha1]);
    expect(first).toMatch(/^file-/);
    expect(idOf("C:\\Drop", "b.exe", [sha1, sha256])).toBe(first);
    expect(idOf("c:\\drop\\", "B.EXE", [sha256])).toBe(first);
    expect(idOf("C:/Drop/", "b.exe", [sha1])).toBe(first);
    // Linux and macOS paths keep their case.
    expect(idOf("/tmp/Drop", "b.sh", [sha1])).not.toBe(idOf("/tmp/drop", "b.sh", [sha1]));
    expect(idOf("/tmp/drop/", "b.sh", [sha1])).toBe(idOf("/tmp/drop", "b.sh", [sha1]));
    expect(idOf("/", "b.sh", [sha1])).toMatch(/^file-/);
  });

  it("merges the hashes of two File entities of the same file", () => {
    const device = { additionalData: { MdatpDeviceId: "b".repeat(40) } };
    const { artifacts } = extractArtifacts([
      { id: "f1", kind: "File", properties: { fileName: "b.exe", directory: "C:\\Drop", fileHashEntityIds: ["h1"], ...device } },
      { id: "f2", kind: "File", properties: { fileName: "b.exe", directory: "C:\\Drop\\", fileHashEntityIds: ["h2"], ...device } },
      { id: "h1", kind: "FileHash", properties: { algorithm: "SHA1", hashValue: "a".repeat(40) } },
      { id: "h2", kind: "FileHash", properties: { algorithm: "SHA256", hashValue: "e".repeat(64) } },
    ]);
    expect(artifacts).toEqual([expect.objectContaining({ kind: "file", hashes: { sha1: "a".repeat(40), sha256: "e".repeat(64) } })]);
  });

  it("normalises URLs without changing path or query", () => {
    expect(normaliseUrl("HTTP://EXAMPLE.com:80/Path?Q=A#x")).toBe("http://example.com/Path?Q=A");
    expect(normaliseUrl("ftp://example.com/")).toBeUndefined();
    expect(normaliseUrl("not a url")).toBeUndefined();
  });
});
