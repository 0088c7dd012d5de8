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

/// Reading an event's value (`Event::json`, `Event::json_field`, or
/// `serde_json` called directly): a value that is not JSON, or JSON the
/// operator's type does not fit, said as such (a field the type requires
/// and the event lacks is named).
impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        use serde_json::error::Category;
        let text = err.to_string();
        Error::new(match err.classify() {
            Category::Data => match missing_field(&text) {
                Some(field) => format!(
                    "the event lacks field `{field}`, which the operator's type requires (its value is valid JSON; make the field an Option to accept events without it)"
                ),
                None => format!(
                    "the event's value is valid JSON but not what the operator reads: {text}"
                ),
            },
            Category::Syntax | Category::Eof => {
                format!("the event's value is not valid JSON: {text}")
            }
            Category::Io => format!("reading JSON failed: {text}"),
        })
    }
}

/// The field `serde`'s "missing field `x`" message names.
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split_once('`').map(|(field, _)| field)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Payment {
        user: String,
        amount: f64,
    }

    fn read(text: &str) -> String {
        let err = serde_json::from_str::<Payment>(text).unwrap_err();
        Error::from(err).message().to_string()
    }

    #[test]
    fn json_errors_tell_a_missing_field_a_wrong_type_and_bad_text_apart() {
        let lacking = read(r#"{"user":"u1"}"#);
        assert!(
            lacking.starts_with("the event lacks field `amount`"),
            "{lacking}"
        );
        assert!(!lacking.contains("invalid JSON"), "{lacking}");
        let wrong = read(r#"{"user":"u1","amount":"ten"}"#);
        assert!(
            wrong.contains("valid JSON but not what the operator reads"),
            "{wrong}"
        );
        assert!(wrong.contains("invalid type"), "{wrong}");
        let broken = read(r#"{"user":"#);
        assert!(
            broken.starts_with("the event's value is not valid JSON"),
            "{broken}"
        );
    }
}
