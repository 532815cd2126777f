//! A mutating OSB call as the engine stores it (so a retry after a crash replays exactly the
//! same request), the guest request built from it, and the meaning of the guest's answer.

use super::outcome::{failure, Answer};
use super::wire::{self, BindBody, ProvisionBody, UpdateBody};
use super::{results, OpContext, OpError};
use crate::sandbox::bindings::types::{
    self as wit, BindRequest, BindingResponse, DeleteResponse, DeprovisionRequest,
    InstanceResponse, OriginatingIdentity, ProvisionRequest, UnbindRequest, UpdateRequest,
};
use crate::sandbox::{Request, Response};
use crate::store::{Effect, OperationKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The originating identity, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredIdentity {
    /// Platform name.
    pub platform: String,
    /// Decoded JSON value.
    pub value: String,
}

/// Everything needed to make (or remake) the guest call of an operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredCall {
    /// What the operation does.
    pub kind: OperationKind,
    /// The instance.
    pub instance_id: String,
    /// The binding, for bind and unbind.
    pub binding_id: Option<String>,
    /// The OSB request body (for deletes: `service_id` and `plan_id` from the query).
    pub body: Value,
    /// Whether the platform accepted an asynchronous answer.
    pub accepts_incomplete: bool,
    /// The decoded originating identity.
    pub identity: Option<StoredIdentity>,
    /// The OSB request identity.
    pub request_identity: Option<String>,
    /// For updates: the plan the instance is on before the update.
    pub current_plan: Option<String>,
}

/// `service_id` and `plan_id` of a delete, from its query.
#[derive(Deserialize)]
struct DeleteBody {
    service_id: String,
    plan_id: String,
}

/// Longest actor name kept in the audit trail (platforms send short ids; the header is the
/// client's to fill).
const MAX_ACTOR_CHARS: usize = 128;

impl StoredCall {
    /// Who asked, as the audit trail names them: `PLATFORM:USER` from the originating identity
    /// (Cloud Foundry's `user_id`, Kubernetes' `username`, else the whole value), or
    /// `platform` when the platform sent none.
    pub fn actor(&self) -> String {
        let Some(identity) = &self.identity else {
            return "platform".into();
        };
        let value: Value = serde_json::from_str(&identity.value).unwrap_or(Value::Null);
        let user = ["user_id", "username", "user"]
            .iter()
            .find_map(|key| value[key].as_str().map(str::to_string))
            .unwrap_or_else(|| identity.value.clone());
        let actor = format!("{}:{user}", identity.platform);
        actor.chars().take(MAX_ACTOR_CHARS).collect()
    }

