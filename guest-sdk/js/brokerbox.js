// brokerbox: write an Open Service Broker (OSB) in JavaScript as a WebAssembly component.
//
// Extend `Broker`, implement the operations your service supports, and export it from your
// module as `export const osb = exportBroker(new MyBroker());`. Build with the project's
// `scripts/build-guests` (jco componentize with --bundle and this SDK's rolldown config).
// Types: brokerbox.d.ts beside this file.

import * as hostLog from "brokerbox:broker/log@0.1.0";
import * as hostKv from "brokerbox:broker/kv@0.1.0";
import * as hostConfig from "brokerbox:broker/config@0.1.0";

/** Base of the OSB errors; raise a subclass. Any other exception answers 500. */
export class BrokerError extends Error {
  constructor(message = "") {
    super(message);
    this.name = new.target.name;
  }
  /** The case of the WIT `broker-error` variant. */
  static get tag() {
    return "internal";
  }
}
const errorClass = (name, tag) =>
  ({ [name]: class extends BrokerError { static get tag() { return tag; } } })[name];
/** 400 Bad Request. */
export const BadRequest = errorClass("BadRequest", "bad-request");
/** 409 Conflict. */
export const Conflict = errorClass("Conflict", "conflict");
/** 410 Gone. */
export const Gone = errorClass("Gone", "gone");
/** 422 AsyncRequired. */
export const AsyncRequired = errorClass("AsyncRequired", "async-required");
/** 422 ConcurrencyError. */
export const ConcurrencyError = errorClass("ConcurrencyError", "concurrency-error");
/** 422 RequiresApp. */
export const RequiresApp = errorClass("RequiresApp", "requires-app");
/** 422 MaintenanceInfoConflict. */
export const MaintenanceInfoConflict = errorClass("MaintenanceInfoConflict", "maintenance-info-conflict");
/** 422 Unprocessable Entity. */
export const Unprocessable = errorClass("Unprocessable", "unprocessable");
/** 500 Internal Server Error. */
export const Internal = errorClass("Internal", "internal");

/** A finished provision or update, or a long one when `operationData` is set via `accepted`. */
export function accepted(operationData = "", { dashboardUrl, metadata } = {}) {
  return { __accepted: true, operationData, dashboardUrl, metadata };
}
/** A finished bind with more than credentials (`endpoints`, `volumeMounts`, `expiresAt`, ...);
 *  a plain object returned from `bind` is the credentials alone. */
export function binding(fields) {
  return { __binding: true, ...fields };
}
/** A long operation still running. */
export function inProgress(description, operationData) {
  return { __state: "in-progress", description, operationData };
}
/** A long operation that finished well (`binding`: credentials object or a binding). */
export function succeeded(description, { binding, instance } = {}) {
  return { __state: "succeeded", description, binding, instance };
}
/** A long operation that failed. */
export function failed(description, { instanceUsable, updateRepeatable } = {}) {
  return { __state: "failed", description, instanceUsable, updateRepeatable };
}

/** Logging into the runtime's logs. */
export const log = {
  debug: (message) => hostLog.write("debug", String(message)),
  info: (message) => hostLog.write("info", String(message)),
  warn: (message) => hostLog.write("warn", String(message)),
  error: (message) => hostLog.write("error", String(message)),
};

/** A failed key-value call; `kind` is "denied", "too-large" or "unavailable". */
export class KvError extends Error {
  constructor(kind, message) {
    super(`kv ${kind}: ${message}`);
    this.name = "KvError";
    this.kind = kind;
  }
}
function kvCall(fn) {
  try {
    return fn();
  } catch (e) {
    const payload = e && e.payload !== undefined ? e.payload : e;
    if (payload && typeof payload.tag === "string") throw new KvError(payload.tag, payload.val);
    throw e;
  }
}
const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** The broker's private key-value store (manifest `[grants] kv = true`). */
export const kv = {
  /** The value of `key` as bytes, or `undefined`. */
  get: (key) => kvCall(() => hostKv.get(key)),
  /** Sets `key` to bytes (a Uint8Array) or a string (stored as UTF-8). */
  set: (key, value) =>
    kvCall(() => hostKv.set(key, typeof value === "string" ? encoder.encode(value) : value)),
  /** Removes `key`. */
  delete: (key) => kvCall(() => hostKv.delete(key)),
  /** The keys starting with `prefix`, ascending. */
  listKeys: (prefix = "") => kvCall(() => hostKv.listKeys(prefix)),
  /** The value of `key` parsed as JSON, or `undefined`. */
  getJson: (key) => {
    const value = kv.get(key);
    return value === undefined ? undefined : JSON.parse(decoder.decode(value));
  },
  /** Sets `key` to `value` as JSON. */
  setJson: (key, value) => kv.set(key, JSON.stringify(value)),
};

