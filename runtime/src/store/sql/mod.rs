//! The SQL backends: embedded SQLite (one file, WAL journal) and PostgreSQL (shared by several
//! runtime replicas). The store's SQL is written once, with `$N` placeholders and SQL both
//! dialects understand, against [`db`]'s small interface; each backend has its own migrations.
//!
//! Claims and leases are compare-and-set `UPDATE`s on one row, atomic in both databases, so two
//! runtimes never run the same operation.

use super::{
    BindingRecord, CurrentVersion, Effect, InstanceRecord, OperationKind, OperationRecord,
    OperationState, Outcome, Purged, ResourceState, StoreError, VersionRecord, VersionState,
};
use super::{BrokerBook, Census, KvStore, OperationStore, ResourceStore, StoreHealth};

use super::now_ms as now;
use std::collections::HashMap;
use std::sync::Arc;

mod audit;
mod book;
mod census;
mod db;
mod kv;
mod operations;
mod resources;
mod rows;
mod secrets;
mod sqlite;

use db::{args, get, owned, Db, Durability, RowLike, Statement, Value};
use rows::{
    binding_row, effect_statements, insert_operation, instance_and_binding_row, instance_row, one,
    operation_row, Target, INSTANCE_AND_BINDING,
};

/// State in an SQL database.
pub struct SqlStore {
    db: Db,
    /// Seals and opens the secret-bearing columns.
    sealer: super::seal::Sealer,
    /// Each broker's turn at writing its kv store (see `kv_set`), by broker name.
    kv_turns: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl SqlStore {
    /// Opens (creating a SQLite file if needed) the database at `url`, migrates it and loads
    /// its data keys with `master` (making the first one in a database that has none).
    ///
    /// # Errors
    /// When the URL is not `sqlite://` or `postgres://`, the database cannot be reached, a
    /// migration fails, or `master` does not open the database's keys.
    pub async fn open(url: &str, master: super::seal::MasterKey) -> anyhow::Result<Self> {
        Self::with_keys(Db::open(url).await?, master).await
    }

    /// [`SqlStore::open`] with the master key from `keys`. A keyring file is made only for a
    /// database that holds no data keys yet; one that does needs the keyring it was used with.
    ///
    /// # Errors
    /// As [`SqlStore::open`], and when the keyring is missing or unreadable.
    pub async fn open_sealed(url: &str, keys: &super::seal::KeySource) -> anyhow::Result<Self> {
        let db = Db::open(url).await?;
        let stored = (db.query("SELECT master FROM data_keys", &[], |row| {
            get::<String>(row, "master")
        }))
        .await?;
        let (master, _) = keys
            .load(stored.is_empty())
            .map_err(|error| match stored.first() {
                Some(needed) => anyhow::anyhow!(
                    "{error}; this database's secrets are sealed under master key {needed}: \
                 start with the keyring it was used with (--keyring FILE or {}); nothing was \
                 written",
                    super::seal::KEY_ENV
                ),
                None => error,
            })?;
        Self::with_keys(db, master).await
    }

    /// The store on `db`, its data keys loaded with `master`.
    async fn with_keys(db: Db, master: super::seal::MasterKey) -> anyhow::Result<Self> {
        let store = SqlStore {
            db,
            sealer: super::seal::Sealer::new(master),
            kv_turns: std::sync::Mutex::default(),
        };
        store.load_keys().await?;
        Ok(store)
    }

    /// The lock whose holder may write `broker`'s kv store.
    fn kv_turn(&self, broker: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.kv_turns.lock().unwrap_or_else(|e| e.into_inner());
        turns.entry(broker.to_string()).or_default().clone()
    }

    /// The count a `SELECT COUNT(*) AS n …` query answers.
    async fn count(&self, sql: &str, args: &[Value<'_>]) -> Result<u64, StoreError> {
        let counts = self.db.query(sql, args, |row| get::<i64>(row, "n")).await?;
        Ok(counts.first().map_or(0, |n| u64::try_from(*n).unwrap_or(0)))
    }
}

fn flag(value: Option<i64>) -> Option<bool> {
    value.map(|v| v != 0)
}

fn count(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuditLog;

    fn instance(id: &str, op: &str) -> InstanceRecord {
        InstanceRecord {
            broker: "b".into(),
            instance_id: id.into(),
            service_id: "s".into(),
            plan_id: "p".into(),
            attributes: "{}".into(),
            parameters: None,
            context: None,
            dashboard_url: None,
            metadata: None,
            maintenance_info: None,
            state: ResourceState::Creating,
            operation_id: Some(op.into()),
        }
    }

    fn operation(id: &str, instance: &str, binding: Option<&str>) -> OperationRecord {
        OperationRecord {
            id: id.into(),
            broker: "b".into(),
            instance_id: instance.into(),
            binding_id: binding.map(Into::into),
            kind: match binding {
                Some(_) => OperationKind::Bind,
                None => OperationKind::Provision,
            },
            state: OperationState::InProgress,
            description: None,
            guest_data: None,
            target_plan: None,
            attempts: 1,
            instance_usable: None,
            update_repeatable: None,
            created_at: now(),
            request: None,
            owner: None,
            lease_until: None,
            next_poll_at: None,
            polls: 0,
            broker_version: None,
            actor: None,
            tenant: None,
        }
    }

    /// An instance being provisioned by a long operation the guest accepted, due for a poll.
    async fn accepted_operation(store: &SqlStore) -> OperationRecord {
        let op = operation("op", "i", None);
        store
            .create_instance(&instance("i", "op"), &op)
            .await
            .unwrap();
        store
            .accept_operation(&op, "data-0", &Effect::None, 0)
            .await
            .unwrap();
        let due = store.due_polls(now(), 10).await.unwrap();
        assert_eq!(due.len(), 1);
        due.into_iter().next().unwrap()
    }

    #[tokio::test]
    async fn a_claim_on_a_stale_read_fails_so_no_poll_step_runs_twice() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = SqlStore::open(&url, crate::store::seal::MasterKey::ephemeral())
            .await
            .unwrap();
        let read_by_a = accepted_operation(&store).await;
        let read_by_b = read_by_a.clone();
        // Replica B claims, polls once (new data, next poll due at once) and lets go.
        assert!(store
            .claim(&read_by_b, "b", now() + 10_000, now())
            .await
            .unwrap());
        store
            .record_progress(&read_by_b, Some("data-1"), None, 0)
            .await
            .unwrap();
        // Replica A's claim on what it read before that step fails...
        assert!(!store
            .claim(&read_by_a, "a", now() + 10_000, now())
            .await
            .unwrap());
        // ...and succeeds on a fresh read, which carries B's data.
        let fresh = store.due_polls(now(), 10).await.unwrap().remove(0);
        assert_eq!(fresh.guest_data.as_deref(), Some("data-1"));
        assert!(store
            .claim(&fresh, "a", now() + 10_000, now())
            .await
            .unwrap());
    }

    /// The stores a test runs on (see [`db::test_database_urls`]), and the directory of the
    /// SQLite one.
    async fn stores() -> (tempfile::TempDir, Vec<SqlStore>) {
        let (dir, urls) = db::test_database_urls().await;
        let mut stores = Vec::new();
        for url in urls {
            let key = crate::store::seal::MasterKey::ephemeral();
            stores.push(SqlStore::open(&url, key).await.unwrap());
        }
        (dir, stores)
    }

    #[tokio::test]
    async fn an_instance_and_a_binding_read_together_are_what_each_read_alone_finds() {
        let (_dir, stores) = stores().await;
        for store in stores {
            let mut sealed = instance("i", "op-i");
            sealed.parameters = Some(r#"{"secret":1}"#.into());
            let op = operation("op-i", "i", None);
            store.create_instance(&sealed, &op).await.unwrap();
            store
                .create_instance(&instance("j", "op-j"), &operation("op-j", "j", None))
                .await
                .unwrap();
            let binding = BindingRecord {
                broker: "b".into(),
                binding_id: "x".into(),
                instance_id: "i".into(),
                attributes: r#"{"app":"a"}"#.into(),
                result: None,
                state: ResourceState::Creating,
                operation_id: Some("op-x".into()),
            };
            let op = operation("op-x", "i", Some("x"));
            store.create_binding(&binding, &op).await.unwrap();
            for (i, x) in [("i", "x"), ("j", "x"), ("i", "y"), ("k", "x"), ("k", "y")] {
                let together = store.instance_and_binding("b", i, x).await.unwrap();
                let alone = (
                    store.instance("b", i).await.unwrap(),
                    store.binding("b", x).await.unwrap(),
                );
                assert_eq!(together, alone, "instance {i}, binding {x}");
            }
            let (found, bound) = store.instance_and_binding("b", "i", "x").await.unwrap();
            assert_eq!(found.unwrap().parameters, sealed.parameters);
            assert_eq!(bound.unwrap(), binding);
            let (none, _) = store.instance_and_binding("other", "i", "x").await.unwrap();
            assert!(none.is_none());
        }
    }

    #[tokio::test]
    async fn only_operations_in_progress_are_counted_polled_or_orphaned_and_failures_stay_listed() {
        let (_dir, stores) = stores().await;
        for store in stores {
            // Four provisions: one succeeds, one fails, one is accepted (polled), one runs.
            let ops: Vec<OperationRecord> = ["ok", "bad", "long", "running"]
                .iter()
                .map(|name| {
                    let mut op = operation(&format!("op-{name}"), name, None);
                    op.request = Some(format!(r#"{{"instance":"{name}"}}"#));
                    op
                })
                .collect();
            for op in &ops {
                let record = instance(&op.instance_id, &op.id);
                store.create_instance(&record, op).await.unwrap();
            }
            let (ok, bad, long) = (&ops[0], &ops[1], &ops[2]);
            let done = Outcome::succeeded(None);
            store
                .finish_operation(ok, &done, &Effect::None)
                .await
                .unwrap();
            let failed = Outcome::failed("no");
            store
                .finish_operation(bad, &failed, &Effect::None)
                .await
                .unwrap();
            store
                .accept_operation(long, "data", &Effect::None, 0)
                .await
                .unwrap();
            assert_eq!(store.count_in_progress("b").await.unwrap(), 2);
            assert_eq!(store.count_in_progress("other").await.unwrap(), 0);
            let due: Vec<String> = (store.due_polls(now(), 10).await.unwrap())
                .into_iter()
                .map(|op| op.id)
                .collect();
            assert_eq!(due, ["op-long"]);
            let orphaned = store.orphaned(now() + 1, None, 0, 10).await.unwrap();
            let orphaned: Vec<&str> = orphaned.iter().map(|op| op.id.as_str()).collect();
            assert_eq!(orphaned, ["op-running"]);
            // The operator's view: in progress and failed since, newest first.
            let recent = store.recent_operations(0, 10).await.unwrap();
            let recent: Vec<&str> = recent.iter().map(|op| op.id.as_str()).collect();
            assert_eq!(recent, ["op-running", "op-long", "op-bad"]);
            let later = store.recent_operations(now() + 60_000, 10).await.unwrap();
            assert_eq!(
                later.len(),
                2,
                "a failure before `failed_since` is left out"
            );
            // A failed operation keeps its request for a retry; one that succeeded drops it.
            let kept = async |id| store.operation("b", id).await.unwrap().unwrap().request;
            assert_eq!(kept("op-ok").await, None);
            assert_eq!(
                kept("op-bad").await.as_deref(),
                Some(r#"{"instance":"bad"}"#)
            );
            assert!(kept("op-running").await.is_some());
        }
    }

    #[tokio::test]
    async fn the_latest_operation_of_a_resource_is_the_last_started_even_within_a_millisecond() {
        let (_dir, stores) = stores().await;
        for store in stores {
            let mut created = operation("op-0", "i", None);
            created.created_at = 1_000;
            store
                .create_instance(&instance("i", "op-0"), &created)
                .await
                .unwrap();
            let ready = Effect::InstanceReady {
                plan_id: "p".into(),
                dashboard_url: None,
                metadata: None,
                parameters: None,
                context: None,
                maintenance_info: None,
            };
            let done = Outcome::succeeded(None);
            store
                .finish_operation(&created, &done, &ready)
                .await
                .unwrap();
            // Ids sort the other way round, and every operation has the same millisecond:
            // only the insert order tells them apart.
            for n in 1..=3 {
                let mut op = operation(&format!("op-{}", 9 - n), "i", None);
                op.kind = OperationKind::Update;
                op.created_at = 1_000;
                store
                    .start_operation(&op, ResourceState::Updating)
                    .await
                    .unwrap();
                let latest = store
                    .latest_operation("b", "i", None)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(latest.id, op.id);
                store
                    .finish_operation(&op, &done, &Effect::InstanceRestored)
                    .await
                    .unwrap();
            }
        }
    }
}
