//! Typed keyed state on top of the contract's bytes. Values are stored as
//! JSON so that any language's operator, and the host's state queries, can
//! read them; a value state may opt in to a compact binary encoding
//! ([`Encoding::Compact`]) instead.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::weir::operator::state as host;
use crate::{Context, Error};

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::new(format!("stored {what} does not decode as its type: {e}")))
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| cannot_store(&e))
}

/// A state value or key `serde_json` cannot write.
fn cannot_store(e: &serde_json::Error) -> Error {
    Error::new(format!("the state value cannot be written as JSON: {e}"))
}

/// How a value state's values are stored, chosen per state when it is
/// declared ([`crate::Setup::value_state_encoded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// JSON text: what every language's SDK reads and the host's state
    /// queries show as JSON. The default.
    #[default]
    Json,
    /// postcard, a compact binary encoding, behind a tag byte: fewer bytes
    /// and less work per read and write, for state that only this Rust
    /// operator reads (the host's state queries show it as base64). Values
    /// stored as JSON before the switch still read (so a savepoint taken
    /// with [`Encoding::Json`] restores) and are written back compact.
    /// postcard is not self-describing: the type must not need it
    /// (`serde_json::Value`, `#[serde(untagged)]`, `#[serde(flatten)]`,
    /// `skip_serializing_if` do not round-trip).
    Compact,
}

/// Reads `json` or `compact`, as an operator's config would name an
/// encoding.
impl std::str::FromStr for Encoding {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "json" => Ok(Encoding::Json),
            "compact" => Ok(Encoding::Compact),
            other => Err(format!(
                "state encoding {other:?} is not known: use \"json\" or \"compact\""
            )),
        }
    }
}

/// The first byte of a compact value: 0xC1 never occurs in UTF-8, so a
/// compact value can never be mistaken for JSON text, nor JSON for one.
const COMPACT_TAG: u8 = 0xC1;

/// Decodes a value state's bytes in either encoding.
pub(crate) fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    match bytes.split_first() {
        Some((&COMPACT_TAG, rest)) => postcard::from_bytes(rest).map_err(|e| {
            Error::new(format!(
                "stored value state (compact encoding) does not decode as its type: {e}; was the state's type changed? Clear the state or restore a savepoint written by this type"
            ))
        }),
        _ => decode("value state", bytes),
    }
}

/// Appends `value` to `out` in `encoding`.
pub(crate) fn encode_value<T: Serialize>(
    encoding: Encoding,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    match encoding {
        Encoding::Json => serde_json::to_writer(out, value).map_err(|e| cannot_store(&e))?,
        Encoding::Compact => {
            out.push(COMPACT_TAG);
            postcard::to_io(value, out).map_err(|e| {
                Error::new(format!(
                    "value state cannot be written in the compact encoding: {e}; use Encoding::Json for this type"
                ))
            })?;
        }
    }
    Ok(())
}

/// One value of `T` per key, declared with [`crate::Setup::value_state`].
/// Reads and writes of the current key's value cost no host call.
#[derive(Debug)]
pub struct ValueState<T> {
    index: usize,
    encoding: Encoding,
    _type: PhantomData<fn() -> T>,
}

