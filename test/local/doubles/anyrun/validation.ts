/**
 * The double's own check of `POST /v1/analysis` fields, written from the contract notes
 * (shared/reference/anyrun-api.md §3.2–3.3) independently of the client's option builder, so that
 * a mistake in the client is caught here instead of being mirrored. The real server's messages are
 * not public: the texts below are the double's.
 */

export type ObjType = "file" | "url" | "download" | "rerun";

const osTable: Record<string, { versions: string[]; default: string; bits32: string[]; browsers: Record<string, string[]>; folders: string[] }> = {
  windows: {
    versions: ["7", "10", "11", "server 2025"],
    default: "10",
    bits32: ["7", "10"],
    browsers: {
      "7": ["Microsoft Edge", "Google Chrome", "Mozilla Firefox", "Internet Explorer"],
      "10": ["Microsoft Edge", "Google Chrome", "Mozilla Firefox", "Internet Explorer"],
      "11": ["Microsoft Edge", "Google Chrome", "Mozilla Firefox", "Internet Explorer"],
      "server 2025": ["Microsoft Edge"],
    },
    folders: ["desktop", "home", "downloads", "appdata", "temp", "windows", "root"],
  },
  linux: {
    versions: ["22.04.2", "12.2"],
    default: "22.04.2",
    bits32: [],
    browsers: { "22.04.2": ["Google Chrome", "Mozilla Firefox"], "12.2": ["Google Chrome", "Mozilla Firefox"] },
    folders: ["desktop", "home", "downloads", "temp"],
  },
  macos: {
    versions: ["15"],
    default: "15",
    bits32: [],
    browsers: { "15": ["Safari", "Google Chrome", "Mozilla Firefox"] },
    folders: ["desktop", "home", "downloads", "temp"],
  },
  android: { versions: ["14"], default: "14", bits32: [], browsers: { "14": [] }, folders: ["downloads"] },
};

const booleanFields = [
  "opt_network_connect",
  "opt_network_fakenet",
  "opt_network_tor",
  "opt_network_mitm",
  "opt_network_residential_proxy",
  "opt_kernel_heavyevasion",
  "opt_privacy_hidesource",
  "opt_automated_interactivity",
  "obj_ext_extension",
  "obj_force_elevation",
  "auto_confirm_uac",
  "run_as_root",
];
const geos = ["fastest", "AU", "BR", "DE", "CH", "FR", "KR", "US", "RU", "GB", "IT"];

export interface ValidatedSubmission {
  objType: ObjType;
  env: { os: string; version: string; bitness: number; type: string };
  userTags: string[];
}

/** Returns the first problem as a 400 message, or the normalised submission. */
export function validateSubmission(fields: Record<string, string>, hasFile: boolean): { error: string } | ValidatedSubmission {
  const objType = fields.obj_type ?? "file";
  if (!["file", "url", "download", "rerun"].includes(objType)) return { error: `Invalid obj_type: ${objType}` };
  if (objType === "file" && !hasFile) return { error: "File is required: send it as a multipart part named 'file'" };
  if (objType === "url" || objType === "download") {
    const url = fields.obj_url;
    if (url === undefined) return { error: "obj_url is required" };
    if (url.length < 5 || url.length > 512) return { error: "obj_url length must be between 5 and 512 characters" };
    if (!/^https?:\/\/\S+$/i.test(url)) return { error: "obj_url must be an http(s) URL" };
  }
  if (objType === "rerun" && !fields.task_rerun_uuid) return { error: "task_rerun_uuid is required" };

  const os = fields.env_os ?? "windows";
  const rules = osTable[os];
  if (!rules) return { error: `Invalid env_os: ${os}` };
  const version = fields.env_version ?? rules.default;
  if (!rules.versions.includes(version)) return { error: `Invalid env_version for ${os}: ${version}` };
  const bitnessText = fields.env_bitness ?? "64";
  if (bitnessText !== "32" && bitnessText !== "64") return { error: `Invalid env_bitness: ${bitnessText}` };
  const bitness = Number(bitnessText);
  if (bitness === 32 && !rules.bits32.includes(version)) return { error: `env_bitness 32 is not available for ${os} ${version}` };
  const type = fields.env_type ?? "complete";
  if (type !== "complete" && type !== "development") return { error: `Invalid env_type: ${type}` };
  if (type === "development" && !(os === "windows" && version === "10" && bitness === 64)) {
    return { error: "env_type development is available for windows 10 64 bit only" };
  }

  for (const name of booleanFields) {
    const value = fields[name];
    if (value !== undefined && value !== "true" && value !== "false") return { error: `Invalid ${name}: expected true or false` };
  }
  if (fields.opt_timeout !== undefined) {
    const t = Number(fields.opt_timeout);
    if (!/^\d+$/.test(fields.opt_timeout) || t < 10 || t > 660) return { error: "opt_timeout must be between 10 and 660 seconds" };
  }
  if (fields.opt_network_geo !== undefined && !geos.includes(fields.opt_network_geo)) {
    return { error: `Invalid opt_network_geo: ${fields.opt_network_geo}` };
  }
  if (fields.opt_privacy_type !== undefined && !["public", "bylink", "owner", "byteam"].includes(fields.opt_privacy_type)) {
    return { error: `Invalid opt_privacy_type: ${fields.opt_privacy_type}` };
  }
  if (fields.obj_ext_browser !== undefined) {
    const allowed = rules.browsers[version] ?? [];
    if (!allowed.includes(fields.obj_ext_browser)) return { error: `Browser ${fields.obj_ext_browser} is not available for ${os} ${version}` };
  }
  if (fields.obj_ext_startfolder !== undefined && !rules.folders.includes(fields.obj_ext_startfolder)) {
    return { error: `Invalid obj_ext_startfolder for ${os}: ${fields.obj_ext_startfolder}` };
  }
  let userTags: string[] = [];
  if (fields.user_tags !== undefined && fields.user_tags !== "") {
    userTags = fields.user_tags.split(",");
    for (const tag of userTags) {
      if (!/^[A-Za-z0-9-]{1,16}$/.test(tag)) return { error: `Invalid user tag: ${JSON.stringify(tag)}` };
    }
    if (new Set(userTags.map((t) => t.toLowerCase())).size > 8) return { error: "Too many user tags (8 at most)" };
  }
  return { objType: objType as ObjType, env: { os, version, bitness, type }, userTags };
}
