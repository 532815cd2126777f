// Types of the brokerbox JavaScript SDK (brokerbox.js). Fields follow OSB, in camelCase.

export type Json = { [key: string]: unknown };

export interface MaintenanceInfo { version: string; description?: string }
export interface DashboardClient { id: string; secret: string; redirectUri?: string }

/** One OSB plan; unset fields are left to the service (or to OSB's default). */
export interface Plan {
  id: string;
  name: string;
  description: string;
  metadata?: Json;
  free?: boolean;
  bindable?: boolean;
  planUpdateable?: boolean;
  /** OSB `schemas`: JSON Schemas for instance create/update and binding create. */
  schemas?: Json;
  maximumPollingDuration?: number;
  maintenanceInfo?: MaintenanceInfo;
  bindingRotatable?: boolean;
}

/** One OSB service offering (booleans default to false). */
export interface Service {
  id: string;
  name: string;
  description: string;
  plans: Plan[];
  bindable?: boolean;
  tags?: string[];
  requires?: string[];
  instancesRetrievable?: boolean;
  bindingsRetrievable?: boolean;
  allowContextUpdates?: boolean;
  metadata?: Json;
  dashboardClient?: DashboardClient;
  planUpdateable?: boolean;
  bindingRotatable?: boolean;
}

export interface CallInfo {
  /** True when the platform accepts an asynchronous answer. */
  acceptsIncomplete: boolean;
  originatingIdentity?: { platform: string; value: Json };
  requestIdentity?: string;
  /** 1 for the first attempt; higher when the runtime retries an interrupted operation. */
  attempt: number;
}

export interface ProvisionRequest {
  instanceId: string; serviceId: string; planId: string;
  organizationGuid?: string; spaceGuid?: string;
  /** `{}` when the platform sent none. */
  parameters: Json; context: Json;
  maintenanceInfo?: MaintenanceInfo; call: CallInfo;
}
export interface UpdateRequest {
  instanceId: string; serviceId: string; planId?: string;
  parameters: Json; context: Json;
  previousValues?: { serviceId?: string; planId?: string; organizationId?: string; spaceId?: string; maintenanceInfo?: MaintenanceInfo };
  maintenanceInfo?: MaintenanceInfo; call: CallInfo;
}
export interface DeprovisionRequest { instanceId: string; serviceId: string; planId: string; call: CallInfo }
export interface BindRequest {
  instanceId: string; bindingId: string; serviceId: string; planId: string;
  appGuid?: string; bindResource?: { appGuid?: string; route?: string; raw: Json };
  parameters: Json; context: Json; predecessorBindingId?: string; call: CallInfo;
}
export interface UnbindRequest { instanceId: string; bindingId: string; serviceId: string; planId: string; call: CallInfo }
export interface LastOperationRequest {
  instanceId: string; bindingId?: string; serviceId: string; planId: string;
  kind: "provision" | "update" | "deprovision" | "bind" | "unbind";
  /** What `accepted(...)` carried: a string, or the object it was. */
  operationData: unknown;
  call: CallInfo;
}

export interface InstanceResult { dashboardUrl?: string; metadata?: Json }
/** What `binding(...)` makes: a finished bind with more than credentials. */
export interface Binding {
  __binding: true;
  credentials?: Json; syslogDrainUrl?: string; routeServiceUrl?: string;
  volumeMounts?: { driver: string; containerDir: string; mode: "r" | "rw"; volumeId: string; deviceType?: string; mountConfig?: Json }[];
  endpoints?: { host: string; ports: string[]; protocol?: string }[];
  expiresAt?: string; renewBefore?: string;
}
export interface Accepted { __accepted: true; operationData: unknown; dashboardUrl?: string; metadata?: Json }
export type OperationState =
  | { __state: "in-progress"; description?: string; operationData?: unknown }
  | { __state: "succeeded"; description?: string; binding?: Binding | Json; instance?: InstanceResult }
  | { __state: "failed"; description: string; instanceUsable?: boolean; updateRepeatable?: boolean };

/** A finished bind with more than credentials; a plain object from `bind` is the credentials. */
export function binding(fields: Omit<Binding, "__binding">): Binding;
/** A long operation: the runtime answers 202 and polls `lastOperation`. */
export function accepted(operationData?: unknown, instance?: InstanceResult): Accepted;
export function inProgress(description?: string, operationData?: unknown): OperationState;
export function succeeded(description?: string, result?: { binding?: Binding | Json; instance?: InstanceResult }): OperationState;
export function failed(description: string, flags?: { instanceUsable?: boolean; updateRepeatable?: boolean }): OperationState;

/** An OSB broker; the defaults answer as OSB expects of a broker without the operation. */
export class Broker {
  catalog(): Service[] | Service;
  provision(request: ProvisionRequest): InstanceResult | Accepted | void;
  update(request: UpdateRequest): InstanceResult | Accepted | void;
  deprovision(request: DeprovisionRequest): Accepted | void;
  /** Credentials (a plain object) or a `Binding`, or `accepted(...)`. */
  bind(request: BindRequest): Json | Binding | Accepted;
  unbind(request: UnbindRequest): Accepted | void;
  lastOperation(request: LastOperationRequest): OperationState;
}
/** The object to export as `osb`: `export const osb = exportBroker(new MyBroker());` */
export function exportBroker(broker: Broker): unknown;

export class BrokerError extends Error {}
/** 400 */ export class BadRequest extends BrokerError {}
/** 409 */ export class Conflict extends BrokerError {}
/** 410 */ export class Gone extends BrokerError {}
/** 422 AsyncRequired */ export class AsyncRequired extends BrokerError {}
/** 422 ConcurrencyError */ export class ConcurrencyError extends BrokerError {}
/** 422 RequiresApp */ export class RequiresApp extends BrokerError {}
/** 422 MaintenanceInfoConflict */ export class MaintenanceInfoConflict extends BrokerError {}
/** 422 */ export class Unprocessable extends BrokerError {}
/** 500 */ export class Internal extends BrokerError {}

export const log: { debug(m: string): void; info(m: string): void; warn(m: string): void; error(m: string): void };
export class KvError extends Error { kind: "denied" | "too-large" | "unavailable" }
export const kv: {
  get(key: string): Uint8Array | undefined;
  set(key: string, value: Uint8Array | string): void;
  delete(key: string): void;
  listKeys(prefix?: string): string[];
  getJson(key: string): unknown;
  setJson(key: string, value: unknown): void;
};
/** A value of the manifest's `[env]` table. Read it inside an operation, not at module top
 *  level: the top level runs once, when the component is built. */
export function config(key: string): string | undefined;
export function config(key: string, fallback: string): string;
/** Most redirects one `http.fetch` follows. */
export const MAX_REDIRECTS: number;

/** Outbound HTTP to the hosts the manifest grants (`[grants] outbound_http`): `fetch`,
 *  following up to `MAX_REDIRECTS` redirects (each checked again by the runtime);
 *  `redirect: "manual"` turns that off. */
export const http: { fetch: typeof fetch };
