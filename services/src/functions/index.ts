import "./servicebus-extension.js";
import type { FunctionDefinition } from "@connector/shared/function-definition";
import { getConfig } from "@connector/shared/config";
import { intake } from "./intake.ts";
import { submitUrl } from "./submit-url.ts";
import { collectFile } from "./collect-file.ts";
import { watchLiveResponse } from "./watch-live-response.ts";
import { submitFile } from "./submit-file.ts";
import { watchAnalysis } from "./watch-analysis.ts";
import { enrichIncident } from "./enrich-incident.ts";
import { replay } from "./replay.ts";

/** Every function of the Function App; the Functions host loads this module, so does the local host. */
export const allFunctions: FunctionDefinition[] = [intake, submitUrl, collectFile, watchLiveResponse, submitFile, watchAnalysis, enrichIncident, replay];

// The settings are validated when the app loads, not on the first message: with a bad setting the
// host indexes no function and logs the ConfigError, and the incidents wait in their queues,
// instead of each one failing ten deliveries and ending in the dead-letter queue.
getConfig();
