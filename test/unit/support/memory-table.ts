import { RestError, type TableClient } from "@azure/data-tables";

/**
 * An in-memory stand-in for the five TableClient calls JobStore makes, with Table storage's
 * semantics: 409 on a second create, 404 on a missing row, 412 on a stale etag, Merge and Replace updates.
 */
export class MemoryTable {
  readonly rows = new Map<string, Record<string, unknown>>();
  private version = 0;

  private key(pk: string, rk: string) {
    return `${pk}\u0000${rk}`;
  }

  async createTable(): Promise<void> {}

  async createEntity(entity: Record<string, unknown>): Promise<void> {
    const k = this.key(entity["partitionKey"] as string, entity["rowKey"] as string);
    if (this.rows.has(k)) throw new RestError("EntityAlreadyExists", { statusCode: 409 });
    this.rows.set(k, { ...entity, etag: `W/"${++this.version}"` });
  }

  async getEntity(pk: string, rk: string): Promise<Record<string, unknown>> {
    const row = this.rows.get(this.key(pk, rk));
    if (!row) throw new RestError("ResourceNotFound", { statusCode: 404 });
    return { ...row };
  }

  async updateEntity(entity: Record<string, unknown>, mode: "Merge" | "Replace", options: { etag?: string } = {}): Promise<void> {
    const k = this.key(entity["partitionKey"] as string, entity["rowKey"] as string);
    const row = this.rows.get(k);
    if (!row) throw new RestError("ResourceNotFound", { statusCode: 404 });
    if (options.etag && options.etag !== row["etag"]) throw new RestError("UpdateConditionNotSatisfied", { statusCode: 412 });
    this.rows.set(k, { ...(mode === "Merge" ? row : {}), ...entity, etag: `W/"${++this.version}"` });
  }

  async *listEntities(options: { queryOptions?: { filter?: string } } = {}): AsyncIterable<Record<string, unknown>> {
    const pk = /PartitionKey eq '(.*)'/.exec(options.queryOptions?.filter ?? "")?.[1]?.replace(/''/g, "'");
    for (const row of this.rows.values()) if (pk === undefined || row["partitionKey"] === pk) yield { ...row };
  }

  asTableClient(): TableClient {
    return this as unknown as TableClient;
  }
}
