import { RestError, type TableClient, type TableEntityResult } from "@azure/data-tables";
import { ensureTable } from "../tables.ts";

/**
 * Live Response discipline in Table storage, shared by every instance of the Function App:
 *
 * - a per-device lease: at most one of our sessions per device at a time (MDE allows one active
 *   action per device and answers a second with 400 ActiveRequestAlreadyExists);
 * - a tenant-wide set of session leases, capped (MDE: 25 concurrent sessions per tenant, then 429);
 * - a tenant-wide rolling window of start calls (MDE: 10 `runliveresponse` calls per minute, then 429).
 *
 * Every write is guarded by the row's etag (or is a create that fails on 409), and a lost race is
 * simply read again, so two holders can never both win. Every lease expires, so a holder that
 * crashed cannot block a device or a session slot for longer than its lease.
 *
 * Rows: PartitionKey `device` / RowKey = device id: { holder, expiresAt, acquiredAt };
 * PartitionKey `tenant` / RowKey `sessions`: { sessions: JSON {holder: expiresAtMs}, starts: JSON [ms] }.
 */

export type LimitKind = "device" | "sessions" | "starts";

export interface LeaseGrant {
  granted: true;
  expiresAt: Date;
  /** True when the holder already held this lease and only extended it. */
  renewed: boolean;
}

export interface LeaseRefusal {
  granted: false;
  limit: LimitKind;
  /** Seconds until the limit can free up at the earliest (lease expiry, oldest start leaving the window). */
  waitSeconds: number;
  /** Device refusals: who holds the device. */
  holder?: string;
}

export type LeaseResult = LeaseGrant | LeaseRefusal;

export interface AcquireRequest {
  deviceId: string;
  /** Stable id of the work that holds the leases (the same after a redelivery). */
  holder: string;
  ttlSeconds: number;
  /** Consume one start call from the rolling window (false when adopting an action that already exists). */
  countStart: boolean;
}

/** What the cores need (the Table-backed class below satisfies it). */
export interface LiveResponseLimiter {
  acquire(request: AcquireRequest): Promise<LeaseResult>;
  release(request: { deviceId: string; holder: string }): Promise<void>;
}

export interface LiveResponseLimitsOptions {
  /** Tenant-wide concurrent sessions (MDE: 25). */
  maxSessions: number;
  /** Start calls per rolling window (MDE: 10 per minute). */
  startsPerWindow: number;
  windowSeconds?: number;
  now?: () => Date;
  /** Optimistic-concurrency rounds before giving up on a hot row (answered as a short refusal). */
  maxRounds?: number;
}

const devicePartition = "device";
const tenantPartition = "tenant";
const sessionsRow = "sessions";

type Row = TableEntityResult<Record<string, unknown>>;

function isStatus(err: unknown, ...codes: number[]): boolean {
  return err instanceof RestError && err.statusCode !== undefined && codes.includes(err.statusCode);
}

function secondsUntil(targetMs: number, nowMs: number): number {
  return Math.max(1, Math.ceil((targetMs - nowMs) / 1000));
}

function parseJson<T>(value: unknown, fallback: T): T {
  if (typeof value !== "string") return fallback;
  try {
    return JSON.parse(value) as T;
  } catch {
    return fallback;
  }
}

export class LiveResponseLimits implements LiveResponseLimiter {
  private readonly windowMs: number;
  private readonly clock: () => Date;
  private readonly maxRounds: number;

  constructor(
    private readonly table: TableClient,
    private readonly options: LiveResponseLimitsOptions,
  ) {
    if (!Number.isInteger(options.maxSessions) || options.maxSessions < 1) throw new RangeError("maxSessions must be a positive integer");
    if (!Number.isInteger(options.startsPerWindow) || options.startsPerWindow < 1) throw new RangeError("startsPerWindow must be a positive integer");
    this.windowMs = (options.windowSeconds ?? 60) * 1000;
    this.clock = options.now ?? (() => new Date());
    this.maxRounds = options.maxRounds ?? 12;
  }

  async ensureTable(): Promise<void> {
    await ensureTable(this.table);
  }

  private async read(partitionKey: string, rowKey: string): Promise<Row | undefined> {
    try {
      return await this.table.getEntity<Record<string, unknown>>(partitionKey, rowKey);
    } catch (err) {
      if (isStatus(err, 404)) return undefined;
      throw err;
    }
  }

  /** Writes `entity` only if the row is still as read (created when it did not exist). False on a lost race. */
  private async write(previous: Row | undefined, entity: { partitionKey: string; rowKey: string } & Record<string, unknown>): Promise<boolean> {
    try {
      if (previous) await this.table.updateEntity(entity, "Replace", { etag: previous.etag });
      else await this.table.createEntity(entity);
      return true;
    } catch (err) {
      if (isStatus(err, 409, 412, 404)) return false;
      throw err;
    }
  }

  /** One of our sessions per device: granted to a free device, to an expired lease, or again to its holder. */
  async acquireDevice(deviceId: string, holder: string, ttlSeconds: number): Promise<LeaseResult> {
    for (let round = 0; round < this.maxRounds; round++) {
      const row = await this.read(devicePartition, deviceId);
      const now = this.clock().getTime();
      const current = row && typeof row["holder"] === "string" ? { holder: row["holder"], expiresAt: Date.parse(String(row["expiresAt"])) } : undefined;
      const live = current && Number.isFinite(current.expiresAt) && current.expiresAt > now;
      if (live && current.holder !== holder) {
        return { granted: false, limit: "device", waitSeconds: secondsUntil(current.expiresAt, now), holder: current.holder };
      }
      const expiresAt = new Date(now + ttlSeconds * 1000);
      const renewed = live === true && current?.holder === holder;
      const ok = await this.write(row, {
        partitionKey: devicePartition,
        rowKey: deviceId,
        holder,
        expiresAt: expiresAt.toISOString(),
        acquiredAt: renewed ? String(row?.["acquiredAt"] ?? new Date(now).toISOString()) : new Date(now).toISOString(),
      });
      if (ok) return { granted: true, expiresAt, renewed };
    }
    return { granted: false, limit: "device", waitSeconds: 1 };
  }

