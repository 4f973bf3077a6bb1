// The Pulumi program reads the one topology declaration the functions are built from: every queue,
// topic, subscription, filter, Event Grid topic/subscription and trigger below comes from there.
// (Loaded as TypeScript: Vitest transpiles it in tests, tsx does for `pulumi up` - see README.)
export * from "../../shared/src/topology.ts";
