/**
 * Uploads the connector's Live Response scripts to a tenant's MDE library, only when their
 * SHA-256 differs from the library's copy. The one command per tenant:
 *
 *   npm run upload-library-scripts -w infra-pulumi -- --stack <tenant>
 *
 * Identity: the Entra application the stack creates for this purpose (WindowsDefenderATP
 * Library.Manage only). Its client secret is read from the tenant's Key Vault with your own
 * Azure login (DefaultAzureCredential: `az login`, or AZURE_* environment variables in CI); the
 * stack granted the deploying identity read access to that one secret. The application id, tenant,
 * secret URI, MDE API host and script names come from `pulumi stack output libraryUpload`.
 *
 * Options: --stack <name> | --outputs <file.json>   where the libraryUpload output comes from
 *          --scripts-dir <dir>                       default services/scripts
 *          --dry-run                                 list what would be uploaded
 * Environment: MDE_UPLOADER_CLIENT_SECRET overrides the Key Vault lookup.
 */
import { ClientSecretCredential, DefaultAzureCredential } from "@azure/identity";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { createMdeClient } from "../../shared/src/clients/mde.ts";
import { planLibrarySync, syncLibrary, type LocalScript } from "./library-sync.ts";

interface LibraryUploadOutput {
  enabled: boolean;
  tenantId: string;
  clientId: string;
  clientSecretUri: string;
  mdeBaseUrl: string;
  scripts: string[];
}

const MDE_SCOPE = "https://api.securitycenter.microsoft.com/.default";
const projectDir = path.resolve(__dirname, "..");

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const usage = `Usage: npm run upload-library-scripts -w infra-pulumi -- (--stack <tenant> | --outputs <file.json>) [--scripts-dir <dir>] [--dry-run]

Uploads services/scripts' Live Response scripts to the tenant's MDE library when their SHA-256
differs. --stack reads \`pulumi stack output libraryUpload\` (needs the Pulumi CLI); --outputs reads
that output saved as JSON. MDE_UPLOADER_CLIENT_SECRET overrides the Key Vault lookup of the secret.`;

class UsageError extends Error {}

function readOutputs(): LibraryUploadOutput {
  const file = arg("--outputs");
  if (file) return JSON.parse(readFileSync(file, "utf8")) as LibraryUploadOutput;
  const stack = arg("--stack");
  if (!stack) throw new UsageError("Pass --stack <tenant> (or --outputs <file.json>).");
  let json: string;
  try {
    json = execFileSync("pulumi", ["stack", "output", "libraryUpload", "--json", "--stack", stack], { cwd: projectDir, encoding: "utf8" });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw new Error("The Pulumi CLI is not on PATH: install it (https://www.pulumi.com/docs/install/), or save `pulumi stack output libraryUpload --json` to a file and pass --outputs <file.json>");
    }
    throw err;
  }
  return JSON.parse(json) as LibraryUploadOutput;
}

function describe(fileName: string): Pick<LocalScript, "description" | "hasParameters" | "parametersDescription"> {
  return {
    description: `ANY.RUN Sentinel connector: collects a file from the endpoint for sandbox analysis (${fileName})`,
    hasParameters: true,
    parametersDescription: "Arguments are supplied by the connector when it runs the script.",
  };
}

async function clientSecret(outputs: LibraryUploadOutput): Promise<string> {
  const fromEnv = process.env.MDE_UPLOADER_CLIENT_SECRET;
  if (fromEnv) return fromEnv;
  const credential = new DefaultAzureCredential();
  const token = await credential.getToken("https://vault.azure.net/.default");
  const response = await fetch(`${outputs.clientSecretUri}?api-version=7.4`, {
    headers: { Authorization: `Bearer ${token.token}` },
  });
  if (!response.ok) throw new Error(`Reading the uploader secret from Key Vault failed: ${response.status}`);
  return ((await response.json()) as { value: string }).value;
}

async function main(): Promise<void> {
  if (process.argv.includes("--help") || process.argv.includes("-h")) {
    console.log(usage);
    return;
  }
  const outputs = readOutputs();
  if (!outputs.enabled) throw new Error("This stack has defender.libraryUploader disabled");
  const dir = path.resolve(arg("--scripts-dir") ?? path.join(projectDir, "../services/scripts"));
  const scripts: LocalScript[] = outputs.scripts.map((fileName) => ({
    fileName,
    content: readFileSync(path.join(dir, fileName)),
    ...describe(fileName),
  }));
  const secret = await clientSecret(outputs);
  const mde = createMdeClient({
    baseUrl: outputs.mdeBaseUrl,
    credential: new ClientSecretCredential(outputs.tenantId, outputs.clientId, secret),
    scope: MDE_SCOPE,
  });
  if (process.argv.includes("--dry-run")) {
    const plan = planLibrarySync(scripts, await mde.listLibraryFiles());
    for (const u of plan.upload) console.log(`would upload ${u.script.fileName} (${u.reason})`);
    for (const n of plan.unchanged) console.log(`unchanged ${n}`);
    return;
  }
  const result = await syncLibrary(mde, scripts, (line) => console.log(line));
  console.log(`library up to date: ${result.uploaded.length} uploaded, ${result.unchanged.length} unchanged`);
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  if (error instanceof UsageError) console.error(`\n${usage}`);
  process.exitCode = error instanceof UsageError ? 2 : 1;
});
