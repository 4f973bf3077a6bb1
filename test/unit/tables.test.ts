import { RestError, type TableClient } from "@azure/data-tables";
import { describe, expect, it } from "vitest";
import { ensureTable } from "@connector/shared/tables";

const tableThat = (fail?: RestError) => ({ createTable: async () => { if (fail) throw fail; } }) as unknown as TableClient;

describe("ensureTable", () => {
  it("goes on when the app may not create tables (403: the deployment created them)", async () => {
    await expect(ensureTable(tableThat(new RestError("AuthorizationPermissionMismatch", { statusCode: 403 })))).resolves.toBeUndefined();
    await expect(ensureTable(tableThat())).resolves.toBeUndefined();
  });

  it("fails on anything else", async () => {
    await expect(ensureTable(tableThat(new RestError("ServerBusy", { statusCode: 503 })))).rejects.toMatchObject({ statusCode: 503 });
  });
});
