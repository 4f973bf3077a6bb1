/**
 * Works around a bug in rhea 3.0.5 (the AMQP library under @azure/service-bus and under the local
 * broker): `write_dispositions` in lib/session.js coalesces consecutive deliveries settled in the
 * same tick into one disposition frame, and compares their outcomes only from the third delivery
 * on (`first !== last && !are_outcomes_equivalent(…)`). The second delivery always takes the first
 * one's outcome. So `completeMessage(a)` and `abandonMessage(b)` in the same tick complete both (b
 * is lost), and two dead-letters in the same tick give the second the first one's reason and
 * description.
 *
 * Importing this module makes every rhea session of the process write one disposition frame per
 * delivery for the deliveries it received (the side the Service Bus SDK settles on). It is loaded
 * by the local broker and by the local functions host; it changes nothing else.
 */
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

interface IncomingInternals {
  updated: unknown[];
  process(session: unknown): void;
}

const patched = Symbol.for("local.rhea.oneDispositionPerDelivery");

function install(): void {
  const Session = require("rhea/lib/session.js") as new (connection: unknown, localChannel: number) => { incoming: IncomingInternals };
  // A session object is enough to reach the (module-private) Incoming prototype; it is never begun.
  const probe = new Session({}, 0);
  const proto = Object.getPrototypeOf(probe.incoming) as IncomingInternals & { [patched]?: boolean };
  if (proto[patched]) return;
  const original = proto.process;
  proto.process = function (this: IncomingInternals, session: unknown) {
    if (this.updated.length <= 1) return original.call(this, session);
    const updated = this.updated;
    for (const delivery of updated) {
      this.updated = [delivery];
      original.call(this, session);
    }
    this.updated = [];
  };
  proto[patched] = true;
}

install();
