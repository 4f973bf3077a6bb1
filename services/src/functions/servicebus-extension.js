// Enables `sdkBinding` (settlement actions) for the Service Bus triggers; loaded before any
// function registers. Plain JavaScript on purpose: the preview package ships TypeScript sources
// as its types, which do not compile under this project's strict settings.
import "@azure/functions-extensions-servicebus";
