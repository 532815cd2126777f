//! Rows to records and back, and what an operation's outcome does to its resource.

use super::*;
use crate::store::seal::{self, Sealer};

pub(super) fn instance_row(row: &dyn RowLike) -> Result<InstanceRecord, StoreError> {
    Ok(InstanceRecord {
        broker: get(row, "broker")?,
        instance_id: get(row, "instance_id")?,
        service_id: get(row, "service_id")?,
        plan_id: get(row, "plan_id")?,
        attributes: get(row, "attributes")?,
        parameters: get(row, "parameters")?,
        context: get(row, "context")?,
        dashboard_url: get(row, "dashboard_url")?,
        metadata: get(row, "metadata")?,
        maintenance_info: get(row, "maintenance_info")?,
        state: ResourceState::parse(&get::<String>(row, "state")?)?,
        operation_id: get(row, "operation_id")?,
    })
}

pub(super) fn binding_row(row: &dyn RowLike) -> Result<BindingRecord, StoreError> {
    Ok(BindingRecord {
        broker: get(row, "broker")?,
        binding_id: get(row, "binding_id")?,
        instance_id: get(row, "instance_id")?,
        attributes: get(row, "attributes")?,
        result: get(row, "result")?,
        state: ResourceState::parse(&get::<String>(row, "state")?)?,
        operation_id: get(row, "operation_id")?,
    })
}

/// The columns of `instances` and of `bindings`, as the records hold them.
const INSTANCE_COLUMNS: [&str; 12] = [
    "broker",
    "instance_id",
    "service_id",
    "plan_id",
    "attributes",
    "parameters",
    "context",
    "dashboard_url",
    "metadata",
    "maintenance_info",
    "state",
    "operation_id",
];
const BINDING_COLUMNS: [&str; 7] = [
    "broker",
    "binding_id",
    "instance_id",
    "attributes",
    "result",
    "state",
    "operation_id",
];

/// An instance (`$1`, `$2`) and a binding (`$1`, `$3`) in one row: one probe row, each side
/// joined to it (all NULL when absent), their columns prefixed `i_` and `b_`.
pub(super) static INSTANCE_AND_BINDING: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| {
        let columns = |alias: &str, columns: &[&str]| {
            columns
                .iter()
                .map(|c| format!("{alias}.{c} AS {alias}_{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "SELECT {}, {} FROM (SELECT 1 AS probe) AS probe \
             LEFT JOIN instances AS i ON i.broker = $1 AND i.instance_id = $2 \
             LEFT JOIN bindings AS b ON b.broker = $1 AND b.binding_id = $3",
            columns("i", &INSTANCE_COLUMNS),
            columns("b", &BINDING_COLUMNS)
        )
    });

/// The columns of a row whose names start with a prefix (`i_`, `b_`).
struct Prefixed<'a> {
    row: &'a dyn RowLike,
    prefix: &'static str,
}

impl Prefixed<'_> {
    fn name(&self, column: &str) -> String {
        format!("{}{column}", self.prefix)
    }
}

impl RowLike for Prefixed<'_> {
    fn text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.row.text(&self.name(column))
    }
    fn int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.row.int(&self.name(column))
    }
    fn blob(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.row.blob(&self.name(column))
    }
}

/// A row of [`INSTANCE_AND_BINDING`]: the instance and the binding, each if it exists.
pub(super) fn instance_and_binding_row(
    row: &dyn RowLike,
) -> Result<(Option<InstanceRecord>, Option<BindingRecord>), StoreError> {
    let instance = Prefixed { row, prefix: "i_" };
    let binding = Prefixed { row, prefix: "b_" };
    Ok((
        match instance.text("instance_id")? {
            Some(_) => Some(instance_row(&instance)?),
            None => None,
        },
        match binding.text("binding_id")? {
            Some(_) => Some(binding_row(&binding)?),
            None => None,
        },
    ))
}

pub(super) fn operation_row(row: &dyn RowLike) -> Result<OperationRecord, StoreError> {
    Ok(OperationRecord {
        id: get(row, "id")?,
        broker: get(row, "broker")?,
        instance_id: get(row, "instance_id")?,
        binding_id: get(row, "binding_id")?,
        kind: OperationKind::parse(&get::<String>(row, "kind")?)?,
        state: OperationState::parse(&get::<String>(row, "state")?)?,
        description: get(row, "description")?,
        guest_data: get(row, "guest_data")?,
        target_plan: get(row, "target_plan")?,
        attempts: count(get(row, "attempts")?),
        instance_usable: flag(get(row, "instance_usable")?),
        update_repeatable: flag(get(row, "update_repeatable")?),
        created_at: get(row, "created_at")?,
        request: get(row, "request")?,
        owner: get(row, "owner")?,
        lease_until: get(row, "lease_until")?,
        next_poll_at: get(row, "next_poll_at")?,
        polls: count(get(row, "polls")?),
        broker_version: get(row, "broker_version")?,
        actor: get(row, "actor")?,
        tenant: get(row, "tenant")?,
    })
}

