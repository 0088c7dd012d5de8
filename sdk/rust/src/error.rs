//! The error an operator returns for an event it cannot handle.

use std::fmt;

use crate::bindings::weir::operator::state::StateError;

/// Why an event failed. Its message reaches the dead-letter stream and the
/// host's log, so say what was wrong with the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::new(format!("invalid JSON: {err}"))
    }
}

impl From<StateError> for Error {
    fn from(err: StateError) -> Self {
        Error::new(match err {
            StateError::KeyNotOwned => {
                "state key belongs to another operator instance (is the input keyed with key_by?)"
                    .to_string()
            }
            StateError::TooLarge(limit) => {
                format!("state key, name or value is larger than the host's limit of {limit} bytes")
            }
            StateError::Unavailable(why) => format!("state is unavailable: {why}"),
        })
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::new(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::new(message)
    }
}
