//! Logging into the host's logs; the host adds the broker name and the request identity.
//! Anything written to stdout or stderr also reaches the logs.

use crate::bindings::brokerbox::broker::log::{write, Level};

/// Logs a debugging message.
pub fn debug(message: &str) {
    write(Level::Debug, message);
}

/// Logs an informational message.
pub fn info(message: &str) {
    write(Level::Info, message);
}

/// Logs a warning.
pub fn warn(message: &str) {
    write(Level::Warn, message);
}

/// Logs an error.
pub fn error(message: &str) {
    write(Level::Error, message);
}
