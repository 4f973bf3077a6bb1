import "./servicebus-extension.js";
import type { FunctionDefinition } from "@connector/shared/function-definition";
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
