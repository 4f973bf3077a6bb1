import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { allQueues, allTopics, functionTriggers } from "../../shared/src/topology.ts";

/**
 * `pulumi up` does not go through Vitest: with this project's Pulumi.yaml it starts
 * `node --import tsx` and require()s index.ts (CommonJS) - which imports the ESM TypeScript
 * topology. This runs exactly that load path under mocks in a child process.
 */
describe("Pulumi entry point", () => {
  it("loads as CommonJS under tsx and declares the topology", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "infra-entry-"));
    const zip = path.join(dir, "functions.zip");
    writeFileSync(zip, "package");
    const projectDir = path.resolve(__dirname, "..");
    let out: string;
    try {
      out = execFileSync(process.execPath, ["--import", "tsx", "tests/fixtures/load-like-pulumi.cjs", zip], {
        cwd: projectDir,
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const summary = JSON.parse(out) as { types: Record<string, number> };
    expect(summary.types["azure-native:servicebus:Queue"]).toBe(allQueues().length);
    expect(summary.types["azure-native:servicebus:Topic"]).toBe(allTopics().length);
    expect(summary.types["azure-native:servicebus:Subscription"]).toBe(
      allTopics().reduce((n, t) => n + t.subscriptions.length, 0),
    );
    expect(summary.types["azure-native:web:WebApp"]).toBe(1);
    const eventGridFunctions = Object.values(functionTriggers).filter((t) => t.type === "eventGrid").length;
    expect(
      (summary.types["azure-native:eventgrid:SystemTopicEventSubscription"] ?? 0) +
        (summary.types["azure-native:eventgrid:EventSubscription"] ?? 0),
    ).toBe(eventGridFunctions);
  }, 60_000);
});
