import { describe, expect, it } from "vitest";
import { parseConfig } from "@connector/shared/config";
import {
  AnyRunInputError,
  buildSubmission,
  objUrlProblems,
  sandboxEnvironmentFor,
  sandboxOptionsFromConfig,
  sanitizeUserTags,
  type SandboxOptions,
} from "@connector/shared/anyrun/options";

const asRecord = (fields: readonly (readonly [string, string])[]) => Object.fromEntries(fields);

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof AnyRunInputError) return err.problems;
    throw err;
  }
  throw new Error("expected AnyRunInputError");
}

describe("buildSubmission", () => {
  it("sends every applicable boolean explicitly, with defaults, in a stable order (file, Windows)", () => {
    const { fields, omitted } = buildSubmission({ kind: "file" });
    expect(fields).toEqual([
      ["obj_type", "file"],
      ["env_os", "windows"],
      ["env_version", "10"],
      ["env_bitness", "64"],
      ["env_type", "complete"],
      ["opt_network_connect", "true"],
      ["opt_network_fakenet", "false"],
      ["opt_network_tor", "false"],
      ["opt_network_mitm", "false"],
      ["opt_automated_interactivity", "true"],
      ["auto_confirm_uac", "true"],
    ]);
    expect(omitted).toEqual([]);
  });

  it("keeps false values as the string 'false' (pitfall §10.1)", () => {
    const { fields } = buildSubmission(
      { kind: "file" },
      { opt_network_connect: false, opt_automated_interactivity: false, auto_confirm_uac: false, opt_network_mitm: true },
    );
    const f = asRecord(fields);
    expect(f.opt_network_connect).toBe("false");
    expect(f.opt_automated_interactivity).toBe("false");
    expect(f.auto_confirm_uac).toBe("false");
    expect(f.opt_network_mitm).toBe("true");
  });

  it("serialises a URL task with every option as a string", () => {
    const options: SandboxOptions = {
      env_os: "windows",
      env_version: "11",
      env_bitness: 64,
      env_locale: "en-US",
      opt_timeout: 120,
      opt_network_geo: "DE",
      opt_privacy_type: "byteam",
      obj_ext_browser: "Google Chrome",
      user_tags: ["sentinel", "incident 42"],
    };
    const f = asRecord(buildSubmission({ kind: "url", url: "https://example.com/login" }, options).fields);
    expect(f).toMatchObject({
      obj_type: "url",
      obj_url: "https://example.com/login",
      env_version: "11",
      env_bitness: "64",
      env_locale: "en-US",
      opt_timeout: "120",
      opt_network_geo: "DE",
      opt_privacy_type: "byteam",
      obj_ext_browser: "Google Chrome",
      user_tags: "sentinel,incident-42",
    });
    expect(f.run_as_root).toBeUndefined();
  });

  it("applies the per-OS flags: run_as_root on Linux files, auto_confirm_uac on Windows only", () => {
    const linux = buildSubmission({ kind: "file" }, { env_os: "linux", auto_confirm_uac: true, obj_ext_startfolder: "home" });
    expect(asRecord(linux.fields)).toMatchObject({ env_os: "linux", env_version: "22.04.2", run_as_root: "false", obj_ext_startfolder: "home" });
    expect(asRecord(linux.fields).auto_confirm_uac).toBeUndefined();
    expect(linux.omitted).toEqual(["auto_confirm_uac"]);

    const linuxUrl = buildSubmission({ kind: "url", url: "https://example.com" }, { env_os: "linux", run_as_root: true });
    expect(asRecord(linuxUrl.fields).run_as_root).toBeUndefined();
    expect(linuxUrl.omitted).toEqual(["run_as_root"]);

    const win = buildSubmission({ kind: "file" }, { run_as_root: true, obj_ext_browser: "Google Chrome" });
    expect(win.omitted).toEqual(["obj_ext_browser", "run_as_root"]);

    const url = buildSubmission({ kind: "url", url: "https://example.com" }, { obj_ext_startfolder: "temp" });
    expect(url.omitted).toEqual(["obj_ext_startfolder"]);
  });

  it("accepts the environments of §3.3", () => {
    const ok: SandboxOptions[] = [
      { env_os: "windows", env_version: "7", env_bitness: 32 },
      { env_os: "windows", env_version: "10", env_bitness: "32" },
      { env_os: "windows", env_version: "10", env_bitness: 64, env_type: "development" },
      { env_os: "windows", env_version: "server 2025", obj_ext_browser: "Microsoft Edge" },
      { env_os: "linux", env_version: "12.2", obj_ext_browser: "Mozilla Firefox" },
      { env_os: "macos", env_version: "15", obj_ext_browser: "Safari" },
      { env_os: "android", env_version: "14" },
    ];
    for (const options of ok) {
      expect(() => buildSubmission({ kind: "url", url: "https://example.com" }, options)).not.toThrow();
    }
  });

  it("rejects environment combinations the sandbox does not have", () => {
    const url = { kind: "url", url: "https://example.com" } as const;
    expect(problemsOf(() => buildSubmission(url, { env_version: "11", env_bitness: 32 }))).toEqual([
      "env_bitness 32 is not available for windows 11",
    ]);
    expect(problemsOf(() => buildSubmission(url, { env_os: "linux", env_bitness: 32 }))).toEqual([
      "env_bitness 32 is not available for linux 22.04.2",
    ]);
    expect(problemsOf(() => buildSubmission(url, { env_version: "11", env_type: "development" }))).toEqual([
      "env_type development is only available for windows 10 64-bit",
    ]);
    expect(problemsOf(() => buildSubmission(url, { env_version: "8.1" }))[0]).toContain('env_version "8.1" is not available for windows');
    expect(problemsOf(() => buildSubmission(url, { env_version: "server 2025", obj_ext_browser: "Google Chrome" }))[0]).toBe(
      'obj_ext_browser "Google Chrome" is not available for windows server 2025 (Microsoft Edge)',
    );
    expect(problemsOf(() => buildSubmission(url, { env_os: "linux", obj_ext_browser: "Safari" }))[0]).toContain("not available for linux");
    expect(problemsOf(() => buildSubmission({ kind: "file" }, { env_os: "macos", obj_ext_startfolder: "appdata" }))[0]).toContain(
      "obj_ext_startfolder",
    );
    expect(problemsOf(() => buildSubmission(url, { env_os: "beos" as never }))[0]).toContain("env_os must be one of");
  });

  it("rejects out-of-range values and reports every problem at once", () => {
    const problems = problemsOf(() =>
      buildSubmission(
        { kind: "url", url: "ftp://example.com/file" },
        { opt_timeout: 661, opt_network_geo: "XX" as never, opt_privacy_type: "secret" as never, env_locale: "<script>" },
      ),
    );
    expect(problems).toEqual([
      "obj_url must use http or https",
      'env_locale "<script>" is not a locale id or country name',
      "opt_timeout must be an integer 10–660 seconds (got 661)",
      "opt_network_geo must be one of fastest, AU, BR, DE, CH, FR, KR, US, RU, GB, IT (got XX)",
      "opt_privacy_type must be one of public, bylink, owner, byteam (got secret)",
    ]);
    expect(problemsOf(() => buildSubmission({ kind: "file" }, { opt_timeout: 9 }))).toHaveLength(1);
    expect(problemsOf(() => buildSubmission({ kind: "file" }, { opt_timeout: 30.5 }))).toHaveLength(1);
    expect(asRecord(buildSubmission({ kind: "file" }, { opt_timeout: 660 }).fields).opt_timeout).toBe("660");
    expect(asRecord(buildSubmission({ kind: "file" }, { opt_timeout: 10 }).fields).opt_timeout).toBe("10");
  });
});