    /// What the guest is told about attempt `attempt` of this call.
    pub fn call_info(&self, attempt: u32) -> wit::CallInfo {
        wit::CallInfo {
            accepts_incomplete: self.accepts_incomplete,
            originating_identity: self.identity.as_ref().map(|i| OriginatingIdentity {
                platform: i.platform.clone(),
                value: i.value.clone(),
            }),
            request_identity: self.request_identity.clone(),
            attempt,
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_value(self.body.clone()).map_err(|e| format!("stored request: {e}"))
    }

    /// The guest request of attempt `attempt`.
    ///
    /// # Errors
    /// When the stored body does not fit its kind (a corrupted row).
    pub fn guest_request(&self, attempt: u32) -> Result<Request, String> {
        let call = self.call_info(attempt);
        Ok(match self.kind {
            OperationKind::Provision => Request::Provision(self.provision(call)?),
            OperationKind::Update => Request::Update(self.update(call)?),
            OperationKind::Bind => Request::Bind(self.bind(call)?),
            OperationKind::Deprovision => {
                let b: DeleteBody = self.parse()?;
                Request::Deprovision(DeprovisionRequest {
                    instance_id: self.instance_id.clone(),
                    service_id: b.service_id,
                    plan_id: b.plan_id,
                    call,
                })
            }
            OperationKind::Unbind => {
                let b: DeleteBody = self.parse()?;
                Request::Unbind(UnbindRequest {
                    instance_id: self.instance_id.clone(),
                    binding_id: self.binding_id()?,
                    service_id: b.service_id,
                    plan_id: b.plan_id,
                    call,
                })
            }
        })
    }

    fn binding_id(&self) -> Result<String, String> {
        self.binding_id
            .clone()
            .ok_or_else(|| "stored bind without binding id".to_string())
    }

    fn provision(&self, call: wit::CallInfo) -> Result<ProvisionRequest, String> {
        let b: ProvisionBody = self.parse()?;
        Ok(ProvisionRequest {
            instance_id: self.instance_id.clone(),
            service_id: b.service_id.unwrap_or_default(),
            plan_id: b.plan_id.unwrap_or_default(),
            organization_guid: b.organization_guid,
            space_guid: b.space_guid,
            parameters: json_text(b.parameters),
            context: json_text(b.context),
            maintenance_info: b.maintenance_info.map(Into::into),
            call,
        })
    }

    fn update(&self, call: wit::CallInfo) -> Result<UpdateRequest, String> {
        let b: UpdateBody = self.parse()?;
        Ok(UpdateRequest {
            instance_id: self.instance_id.clone(),
            service_id: b.service_id.unwrap_or_default(),
            plan_id: b.plan_id.filter(|p| Some(p) != self.current_plan.as_ref()),
            parameters: json_text(b.parameters),
            context: json_text(b.context),
            previous_values: b.previous_values.map(Into::into),
            maintenance_info: b.maintenance_info.map(Into::into),
            call,
        })
    }

    fn bind(&self, call: wit::CallInfo) -> Result<BindRequest, String> {
        let b: BindBody = self.parse()?;
        Ok(BindRequest {
            instance_id: self.instance_id.clone(),
            binding_id: self.binding_id()?,
            service_id: b.service_id.unwrap_or_default(),
            plan_id: b.plan_id.unwrap_or_default(),
            app_guid: b.app_guid,
            bind_resource: wire::bind_resource(b.bind_resource)?,
            parameters: json_text(b.parameters),
            context: json_text(b.context),
            predecessor_binding_id: b.predecessor_binding_id,
            call,
        })
    }

    /// The plan the instance is on once the operation succeeds.
    fn resulting_plan(&self) -> String {
        self.body["plan_id"]
            .as_str()
            .map(str::to_string)
            .or_else(|| self.current_plan.clone())
            .unwrap_or_default()
    }
}

/// A JSON value as text; `None` for an absent or null one.
fn json_text(value: Option<Value>) -> Option<String> {
    value.filter(|v| !v.is_null()).map(|v| v.to_string())
}

/// Makes the guest call of `stored` and says what its answer means.
pub async fn invoke(ctx: &OpContext, stored: &StoredCall) -> Answer {
    match call_guest(ctx, stored).await {
        Answer::Accepted(data, effect) => match results::operation_data(&data) {
            Ok(()) => Answer::Accepted(data, effect),
            Err(description) => Answer::Failed(
                OpError::Failed(description),
                super::failure_effect(stored.kind),
            ),
        },
        answer => answer,
    }
}

/// Makes the guest call of `stored` and maps its answer.
async fn call_guest(ctx: &OpContext, stored: &StoredCall) -> Answer {
    let request = match stored.guest_request(ctx.call.attempt) {
        Ok(request) => request,
        Err(description) => {
            return Answer::Failed(
                OpError::Failed(description),
                super::failure_effect(stored.kind),
            )
        }
    };
    let kind = stored.kind;
    let response = match ctx.broker.guest.call(&ctx.info(), request).await {
        Ok(response) => response,
        Err(error) => return failure(kind, error),
    };
    match response {
        Response::Instance(response) if kind == OperationKind::Provision => {
            instance_answer(stored, response, Effect::InstanceFailed)
        }
        Response::Instance(response) => instance_answer(stored, response, Effect::InstanceRestored),
        Response::Delete(response) if kind == OperationKind::Deprovision => {
            delete_answer(response, Effect::InstanceDeleted)
        }
        Response::Delete(response) => delete_answer(response, Effect::BindingDeleted),
        Response::Binding(BindingResponse::Done(result)) => match results::binding_body(&result) {
            Ok(body) => Answer::Done(Effect::BindingReady {
                result: body.to_string(),
            }),
            Err(description) => {
                Answer::Failed(OpError::Failed(description), Effect::BindingDeleted)
            }
        },
        Response::Binding(BindingResponse::Accepted(data)) => Answer::Accepted(data, Effect::None),
        _ => Answer::Failed(
            OpError::Failed(format!(
                "the broker's answer does not fit a {} call",
                kind.as_str()
            )),
            super::failure_effect(kind),
        ),
    }
}

/// The answer for a provision or update; `on_error` undoes it when the guest's values are bad.
fn instance_answer(stored: &StoredCall, response: InstanceResponse, on_error: Effect) -> Answer {
    let (result, data) = match response {
        InstanceResponse::Done(result) => (result, None),
        InstanceResponse::Accepted(accepted) => (accepted.instance, Some(accepted.operation_data)),
    };
    let (dashboard_url, metadata) = match results::instance_values(&result) {
        Ok(values) => values,
        Err(description) => return Answer::Failed(OpError::Failed(description), on_error),
    };
    if let Some(data) = data {
        return Answer::Accepted(
            data,
            Effect::InstanceAnnotated {
                dashboard_url,
                metadata,
            },
        );
    }
    let updated = |field: &str| {
        (stored.kind == OperationKind::Update)
            .then(|| {
                stored
                    .body
                    .get(field)
                    .filter(|v| !v.is_null())
                    .map(Value::to_string)
            })
            .flatten()
    };
    Answer::Done(Effect::InstanceReady {
        plan_id: stored.resulting_plan(),
        dashboard_url,
        metadata,
        parameters: updated("parameters"),
        context: updated("context"),
        maintenance_info: updated("maintenance_info"),
    })
}

fn delete_answer(response: DeleteResponse, done: Effect) -> Answer {
    match response {
        DeleteResponse::Done => Answer::Done(done),
        DeleteResponse::Accepted(data) => Answer::Accepted(data, Effect::None),
    }
}
