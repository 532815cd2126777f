//! Operations in SQL: outcomes, progress, claims and leases (compare-and-set updates).

use super::*;

/// The worker's query for accepted operations due for a poll (every 100 ms on every replica:
/// it must search the small in-progress index, never scan the history).
pub(super) const DUE_POLLS: &str = "SELECT * FROM operations WHERE state = 'in progress' \
    AND guest_data IS NOT NULL AND next_poll_at <= $1 AND (owner IS NULL OR lease_until < $2) \
    ORDER BY next_poll_at LIMIT $3";

/// The worker's query for operations whose runner is gone (as often as [`DUE_POLLS`]).
pub(super) const ORPHANED: &str = "SELECT * FROM operations WHERE state = 'in progress' \
    AND guest_data IS NULL AND (owner IS NULL OR lease_until < $1 \
    OR (owner = $2 AND created_at < $3)) ORDER BY seq LIMIT $4";

#[async_trait::async_trait]
impl OperationStore for SqlStore {
    async fn operation(
        &self,
        broker: &str,
        id: &str,
    ) -> Result<Option<OperationRecord>, StoreError> {
        let ops = self
            .operations(
                "SELECT * FROM operations WHERE broker = $1 AND id = $2",
                &args![broker, id],
            )
            .await?;
        Ok(ops.into_iter().next())
    }

    async fn latest_operation(
        &self,
        broker: &str,
        instance_id: &str,
        binding_id: Option<&str>,
    ) -> Result<Option<OperationRecord>, StoreError> {
        let ops = self
            .operations(
                "SELECT * FROM operations WHERE broker = $1 AND instance_id = $2 \
                 AND binding_id IS NOT DISTINCT FROM $3 ORDER BY seq DESC LIMIT 1",
                &args![broker, instance_id, binding_id],
            )
            .await?;
        Ok(ops.into_iter().next())
    }

    async fn accept_operation(
        &self,
        op: &OperationRecord,
        guest_data: &str,
        effect: &Effect,
        next_poll_at: i64,
    ) -> Result<(), StoreError> {
        let accept = Statement {
            sql: "UPDATE operations SET guest_data = $1, next_poll_at = $2, owner = NULL, \
                  lease_until = NULL, updated_at = $3 \
                  WHERE broker = $4 AND id = $5 AND state = 'in progress'",
            args: owned(args![
                &secrets::seal_operation_field(
                    &self.sealer,
                    &op.id,
                    "guest_data",
                    Some(guest_data)
                ),
                next_poll_at,
                now(),
                &op.broker,
                &op.id
            ]),
        };
        let effects = effect_statements(&self.sealer, &Target::of(op), effect);
        one(self
            .db
            .write_chain(Durability::OnDisk, accept, effects)
            .await?)
    }

    async fn record_progress(
        &self,
        op: &OperationRecord,
        guest_data: Option<&str>,
        description: Option<&str>,
        next_poll_at: i64,
    ) -> Result<(), StoreError> {
        let changed = self
            .db
            .execute(
                Durability::Committed,
                "UPDATE operations SET guest_data = COALESCE($1, guest_data), description = $2, \
                 next_poll_at = $3, polls = polls + 1, owner = NULL, lease_until = NULL, \
                 updated_at = $4 WHERE broker = $5 AND id = $6 AND state = 'in progress'",
                owned(args![
                    &secrets::seal_operation_field(&self.sealer, &op.id, "guest_data", guest_data),
                    description,
                    next_poll_at,
                    now(),
                    &op.broker,
                    &op.id
                ]),
            )
            .await?;
        one(changed)
    }

