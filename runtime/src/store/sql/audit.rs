//! The audit trail in SQL, and the repairs that write their entry in the same transaction as
//! what they change.

use super::*;
use crate::store::{AuditEntry, AuditLog, AuditRecord};

/// The statement appending `entry` at time `at`.
pub(super) fn insert_audit(entry: &AuditEntry, at: i64) -> Statement {
    Statement {
        sql: "INSERT INTO audit (at, actor, tenant, action, broker, resource, outcome, detail) \
              VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        args: owned(args![
            at,
            &entry.actor,
            &entry.tenant,
            &entry.action,
            &entry.broker,
            &entry.resource,
            &entry.outcome,
            &entry.detail,
        ]),
    }
}

/// The entry an OSB operation leaves when it ends with `outcome`.
pub(super) fn operation_entry(op: &OperationRecord, outcome: &Outcome) -> AuditEntry {
    let resource = match &op.binding_id {
        Some(binding) => format!("binding {binding} of instance {}", op.instance_id),
        None => format!("instance {}", op.instance_id),
    };
    AuditEntry {
        actor: op.actor.clone().unwrap_or_else(|| "platform".into()),
        tenant: op.tenant.clone(),
        action: op.kind.as_str().into(),
        broker: Some(op.broker.clone()),
        resource: Some(format!("{resource} (operation {})", op.id)),
        outcome: outcome.state.as_str().into(),
        detail: outcome.description.clone(),
    }
}

fn audit_row(row: &dyn RowLike) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        seq: get(row, "seq")?,
        at: get(row, "at")?,
        entry: AuditEntry {
            actor: get(row, "actor")?,
            tenant: get(row, "tenant")?,
            action: get(row, "action")?,
            broker: get(row, "broker")?,
            resource: get(row, "resource")?,
            outcome: get(row, "outcome")?,
            detail: get(row, "detail")?,
        },
    })
}

/// Runs `deletes` (each with the same two arguments) and appends `entry`, in one durable
/// transaction; returns how many rows each delete removed.
async fn purge(
    db: &Db,
    deletes: &'static [&'static str],
    scope: [String; 2],
    entry: &AuditEntry,
) -> Result<Vec<u64>, StoreError> {
    let audit = insert_audit(entry, now());
    let args = owned(args![&scope[0], &scope[1]]);
    db.write(Durability::OnDisk, move |conn| {
        Box::pin(async move {
            let mut counts = Vec::new();
            for sql in deletes {
                counts.push(conn.execute(sql, &args).await?);
            }
            conn.execute(audit.sql, &audit.args).await?;
            Ok(counts)
        })
    })
    .await
}

#[async_trait::async_trait]
impl AuditLog for SqlStore {
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let audit = insert_audit(entry, now());
        self.db
            .execute(Durability::OnDisk, audit.sql, audit.args)
            .await
            .map(drop)
    }

    async fn audit(
        &self,
        tenant: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let before = before.unwrap_or(i64::MAX);
        match tenant {
            None => {
                self.db
                    .query(
                        "SELECT * FROM audit WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
                        &args![before, limit],
                        audit_row,
                    )
                    .await
            }
            Some(tenant) => {
                self.db
                    .query(
                        "SELECT * FROM audit WHERE tenant = $1 AND seq < $2 \
                         ORDER BY seq DESC LIMIT $3",
                        &args![tenant, before, limit],
                        audit_row,
                    )
                    .await
            }
        }
    }

    async fn in_progress_on(
        &self,
        broker: &str,
        instance_id: &str,
        binding_id: Option<&str>,
    ) -> Result<Vec<OperationRecord>, StoreError> {
        match binding_id {
            None => {
                self.operations(
                    "SELECT * FROM operations WHERE broker = $1 AND instance_id = $2 \
                         AND state = 'in progress' ORDER BY seq",
                    &args![broker, instance_id],
                )
                .await
            }
            Some(binding) => {
                self.operations(
                    "SELECT * FROM operations WHERE broker = $1 AND binding_id = $2 \
                         AND state = 'in progress' ORDER BY seq",
                    &args![broker, binding],
                )
                .await
            }
        }
    }

    async fn recent_operations(
        &self,
        failed_since: i64,
        limit: i64,
    ) -> Result<Vec<OperationRecord>, StoreError> {
        self.operations(
            "SELECT * FROM operations WHERE state = 'in progress' \
                 OR (state = 'failed' AND updated_at >= $1) ORDER BY seq DESC LIMIT $2",
            &args![failed_since, limit],
        )
        .await
    }

    async fn purge_instance(
        &self,
        broker: &str,
        instance_id: &str,
        entry: &AuditEntry,
    ) -> Result<Purged, StoreError> {
        const DELETES: &[&str] = &[
            "DELETE FROM instances WHERE broker = $1 AND instance_id = $2",
            "DELETE FROM bindings WHERE broker = $1 AND instance_id = $2",
            "DELETE FROM operations WHERE broker = $1 AND instance_id = $2",
        ];
        let scope = [broker.to_string(), instance_id.to_string()];
        let counts = purge(&self.db, DELETES, scope, entry).await?;
        Ok(Purged {
            instances: counts[0],
            bindings: counts[1],
            operations: counts[2],
            kv_keys: 0,
        })
    }

    async fn purge_binding(
        &self,
        broker: &str,
        binding_id: &str,
        entry: &AuditEntry,
    ) -> Result<Purged, StoreError> {
        const DELETES: &[&str] = &[
            "DELETE FROM bindings WHERE broker = $1 AND binding_id = $2",
            "DELETE FROM operations WHERE broker = $1 AND binding_id = $2",
        ];
        let scope = [broker.to_string(), binding_id.to_string()];
        let counts = purge(&self.db, DELETES, scope, entry).await?;
        Ok(Purged {
            instances: 0,
            bindings: counts[0],
            operations: counts[1],
            kv_keys: 0,
        })
    }
}