/** A value from the manifest's `[env]` table, or `fallback`. Read it inside an operation:
 *  the module's top level runs once, when the component is built. */
export function config(key, fallback) {
  const value = hostConfig.get(key);
  return value === undefined ? fallback : value;
}

/** Most redirects (301, 302, 303, 307, 308) one `http.fetch` follows. */
export const MAX_REDIRECTS = 5;

/** `fetch`, following up to `MAX_REDIRECTS` redirects (the runtime's `fetch` does not): a 307
 *  or 308 with the same method and body, the others as a GET. Each redirect is a new request,
 *  which the runtime checks against the allowlist again; one to another origin does not carry
 *  the `authorization` and `cookie` headers. `redirect: "manual"` turns it off. */
async function fetchFollowing(input, init = {}) {
  let response = await fetch(input, init);
  let url = typeof input === "string" ? input : String(input.url ?? input);
  let options = { ...init };
  for (let hop = 0; ; hop++) {
    const location = response.headers.get("location");
    if (![301, 302, 303, 307, 308].includes(response.status) || !location
        || options.redirect === "manual") {
      return response;
    }
    if (hop === MAX_REDIRECTS) {
      throw new TypeError(`fetch ${url}: more than ${MAX_REDIRECTS} redirects`);
    }
    // The redirect's own body is read and dropped, which releases its resources.
    await response.arrayBuffer().catch(() => undefined);
    const headers = new Headers(options.headers);
    if (response.status !== 307 && response.status !== 308) {
      options = { ...options, method: "GET", body: undefined };
      headers.delete("content-type");
    }
    const target = new URL(location, url);
    if (target.origin !== new URL(url).origin) {
      headers.delete("authorization");
      headers.delete("cookie");
    }
    options = { ...options, headers };
    url = target.toString();
    response = await fetch(url, options);
  }
}

/** Outbound HTTP: `fetch` to the hosts the manifest grants (`[grants] outbound_http`),
 *  following redirects. */
export const http = { fetch: fetchFollowing };

/** An OSB broker. The defaults answer as OSB expects of a broker without the operation. */
export class Broker {
  catalog() {
    throw new Error("a broker must define catalog()");
  }
  provision(_request) {
    throw new Error("a broker must define provision()");
  }
  update(_request) {
    throw new Unprocessable("this broker does not support updating instances");
  }
  deprovision(_request) {
    throw new Error("a broker must define deprovision()");
  }
  bind(_request) {
    throw new BadRequest("this broker does not support bindings");
  }
  unbind(_request) {
    return undefined;
  }
  lastOperation(_request) {
    return failed("this broker has no long operations");
  }
}

// ---- conversions to and from the contract's types ----

