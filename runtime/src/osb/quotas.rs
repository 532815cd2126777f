//! A tenant's quotas, checked before an operation starts: instances held, operations running.

use super::request::Osb;
use super::AppState;
use crate::error::ApiError;

/// Whether the broker's tenant has a quota of instances or of operations.
pub fn any(state: &AppState, osb: &Osb) -> bool {
    osb.broker.manifest.tenant.as_ref().is_some_and(|tenant| {
        state.config.tenant_max_instances.contains_key(tenant)
            || state.config.tenant_max_operations.contains_key(tenant)
    })
}

/// 422 when the broker's tenant already holds its quota of instances.
pub async fn instances(state: &AppState, osb: &Osb) -> Result<(), ApiError> {
    let Some(tenant) = &osb.broker.manifest.tenant else {
        return Ok(());
    };
    let Some(max) = state.config.tenant_max_instances.get(tenant) else {
        return Ok(());
    };
    let mut held = 0;
    for broker in tenant_brokers(state, tenant) {
        held += state.ops.store.count_instances(&broker).await?;
    }
    if held >= *max {
        return Err(ApiError::Unprocessable(format!(
            "tenant {tenant} holds its quota of {max} instances"
        )));
    }
    Ok(())
}

/// 422 `ConcurrencyError` when the broker's tenant already runs its quota of operations.
pub async fn operations(state: &AppState, osb: &Osb) -> Result<(), ApiError> {
    let Some(tenant) = &osb.broker.manifest.tenant else {
        return Ok(());
    };
    let Some(max) = state.config.tenant_max_operations.get(tenant) else {
        return Ok(());
    };
    let mut running = 0;
    for broker in tenant_brokers(state, tenant) {
        running += state.ops.store.count_in_progress(&broker).await?;
    }
    if running >= *max {
        return Err(ApiError::ConcurrencyError(format!(
            "tenant {tenant} runs its quota of {max} operations at once; retry later"
        )));
    }
    Ok(())
}

/// The names of the brokers of `tenant`.
fn tenant_brokers(state: &AppState, tenant: &str) -> Vec<String> {
    let current = state.ops.brokers.current();
    current
        .all()
        .filter(|b| b.manifest.tenant.as_deref() == Some(tenant))
        .map(|b| b.name.clone())
        .collect()
}
