//! Typed keyed state on top of the contract's bytes. Values are stored as
//! JSON so that any language's operator, and the host's state queries, can
//! read them.

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
    Ok(serde_json::to_vec(value)?)
}

/// One value of `T` per key, declared with [`crate::Setup::value_state`].
/// Reads and writes of the current key's value cost no host call.
#[derive(Debug)]
pub struct ValueState<T> {
    index: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T> ValueState<T> {
    pub(crate) fn new(index: usize) -> Self {
        ValueState {
            index,
            _type: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> ValueState<T> {
    /// The current key's value, if it has one.
    pub fn get(&self, ctx: &Context<'_>) -> Result<Option<T>, Error> {
        match ctx.value_bytes(self.index)? {
            Some(bytes) => decode("value state", bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Sets the current key's value.
    pub fn set(&self, ctx: &mut Context<'_>, value: &T) -> Result<(), Error> {
        ctx.set_value_with(
            self.index,
            Some(&|out: &mut Vec<u8>| Ok(serde_json::to_writer(out, value)?)),
        )
    }

    /// Removes the current key's value.
    pub fn clear(&self, ctx: &mut Context<'_>) -> Result<(), Error> {
        ctx.set_value_with(self.index, None)
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