const JSON_TAG = "brokerbox-json:";
const STR_TAG = "brokerbox-str:";
const dumps = (value) => (value === undefined || value === null ? undefined : JSON.stringify(value));
function loads(text, what) {
  if (text === undefined || text === null) return {};
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new BadRequest(`invalid ${what}: ${e.message}`);
  }
  return value && typeof value === "object" && !Array.isArray(value) ? value : {};
}
function encodeData(value) {
  if (value === undefined || value === null) return "";
  if (typeof value === "string") {
    return value.startsWith(JSON_TAG) || value.startsWith(STR_TAG) ? STR_TAG + value : value;
  }
  return JSON_TAG + JSON.stringify(value);
}
function decodeData(text) {
  if (text.startsWith(JSON_TAG)) return JSON.parse(text.slice(JSON_TAG.length));
  if (text.startsWith(STR_TAG)) return text.slice(STR_TAG.length);
  return text;
}
const maintenance = (m) => (m ? { version: m.version, description: m.description } : undefined);
function callInfo(c) {
  const identity = c.originatingIdentity;
  return {
    acceptsIncomplete: c.acceptsIncomplete,
    originatingIdentity: identity
      ? { platform: identity.platform, value: loads(identity.value, "originating identity") }
      : undefined,
    requestIdentity: c.requestIdentity,
    attempt: c.attempt,
  };
}
function witPlan(p) {
  return {
    id: p.id,
    name: p.name,
    description: p.description,
    metadata: dumps(p.metadata),
    free: p.free,
    bindable: p.bindable,
    planUpdateable: p.planUpdateable,
    schemas: dumps(p.schemas),
    maximumPollingDuration: p.maximumPollingDuration === undefined ? undefined : BigInt(p.maximumPollingDuration),
    maintenanceInfo: maintenance(p.maintenanceInfo),
    bindingRotatable: p.bindingRotatable,
  };
}
function witService(s) {
  const client = s.dashboardClient;
  return {
    id: s.id,
    name: s.name,
    description: s.description,
    tags: s.tags ?? [],
    requires: s.requires ?? [],
    bindable: s.bindable ?? false,
    instancesRetrievable: s.instancesRetrievable ?? false,
    bindingsRetrievable: s.bindingsRetrievable ?? false,
    allowContextUpdates: s.allowContextUpdates ?? false,
    metadata: dumps(s.metadata),
    dashboardClient: client
      ? { id: client.id, secret: client.secret, redirectUri: client.redirectUri }
      : undefined,
    planUpdateable: s.planUpdateable ?? false,
    bindingRotatable: s.bindingRotatable ?? false,
    plans: (s.plans ?? []).map(witPlan),
  };
}
const witInstance = (r) => ({ dashboardUrl: r?.dashboardUrl, metadata: dumps(r?.metadata) });
function witInstanceResponse(answer) {
  if (answer && answer.__accepted) {
    return {
      tag: "accepted",
      val: { operationData: encodeData(answer.operationData), instance: witInstance(answer) },
    };
  }
  return { tag: "done", val: witInstance(answer) };
}
function witBinding(b) {
  // A plain object is the credentials, whatever its keys; `binding(...)` says more.
  const full = b && b.__binding ? b : { credentials: b };
  return {
    credentials: dumps(full.credentials),
    syslogDrainUrl: full.syslogDrainUrl,
    routeServiceUrl: full.routeServiceUrl,
    volumeMounts: (full.volumeMounts ?? []).map((m) => ({
      driver: m.driver,
      containerDir: m.containerDir,
      mode: m.mode === "rw" ? "rw" : "r",
      deviceType: m.deviceType ?? "shared",
      volumeId: m.volumeId,
      mountConfig: dumps(m.mountConfig),
    })),
    endpoints: (full.endpoints ?? []).map((e) => ({ host: e.host, ports: e.ports ?? [], protocol: e.protocol })),
    expiresAt: full.expiresAt,
    renewBefore: full.renewBefore,
  };
}
function witDelete(answer) {
  if (answer && answer.__accepted) return { tag: "accepted", val: encodeData(answer.operationData) };
  return { tag: "done" };
}
function witState(state) {
  switch (state && state.__state) {
    case "in-progress":
      return {
        tag: "in-progress",
        val: {
          description: state.description,
          operationData: state.operationData === undefined ? undefined : encodeData(state.operationData),
        },
      };
    case "succeeded":
      return {
        tag: "succeeded",
        val: {
          description: state.description,
          binding: state.binding === undefined ? undefined : witBinding(state.binding),
          instance: state.instance === undefined ? undefined : witInstance(state.instance),
        },
      };
    case "failed":
      return {
        tag: "failed",
        val: {
          description: state.description,
          instanceUsable: state.instanceUsable,
          updateRepeatable: state.updateRepeatable,
        },
      };
    default:
      throw new TypeError("lastOperation must return inProgress(), succeeded() or failed()");
  }
}

