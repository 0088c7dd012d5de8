//! The inputs an operator sees: one event, or one fired timer.

use serde::Deserialize;

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
    /// Which of the operator's inputs the event came from: the index in the
    /// operator's `input` list in the topology (0 for a single input).
    pub input: u32,
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

    /// Parses the value as JSON into `T`. `T` may borrow from the batch:
    /// a struct with `&'a str` fields, or `Cow<'a, str>` ones marked
    /// `#[serde(borrow)]` (borrowed unless the string holds escapes), reads
    /// the event without copying its text; fields `T` does not name are
    /// read past. This is the fast way to read events:
    ///
    /// ```ignore
    /// #[derive(Deserialize)]
    /// struct Order<'a> {
    ///     #[serde(borrow)]
    ///     user: Cow<'a, str>,
    ///     amount: f64,
    /// }
    /// let order: Order = event.json()?;
    /// ```
    pub fn json<T: Deserialize<'a>>(&self) -> Result<T, Error> {
        // UTF-8 checked once for the whole value, not again per string.
        Ok(match std::str::from_utf8(self.value) {
            Ok(text) => serde_json::from_str(text)?,
            Err(_) => serde_json::from_slice(self.value)?,
        })
    }

    /// Field `name` of the value, a JSON object, as `T` (which may borrow
    /// from the batch, as in [`Event::json`]), without building the rest of
    /// the object: for a field whose name is only known at run time.
    /// `Ok(None)` when the value is not an object or has no such field
    /// (when the name repeats, the last one counts); an error when the
    /// value is not JSON or the field is not a `T`.
    pub fn json_field<T: Deserialize<'a>>(&self, name: &str) -> Result<Option<T>, Error> {
        Ok(crate::json::field(self.value, name)?)
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
