// Generates TypeScript types for every OpenAPI description in this folder (openapi-typescript).
// Output: shared/src/clients/generated/<name>.ts. Run with `npm run generate:api`.
import { execFileSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "src", "clients", "generated");
const bin = join(here, "..", "..", "node_modules", ".bin", "openapi-typescript");
for (const file of readdirSync(here).filter((f) => f.endsWith(".yaml")).sort()) {
  const name = file.replace(/\.yaml$/, "");
  execFileSync(bin, [join(here, file), "-o", join(out, `${name}.ts`)], { stdio: "inherit" });
}
