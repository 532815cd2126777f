// {{name}}: an Open Service Broker for brokerbox.
//
// Provision records the instance's plan and parameters in the runtime's key-value store; bind
// hands out credentials for it; deprovision forgets it. Replace the bodies with what your
// service really does, then `brokerbox build` (or `brokerbox dev` to rebuild on every save).
import { Broker, Gone, Unprocessable, exportBroker, kv, log } from "brokerbox";

const SERVICE_ID = "{{service_id}}";
const PLAN_ID = "{{plan_id}}";

class {{type_name}} extends Broker {
  catalog() {
    return [{
      id: SERVICE_ID,
      name: "{{name}}",
      description: "{{name}}, served by brokerbox",
      bindable: true,
      plans: [{ id: PLAN_ID, name: "standard", description: "A standard {{name}}" }],
    }];
  }

  provision({ instanceId, planId, parameters }) {
    kv.setJson(`instance/${instanceId}`, { plan: planId, parameters });
    log.info(`provisioned ${instanceId}`);
  }

  deprovision({ instanceId }) {
    const key = `instance/${instanceId}`;
    if (kv.get(key) === undefined) throw new Gone(`no instance ${instanceId}`);
    kv.delete(key);
  }

  bind({ instanceId, bindingId }) {
    const record = kv.getJson(`instance/${instanceId}`);
    if (record === undefined) throw new Unprocessable(`no instance ${instanceId}`);
    return {
      uri: `https://${instanceId}.{{name}}.example.com`,
      username: `user-${bindingId}`,
      plan: record.plan,
    };
  }
}

export const osb = exportBroker(new {{type_name}}());
