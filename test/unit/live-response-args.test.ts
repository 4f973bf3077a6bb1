import { describe, expect, it } from "vitest";
import {
  CollectArgsError,
  collectArgsPattern,
  decodeCollectArgs,
  encodeCollectArgs,
  expectedHash,
  type CollectArgs,
} from "@connector/shared/live-response/args";

const sas = "https://stagingacct.blob.core.windows.net/staging/incident-1/abc.bin?sv=2021-04-10&se=2025-01-01T00%3A00%3A00Z&sr=b&sp=cw&sig=c2VjcmV0LXNpZ25hdHVyZQ%3D%3D";
const nasty = "/tmp/evil dir/a;b & c | d $(rm -rf /) `id` 'single' \"double\" back\\slash\nnext line\r\n\ttab $HOME ${IFS} %PATH% ^& !x";

describe("encodeCollectArgs / decodeCollectArgs", () => {
  it("round-trips a path full of shell metacharacters and newlines, using only [A-Za-z0-9._-]", () => {
    const args: CollectArgs = {
      uploadUrl: sas,
      originalPath: nasty,
      fileName: "a;b & c | d $(x) 'q' \"dq\"\nn.exe",
      sha256: "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f",
      sha1: "3395856ce81f2b7382dee72602f798b642f14140",
      md5: "44d88612fea8a8f36de82e1278abb02f",
      os: "linux",
    };
    const envelope = encodeCollectArgs(args);
    expect(envelope).toMatch(/^[A-Za-z0-9._-]+$/);
    expect(envelope).toMatch(collectArgsPattern);
    expect(envelope.split(".")).toHaveLength(8);
    expect(envelope.startsWith("v1.linux.")).toBe(true);
    // Neither the SAS nor any incident string is visible in the envelope.
    expect(envelope).not.toContain("sig");
    expect(envelope).not.toContain("evil");
    expect(decodeCollectArgs(envelope)).toEqual(args);
  });

  it("accepts only paths on the endpoint's own disks: no UNC, device, relative or dot-segment paths", () => {
    const base = { uploadUrl: sas, fileName: "a.exe" } as const;
    for (const originalPath of ["\\\\evil-host\\share\\a.exe", "\\\\.\\pipe\\a.exe", "\\\\?\\UNC\\h\\s\\a.exe", "a.exe", "C:a.exe", "C:\\Users\\..\\..\\a.exe"]) {
      expect(() => encodeCollectArgs({ ...base, originalPath, os: "windows" }), originalPath).toThrow(CollectArgsError);
    }
    for (const originalPath of ["//evil-host/share/a.exe", "tmp/a.exe", "/tmp/../etc/a.exe", "/tmp/./a.exe", "/proc/self/environ", "/sys/kernel/x", "/dev/sda", "/net/evil-host/a.exe"]) {
      expect(() => encodeCollectArgs({ ...base, originalPath, os: "linux" }), originalPath).toThrow(CollectArgsError);
    }
    expect(encodeCollectArgs({ ...base, originalPath: "D:\\drop\\a.exe", os: "windows" })).toMatch(/^v1\.windows\./);
    expect(encodeCollectArgs({ ...base, originalPath: "/Users/x/Downloads/..a.exe", os: "macos" })).toMatch(/^v1\.macos\./);
    expect(encodeCollectArgs({ ...base, originalPath: "/home/dev/processes/a.sh", os: "linux" })).toMatch(/^v1\.linux\./);
  });

  it("keeps a trailing newline and non-ASCII text exactly", () => {
    const args: CollectArgs = { uploadUrl: sas, originalPath: "C:\\Users\\Zoë\\Загрузки\\файл.exe\n", fileName: "файл.exe", os: "windows" };
    const envelope = encodeCollectArgs(args);
    expect(envelope).toMatch(/^[A-Za-z0-9._-]+$/);
    expect(decodeCollectArgs(envelope)).toEqual(args);
  });

  it("leaves absent hashes as empty fields and lower-cases given ones", () => {
    const envelope = encodeCollectArgs({ uploadUrl: sas, originalPath: "/x", fileName: "x", sha1: "3395856CE81F2B7382DEE72602F798B642F14140", os: "macos" });
    const fields = envelope.split(".");
    expect(fields[5]).toBe("");
    expect(fields[6]).toBe("3395856ce81f2b7382dee72602f798b642f14140");
    expect(fields[7]).toBe("");
    const decoded = decodeCollectArgs(envelope);
    expect(decoded.sha256).toBeUndefined();
    expect(expectedHash(decoded)).toEqual({ algorithm: "sha1", value: "3395856ce81f2b7382dee72602f798b642f14140" });
  });

  it("prefers sha256, then sha1, then md5", () => {
    expect(expectedHash({ sha256: "a".repeat(64), sha1: "b".repeat(40), md5: "c".repeat(32) })?.algorithm).toBe("sha256");
    expect(expectedHash({ sha1: "b".repeat(40), md5: "c".repeat(32) })?.algorithm).toBe("sha1");
    expect(expectedHash({ md5: "c".repeat(32) })).toEqual({ algorithm: "md5", value: "c".repeat(32) });
    expect(expectedHash({})).toBeUndefined();
  });

  it("rejects inputs the scripts could not handle safely", () => {
    const base: CollectArgs = { uploadUrl: sas, originalPath: "/x", fileName: "x", os: "linux" };
    expect(() => encodeCollectArgs({ ...base, uploadUrl: "ftp://host/x" })).toThrow(CollectArgsError);
    expect(() => encodeCollectArgs({ ...base, uploadUrl: 'https://h/x?a="b"' })).toThrow(CollectArgsError);
    expect(() => encodeCollectArgs({ ...base, uploadUrl: "https://h/x y" })).toThrow(CollectArgsError);
    expect(() => encodeCollectArgs({ ...base, uploadUrl: "https://user:pw@h/x" })).toThrow(/credentials/);
    expect(() => encodeCollectArgs({ ...base, originalPath: "" })).toThrow(/originalPath is empty/);
    expect(() => encodeCollectArgs({ ...base, originalPath: "/a\u0000b" })).toThrow(/NUL/);
    expect(() => encodeCollectArgs({ ...base, fileName: "dir/x" })).toThrow(/separator/);
    expect(() => encodeCollectArgs({ ...base, sha256: "zz" })).toThrow(/sha256/);
    expect(() => encodeCollectArgs({ ...base, os: "solaris" as never })).toThrow(/os/);
  });

  it("decodes strictly", () => {
    const good = encodeCollectArgs({ uploadUrl: sas, originalPath: "/x", fileName: "x", os: "linux" });
    expect(() => decodeCollectArgs(good + ".extra")).toThrow(/8 fields/);
    expect(() => decodeCollectArgs(good.replace(/^v1/, "v2"))).toThrow(/version/);
    expect(() => decodeCollectArgs(good.replace(".linux.", ".plan9."))).toThrow(/os/);
    expect(() => decodeCollectArgs(good + "$")).toThrow(/characters/);
    const fields = good.split(".");
    fields[3] = "L3g"; // "/x" is "L3g"; "L3h" decodes to the same bytes but is not canonical
    expect(decodeCollectArgs(fields.join(".")).originalPath).toBe("/x");
    fields[3] = "L3h";
    expect(() => decodeCollectArgs(fields.join("."))).toThrow(/canonical/);
    fields[3] = "";
    expect(() => decodeCollectArgs(fields.join("."))).toThrow(/empty/);
  });
});