describe("obj_url validation", () => {
  it("allows 5–512 characters of http(s)", () => {
    const base = "https://example.com/";
    expect(objUrlProblems(base + "a".repeat(512 - base.length))).toEqual([]);
    expect(objUrlProblems(base + "a".repeat(513 - base.length))).toEqual(["obj_url must be 5–512 characters (got 513)"]);
    expect(objUrlProblems("a.b")).toEqual(["obj_url must be 5–512 characters (got 3)"]);
    expect(objUrlProblems("example.com")).toEqual(["obj_url is not an absolute URL"]);
    expect(objUrlProblems("javascript:alert(1)")).toEqual(["obj_url must use http or https"]);
    expect(objUrlProblems("https://exa mple.com")).toEqual(["obj_url must not contain whitespace"]);
  });
});

describe("sanitizeUserTags", () => {
  it("keeps only [A-Za-z0-9-], at most 16 characters each and 8 unique tags", () => {
    expect(sanitizeUserTags("sentinel, incident #42 ,MDE")).toEqual(["sentinel", "incident-42", "MDE"]);
    expect(sanitizeUserTags(["a-very-long-tag-name-over-16"])).toEqual(["a-very-long-tag"]);
    expect(sanitizeUserTags(["Sentinel", "sentinel", "SENTINEL", "x"])).toEqual(["Sentinel", "x"]);
    expect(sanitizeUserTags(["ÄÖÜ", "", "  ", "--", "ok"])).toEqual(["ok"]);
    expect(sanitizeUserTags(["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9", "t10"])).toEqual([
      "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8",
    ]);
    expect(sanitizeUserTags(undefined)).toEqual([]);
    for (const tag of sanitizeUserTags(["über/wacht!", "a".repeat(40), "x_y"])) {
      expect(tag).toMatch(/^[A-Za-z0-9-]{1,16}$/);
    }
  });

  it("leaves the field out when no tag survives", () => {
    const f = asRecord(buildSubmission({ kind: "file" }, { user_tags: "!!!,???" }).fields);
    expect(f.user_tags).toBeUndefined();
  });
});

