import type { FunctionDefinition } from "@connector/shared/function-definition";

/** Every function of the Function App; the Functions host loads this module, so does the local host. */
export const allFunctions: FunctionDefinition[] = [];
