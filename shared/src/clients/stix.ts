import { isIPv4, isIPv6 } from "node:net";
import { domainToASCII } from "node:url";
import { projectNamespace, uuidV5 } from "../ids.ts";
import type { components } from "./generated/sentinel-ti.ts";

/**
 * STIX 2.1 indicators from ANY.RUN IoCs (recipe: shared/reference/sentinel-api.md §6).
 *
 * Every pattern is built here, from a validated and normalised value, never by ad-hoc string
 * concatenation elsewhere. Ids are deterministic (UUIDv5 of "<stix-type>:<normalised value>"), so
 * uploading the same IoC again targets the same STIX object instead of adding a duplicate.
 */

export type StixIndicator = components["schemas"]["StixIndicator"];

export type IocType = "sha256" | "sha1" | "md5" | "url" | "domain" | "ip";
/** ANY.RUN reputation: by name, or the numeric code of the IoC endpoint (1 suspicious, 2 malicious). */
export type IocReputation = "malicious" | "suspicious" | 1 | 2;

export interface IndicatorInput {
  type: IocType;
  value: string;
  reputation: IocReputation;
  /** Link to the ANY.RUN task (https://app.any.run/tasks/<uuid>), kept as an external reference. */
  taskUrl: string;
  /** Shown as tags in Sentinel. */
  labels?: readonly string[];
  now: Date;
  /** valid_until = now + validDays. */
  validDays: number;
}

/** The STIX cyber-observable type a pattern compares against. */
export type ObservableType = "file" | "url" | "domain-name" | "ipv4-addr" | "ipv6-addr";

export interface ObservableValue {
  observable: ObservableType;
  /** Normalised value (lower-case hashes and domains, compressed IPv6, URLs as submitted). */
  value: string;
  /** The left-hand side of the comparison expression, e.g. `file:hashes.'SHA-256'`. */
  path: string;
}

const hashSpec = {
  sha256: { length: 64, path: "file:hashes.'SHA-256'" },
  sha1: { length: 40, path: "file:hashes.'SHA-1'" },
  md5: { length: 32, path: "file:hashes.MD5" },
} as const;

/** Escapes a value for a single-quoted STIX pattern string: `\` first, then `'`. */
export function escapePatternValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/'/g, "\\'");
}

// C0/C1 control characters and whitespace inside a value: nothing a pattern should carry.
// eslint-disable-next-line no-control-regex
const controlOrSpace = /[\u0000-\u0020\u007f-\u009f]/;

/** IPv4 or IPv6 address, optionally in CIDR notation; undefined when it is neither. */
function normaliseIp(raw: string): { observable: "ipv4-addr" | "ipv6-addr"; value: string } | undefined {
  const [address = "", prefix, extra] = raw.split("/");
  if (extra !== undefined) return undefined;
  let bits: number | undefined;
  if (prefix !== undefined) {
    if (!/^\d{1,3}$/.test(prefix)) return undefined;
    bits = Number(prefix);
  }
  if (isIPv4(address)) {
    if (bits !== undefined && bits > 32) return undefined;
    return { observable: "ipv4-addr", value: bits === undefined ? address : `${address}/${bits}` };
  }
  // Zone ids (fe80::1%eth0) are local to a host: not an indicator.
  if (address.includes("%") || !isIPv6(address)) return undefined;
  if (bits !== undefined && bits > 128) return undefined;
  // The WHATWG URL parser prints IPv6 in its canonical compressed, lower-case form.
  const canonical = new URL(`http://[${address}]/`).hostname.slice(1, -1);
  return { observable: "ipv6-addr", value: bits === undefined ? canonical : `${canonical}/${bits}` };
}

/** A DNS name (IDN converted to punycode), lower-case, without a trailing dot; undefined when invalid. */
function normaliseDomain(raw: string): string | undefined {
  if (raw.includes("/") || raw.includes(":") || raw.includes("@") || controlOrSpace.test(raw)) return undefined;
  const ascii = domainToASCII(raw.replace(/\.$/, "")).toLowerCase();
  if (!ascii || ascii.length > 253) return undefined;
  const labels = ascii.split(".");
  if (labels.length < 2) return undefined;
  for (const label of labels) {
    if (!/^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/.test(label)) return undefined;
  }
  // An address is not a domain name (and the top-level label is never all digits).
  if (isIPv4(ascii) || /^\d+$/.test(labels[labels.length - 1]!)) return undefined;
  return ascii;
}

