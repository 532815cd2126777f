//! JSON helpers: read parameters and context as `serde_json::Value` or your own types, and turn
//! any `Serialize` value into the JSON text the contract carries.

use crate::{BindRequest, BrokerError, ProvisionRequest, UpdateRequest};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

/// Serialises `value` into JSON text, mapping a failure to [`BrokerError::Internal`].
///
/// # Errors
/// When `value` cannot be represented as JSON (e.g. a map with non-string keys).
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, BrokerError> {
    serde_json::to_string(value)
        .map_err(|e| BrokerError::Internal(format!("cannot serialise to JSON: {e}")))
}

fn parse<T: DeserializeOwned + Default>(what: &str, text: Option<&str>) -> Result<T, BrokerError> {
    match text {
        None => Ok(T::default()),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| BrokerError::BadRequest(format!("invalid {what}: {e}"))),
    }
}

/// Typed access to the JSON fields (`parameters`, `context`) of a request.
pub trait RequestJson {
    /// The raw `parameters` JSON text, if the platform sent any.
    fn parameters_text(&self) -> Option<&str>;
    /// The raw `context` JSON text, if the platform sent any.
    fn context_text(&self) -> Option<&str>;

    /// The parameters as a JSON value (`{}` when none were sent).
    ///
    /// # Errors
    /// [`BrokerError::BadRequest`] when the text is not JSON.
    fn parameters_json(&self) -> Result<Value, BrokerError> {
        parse::<Option<Value>>("parameters", self.parameters_text())
            .map(|v| v.unwrap_or_else(|| Value::Object(Default::default())))
    }

    /// The parameters as your own type (its `Default` when none were sent).
    ///
    /// # Errors
    /// [`BrokerError::BadRequest`] naming the field that did not fit `T`.
    fn parameters_as<T: DeserializeOwned + Default>(&self) -> Result<T, BrokerError> {
        parse("parameters", self.parameters_text())
    }

    /// The context as a JSON value (`{}` when none was sent).
    ///
    /// # Errors
    /// [`BrokerError::BadRequest`] when the text is not JSON.
    fn context_json(&self) -> Result<Value, BrokerError> {
        parse::<Option<Value>>("context", self.context_text())
            .map(|v| v.unwrap_or_else(|| Value::Object(Default::default())))
    }

    /// The context as your own type (its `Default` when none was sent).
    ///
    /// # Errors
    /// [`BrokerError::BadRequest`] naming the field that did not fit `T`.
    fn context_as<T: DeserializeOwned + Default>(&self) -> Result<T, BrokerError> {
        parse("context", self.context_text())
    }
}

macro_rules! request_json {
    ($($ty:ty),*) => {$(
        impl RequestJson for $ty {
            fn parameters_text(&self) -> Option<&str> {
                self.parameters.as_deref()
            }
            fn context_text(&self) -> Option<&str> {
                self.context.as_deref()
            }
        }
    )*};
}
request_json!(ProvisionRequest, UpdateRequest, BindRequest);
