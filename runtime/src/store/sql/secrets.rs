//! Secrets in SQL: the data keys (table `data_keys`), sealing and opening each secret-bearing
//! column, and the reseal pass that moves every value to the primary key: clear text from
//! before encryption, and values under an older key after a rotation. A key is retired
//! (deleted) only once no value uses it.

use super::db::Decode;
use super::*;
use crate::store::seal::{self, SealError, Sealer, StoredKey};
use crate::store::{KeyInfo, KeyStatus, ResealReport, SecretStore};

/// Values resealed per transaction.
const PAGE: i64 = 200;
/// How long a rotation's new key is primary before an older key may be retired: every replica
/// reloads the keys more often than this, so none still writes with the older one.
pub const RETIRE_AFTER_MS: i64 = 15_000;

/// A column holding secrets: its table, the table's key columns, and whether it is a blob.
pub(super) struct SealedColumn {
    table: &'static str,
    keys: &'static [&'static str],
    column: &'static str,
    blob: bool,
}

const fn text(
    table: &'static str,
    keys: &'static [&'static str],
    column: &'static str,
) -> SealedColumn {
    SealedColumn {
        table,
        keys,
        column,
        blob: false,
    }
}

const INSTANCE: &[&str] = &["broker", "instance_id"];
const BINDING: &[&str] = &["broker", "binding_id"];
const OPERATION: &[&str] = &["id"];

/// Every secret-bearing column: an instance's create request (which holds its parameters), its
/// parameters, context and dashboard URL; a binding's request and body (credentials,
/// endpoints); an operation's stored request and guest data; kv values.
pub(super) const SEALED: &[SealedColumn] = &[
    text("instances", INSTANCE, "attributes"),
    text("instances", INSTANCE, "parameters"),
    text("instances", INSTANCE, "context"),
    text("instances", INSTANCE, "dashboard_url"),
    text("bindings", BINDING, "attributes"),
    text("bindings", BINDING, "result"),
    text("operations", OPERATION, "guest_data"),
    text("operations", OPERATION, "request"),
    SealedColumn {
        table: "kv",
        keys: &["broker", "key"],
        column: "value",
        blob: true,
    },
];

fn sealing(error: SealError) -> StoreError {
    StoreError::Backend(format!("sealed value: {error}"))
}

/// A value as a column holds it.
enum Stored {
    Text(String),
    Blob(Vec<u8>),
}

impl Stored {
    fn value(&self) -> Value<'static> {
        match self {
            Stored::Text(text) => Value::Text(Some(std::borrow::Cow::Owned(text.clone()))),
            Stored::Blob(blob) => Value::Blob(std::borrow::Cow::Owned(blob.clone())),
        }
    }
}

/// A row's key columns (up to two) and one sealed column, as the reseal pass reads them.
type Page = (String, String, Stored);

fn text_row(row: &dyn RowLike) -> Result<Page, StoreError> {
    Ok((
        get(row, "k0")?,
        get(row, "k1")?,
        Stored::Text(get(row, "v")?),
    ))
}

fn blob_row(row: &dyn RowLike) -> Result<Page, StoreError> {
    Ok((
        get(row, "k0")?,
        get(row, "k1")?,
        Stored::Blob(get(row, "v")?),
    ))
}

fn key_row(row: &dyn RowLike) -> Result<StoredKey, StoreError> {
    Ok(StoredKey {
        id: get(row, "id")?,
        master: get(row, "master")?,
        wrapped: get(row, "wrapped")?,
        created_at: get(row, "created_at")?,
    })
}