/** Validates and normalises an IoC value; undefined when a STIX pattern cannot express it. */
export function toObservable(type: IocType, rawValue: string): ObservableValue | undefined {
  const raw = rawValue.trim();
  if (!raw) return undefined;
  switch (type) {
    case "sha256":
    case "sha1":
    case "md5": {
      const spec = hashSpec[type];
      const value = raw.toLowerCase();
      if (value.length !== spec.length || !/^[0-9a-f]+$/.test(value)) return undefined;
      return { observable: "file", value, path: spec.path };
    }
    case "url": {
      if (controlOrSpace.test(raw) || raw.length > 8192) return undefined;
      return { observable: "url", value: raw, path: "url:value" };
    }
    case "domain": {
      const value = normaliseDomain(raw);
      return value === undefined ? undefined : { observable: "domain-name", value, path: "domain-name:value" };
    }
    case "ip": {
      const ip = normaliseIp(raw);
      return ip === undefined ? undefined : { observable: ip.observable, value: ip.value, path: `${ip.observable}:value` };
    }
    default:
      return undefined;
  }
}

/** `[<path> = '<escaped value>']`. */
export function stixPattern(observable: ObservableValue): string {
  return `[${observable.path} = '${escapePatternValue(observable.value)}']`;
}

/** Deterministic STIX id of the indicator for an observable. */
export function indicatorId(observable: Pick<ObservableValue, "observable" | "value">): string {
  return `indicator--${uuidV5(`${observable.observable}:${observable.value}`, projectNamespace)}`;
}

function confidenceOf(reputation: IocReputation): { confidence: number; indicatorType: string; word: string } | undefined {
  if (reputation === "malicious" || reputation === 2) {
    return { confidence: 100, indicatorType: "malicious-activity", word: "malicious" };
  }
  if (reputation === "suspicious" || reputation === 1) {
    return { confidence: 60, indicatorType: "anomalous-activity", word: "suspicious" };
  }
  return undefined;
}

const dayMs = 86_400_000;

/**
 * A STIX 2.1 indicator for one IoC, or undefined when the value cannot be expressed (unknown type,
 * malformed hash, invalid domain, not an IP address, control characters, unknown reputation).
 */
export function buildIndicator(input: IndicatorInput): StixIndicator | undefined {
  const observable = toObservable(input.type, input.value);
  const rating = confidenceOf(input.reputation);
  if (!observable || !rating) return undefined;
  if (!Number.isFinite(input.validDays) || input.validDays <= 0) {
    throw new RangeError(`validDays must be a positive number, got ${input.validDays}`);
  }
  const now = input.now.getTime();
  if (Number.isNaN(now)) throw new RangeError("now is an invalid Date");
  const timestamp = new Date(now).toISOString();
  const labels = [...new Set((input.labels ?? []).map((l) => l.trim()).filter((l) => l.length > 0))];

  const indicator: StixIndicator = {
    type: "indicator",
    spec_version: "2.1",
    id: indicatorId(observable),
    created: timestamp,
    modified: timestamp,
    name: `ANY.RUN ${rating.word} ${observable.observable}: ${observable.value}`.slice(0, 512),
    description: `Seen as ${rating.word} in ANY.RUN sandbox analysis ${input.taskUrl}`,
    indicator_types: [rating.indicatorType],
    pattern: stixPattern(observable),
    pattern_type: "stix",
    pattern_version: "2.1",
    valid_from: timestamp,
    valid_until: new Date(now + input.validDays * dayMs).toISOString(),
    confidence: rating.confidence,
    external_references: [{ source_name: "ANY.RUN", url: input.taskUrl }],
  };
  if (labels.length > 0) indicator.labels = labels;
  return indicator;
}
