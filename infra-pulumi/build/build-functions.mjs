#!/usr/bin/env node
// Builds the deployable Functions package: one ESM bundle of services/src/functions/index.ts
// (target Node 22, as Azure Functions Flex Consumption runs it), host.json and package.json in
// dist/functions/, zipped to dist/functions.zip. The Pulumi program (infra-pulumi) uploads that
// zip to the Function App's deployment container.
//
// Usage: node infra-pulumi/build/build-functions.mjs [--entry <file>] [--out-dir <dir>] [--zip <file>]
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createZip } from "./zip.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "../..");

export const defaults = {
  entry: path.join(repoRoot, "services/src/functions/index.ts"),
  outDir: path.join(repoRoot, "dist/functions"),
  zipPath: path.join(repoRoot, "dist/functions.zip"),
};

export const BUNDLE_FILE = "index.js";

/** host.json of the Function App (Functions v4 host, extension bundle 4.x). */
export const hostJson = {
  version: "2.0",
  extensionBundle: {
    id: "Microsoft.Azure.Functions.ExtensionBundle",
    version: "[4.*, 5.0.0)",
  },
  extensions: {
    serviceBus: {
      // The functions settle their messages themselves (sdkBinding: complete, dead-letter, schedule).
      autoCompleteMessages: false,
      maxAutoLockRenewalDuration: "00:05:00",
    },
  },
  logging: {
    applicationInsights: {
      samplingSettings: { isEnabled: true, excludedTypes: "Request;Exception" },
    },
  },
};

/**
 * Bundles the functions and writes the package directory and zip.
 * @param {{ entry?: string, outDir?: string, zipPath?: string, log?: (line: string) => void }} [options]
 */
export async function buildFunctions(options = {}) {
  const entry = path.resolve(options.entry ?? defaults.entry);
  const outDir = path.resolve(options.outDir ?? defaults.outDir);
  const zipPath = path.resolve(options.zipPath ?? defaults.zipPath);
  const log = options.log ?? ((line) => console.log(line));
  if (!existsSync(entry)) {
    throw new Error(`Functions entry point not found: ${path.relative(process.cwd(), entry)}`);
  }

  await rm(outDir, { recursive: true, force: true });
  await mkdir(outDir, { recursive: true });

  const result = await build({
    entryPoints: [entry],
    outfile: path.join(outDir, BUNDLE_FILE),
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node22",
    // Everything is bundled, @azure/functions included, so the zip needs no node_modules.
    // `@azure/functions-core` is not a package: the Node worker provides it at run time.
    external: ["@azure/functions-core"],
    // CommonJS dependencies inside an ESM bundle call require() for Node built-ins.
    banner: {
      js: 'import { createRequire as __connectorCreateRequire } from "node:module"; const require = __connectorCreateRequire(import.meta.url);',
    },
    legalComments: "none",
    logLevel: "silent",
    metafile: true,
  });
  for (const warning of result.warnings) log(`esbuild warning: ${warning.text}`);

  const bundle = await readFile(path.join(outDir, BUNDLE_FILE));
  const packageJson = {
    name: "anyrun-sentinel-connector-functions",
    version: await rootVersion(),
    private: true,
    type: "module",
    main: BUNDLE_FILE,
    engines: { node: ">=22" },
  };
  const hostText = `${JSON.stringify(hostJson, null, 2)}\n`;
  const packageText = `${JSON.stringify(packageJson, null, 2)}\n`;
  await writeFile(path.join(outDir, "host.json"), hostText);
  await writeFile(path.join(outDir, "package.json"), packageText);

  const zip = createZip([
    { name: BUNDLE_FILE, data: bundle },
    { name: "host.json", data: hostText },
    { name: "package.json", data: packageText },
  ]);
  await mkdir(path.dirname(zipPath), { recursive: true });
  await writeFile(zipPath, zip);
  const sha256 = createHash("sha256").update(zip).digest("hex");
  log(
    `functions package: ${path.relative(process.cwd(), zipPath)} (${zip.length} bytes, bundle ${bundle.length} bytes, sha256 ${sha256})`,
  );
  return { outDir, zipPath, sha256, bundleBytes: bundle.length, zipBytes: zip.length };
}

async function rootVersion() {
  try {
    const pkg = JSON.parse(await readFile(path.join(repoRoot, "package.json"), "utf8"));
    return typeof pkg.version === "string" ? pkg.version : "0.0.0";
  } catch {
    return "0.0.0";
  }
}

function parseArgs(argv) {
  const options = {};
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    const value = argv[i + 1];
    if (arg === "--entry") options.entry = value;
    else if (arg === "--out-dir") options.outDir = value;
    else if (arg === "--zip") options.zipPath = value;
    else throw new Error(`Unknown argument ${arg}`);
    i += 1;
  }
  return options;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  buildFunctions(parseArgs(process.argv.slice(2))).catch((error) => {
    console.error(error instanceof Error ? error.message : error);
    process.exitCode = 1;
  });
}