impl SqlStore {
    /// The data keys in the database.
    async fn stored_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        (self.db)
            .query("SELECT * FROM data_keys", &[], key_row)
            .await
    }

    /// Loads the data keys, making the first when the database has none (a new database, or
    /// one from before encryption).
    ///
    /// # Errors
    /// When the master key does not open the database's keys.
    pub(super) async fn load_keys(&self) -> anyhow::Result<()> {
        let mut keys = self.stored_keys().await?;
        if keys.is_empty() {
            self.insert_key(&self.sealer.new_data_key(now())).await?;
            keys = self.stored_keys().await?;
        }
        self.sealer.install(&keys)
    }

    async fn insert_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        (self.db)
            .execute(
                Durability::OnDisk,
                "INSERT INTO data_keys (id, master, wrapped, created_at) VALUES ($1, $2, $3, $4)",
                owned(args![&key.id, &key.master, &key.wrapped, key.created_at]),
            )
            .await?;
        Ok(())
    }

    /// Reloads the data keys (another replica may have rotated); returns them as read.
    async fn refresh_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let keys = self.stored_keys().await?;
        (self.sealer.install(&keys)).map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(keys)
    }

    /// The operations `sql` selects, their secrets opened.
    pub(super) async fn operations(
        &self,
        sql: &str,
        args: &[Value<'_>],
    ) -> Result<Vec<OperationRecord>, StoreError> {
        let ops = self.db.query(sql, args, operation_row).await?;
        self.opened(ops, open_operation).await
    }

    /// Opens every record of `records` with `open` (which changes a record only once all its
    /// values opened); reloads the keys once when a value names a key this runtime does not
    /// hold yet.
    pub(super) async fn opened<T>(
        &self,
        mut records: Vec<T>,
        open: fn(&Sealer, &mut T) -> Result<(), SealError>,
    ) -> Result<Vec<T>, StoreError> {
        for record in &mut records {
            self.open_refreshing(|sealer| open(sealer, record)).await?;
        }
        Ok(records)
    }

    /// How many values of `column` each key seals, and how many are clear text.
    async fn census(
        &self,
        column: &SealedColumn,
    ) -> Result<Vec<(Option<String>, u64)>, StoreError> {
        let (t, c) = (column.table, column.column);
        let magic = magic(column.blob);
        let sealed = format!(
            "SELECT substr({c}, 1, {len}) AS p, COUNT(*) AS n FROM {t} \
             WHERE {c} IS NOT NULL AND substr({c}, 1, 6) = $1 GROUP BY substr({c}, 1, {len})",
            len = seal::PREFIX_LEN
        );
        let decode: Decode<(Vec<u8>, i64)> = if column.blob {
            |row| Ok((get(row, "p")?, get(row, "n")?))
        } else {
            |row| Ok((get::<String>(row, "p")?.into_bytes(), get(row, "n")?))
        };
        let mut counts = Vec::new();
        for (prefix, n) in self
            .db
            .query(&sealed, std::slice::from_ref(&magic), decode)
            .await?
        {
            let id = seal::key_of(&prefix).map(str::to_string);
            counts.push((id, u64::try_from(n).unwrap_or(0)));
        }
        let clear = format!(
            "SELECT COUNT(*) AS n FROM {t} WHERE {c} IS NOT NULL AND substr({c}, 1, 6) <> $1"
        );
        let n = self
            .db
            .query(&clear, &[magic], |row| get::<i64>(row, "n"))
            .await?;
        counts.push((
            None,
            n.first().map_or(0, |n| u64::try_from(*n).unwrap_or(0)),
        ));
        Ok(counts)
    }

    /// Reseals every value of `column` not under the primary key; returns how many.
    async fn reseal_column(&self, column: &SealedColumn) -> Result<u64, StoreError> {
        let (t, c) = (column.table, column.column);
        let (k0, k1) = (column.keys[0], column.keys.get(1).copied());
        let select = format!(
            "SELECT {k0} AS k0, {k1} AS k1, {c} AS v FROM {t} \
             WHERE {c} IS NOT NULL AND substr({c}, 1, {len}) <> $1 AND ({keys}) > ({cursor}) \
             ORDER BY {keys} LIMIT {PAGE}",
            k1 = k1.unwrap_or("''"),
            len = seal::PREFIX_LEN,
            keys = column.keys.join(", "),
            cursor = if k1.is_some() { "$2, $3" } else { "$2" },
        );
        let update = match k1 {
            Some(k1) => {
                format!("UPDATE {t} SET {c} = $1 WHERE {k0} = $2 AND {k1} = $3 AND {c} = $4")
            }
            None => format!("UPDATE {t} SET {c} = $1 WHERE {k0} = $2 AND {c} = $3"),
        };
        let update: Arc<str> = update.into();
        let decode: Decode<Page> = if column.blob { blob_row } else { text_row };
        let (mut cursor, mut resealed) = ((String::new(), String::new()), 0u64);
        loop {
            let primary = seal::prefix(&self.sealer.primary_id());
            let primary = if column.blob {
                Value::Blob(std::borrow::Cow::Owned(primary.into_bytes()))
            } else {
                Value::Text(Some(std::borrow::Cow::Owned(primary)))
            };
            let mut args = vec![primary, Value::from(cursor.0.as_str()).into_owned()];
            if k1.is_some() {
                args.push(Value::from(cursor.1.as_str()).into_owned());
            }
            let page = self.db.query(&select, &args, decode).await?;
            let Some(last) = page.last() else {
                return Ok(resealed);
            };
            cursor = (last.0.clone(), last.1.clone());
            let mut updates = Vec::with_capacity(page.len());
            for (id0, id1, stored) in page {
                let ids: Vec<&str> = if k1.is_some() {
                    vec![&id0, &id1]
                } else {
                    vec![&id0]
                };
                let aad = seal::aad(t, &ids, c);
                let fresh = match &stored {
                    Stored::Text(text) => {
                        let plain = self.open_refreshing(|s| s.open_text(&aad, text)).await?;
                        Stored::Text(self.sealer.seal_text(&aad, &plain))
                    }
                    Stored::Blob(blob) => {
                        let plain = self.open_refreshing(|s| s.open_bytes(&aad, blob)).await?;
                        Stored::Blob(self.sealer.seal_bytes(&aad, &plain))
                    }
                };
                let mut args = vec![fresh.value(), Value::from(id0.as_str()).into_owned()];
                if k1.is_some() {
                    args.push(Value::from(id1.as_str()).into_owned());
                }
                args.push(stored.value());
                updates.push(args);
            }
            let update = update.clone();
            // Compare-and-set: a value written meanwhile (already under the primary) stays.
            resealed += self
                .db
                .write(Durability::OnDisk, move |conn| {
                    Box::pin(async move {
                        let mut changed = 0;
                        for args in &updates {
                            changed += conn.execute(&update, args).await?;
                        }
                        Ok(changed)
                    })
                })
                .await?;
        }
    }

    pub(super) async fn open_refreshing<T>(
        &self,
        mut open: impl FnMut(&Sealer) -> Result<T, SealError>,
    ) -> Result<T, StoreError> {
        match open(&self.sealer) {
            Err(SealError::UnknownKey(_)) => {
                self.refresh_keys().await?;
                open(&self.sealer).map_err(sealing)
            }
            done => done.map_err(sealing),
        }
    }
}