    async fn finish_operation(
        &self,
        op: &OperationRecord,
        outcome: &Outcome,
        effect: &Effect,
    ) -> Result<(), StoreError> {
        // A failed operation keeps its sealed request (`admin retry` replays it); one that
        // succeeded has no use for it: dropping it keeps history rows small (the update writes
        // the whole row again) and the request's secrets off the disk.
        let finish = Statement {
            sql: "UPDATE operations SET state = $1, description = $2, instance_usable = $3, \
                  update_repeatable = $4, owner = NULL, lease_until = NULL, updated_at = $5, \
                  request = CASE WHEN $1 = 'failed' THEN request END \
                  WHERE broker = $6 AND id = $7 AND state = 'in progress'",
            args: owned(args![
                outcome.state.as_str(),
                &outcome.description,
                outcome.instance_usable.map(i64::from),
                outcome.update_repeatable.map(i64::from),
                now(),
                &op.broker,
                &op.id,
            ]),
        };
        // The audit entry goes with the outcome, in its transaction (only when it ends it).
        let mut then = effect_statements(&self.sealer, &Target::of(op), effect);
        then.push(super::audit::insert_audit(
            &super::audit::operation_entry(op, outcome),
            now(),
        ));
        one(self
            .db
            .write_chain(Durability::OnDisk, finish, then)
            .await?)?;
        let took = u64::try_from(now().saturating_sub(op.created_at)).unwrap_or(0);
        let labels = crate::telemetry::metrics::OperationLabels {
            broker: op.broker.clone(),
            kind: op.kind.as_str(),
            state: outcome.state.as_str(),
        };
        (self.db.metrics().operation_seconds.get_or_create(&labels))
            .observe(std::time::Duration::from_millis(took).as_secs_f64());
        Ok(())
    }

    async fn claim(
        &self,
        op: &OperationRecord,
        owner: &str,
        lease_until: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let changed = self
            .db
            .execute(
                Durability::Committed,
                "UPDATE operations SET owner = $1, lease_until = $2 WHERE id = $3 \
                 AND state = 'in progress' AND polls = $4 AND next_poll_at <= $5 \
                 AND (owner IS NULL OR owner = $6 OR lease_until < $7)",
                owned(args![
                    owner,
                    lease_until,
                    &op.id,
                    i64::from(op.polls),
                    now,
                    owner,
                    now
                ]),
            )
            .await?;
        Ok(changed == 1)
    }

    async fn claim_retry(
        &self,
        op: &OperationRecord,
        owner: &str,
        lease_until: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let changed = self
            .db
            .execute(
                Durability::Committed,
                "UPDATE operations SET owner = $1, lease_until = $2, attempts = attempts + 1 \
                 WHERE id = $3 AND state = 'in progress' AND guest_data IS NULL \
                 AND attempts = $4 AND (owner IS NULL OR owner = $5 OR lease_until < $6)",
                owned(args![
                    owner,
                    lease_until,
                    &op.id,
                    i64::from(op.attempts),
                    owner,
                    now
                ]),
            )
            .await?;
        Ok(changed == 1)
    }

    async fn renew_leases(&self, owner: &str, lease_until: i64) -> Result<(), StoreError> {
        self.db
            .execute(
                Durability::Committed,
                "UPDATE operations SET lease_until = $1 WHERE owner = $2 AND state = 'in progress'",
                owned(args![lease_until, owner]),
            )
            .await?;
        Ok(())
    }

    async fn due_polls(&self, now: i64, limit: i64) -> Result<Vec<OperationRecord>, StoreError> {
        self.operations(DUE_POLLS, &args![now, now, limit]).await
    }

    async fn orphaned(
        &self,
        now: i64,
        dead_owner: Option<&str>,
        started_at: i64,
        limit: i64,
    ) -> Result<Vec<OperationRecord>, StoreError> {
        self.operations(ORPHANED, &args![now, dead_owner, started_at, limit])
            .await
    }

    async fn count_in_progress(&self, broker: &str) -> Result<u64, StoreError> {
        self.count(
            "SELECT COUNT(*) AS n FROM operations WHERE broker = $1 AND state = 'in progress'",
            &args![broker],
        )
        .await
    }
}
