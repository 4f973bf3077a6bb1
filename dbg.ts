import { startLocalRuntime } from "./test/local/runtime.ts";
import net from "node:net";
const rt = await startLocalRuntime({});
console.log(rt.env.SERVICEBUS_CONNECTION);
const port = Number(/127\.0\.0\.1:(\d+)/.exec(rt.env.SERVICEBUS_CONNECTION!)?.[1]);
setTimeout(() => { const s = net.connect(port, "127.0.0.1", () => { console.log("parent connected during spawn"); s.end(); }); s.on("error", (e) => console.log("parent err", e.message)); }, 3000);
try { await rt.startHost(); console.log("host up"); } catch (e) { console.log("host fail", (e as Error).message); }
await rt.close(); process.exit(0);