/// `bbx:1:` as a column of the kind compares it.
fn magic(blob: bool) -> Value<'static> {
    let magic = &seal::prefix("")[..6];
    if blob {
        Value::Blob(std::borrow::Cow::Owned(magic.as_bytes().to_vec()))
    } else {
        Value::Text(Some(std::borrow::Cow::Owned(magic.to_string())))
    }
}

#[async_trait::async_trait]
impl SecretStore for SqlStore {
    async fn rotate_key(&self) -> Result<String, StoreError> {
        let key = self.sealer.new_data_key(now());
        self.insert_key(&key).await?;
        self.refresh_keys().await?;
        Ok(key.id)
    }

    async fn reload_keys(&self) -> Result<usize, StoreError> {
        self.refresh_keys().await?;
        Ok(self.sealer.key_ids().len())
    }

    async fn key_status(&self) -> Result<KeyStatus, StoreError> {
        let stored = self.refresh_keys().await?;
        let primary = self.sealer.primary_id();
        let mut values: HashMap<Option<String>, u64> = HashMap::new();
        for column in SEALED {
            for (key, n) in self.census(column).await? {
                *values.entry(key).or_default() += n;
            }
        }
        let mut keys: Vec<KeyInfo> = stored
            .iter()
            .map(|k| KeyInfo {
                id: k.id.clone(),
                created_at: k.created_at,
                primary: k.id == primary,
                values: values.get(&Some(k.id.clone())).copied().unwrap_or(0),
            })
            .collect();
        keys.sort_by_key(|k| (k.created_at, k.id.clone()));
        let unknown: u64 = values
            .iter()
            .filter(|(k, _)| {
                k.as_ref()
                    .is_some_and(|k| !stored.iter().any(|s| &s.id == k))
            })
            .map(|(_, n)| n)
            .sum();
        let clear = values.get(&None).copied().unwrap_or(0);
        let remaining = clear
            + unknown
            + keys
                .iter()
                .filter(|k| !k.primary)
                .map(|k| k.values)
                .sum::<u64>();
        Ok(KeyStatus {
            master: self.sealer.master_id().to_string(),
            primary,
            keys,
            clear,
            remaining,
        })
    }

    fn seal_file(&self, label: &str, plain: &[u8]) -> Vec<u8> {
        (self.sealer).seal_with_master(&seal::aad("file", &[label], "content"), plain)
    }

    fn open_file(&self, label: &str, stored: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        (self.sealer)
            .open_with_master(&seal::aad("file", &[label], "content"), stored)
            .map_err(sealing)
    }

