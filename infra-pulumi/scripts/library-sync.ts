import { createHash } from "node:crypto";

/**
 * Idempotent upload of the connector's Live Response scripts to the tenant's MDE library
 * (shared/reference/mde-live-response.md §7): list the library, compare SHA-256, upload with
 * OverrideIfExists only the scripts that are missing or differ.
 */

export const LIBRARY_FILE_NAME = /^[A-Za-z0-9_.-]+$/;
export const MAX_UPLOAD_BYTES = 20 * 1024 * 1024;

export interface LocalScript {
  readonly fileName: string;
  readonly content: Uint8Array;
  readonly description: string;
  readonly hasParameters: boolean;
  readonly parametersDescription?: string;
}

export interface RemoteLibraryFile {
  readonly fileName: string;
  readonly sha256?: string | null;
}

export interface SyncPlan {
  readonly upload: { script: LocalScript; reason: "missing" | "changed" }[];
  readonly unchanged: string[];
}

export function sha256Hex(content: Uint8Array): string {
  return createHash("sha256").update(content).digest("hex");
}

export function planLibrarySync(local: readonly LocalScript[], remote: readonly RemoteLibraryFile[]): SyncPlan {
  const remoteByName = new Map(remote.map((f) => [f.fileName.toLowerCase(), f]));
  const plan: SyncPlan = { upload: [], unchanged: [] };
  for (const script of local) {
    if (!LIBRARY_FILE_NAME.test(script.fileName)) {
      throw new Error(`Library file name ${script.fileName} may contain only letters, digits, '-', '_' and '.'`);
    }
    if (script.content.byteLength > MAX_UPLOAD_BYTES) {
      throw new Error(`${script.fileName} is larger than the 20 MB the library API accepts`);
    }
    const existing = remoteByName.get(script.fileName.toLowerCase());
    if (!existing) plan.upload.push({ script, reason: "missing" });
    else if ((existing.sha256 ?? "").toLowerCase() !== sha256Hex(script.content)) plan.upload.push({ script, reason: "changed" });
    else plan.unchanged.push(script.fileName);
  }
  return plan;
}

/**
 * The two library calls the sync needs; `createMdeClient` (shared/src/clients/mde.ts) provides them.
 */
export interface LibraryApi {
  listLibraryFiles(): Promise<readonly RemoteLibraryFile[]>;
  uploadLibraryFile(options: {
    fileName: string;
    content: Uint8Array;
    description: string;
    hasParameters: boolean;
    parametersDescription?: string;
    overrideIfExists: boolean;
  }): Promise<unknown>;
}

export interface SyncResult {
  readonly uploaded: string[];
  readonly unchanged: string[];
}

export async function syncLibrary(
  api: LibraryApi,
  scripts: readonly LocalScript[],
  log: (line: string) => void = () => {},
): Promise<SyncResult> {
  const plan = planLibrarySync(scripts, await api.listLibraryFiles());
  for (const name of plan.unchanged) log(`${name}: unchanged (SHA-256 matches), skipped`);
  for (const { script, reason } of plan.upload) {
    await api.uploadLibraryFile({
      fileName: script.fileName,
      content: script.content,
      description: script.description,
      hasParameters: script.hasParameters,
      ...(script.parametersDescription ? { parametersDescription: script.parametersDescription } : {}),
      overrideIfExists: true,
    });
    log(`${script.fileName}: uploaded (${reason})`);
  }
  if (plan.upload.length > 0) {
    // Read back: the library must now hold exactly our bytes.
    const after = planLibrarySync(
      plan.upload.map((u) => u.script),
      await api.listLibraryFiles(),
    );
    if (after.upload.length > 0) {
      throw new Error(`Library still differs after upload: ${after.upload.map((u) => u.script.fileName).join(", ")}`);
    }
  }
  return { uploaded: plan.upload.map((u) => u.script.fileName), unchanged: plan.unchanged };
}