impl<T> ValueState<T> {
    pub(crate) fn new(index: usize, encoding: Encoding) -> Self {
        ValueState {
            index,
            encoding,
            _type: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> ValueState<T> {
    /// The current key's value, if it has one.
    pub fn get(&self, ctx: &Context<'_>) -> Result<Option<T>, Error> {
        match ctx.value_bytes(self.index)? {
            Some(bytes) => decode_value(bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Sets the current key's value.
    pub fn set(&self, ctx: &mut Context<'_>, value: &T) -> Result<(), Error> {
        let encoding = self.encoding;
        ctx.set_value_with(
            self.index,
            Some(&|out: &mut Vec<u8>| encode_value(encoding, value, out)),
        )
    }

    /// Removes the current key's value.
    pub fn clear(&self, ctx: &mut Context<'_>) -> Result<(), Error> {
        ctx.set_value_with(self.index, None)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Agg {
        count: u64,
        sum: f64,
        name: String,
    }

    fn agg() -> Agg {
        Agg {
            count: 7,
            sum: 12.5,
            name: "ü\"x".into(),
        }
    }

    fn stored(encoding: Encoding, value: &Agg) -> Vec<u8> {
        let mut out = Vec::new();
        encode_value(encoding, value, &mut out).unwrap();
        out
    }

    #[test]
    fn json_stays_the_default_and_stays_json() {
        assert_eq!(Encoding::default(), Encoding::Json);
        let bytes = stored(Encoding::Json, &agg());
        assert_eq!(bytes, serde_json::to_vec(&agg()).unwrap());
    }

    #[test]
    fn compact_values_are_tagged_smaller_and_read_back() {
        let json = stored(Encoding::Json, &agg());
        let compact = stored(Encoding::Compact, &agg());
        assert_eq!(compact[0], COMPACT_TAG);
        assert!(std::str::from_utf8(&compact).is_err());
        assert!(compact.len() < json.len() / 2, "{compact:?}");
        assert_eq!(decode_value::<Agg>(&compact).unwrap(), agg());
    }

    #[test]
    fn either_encoding_reads_what_the_other_wrote() {
        // A value written as JSON before a state opted in to compact (a
        // savepoint taken before the change) reads back, and so does a
        // compact one after switching back.
        for encoding in [Encoding::Json, Encoding::Compact] {
            assert_eq!(
                decode_value::<Agg>(&stored(encoding, &agg())).unwrap(),
                agg()
            );
        }
    }

    #[test]
    fn encodings_are_named_json_and_compact() {
        assert_eq!("json".parse(), Ok(Encoding::Json));
        assert_eq!("compact".parse(), Ok(Encoding::Compact));
        let err = "postcard".parse::<Encoding>().unwrap_err();
        assert!(err.contains("\"postcard\" is not known"), "{err}");
    }

    #[test]
    fn broken_compact_values_are_errors_that_say_so() {
        let mut compact = stored(Encoding::Compact, &agg());
        compact.truncate(4);
        let err = decode_value::<Agg>(&compact).unwrap_err();
        assert!(err.message().contains("compact encoding"), "{err}");
        let err = decode_value::<Agg>(b"{\"count\":1}").unwrap_err();
        assert!(err.message().contains("does not decode"), "{err}");
    }
}

/// Many `K → V` entries per key, declared with [`crate::Setup::map_state`].
/// Every operation is a host call; writes made by an event that then fails
/// are kept (only value state is rolled back per event).
#[derive(Debug)]
pub struct MapState<K, V> {
    name: String,
    _type: PhantomData<fn() -> (K, V)>,
}

impl<K, V> MapState<K, V> {
    pub(crate) fn new(name: &str) -> Self {
        MapState {
            name: name.to_string(),
            _type: PhantomData,
        }
    }
}

impl<K, V> MapState<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// The entry for `map_key` under the current key.
    pub fn get(&self, ctx: &Context<'_>, map_key: &K) -> Result<Option<V>, Error> {
        let key = ctx.require_key("map state")?;
        match host::map_get(&self.name, key, &encode(map_key)?)? {
            Some(bytes) => decode("map state", &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Sets the entry for `map_key` under the current key.
    pub fn put(&self, ctx: &mut Context<'_>, map_key: &K, value: &V) -> Result<(), Error> {
        let key = ctx.require_key("map state")?;
        Ok(host::map_put(
            &self.name,
            key,
            &encode(map_key)?,
            &encode(value)?,
        )?)
    }

    /// Removes the entry for `map_key` under the current key.
    pub fn remove(&self, ctx: &mut Context<'_>, map_key: &K) -> Result<(), Error> {
        let key = ctx.require_key("map state")?;
        Ok(host::map_remove(&self.name, key, &encode(map_key)?)?)
    }

    /// All entries under the current key, ordered by their encoded map key.
    pub fn entries(&self, ctx: &Context<'_>) -> Result<Vec<(K, V)>, Error> {
        let key = ctx.require_key("map state")?;
        host::map_entries(&self.name, key)?
            .into_iter()
            .map(|(k, v)| Ok((decode("map key", &k)?, decode("map state", &v)?)))
            .collect()
    }

    /// Removes every entry under the current key.
    pub fn clear(&self, ctx: &mut Context<'_>) -> Result<(), Error> {
        let key = ctx.require_key("map state")?;
        Ok(host::map_clear(&self.name, key)?)
    }
}

/// A list of `T` per key, declared with [`crate::Setup::list_state`]. Every
/// operation is a host call.
#[derive(Debug)]
pub struct ListState<T> {
    name: String,
    _type: PhantomData<fn() -> T>,
}

impl<T> ListState<T> {
    pub(crate) fn new(name: &str) -> Self {
        ListState {
            name: name.to_string(),
            _type: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> ListState<T> {
    /// The current key's list.
    pub fn get(&self, ctx: &Context<'_>) -> Result<Vec<T>, Error> {
        let key = ctx.require_key("list state")?;
        host::list_get(&self.name, key)?
            .iter()
            .map(|item| decode("list state", item))
            .collect()
    }

    /// Appends `item` to the current key's list.
    pub fn append(&self, ctx: &mut Context<'_>, item: &T) -> Result<(), Error> {
        let key = ctx.require_key("list state")?;
        Ok(host::list_append(&self.name, key, &encode(item)?)?)
    }

    /// Replaces the current key's list.
    pub fn replace(&self, ctx: &mut Context<'_>, items: &[T]) -> Result<(), Error> {
        let key = ctx.require_key("list state")?;
        let encoded = items.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        Ok(host::list_replace(&self.name, key, &encoded)?)
    }

    /// Empties the current key's list.
    pub fn clear(&self, ctx: &mut Context<'_>) -> Result<(), Error> {
        let key = ctx.require_key("list state")?;
        Ok(host::list_replace(&self.name, key, &[])?)
    }
}