/// The statement inserting `op`'s row (its secrets sealed), for PostgreSQL or SQLite.
///
/// `seq` orders the operations of one resource even within one millisecond: PostgreSQL draws
/// it from a sequence (migration `0012`); on SQLite, whose one writer inserts, it is the
/// largest plus one (an index's last entry, read in process).
pub(super) fn insert_operation(sealer: &Sealer, op: &OperationRecord, postgres: bool) -> Statement {
    let op = &secrets::sealed_operation(sealer, op);
    const POSTGRES: &str = "INSERT INTO operations (id, broker, instance_id, binding_id, kind, \
        state, description, guest_data, target_plan, attempts, created_at, updated_at, request, \
        owner, lease_until, broker_version, actor, tenant, seq) VALUES ($1, $2, $3, $4, $5, $6, \
        $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, nextval('operations_seq'))";
    const SQLITE: &str = "INSERT INTO operations (id, broker, instance_id, binding_id, kind, \
        state, description, guest_data, target_plan, attempts, created_at, updated_at, request, \
        owner, lease_until, broker_version, actor, tenant, seq) VALUES ($1, $2, $3, $4, $5, $6, \
        $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
        (SELECT COALESCE(MAX(seq), 0) + 1 FROM operations))";
    Statement {
        sql: if postgres { POSTGRES } else { SQLITE },
        args: owned(args![
            &op.id,
            &op.broker,
            &op.instance_id,
            &op.binding_id,
            op.kind.as_str(),
            op.state.as_str(),
            &op.description,
            &op.guest_data,
            &op.target_plan,
            i64::from(op.attempts),
            op.created_at,
            now(),
            &op.request,
            &op.owner,
            op.lease_until,
            &op.broker_version,
            &op.actor,
            &op.tenant,
        ]),
    }
}

/// Fails with [`StoreError::Changed`] unless exactly one row was touched.
pub(super) fn one(changed: u64) -> Result<(), StoreError> {
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::Changed)
    }
}

/// The resource an operation concerns.
#[derive(Clone)]
pub(super) struct Target {
    broker: String,
    instance_id: String,
    binding_id: Option<String>,
}

impl Target {
    pub(super) fn of(op: &OperationRecord) -> Self {
        Target {
            broker: op.broker.clone(),
            instance_id: op.instance_id.clone(),
            binding_id: op.binding_id.clone(),
        }
    }
}

/// What an operation's outcome does to its instance or binding, as statements (secrets
/// sealed). An effect touches no row when its resource is gone already (deleted while the
/// operation ran): the operation still ends, with nothing left to change.
pub(super) fn effect_statements(
    sealer: &Sealer,
    target: &Target,
    effect: &Effect,
) -> Vec<Statement> {
    let (t, broker, instance) = (now(), &target.broker, &target.instance_id);
    let binding = target.binding_id.as_deref().unwrap_or_default();
    let on_instance = |column, value: &Option<String>| {
        let aad = seal::aad("instances", &[broker, instance], column);
        value.as_deref().map(|v| sealer.seal_text(&aad, v))
    };
    let statement = |sql, args| Statement { sql, args };
    let set_instance =
        "UPDATE instances SET state = $1, updated_at = $2 WHERE broker = $3 AND instance_id = $4";
    let set_binding =
        "UPDATE bindings SET state = $1, updated_at = $2 WHERE broker = $3 AND binding_id = $4";
    match effect {
        Effect::None => vec![],
        Effect::InstanceReady {
            plan_id,
            dashboard_url,
            metadata,
            parameters,
            context,
            maintenance_info,
        } => vec![statement(
            "UPDATE instances SET state = 'ready', plan_id = $1, \
             dashboard_url = COALESCE($2, dashboard_url), metadata = COALESCE($3, metadata), \
             parameters = COALESCE($4, parameters), context = COALESCE($5, context), \
             maintenance_info = COALESCE($6, maintenance_info), updated_at = $7 \
             WHERE broker = $8 AND instance_id = $9",
            owned(args![
                plan_id,
                &on_instance("dashboard_url", dashboard_url),
                metadata,
                &on_instance("parameters", parameters),
                &on_instance("context", context),
                maintenance_info,
                t,
                broker,
                instance,
            ]),
        )],
        Effect::InstanceAnnotated {
            dashboard_url,
            metadata,
        } => vec![statement(
            "UPDATE instances SET dashboard_url = COALESCE($1, dashboard_url), \
             metadata = COALESCE($2, metadata), updated_at = $3 \
             WHERE broker = $4 AND instance_id = $5",
            owned(args![
                &on_instance("dashboard_url", dashboard_url),
                metadata,
                t,
                broker,
                instance
            ]),
        )],
        Effect::InstanceRestored => vec![statement(
            set_instance,
            owned(args![ResourceState::Ready.as_str(), t, broker, instance]),
        )],
        Effect::InstanceFailed => vec![statement(
            set_instance,
            owned(args![ResourceState::Failed.as_str(), t, broker, instance]),
        )],
        Effect::InstanceDeleted => vec![
            statement(
                "DELETE FROM bindings WHERE broker = $1 AND instance_id = $2",
                owned(args![broker, instance]),
            ),
            statement(
                "DELETE FROM instances WHERE broker = $1 AND instance_id = $2",
                owned(args![broker, instance]),
            ),
        ],
        Effect::BindingReady { result } => {
            let aad = seal::aad("bindings", &[broker, binding], "result");
            let result = sealer.seal_text(&aad, result);
            vec![statement(
                "UPDATE bindings SET state = 'ready', result = $1, updated_at = $2 \
                 WHERE broker = $3 AND binding_id = $4",
                owned(args![&result, t, broker, binding]),
            )]
        }
        Effect::BindingRestored => vec![statement(
            set_binding,
            owned(args![ResourceState::Ready.as_str(), t, broker, binding]),
        )],
        Effect::BindingDeleted => vec![statement(
            "DELETE FROM bindings WHERE broker = $1 AND binding_id = $2",
            owned(args![broker, binding]),
        )],
    }
}
