import type { Config } from "../config.ts";

/**
 * Submission options for ANY.RUN (`POST /v1/analysis`): the typed option set, the per-OS rules of
 * shared/reference/anyrun-api.md §3.2–3.3, and their serialisation into wire fields.
 *
 * Rules applied when building the wire fields:
 * - Every boolean that applies to the task is sent explicitly as "true"/"false" (defaults filled in),
 *   so a `false` can never be dropped (reference §10.1).
 * - A value outside its allowed set is an error (`AnyRunInputError`), never silently changed.
 * - An option that does not apply to the task kind or OS (a browser on a file task, `run_as_root`
 *   on Windows, `auto_confirm_uac` on Linux…) is left out and reported in `omitted`.
 * - `user_tags` are sanitised, not rejected: see `sanitizeUserTags`.
 */

export type EnvOs = "windows" | "linux" | "android" | "macos";
export type EnvBitness = 32 | 64;
export type EnvType = "complete" | "development";
export type NetworkGeo = "fastest" | "AU" | "BR" | "DE" | "CH" | "FR" | "KR" | "US" | "RU" | "GB" | "IT";
export type PrivacyType = "public" | "bylink" | "owner" | "byteam";
export type Browser = "Microsoft Edge" | "Google Chrome" | "Mozilla Firefox" | "Internet Explorer" | "Safari";
export type StartFolder = "desktop" | "home" | "downloads" | "appdata" | "temp" | "windows" | "root";

export interface SandboxOptions {
  env_os?: EnvOs;
  /** Windows: "7" | "10" | "11" | "server 2025"; Linux: "22.04.2" (Ubuntu) | "12.2" (Debian); macOS: "15"; Android: "14". */
  env_version?: string;
  env_bitness?: EnvBitness | "32" | "64";
  env_type?: EnvType;
  /** Locale id ("en-US") or country name; case-insensitive on the server. */
  env_locale?: string;
  /** Seconds, 10–660. Left to the server default when absent. */
  opt_timeout?: number;
  opt_network_connect?: boolean;
  opt_network_fakenet?: boolean;
  opt_network_tor?: boolean;
  opt_network_mitm?: boolean;
  opt_network_geo?: NetworkGeo;
  opt_privacy_type?: PrivacyType;
  opt_automated_interactivity?: boolean;
  /** URL tasks only. */
  obj_ext_browser?: Browser;
  /** A list or a comma-separated string; sanitised before sending. */
  user_tags?: string | readonly string[];
  /** File tasks only. */
  obj_ext_startfolder?: StartFolder;
  /** Windows only. */
  auto_confirm_uac?: boolean;
  /** Linux file tasks only. */
  run_as_root?: boolean;
}

export type SubmissionTarget = { kind: "file" } | { kind: "url"; url: string };

/** Wire fields in sending order; every value a string. */
export type SubmissionField = readonly [name: string, value: string];

export interface BuiltSubmission {
  fields: SubmissionField[];
  /** Option names that were set but do not apply to this task kind / OS, hence not sent. */
  omitted: string[];
}

/** Input rejected before any request was made (bad option, bad URL, bad paging). Not retryable. */
export class AnyRunInputError extends Error {
  override name = "AnyRunInputError";
  constructor(readonly problems: string[]) {
    super(`Invalid ANY.RUN input: ${problems.join("; ")}`);
  }
}

export const networkGeos: readonly NetworkGeo[] = ["fastest", "AU", "BR", "DE", "CH", "FR", "KR", "US", "RU", "GB", "IT"];
export const privacyTypes: readonly PrivacyType[] = ["public", "bylink", "owner", "byteam"];
export const objUrlLength = { min: 5, max: 512 } as const;
export const optTimeoutRange = { min: 10, max: 660 } as const;
export const userTagRules = { maxLength: 16, maxCount: 8 } as const;

interface OsRules {
  versions: readonly string[];
  defaultVersion: string;
  /** Versions that also exist in 32 bit. */
  bits32: readonly string[];
  browsers: readonly Browser[];
  /** Browsers allowed per version where narrower than `browsers`. */
  browsersByVersion?: Readonly<Record<string, readonly Browser[]>>;
  startFolders: readonly StartFolder[];
  autoConfirmUac: boolean;
  runAsRoot: boolean;
}