  /** Deletes the device lease if `holder` still holds it; never someone else's. */
  async releaseDevice(deviceId: string, holder: string): Promise<boolean> {
    for (let round = 0; round < this.maxRounds; round++) {
      const row = await this.read(devicePartition, deviceId);
      if (!row || row["holder"] !== holder) return false;
      try {
        await this.table.deleteEntity(devicePartition, deviceId, { etag: row.etag });
        return true;
      } catch (err) {
        if (isStatus(err, 404)) return false;
        if (!isStatus(err, 412)) throw err;
      }
    }
    return false;
  }

  /**
   * A tenant-wide session slot, and (with `countStart`) one start call from the rolling window, taken
   * together in one guarded write: a start is only counted when it also has a session slot.
   */
  async acquireSession(holder: string, ttlSeconds: number, countStart: boolean): Promise<LeaseResult> {
    for (let round = 0; round < this.maxRounds; round++) {
      const row = await this.read(tenantPartition, sessionsRow);
      const now = this.clock().getTime();
      const sessions = this.liveSessions(row, now);
      const starts = this.recentStarts(row, now);
      const had = holder in sessions;
      if (!had && Object.keys(sessions).length >= this.options.maxSessions) {
        return { granted: false, limit: "sessions", waitSeconds: secondsUntil(Math.min(...Object.values(sessions)), now) };
      }
      if (countStart && starts.length >= this.options.startsPerWindow) {
        return { granted: false, limit: "starts", waitSeconds: secondsUntil(starts[0]! + this.windowMs, now) };
      }
      const expiresAt = new Date(now + ttlSeconds * 1000);
      sessions[holder] = expiresAt.getTime();
      if (countStart) starts.push(now);
      const ok = await this.write(row, { partitionKey: tenantPartition, rowKey: sessionsRow, sessions: JSON.stringify(sessions), starts: JSON.stringify(starts) });
      if (ok) return { granted: true, expiresAt, renewed: had };
    }
    return { granted: false, limit: "sessions", waitSeconds: 1 };
  }

  async releaseSession(holder: string): Promise<boolean> {
    for (let round = 0; round < this.maxRounds; round++) {
      const row = await this.read(tenantPartition, sessionsRow);
      if (!row) return false;
      const now = this.clock().getTime();
      const sessions = this.liveSessions(row, now);
      if (!(holder in sessions)) return false;
      delete sessions[holder];
      const ok = await this.write(row, {
        partitionKey: tenantPartition,
        rowKey: sessionsRow,
        sessions: JSON.stringify(sessions),
        starts: JSON.stringify(this.recentStarts(row, now)),
      });
      if (ok) return true;
    }
    return false;
  }

  /** Device lease, then a session slot (and a start); a refused slot gives back a device lease taken just now. */
  async acquire(request: AcquireRequest): Promise<LeaseResult> {
    const device = await this.acquireDevice(request.deviceId, request.holder, request.ttlSeconds);
    if (!device.granted) return device;
    let session: LeaseResult;
    try {
      session = await this.acquireSession(request.holder, request.ttlSeconds, request.countStart);
    } catch (err) {
      if (!device.renewed) await this.releaseDevice(request.deviceId, request.holder).catch(() => false);
      throw err;
    }
    if (!session.granted) {
      if (!device.renewed) await this.releaseDevice(request.deviceId, request.holder);
      return session;
    }
    return { granted: true, expiresAt: session.expiresAt < device.expiresAt ? session.expiresAt : device.expiresAt, renewed: device.renewed && session.renewed };
  }

  async release(request: { deviceId: string; holder: string }): Promise<void> {
    await this.releaseSession(request.holder);
    await this.releaseDevice(request.deviceId, request.holder);
  }

  /** Diagnostics and tests: the live device lease, if any. */
  async deviceLease(deviceId: string): Promise<{ holder: string; expiresAt: Date } | undefined> {
    const row = await this.read(devicePartition, deviceId);
    if (!row || typeof row["holder"] !== "string") return undefined;
    const expiresAt = new Date(String(row["expiresAt"]));
    return expiresAt.getTime() > this.clock().getTime() ? { holder: row["holder"], expiresAt } : undefined;
  }

  /** Diagnostics and tests: holders of live session leases and the start calls in the current window. */
  async usage(): Promise<{ sessions: string[]; starts: number }> {
    const row = await this.read(tenantPartition, sessionsRow);
    const now = this.clock().getTime();
    return { sessions: Object.keys(this.liveSessions(row, now)).sort(), starts: this.recentStarts(row, now).length };
  }

  private liveSessions(row: Row | undefined, now: number): Record<string, number> {
    const all = parseJson<Record<string, unknown>>(row?.["sessions"], {});
    const live: Record<string, number> = {};
    for (const [holder, expires] of Object.entries(all)) if (typeof expires === "number" && expires > now) live[holder] = expires;
    return live;
  }

  private recentStarts(row: Row | undefined, now: number): number[] {
    const all = parseJson<unknown[]>(row?.["starts"], []);
    return all.filter((t): t is number => typeof t === "number" && t > now - this.windowMs && t <= now + this.windowMs).sort((a, b) => a - b);
  }
}