describe("sandboxEnvironmentFor", () => {
  const cases: [Parameters<typeof sandboxEnvironmentFor>[0], ReturnType<typeof sandboxEnvironmentFor>][] = [
    [{ osPlatform: "Windows10", osProcessor: "x64", version: "1709" }, { env_os: "windows", env_version: "10", env_bitness: 64 }],
    [{ osPlatform: "Windows10", osArchitecture: "32-bit" }, { env_os: "windows", env_version: "10", env_bitness: 32 }],
    [{ osPlatform: "Windows10", osProcessor: "x86" }, { env_os: "windows", env_version: "10", env_bitness: 32 }],
    [{ osPlatform: "Windows10", osArchitecture: "64-bit", osProcessor: "x86" }, { env_os: "windows", env_version: "10", env_bitness: 64 }],
    [{ osPlatform: "Windows11", osArchitecture: "32-bit" }, { env_os: "windows", env_version: "11", env_bitness: 64 }],
    [{ osPlatform: "Windows11", osArchitecture: "ARM64" }, { env_os: "windows", env_version: "11", env_bitness: 64 }],
    [{ osPlatform: "Windows7", osProcessor: "x86" }, { env_os: "windows", env_version: "7", env_bitness: 32 }],
    [{ osPlatform: "Windows8.1" }, { env_os: "windows", env_version: "10", env_bitness: 64 }],
    [{ osPlatform: "WindowsServer2019", osArchitecture: "64-bit" }, { env_os: "windows", env_version: "server 2025", env_bitness: 64 }],
    [{ osPlatform: "WindowsServer2012R2", osProcessor: "x86" }, { env_os: "windows", env_version: "server 2025", env_bitness: 64 }],
    [{ osPlatform: "Linux", osProcessor: "x64" }, { env_os: "linux", env_version: "22.04.2", env_bitness: 64 }],
    [{ osPlatform: "Ubuntu" }, { env_os: "linux", env_version: "22.04.2", env_bitness: 64 }],
    [{ osPlatform: "RedHatEnterpriseLinux", osArchitecture: "32-bit" }, { env_os: "linux", env_version: "22.04.2", env_bitness: 64 }],
    [{ osPlatform: "Debian" }, { env_os: "linux", env_version: "12.2", env_bitness: 64 }],
    [{ osPlatform: "macOS" }, { env_os: "macos", env_version: "15", env_bitness: 64 }],
    [{ osPlatform: "MacOSX" }, { env_os: "macos", env_version: "15", env_bitness: 64 }],
    [{ osPlatform: "Android" }, { env_os: "android", env_version: "14", env_bitness: 64 }],
    [{ osPlatform: "iOS" }, { env_os: "windows", env_version: "10", env_bitness: 64 }],
    [{}, { env_os: "windows", env_version: "10", env_bitness: 64 }],
  ];
  it.each(cases)("%j → %j", (machine, expected) => {
    expect(sandboxEnvironmentFor(machine)).toEqual(expected);
  });

  it("always yields an environment that passes validation", () => {
    for (const [machine] of cases) {
      const env = sandboxEnvironmentFor(machine);
      expect(() => buildSubmission({ kind: "file" }, env)).not.toThrow();
    }
  });
});

describe("sandboxOptionsFromConfig", () => {
  const config = parseConfig({
    SERVICEBUS_CONNECTION: "Endpoint=sb://localhost;SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true",
    STORAGE_CONNECTION: "UseDevelopmentStorage=true",
    EVENTGRID_ENDPOINT: "http://127.0.0.1:1/api/events",
    ANYRUN_API_KEY: "unit-test-key-123",
    ANYRUN_OPT_NETWORK_CONNECT: "false",
  });

  it("turns the default settings into valid URL and file submissions", () => {
    const url = asRecord(buildSubmission({ kind: "url", url: "https://example.com" }, sandboxOptionsFromConfig(config, { kind: "url" })).fields);
    expect(url).toMatchObject({
      env_os: "windows",
      env_version: "10",
      obj_ext_browser: "Microsoft Edge",
      opt_timeout: "120",
      opt_privacy_type: "bylink",
      opt_network_geo: "fastest",
      opt_network_connect: "false",
      user_tags: "sentinel",
    });
    const file = asRecord(
      buildSubmission({ kind: "file" }, sandboxOptionsFromConfig(config, { kind: "file", machine: { osPlatform: "Linux" } })).fields,
    );
    expect(file).toMatchObject({ env_os: "linux", env_version: "22.04.2", run_as_root: "false", opt_network_connect: "false" });
    expect(file.obj_ext_browser).toBeUndefined();
  });
});
