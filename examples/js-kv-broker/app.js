// js-kv-broker: a credentials broker kept in the runtime's key-value store.
//
// Provision records the instance (plan and parameters) under `instance/<id>`; bind makes a
// user name and a random password for the binding and keeps them under `binding/<id>/<id>`;
// unbind and deprovision remove them. `[env] REGION` names where the "database" lives.
import {
  Broker, Conflict, Gone, Unprocessable, config, exportBroker, kv, log,
} from "brokerbox";

// `[env]` values are read per call: the module's top level runs once, when it is built.
const serviceId = () => config("SERVICE_ID", "0e7c2a54-5d1f-4b0a-9c33-7a5b00000001");
const region = () => config("REGION", "local");

function password() {
  const bytes = new Uint8Array(18);
  crypto.getRandomValues(bytes);
  return btoa(String.fromCharCode(...bytes)).replace(/[+/=]/g, "x");
}

class KvBroker extends Broker {
  catalog() {
    const id = serviceId();
    return [{
      id,
      name: "js-kv-credentials",
      description: `Credentials for a database in ${region()}`,
      bindable: true,
      instancesRetrievable: true,
      bindingsRetrievable: true,
      tags: ["javascript", "kv"],
      plans: [{ id: `${id}-shared`, name: "shared", description: "A shared database" }],
    }];
  }

  provision({ instanceId, planId, parameters }) {
    const key = `instance/${instanceId}`;
    if (kv.get(key) !== undefined) throw new Conflict(`instance ${instanceId} exists`);
    kv.setJson(key, { planId, parameters, region: region() });
    log.info(`recorded instance ${instanceId} in ${region()}`);
    return { dashboardUrl: `https://db.${region()}.example.com/${instanceId}` };
  }

  deprovision({ instanceId }) {
    const key = `instance/${instanceId}`;
    if (kv.get(key) === undefined) throw new Gone(`instance ${instanceId} is not recorded`);
    for (const binding of kv.listKeys(`binding/${instanceId}/`)) kv.delete(binding);
    kv.delete(key);
  }

  bind({ instanceId, bindingId }) {
    const instance = kv.getJson(`instance/${instanceId}`);
    if (instance === undefined) throw new Unprocessable(`instance ${instanceId} is not recorded`);
    const credentials = {
      uri: `postgres://db.${instance.region}.example.com/${instanceId}`,
      username: `u-${bindingId}`.slice(0, 32),
      password: password(),
    };
    kv.setJson(`binding/${instanceId}/${bindingId}`, credentials);
    return credentials;
  }

  unbind({ instanceId, bindingId }) {
    const key = `binding/${instanceId}/${bindingId}`;
    if (kv.get(key) === undefined) throw new Gone(`binding ${bindingId} is not recorded`);
    kv.delete(key);
  }
}

export const osb = exportBroker(new KvBroker());
