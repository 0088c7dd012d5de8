//! Reading one field of a JSON object without building the object: the
//! fast path behind the SDK's `Event::json_field`, and behind the host's
//! `key_by: {field: …}` (`weir-types` compiles this same file). The other
//! fields are read past, checked as strictly as `serde_json::Value` would
//! check them, so a value is an error here exactly when it would be one
//! there.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Field `name` of the JSON object `bytes` as `T`, borrowing from `bytes`
/// where `T` does. `Ok(None)` when the value is not an object or has no
/// such field; when the name repeats, the last one counts (as in
/// `serde_json::Value`). An error when `bytes` is not JSON or the field is
/// not a `T`.
pub(crate) fn field<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    name: &str,
) -> Result<Option<T>, serde_json::Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) => field_in(serde_json::Deserializer::from_str(text), name),
        Err(_) => field_in(serde_json::Deserializer::from_slice(bytes), name),
    }
}

/// Field `name` read with `de`. Text checked as UTF-8 once, whole, reads
/// with `from_str`, which checks no string again (checking each string was
/// a tenth of the time spent here); bytes that are not UTF-8 are an error
/// either way, and `from_slice` says where.
fn field_in<'a, R: serde_json::de::Read<'a>, T: Deserialize<'a>>(
    mut de: serde_json::Deserializer<R>,
    name: &str,
) -> Result<Option<T>, serde_json::Error> {
    let found = FieldOf {
        name,
        _type: PhantomData,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(found)
}

/// Looks for one field while reading a value of any kind.
struct FieldOf<'n, T> {
    name: &'n str,
    _type: PhantomData<fn() -> T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for FieldOf<'_, T> {
    type Value = Option<T>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for FieldOf<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let mut found = None;
        while let Some(is_name) = map.next_key_seed(IsName(self.name))? {
            if is_name {
                found = Some(map.next_value()?);
            } else {
                map.next_value::<Skip>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<T>, A::Error> {
        skip_seq(seq).map(|_| None)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
}

/// Whether a map key is `name`, compared without copying the key.
struct IsName<'n>(&'n str);

impl<'de> DeserializeSeed<'de> for IsName<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for IsName<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// Any JSON value, read and thrown away. Unlike `serde::de::IgnoredAny`,
/// strings are decoded (so a lone surrogate escape is an error, as in
/// `serde_json::Value`). Nesting is bounded by serde_json's depth limit.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(Skip)
    }
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Skip, A::Error> {
    while seq.next_element::<Skip>()?.is_some() {}
    Ok(Skip)
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Skip, A::Error> {
        skip_seq(seq)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde_json::Value;

    use super::*;

    /// What `serde_json::Value` says about field `name` of `text`.
    fn through_value(text: &str, name: &str) -> Result<Option<Value>, ()> {
        let value: Value = serde_json::from_str(text).map_err(|_| ())?;
        Ok(value.as_object().and_then(|o| o.get(name)).cloned())
    }

    #[test]
    fn agrees_with_value_on_every_shape() {
        for text in [
            r#"{"amount":60,"user":"a"}"#,
            r#"{"user":"b"}"#,
            r#"{"amount":1,"amount":99}"#,
            r#"{"a\u006dount":7}"#,
            r#"{"amount":[1,{"x":null}],"b":true}"#,
            r#"{"amount":{"b":1,"a":2}}"#,
            r#"{"x":"\ud83d\ude00","amount":-0}"#,
            r#"[1,2]"#,
            r#""text""#,
            "null",
            "12.5",
            " { \"amount\" : 3 } ",
            // Not JSON, or not JSON that `Value` accepts.
            "not json",
            r#"{"amount":1"#,
            r#"{"amount":1} x"#,
            r#"{"x":"lone \ud800","amount":1}"#,
            r#"{"x":1e999,"amount":1}"#,
            r#"{"amount":"\ud800"}"#,
        ] {
            let ours = field::<Value>(text.as_bytes(), "amount").map_err(|_| ());
            assert_eq!(ours, through_value(text, "amount"), "{text}");
        }
        // Bytes that are not UTF-8, inside a string or out: errors, as
        // they are for `Value`.
        for bytes in [
            &b"{\"x\":\"\xff\",\"amount\":1}"[..],
            b"{\"amount\":\"\xc3\"}",
            b"{\"amount\":1}\xff",
        ] {
            assert!(serde_json::from_slice::<Value>(bytes).is_err());
            assert!(field::<Value>(bytes, "amount").is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn borrows_from_the_input_when_it_can() {
        let text = br#"{"user":"u1","n":"a\"b"}"#;
        let user: &str = field(text, "user").unwrap().unwrap();
        assert_eq!(user, "u1");
        // An escaped string cannot be borrowed: a `&str` refuses it, a
        // `String` takes it.
        assert!(field::<&str>(text, "n").is_err());
        assert_eq!(field::<String>(text, "n").unwrap().unwrap(), "a\"b");
        let cow: Option<Cow<str>> = field(text, "missing").unwrap();
        assert!(cow.is_none());
    }

    #[test]
    fn a_field_of_the_wrong_type_is_an_error() {
        assert!(field::<f64>(br#"{"amount":"70"}"#, "amount").is_err());
        assert_eq!(
            field::<f64>(br#"{"amount":70}"#, "amount").unwrap(),
            Some(70.0)
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!(r#"{{"x":{}1{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        assert!(field::<Value>(deep.as_bytes(), "amount").is_err());
    }
}
