// js-rules: a test-only JavaScript broker whose provision does what its parameters say, so the
// end-to-end tests can check the JavaScript SDK's errors, async operations and outbound HTTP:
// {"throw": "Conflict"} throws that SDK error class (or "TypeError");
// {"fetch": URL} fetches URL (an async operation) and answers its status and body as metadata;
// {"loop": true} spins forever. bind answers credentials with a key named `endpoints`.
import * as sdk from "brokerbox";
import { Broker, exportBroker } from "brokerbox";

class Rules extends Broker {
  catalog() {
    return {
      id: "js-rules-service",
      name: "js-rules",
      description: "Does what it is told",
      bindable: true,
      plans: [{ id: "js-rules-plan", name: "default", description: "The only plan" }],
    };
  }

  provision({ parameters }) {
    if (parameters.throw) {
      const Class = sdk[parameters.throw] ?? globalThis[parameters.throw];
      throw new Class(`threw ${parameters.throw}`);
    }
    if (parameters.loop) {
      for (;;) {}
    }
    if (parameters.fetch) {
      return (async () => {
        const response = await sdk.http.fetch(parameters.fetch);
        const body = await response.text();
        return { metadata: { labels: { status: String(response.status) }, attributes: { body } } };
      })();
    }
    return undefined;
  }

  // Credentials whose keys look like a binding's own fields are still only credentials.
  bind({ instanceId }) {
    return { endpoints: "a credential named endpoints", instance: instanceId };
  }

  deprovision() {}
}

export const osb = exportBroker(new Rules());