    async fn reseal(&self) -> Result<ResealReport, StoreError> {
        self.refresh_keys().await?;
        let mut resealed = 0;
        for column in SEALED {
            resealed += self.reseal_column(column).await?;
        }
        // Retire the older keys no value uses, once every replica has had time to move on.
        let status = self.key_status().await?;
        let mut retired = Vec::new();
        let newest = status.keys.iter().map(|k| k.created_at).max().unwrap_or(0);
        if now() - newest >= RETIRE_AFTER_MS {
            for key in status.keys.iter().filter(|k| !k.primary && k.values == 0) {
                (self.db)
                    .execute(
                        Durability::OnDisk,
                        "DELETE FROM data_keys WHERE id = $1",
                        owned(args![&key.id]),
                    )
                    .await?;
                retired.push(key.id.clone());
            }
            if !retired.is_empty() {
                self.refresh_keys().await?;
            }
        }
        Ok(ResealReport {
            resealed,
            keys: status.keys.len() - retired.len(),
            retired,
            remaining: status.remaining,
        })
    }
}

/// `value` of `column` in the row `ids` of `table`, opened.
fn open_field(
    sealer: &Sealer,
    (table, ids): (&str, &[&str]),
    column: &str,
    value: Option<&String>,
) -> Result<Option<String>, SealError> {
    value
        .map(|v| sealer.open_text(&seal::aad(table, ids, column), v))
        .transpose()
}

/// Opens an instance record's secrets (all or none).
pub(super) fn open_instance(sealer: &Sealer, i: &mut InstanceRecord) -> Result<(), SealError> {
    let row = (
        "instances",
        &[i.broker.as_str(), i.instance_id.as_str()][..],
    );
    let opened = (
        open_field(sealer, row, "attributes", Some(&i.attributes))?.unwrap_or_default(),
        open_field(sealer, row, "parameters", i.parameters.as_ref())?,
        open_field(sealer, row, "context", i.context.as_ref())?,
        open_field(sealer, row, "dashboard_url", i.dashboard_url.as_ref())?,
    );
    (i.attributes, i.parameters, i.context, i.dashboard_url) = opened;
    Ok(())
}

/// Opens a binding record's secrets (all or none).
pub(super) fn open_binding(sealer: &Sealer, b: &mut BindingRecord) -> Result<(), SealError> {
    let row = ("bindings", &[b.broker.as_str(), b.binding_id.as_str()][..]);
    let opened = (
        open_field(sealer, row, "attributes", Some(&b.attributes))?.unwrap_or_default(),
        open_field(sealer, row, "result", b.result.as_ref())?,
    );
    (b.attributes, b.result) = opened;
    Ok(())
}

/// Opens an operation record's secrets (all or none).
pub(super) fn open_operation(sealer: &Sealer, op: &mut OperationRecord) -> Result<(), SealError> {
    let row = ("operations", &[op.id.as_str()][..]);
    let opened = (
        open_field(sealer, row, "guest_data", op.guest_data.as_ref())?,
        open_field(sealer, row, "request", op.request.as_ref())?,
    );
    (op.guest_data, op.request) = opened;
    Ok(())
}

/// `i` with its secrets sealed, as it is written.
pub(super) fn sealed_instance(sealer: &Sealer, i: &InstanceRecord) -> InstanceRecord {
    let ids = [i.broker.as_str(), i.instance_id.as_str()];
    let seal = |column, value: &str| sealer.seal_text(&seal::aad("instances", &ids, column), value);
    InstanceRecord {
        attributes: seal("attributes", &i.attributes),
        parameters: i.parameters.as_deref().map(|v| seal("parameters", v)),
        context: i.context.as_deref().map(|v| seal("context", v)),
        dashboard_url: i.dashboard_url.as_deref().map(|v| seal("dashboard_url", v)),
        ..i.clone()
    }
}

/// `b` with its secrets sealed, as it is written.
pub(super) fn sealed_binding(sealer: &Sealer, b: &BindingRecord) -> BindingRecord {
    let ids = [b.broker.as_str(), b.binding_id.as_str()];
    let seal = |column, value: &str| sealer.seal_text(&seal::aad("bindings", &ids, column), value);
    BindingRecord {
        attributes: seal("attributes", &b.attributes),
        result: b.result.as_deref().map(|v| seal("result", v)),
        ..b.clone()
    }
}

/// `op` with its secrets sealed, as it is written.
pub(super) fn sealed_operation(sealer: &Sealer, op: &OperationRecord) -> OperationRecord {
    OperationRecord {
        guest_data: seal_operation_field(sealer, &op.id, "guest_data", op.guest_data.as_deref()),
        request: seal_operation_field(sealer, &op.id, "request", op.request.as_deref()),
        ..op.clone()
    }
}

/// One secret column of operation `id`, sealed.
pub(super) fn seal_operation_field(
    sealer: &Sealer,
    id: &str,
    column: &str,
    value: Option<&str>,
) -> Option<String> {
    value.map(|v| sealer.seal_text(&seal::aad("operations", &[id], column), v))
}