// A result's error travels to the host as the thrown value's `payload`.
function failure(e) {
  if (e instanceof BrokerError) {
    return { payload: { tag: e.constructor.tag, val: e.message } };
  }
  const message = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return { payload: { tag: "internal", val: message } };
}

// Runs the broker's operation and converts its answer; an `async` operation's promise is
// chained (componentize-js runs it to completion within the call).
function guarded(operation, convert) {
  let answer;
  try {
    answer = operation();
  } catch (e) {
    throw failure(e);
  }
  const finish = (value) => {
    try {
      return convert(value);
    } catch (e) {
      throw failure(e);
    }
  };
  if (answer && typeof answer.then === "function") {
    return answer.then(finish, (e) => {
      throw failure(e);
    });
  }
  return finish(answer);
}

function bindingResponse(answer) {
  if (answer && answer.__accepted) return { tag: "accepted", val: encodeData(answer.operationData) };
  return { tag: "done", val: witBinding(answer) };
}

/** The object to export as `osb` from the broker's module. */
export function exportBroker(broker) {
  return {
    catalog: () =>
      guarded(
        () => broker.catalog(),
        (services) => ({ services: (Array.isArray(services) ? services : [services]).map(witService) }),
      ),
    provision: (r) =>
      guarded(
        () =>
          broker.provision({
            instanceId: r.instanceId,
            serviceId: r.serviceId,
            planId: r.planId,
            organizationGuid: r.organizationGuid,
            spaceGuid: r.spaceGuid,
            parameters: loads(r.parameters, "parameters"),
            context: loads(r.context, "context"),
            maintenanceInfo: maintenance(r.maintenanceInfo),
            call: callInfo(r.call),
          }),
        witInstanceResponse,
      ),
    update: (r) =>
      guarded(
        () =>
          broker.update({
            instanceId: r.instanceId,
            serviceId: r.serviceId,
            planId: r.planId,
            parameters: loads(r.parameters, "parameters"),
            context: loads(r.context, "context"),
            previousValues: r.previousValues
              ? { ...r.previousValues, maintenanceInfo: maintenance(r.previousValues.maintenanceInfo) }
              : undefined,
            maintenanceInfo: maintenance(r.maintenanceInfo),
            call: callInfo(r.call),
          }),
        witInstanceResponse,
      ),
    deprovision: (r) =>
      guarded(
        () =>
          broker.deprovision({
            instanceId: r.instanceId,
            serviceId: r.serviceId,
            planId: r.planId,
            call: callInfo(r.call),
          }),
        witDelete,
      ),
    bind: (r) =>
      guarded(
        () =>
          broker.bind({
            instanceId: r.instanceId,
            bindingId: r.bindingId,
            serviceId: r.serviceId,
            planId: r.planId,
            appGuid: r.appGuid,
            bindResource: r.bindResource
              ? { appGuid: r.bindResource.appGuid, route: r.bindResource.route, raw: loads(r.bindResource.raw, "bind_resource") }
              : undefined,
            parameters: loads(r.parameters, "parameters"),
            context: loads(r.context, "context"),
            predecessorBindingId: r.predecessorBindingId,
            call: callInfo(r.call),
          }),
        bindingResponse,
      ),
    unbind: (r) =>
      guarded(
        () =>
          broker.unbind({
            instanceId: r.instanceId,
            bindingId: r.bindingId,
            serviceId: r.serviceId,
            planId: r.planId,
            call: callInfo(r.call),
          }),
        witDelete,
      ),
    lastOperation: (r) =>
      guarded(
        () =>
          broker.lastOperation({
            instanceId: r.instanceId,
            bindingId: r.bindingId,
            serviceId: r.serviceId,
            planId: r.planId,
            kind: r.kind,
            operationData: decodeData(r.operationData),
            call: callInfo(r.call),
          }),
        witState,
      ),
  };
}