/** Per-OS rules, reference §3.3. */
export const osRules: Readonly<Record<EnvOs, OsRules>> = {
  windows: {
    versions: ["7", "10", "11", "server 2025"],
    defaultVersion: "10",
    bits32: ["7", "10"],
    browsers: ["Microsoft Edge", "Google Chrome", "Mozilla Firefox", "Internet Explorer"],
    browsersByVersion: { "server 2025": ["Microsoft Edge"] },
    startFolders: ["desktop", "home", "downloads", "appdata", "temp", "windows", "root"],
    autoConfirmUac: true,
    runAsRoot: false,
  },
  linux: {
    versions: ["22.04.2", "12.2"],
    defaultVersion: "22.04.2",
    bits32: [],
    browsers: ["Google Chrome", "Mozilla Firefox"],
    startFolders: ["desktop", "home", "downloads", "temp"],
    autoConfirmUac: false,
    runAsRoot: true,
  },
  macos: {
    versions: ["15"],
    defaultVersion: "15",
    bits32: [],
    browsers: ["Safari", "Google Chrome", "Mozilla Firefox"],
    startFolders: ["desktop", "home", "downloads", "temp"],
    autoConfirmUac: false,
    runAsRoot: false,
  },
  android: {
    versions: ["14"],
    defaultVersion: "14",
    bits32: [],
    browsers: [],
    startFolders: ["downloads"],
    autoConfirmUac: false,
    runAsRoot: false,
  },
};

/** Booleans sent when the caller leaves them unset (the documented server defaults). */
export const booleanDefaults = {
  opt_network_connect: true,
  opt_network_fakenet: false,
  opt_network_tor: false,
  opt_network_mitm: false,
  opt_automated_interactivity: true,
  auto_confirm_uac: true,
  run_as_root: false,
} as const;

const bool = (value: boolean): string => (value ? "true" : "false");

/**
 * Makes tags acceptable to ANY.RUN: every run of characters outside [A-Za-z0-9-] becomes one "-",
 * leading/trailing "-" are trimmed, each tag is cut to 16 characters, empty tags are dropped,
 * duplicates (case-insensitive) are removed and at most 8 are kept, in input order.
 */
export function sanitizeUserTags(tags: string | readonly string[] | undefined): string[] {
  if (tags === undefined) return [];
  const list = typeof tags === "string" ? tags.split(",") : tags;
  const out: string[] = [];
  const seen = new Set<string>();
  for (const raw of list) {
    const tag = raw
      .replace(/[^A-Za-z0-9-]+/g, "-")
      .replace(/^-+|-+$/g, "")
      .slice(0, userTagRules.maxLength)
      .replace(/-+$/, "");
    if (!tag || seen.has(tag.toLowerCase())) continue;
    seen.add(tag.toLowerCase());
    out.push(tag);
    if (out.length === userTagRules.maxCount) break;
  }
  return out;
}

/** Problems with a URL to submit (empty when acceptable): http(s), 5–512 characters. */
export function objUrlProblems(url: string): string[] {
  if (url.length < objUrlLength.min || url.length > objUrlLength.max) {
    return [`obj_url must be ${objUrlLength.min}–${objUrlLength.max} characters (got ${url.length})`];
  }
  if (/\s/.test(url)) return ["obj_url must not contain whitespace"];
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return ["obj_url is not an absolute URL"];
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") return ["obj_url must use http or https"];
  return [];
}

