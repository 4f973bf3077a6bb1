/**
 * Starts the local Service Bus broker with the topology's entities and prints its connection
 * string on stdout (the only stdout line), e.g.
 *
 *   npx tsx test/local/servicebus/main.ts --port 5672
 *
 * Options: `--port <n>` (default 5672, the emulator port; 0 = OS-chosen), `--host <addr>`
 * (default 127.0.0.1). Stops on SIGINT / SIGTERM. Logs go to stderr as JSON lines (LOG_LEVEL).
 */
import { parseArgs } from "node:util";
import { createLogger } from "@connector/shared/logger";
import { startServiceBusBroker } from "./broker.ts";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "5672" },
    host: { type: "string", default: "127.0.0.1" },
  },
});

const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write(`invalid --port '${values.port}'\n`);
  process.exit(2);
}

const logger = createLogger({ service: "servicebus-broker", sink: (_level, line) => process.stderr.write(`${line}\n`) });
const broker = await startServiceBusBroker({ port, host: values.host, logger });
process.stdout.write(`${broker.connectionString}\n`);

let stopping = false;
const stop = (signal: string) => {
  if (stopping) return;
  stopping = true;
  logger.info("stopping", { signal });
  broker.close().then(
    () => process.exit(0),
    (err: unknown) => {
      logger.error("close failed", { error: err });
      process.exit(1);
    },
  );
};
process.on("SIGINT", () => stop("SIGINT"));
process.on("SIGTERM", () => stop("SIGTERM"));
