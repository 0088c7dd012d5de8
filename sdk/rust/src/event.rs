//! The inputs an operator sees: one event, or one fired timer.

use serde::de::DeserializeOwned;

use crate::Error;
use crate::TimeDomain;
use crate::bindings::weir::operator::types::Header;

/// One input event, borrowed from the batch it arrived in.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// The event's key, if it has one.
    pub key: Option<&'a [u8]>,
    /// The event's value: on Weir's wire format, the compact JSON text of
    /// the value.
    pub value: &'a [u8],
    /// Event time, milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub(crate) headers: &'a [Header],
}

impl<'a> Event<'a> {
    /// The key as UTF-8 text, if it has a key and the key is text.
    pub fn key_str(&self) -> Option<&'a str> {
        self.key.and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The value as UTF-8 text.
    pub fn value_str(&self) -> Result<&'a str, Error> {
        std::str::from_utf8(self.value).map_err(|_| Error::new("event value is not UTF-8"))
    }

    /// Parses the value as JSON into `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(self.value)?)
    }

    /// The event's headers, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        self.headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_slice()))
    }

    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_slice())
    }
}

/// A timer that fired.
#[derive(Debug, Clone, Copy)]
pub struct Timer<'a> {
    /// The key the timer was registered for.
    pub key: &'a [u8],
    /// The time it was registered for, milliseconds since the Unix epoch.
    pub time: i64,
    /// Event time (watermark) or processing time (wall clock).
    pub domain: TimeDomain,
}