const localePattern = /^(?:[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*|[A-Za-z][A-Za-z .'-]{1,63})$/;

/**
 * Validates `options` for a file or URL task and turns them into wire fields (all strings).
 * Throws `AnyRunInputError` listing every problem found.
 */
export function buildSubmission(target: SubmissionTarget, options: SandboxOptions = {}): BuiltSubmission {
  const problems: string[] = [];
  const omitted: string[] = [];
  const fields: SubmissionField[] = [];
  const push = (name: string, value: string) => fields.push([name, value]);

  fields.push(["obj_type", target.kind]);
  if (target.kind === "url") {
    problems.push(...objUrlProblems(target.url));
    push("obj_url", target.url);
  }

  const os: EnvOs = options.env_os ?? "windows";
  const rules = osRules[os];
  if (!rules) {
    throw new AnyRunInputError([`env_os must be one of ${Object.keys(osRules).join(", ")} (got ${String(options.env_os)})`]);
  }
  const version = options.env_version ?? rules.defaultVersion;
  if (!rules.versions.includes(version)) {
    problems.push(`env_version ${JSON.stringify(version)} is not available for ${os} (${rules.versions.join(", ")})`);
  }
  const bitness = options.env_bitness === undefined ? 64 : Number(options.env_bitness);
  if (bitness !== 32 && bitness !== 64) problems.push(`env_bitness must be 32 or 64 (got ${String(options.env_bitness)})`);
  else if (bitness === 32 && !rules.bits32.includes(version)) problems.push(`env_bitness 32 is not available for ${os} ${version}`);
  const envType = options.env_type ?? "complete";
  if (envType !== "complete" && envType !== "development") {
    problems.push(`env_type must be complete or development (got ${String(envType)})`);
  } else if (envType === "development" && !(os === "windows" && version === "10" && bitness === 64)) {
    problems.push("env_type development is only available for windows 10 64-bit");
  }
  push("env_os", os);
  push("env_version", version);
  push("env_bitness", String(bitness));
  push("env_type", envType);

  if (options.env_locale !== undefined) {
    if (!localePattern.test(options.env_locale)) problems.push(`env_locale ${JSON.stringify(options.env_locale)} is not a locale id or country name`);
    push("env_locale", options.env_locale);
  }
  if (options.opt_timeout !== undefined) {
    const t = options.opt_timeout;
    if (!Number.isInteger(t) || t < optTimeoutRange.min || t > optTimeoutRange.max) {
      problems.push(`opt_timeout must be an integer ${optTimeoutRange.min}–${optTimeoutRange.max} seconds (got ${t})`);
    }
    push("opt_timeout", String(t));
  }

  push("opt_network_connect", bool(options.opt_network_connect ?? booleanDefaults.opt_network_connect));
  push("opt_network_fakenet", bool(options.opt_network_fakenet ?? booleanDefaults.opt_network_fakenet));
  push("opt_network_tor", bool(options.opt_network_tor ?? booleanDefaults.opt_network_tor));
  push("opt_network_mitm", bool(options.opt_network_mitm ?? booleanDefaults.opt_network_mitm));
  if (options.opt_network_geo !== undefined) {
    if (!networkGeos.includes(options.opt_network_geo)) problems.push(`opt_network_geo must be one of ${networkGeos.join(", ")} (got ${String(options.opt_network_geo)})`);
    push("opt_network_geo", options.opt_network_geo);
  }
  if (options.opt_privacy_type !== undefined) {
    if (!privacyTypes.includes(options.opt_privacy_type)) problems.push(`opt_privacy_type must be one of ${privacyTypes.join(", ")} (got ${String(options.opt_privacy_type)})`);
    push("opt_privacy_type", options.opt_privacy_type);
  }
  push("opt_automated_interactivity", bool(options.opt_automated_interactivity ?? booleanDefaults.opt_automated_interactivity));

  const tags = sanitizeUserTags(options.user_tags);
  if (tags.length > 0) push("user_tags", tags.join(","));

  if (options.obj_ext_browser !== undefined) {
    if (target.kind !== "url") omitted.push("obj_ext_browser");
    else {
      const allowed = rules.browsersByVersion?.[version] ?? rules.browsers;
      if (!allowed.includes(options.obj_ext_browser)) {
        problems.push(`obj_ext_browser ${JSON.stringify(options.obj_ext_browser)} is not available for ${os} ${version}${allowed.length ? ` (${allowed.join(", ")})` : ""}`);
      }
      push("obj_ext_browser", options.obj_ext_browser);
    }
  }
  if (options.obj_ext_startfolder !== undefined) {
    if (target.kind !== "file") omitted.push("obj_ext_startfolder");
    else {
      if (!rules.startFolders.includes(options.obj_ext_startfolder)) {
        problems.push(`obj_ext_startfolder ${JSON.stringify(options.obj_ext_startfolder)} is not available for ${os} (${rules.startFolders.join(", ")})`);
      }
      push("obj_ext_startfolder", options.obj_ext_startfolder);
    }
  }
  if (rules.autoConfirmUac) push("auto_confirm_uac", bool(options.auto_confirm_uac ?? booleanDefaults.auto_confirm_uac));
  else if (options.auto_confirm_uac !== undefined) omitted.push("auto_confirm_uac");
  if (rules.runAsRoot && target.kind === "file") push("run_as_root", bool(options.run_as_root ?? booleanDefaults.run_as_root));
  else if (options.run_as_root !== undefined) omitted.push("run_as_root");

  if (problems.length > 0) throw new AnyRunInputError(problems);
  return { fields, omitted };
}

export interface MdeMachine {
  osPlatform?: string;
  osArchitecture?: string;
  osProcessor?: string;
  version?: string;
}

export interface SandboxEnvironment {
  env_os: EnvOs;
  env_version: string;
  env_bitness: EnvBitness;
}

function is32Bit(machine: MdeMachine): boolean {
  const arch = machine.osArchitecture?.toLowerCase().replace(/\s+/g, "");
  if (arch) return /^(32-?bit|x86|i[3-6]86)$/.test(arch);
  const cpu = machine.osProcessor?.toLowerCase().replace(/\s+/g, "");
  return cpu !== undefined && /^(x86|i[3-6]86|32-?bit)$/.test(cpu);
}

/**
 * Picks the sandbox environment closest to an MDE machine (GET /api/machines/{id}).
 *
 * - Windows11 → windows 11; Windows7 → windows 7; Windows10 and every other desktop Windows
 *   (8, 8.1, unknown) → windows 10.
 * - WindowsServer* (2012R2…2025) → windows "server 2025": the only server image, and a server
 *   sample is more likely to behave as on its host there than on a desktop. Server 2025 is 64-bit
 *   only and its plan availability is unverified; callers wanting a desktop image may override.
 * - 32-bit only where the sandbox has it (Windows 7 and 10); otherwise 64. `osArchitecture`
 *   ("32-bit"/"64-bit") wins over the legacy `osProcessor` ("x86"/"x64"); ARM64 maps to 64.
 * - Linux (or a distribution name): Debian → linux 12.2, anything else → linux 22.04.2 (Ubuntu); 64.
 * - macOS → macos 15 64; Android → android 14 64.
 * - Unknown or missing platform → windows 10 64.
 */
export function sandboxEnvironmentFor(machine: MdeMachine): SandboxEnvironment {
  const platform = (machine.osPlatform ?? "").toLowerCase().replace(/[\s_-]+/g, "");
  if (platform.includes("windows") || platform.startsWith("win")) {
    let version: string;
    if (platform.includes("server")) version = "server 2025";
    else if (platform.includes("11")) version = "11";
    else if (/windows7$|win7$/.test(platform)) version = "7";
    else version = "10";
    const bits32 = osRules.windows.bits32.includes(version) && is32Bit(machine);
    return { env_os: "windows", env_version: version, env_bitness: bits32 ? 32 : 64 };
  }
  if (platform.includes("debian")) return { env_os: "linux", env_version: "12.2", env_bitness: 64 };
  if (
    /linux|ubuntu|redhat|rhel|centos|suse|sles|oracle|amazon|fedora|alma|rocky|mariner/.test(platform)
  ) {
    return { env_os: "linux", env_version: "22.04.2", env_bitness: 64 };
  }
  if (/macos|osx|darwin|^mac/.test(platform)) return { env_os: "macos", env_version: "15", env_bitness: 64 };
  if (platform.includes("android")) return { env_os: "android", env_version: "14", env_bitness: 64 };
  return { env_os: "windows", env_version: "10", env_bitness: 64 };
}

type AnyRunConfig = Pick<
  Config,
  | "ANYRUN_OPT_TIMEOUT"
  | "ANYRUN_OPT_PRIVACY"
  | "ANYRUN_OPT_NETWORK_CONNECT"
  | "ANYRUN_OPT_NETWORK_FAKENET"
  | "ANYRUN_OPT_NETWORK_TOR"
  | "ANYRUN_OPT_NETWORK_MITM"
  | "ANYRUN_OPT_NETWORK_GEO"
  | "ANYRUN_OPT_AUTOMATED_INTERACTIVITY"
  | "ANYRUN_URL_BROWSER_WINDOWS"
  | "ANYRUN_URL_ENV_VERSION"
  | "ANYRUN_USER_TAGS"
>;

/**
 * The options the connector's settings ask for. URL tasks run on Windows (`ANYRUN_URL_ENV_VERSION`,
 * `ANYRUN_URL_BROWSER_WINDOWS`); file tasks get the environment of the machine the file came from.
 * Values are passed through unchecked: `buildSubmission` validates them.
 */
export function sandboxOptionsFromConfig(
  config: AnyRunConfig,
  target: { kind: "url" } | { kind: "file"; machine?: MdeMachine },
): SandboxOptions {
  const common: SandboxOptions = {
    opt_timeout: config.ANYRUN_OPT_TIMEOUT,
    opt_privacy_type: config.ANYRUN_OPT_PRIVACY,
    opt_network_connect: config.ANYRUN_OPT_NETWORK_CONNECT,
    opt_network_fakenet: config.ANYRUN_OPT_NETWORK_FAKENET,
    opt_network_tor: config.ANYRUN_OPT_NETWORK_TOR,
    opt_network_mitm: config.ANYRUN_OPT_NETWORK_MITM,
    opt_network_geo: config.ANYRUN_OPT_NETWORK_GEO as NetworkGeo,
    opt_automated_interactivity: config.ANYRUN_OPT_AUTOMATED_INTERACTIVITY,
    user_tags: config.ANYRUN_USER_TAGS,
  };
  if (target.kind === "url") {
    return {
      ...common,
      env_os: "windows",
      env_version: config.ANYRUN_URL_ENV_VERSION,
      env_bitness: 64,
      obj_ext_browser: config.ANYRUN_URL_BROWSER_WINDOWS as Browser,
    };
  }
  return { ...common, ...sandboxEnvironmentFor(target.machine ?? {}) };
}
