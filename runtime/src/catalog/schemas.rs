//! The JSON Schemas a plan declares for parameters (`schemas.service_instance.create`,
//! `.update` and `schemas.service_binding.create`), compiled at load and checked before the
//! guest runs. Remote `$ref`s are never fetched.

use crate::sandbox::bindings::types::Plan;
use jsonschema::Validator;
use serde_json::Value;

/// At most this many violations are listed in one error description.
const MAX_LISTED_VIOLATIONS: usize = 10;
/// OSB: "Schemas MUST NOT be larger than 64kB".
const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// Which parameters a schema is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    /// Parameters of a provision.
    InstanceCreate,
    /// Parameters of an update.
    InstanceUpdate,
    /// Parameters of a bind.
    BindingCreate,
}

impl SchemaKind {
    /// Where the schema sits in the plan's `schemas` object.
    fn path(self) -> [&'static str; 3] {
        match self {
            SchemaKind::InstanceCreate => ["service_instance", "create", "parameters"],
            SchemaKind::InstanceUpdate => ["service_instance", "update", "parameters"],
            SchemaKind::BindingCreate => ["service_binding", "create", "parameters"],
        }
    }
}

/// The compiled parameter schemas of one plan.
#[derive(Default)]
pub struct PlanSchemas {
    instance_create: Option<Validator>,
    instance_update: Option<Validator>,
    binding_create: Option<Validator>,
    /// Where the instance schemas (create or update) mark a property secret.
    secret: Vec<Vec<String>>,
}

/// The paths of the properties `schema` marks secret (`"writeOnly": true` or
/// `"format": "password"`), following `properties` down.
fn secret_paths(schema: &Value, at: &mut Vec<String>, found: &mut Vec<Vec<String>>) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, property) in properties {
        at.push(name.clone());
        let write_only = property.get("writeOnly") == Some(&Value::Bool(true));
        let password = property.get("format").and_then(Value::as_str) == Some("password");
        if write_only || password {
            found.push(at.clone());
        } else {
            secret_paths(property, at, found);
        }
        at.pop();
    }
}

impl PlanSchemas {
    /// Compiles the schemas of `plan`.
    ///
    /// # Errors
    /// When `schemas` is not a JSON object, or a schema is not a valid JSON Schema.
    pub fn compile(plan: &Plan) -> Result<Self, String> {
        let Some(text) = &plan.schemas else {
            return Ok(PlanSchemas::default());
        };
        let schemas: Value = serde_json::from_str(text)
            .ok()
            .filter(Value::is_object)
            .ok_or("schemas must be a JSON object")?;
        let compile = |kind: SchemaKind| -> Result<Option<Validator>, String> {
            let [a, b, c] = kind.path();
            let Some(schema) = schemas.get(a).and_then(|v| v.get(b)).and_then(|v| v.get(c)) else {
                return Ok(None);
            };
            let at = format!("schemas.{a}.{b}.{c}");
            check_osb_rules(&at, schema)?;
            jsonschema::validator_for(schema)
                .map(Some)
                .map_err(|e| format!("{at} is not a valid JSON Schema: {e}"))
        };
        let mut secret = Vec::new();
        for kind in [SchemaKind::InstanceCreate, SchemaKind::InstanceUpdate] {
            let [a, b, c] = kind.path();
            if let Some(schema) = schemas.get(a).and_then(|v| v.get(b)).and_then(|v| v.get(c)) {
                secret_paths(schema, &mut Vec::new(), &mut secret);
            }
        }
        Ok(PlanSchemas {
            instance_create: compile(SchemaKind::InstanceCreate)?,
            instance_update: compile(SchemaKind::InstanceUpdate)?,
            binding_create: compile(SchemaKind::BindingCreate)?,
            secret,
        })
    }

    /// `parameters` of an instance without the properties its schemas mark secret
    /// (`"writeOnly": true` or `"format": "password"`): what a fetch shows.
    pub fn redact(&self, parameters: &mut Value) {
        for path in &self.secret {
            let (last, parents) = path.split_last().expect("a path names a property");
            let parent = parents
                .iter()
                .try_fold(&mut *parameters, |value, name| value.get_mut(name));
            if let Some(Value::Object(parent)) = parent {
                parent.remove(last);
            }
        }
    }

    /// Checks `parameters` against the schema of `kind`, if the plan has one.
    ///
    /// # Errors
    /// A description listing each violation (the first `MAX_LISTED_VIOLATIONS`).
    pub fn check(&self, kind: SchemaKind, parameters: &Value) -> Result<(), String> {
        let validator = match kind {
            SchemaKind::InstanceCreate => &self.instance_create,
            SchemaKind::InstanceUpdate => &self.instance_update,
            SchemaKind::BindingCreate => &self.binding_create,
        };
        let Some(validator) = validator else {
            return Ok(());
        };
        let violations: Vec<String> = validator
            .iter_errors(parameters)
            .take(MAX_LISTED_VIOLATIONS)
            .map(|error| {
                let at = error.instance_path().to_string();
                let at = if at.is_empty() { "/".to_string() } else { at };
                // Masked: the value may be a secret, and this text reaches logs and clients.
                format!("{at}: {}", error.masked())
            })
            .collect();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the parameters do not match the plan's schema: {}",
                violations.join("; ")
            ))
        }
    }
}

/// The rules OSB adds to JSON Schema: an object declaring `$schema`, at most 64 kB, and no
/// external references.
fn check_osb_rules(at: &str, schema: &Value) -> Result<(), String> {
    if !schema.is_object() {
        return Err(format!("{at} must be a JSON Schema object"));
    }
    if schema.get("$schema").and_then(Value::as_str).is_none() {
        return Err(format!(
            "{at} must declare its JSON Schema version in `$schema`"
        ));
    }
    let size = schema.to_string().len();
    if size > MAX_SCHEMA_BYTES {
        return Err(format!(
            "{at} is {size} bytes; OSB allows at most {MAX_SCHEMA_BYTES}"
        ));
    }
    if let Some(reference) = external_ref(schema) {
        return Err(format!(
            "{at} has the external reference {reference:?}; OSB allows only local ones"
        ));
    }
    Ok(())
}

/// The first `$ref` in `value` that does not point inside the schema (`#...`).
fn external_ref(value: &Value) -> Option<&str> {
    match value {
        Value::Object(map) => map.iter().find_map(|(key, v)| match v {
            Value::String(r) if key == "$ref" && !r.starts_with('#') => Some(r.as_str()),
            other => external_ref(other),
        }),
        Value::Array(items) => items.iter().find_map(external_ref),
        _ => None,
    }
}
