import { RestError, type TableClient } from "@azure/data-tables";

/**
 * Creates a table if it is missing (the local runtime and a first start). In Azure the deployment
 * creates the tables and grants the app Table Data Contributor on each table only; creating a
 * table is authorised at the account, so a 403 there means "exists, not ours to create": go on,
 * and a table that really is missing fails on first use with its own 404.
 */
export async function ensureTable(table: TableClient): Promise<void> {
  try {
    await table.createTable();
  } catch (err) {
    if (err instanceof RestError && err.statusCode === 403) return;
    throw err;
  }
}
