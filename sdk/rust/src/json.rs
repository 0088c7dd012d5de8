//! Reading one field of a JSON object without building the object: the
//! fast path behind the SDK's `Event::json_field`, and behind the host's
//! `key_by: {field: …}` (`weir-types` compiles this same file). The other
//! fields are read past, checked as strictly as `serde_json::Value` would
//! check them, so a value is an error here exactly when it would be one
//! there.
//!
//! Two readings, one answer: a quick scan (`raw_field`) that handles the
//! JSON events are usually made of and says when it is not sure, and
//! serde_json's, which decides everything the scan leaves and words every
//! error.

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
        Ok(text) => {
            // The quick reading first; what it is not sure of, and every
            // error (so that each reads as before), the full one decides.
            match raw_field(text, name) {
                Some(None) => return Ok(None),
                Some(Some(raw)) => {
                    if let Ok(found) = value_in(raw) {
                        return Ok(Some(found));
                    }
                }
                None => {}
            }
            field_in(serde_json::Deserializer::from_str(text), name)
        }
        Err(_) => field_in(serde_json::Deserializer::from_slice(bytes), name),
    }
}

/// `raw`, the whole text of one JSON value, as `T`.
fn value_in<'a, T: Deserialize<'a>>(raw: &'a str) -> Result<T, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(raw);
    let value = T::deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// The quick reading of field `name` of the JSON text `text`: the raw text
/// of its value (`Some(Some(raw))`), or `Some(None)` when `text` is JSON
/// but not an object with that field. `None` when it is not sure: text
/// that is not JSON, or JSON it leaves to serde_json (a `\u` escape, a key
/// with any escape, a number with an exponent or more than 18 digits,
/// nesting deeper than 64, the name more than once). On what it accepts
/// it agrees with `serde_json::Value`, which accepts all of it. No
/// recursion, no allocation.
pub(crate) fn raw_field<'a>(text: &'a str, name: &str) -> Option<Option<&'a str>> {
    let mut s = Scan {
        b: text.as_bytes(),
        i: 0,
    };
    s.ws();
    if s.peek()? != b'{' {
        s.value()?;
        return s.at_end().then_some(None);
    }
    s.i += 1;
    s.ws();
    let mut found = None;
    if s.peek()? == b'}' {
        s.i += 1;
    } else {
        loop {
            let key = s.key()?;
            s.ws();
            s.eat(b':')?;
            s.ws();
            let start = s.i;
            s.value()?;
            if key == name.as_bytes() {
                if found.is_some() {
                    return None;
                }
                found = Some(&text[start..s.i]);
            }
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.at_end().then_some(found)
}

/// A cursor over JSON text for [`raw_field`]; every method answers `None`
/// when it is not sure (see there).
pub(crate) struct Scan<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) i: usize,
}

/// Which bytes a string's text runs over without a second look.
static PLAIN: [bool; 256] = {
    let mut plain = [true; 256];
    let mut c = 0;
    while c < 0x20 {
        plain[c] = false;
        c += 1;
    }
    plain[b'"' as usize] = false;
    plain[b'\\' as usize] = false;
    plain
};

/// Deepest nesting the quick reading follows (serde_json allows 127).
const MAX_DEPTH: u32 = 64;

impl<'a> Scan<'a> {
    pub(crate) fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    pub(crate) fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    pub(crate) fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    pub(crate) fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// Whether only whitespace is left.
    pub(crate) fn at_end(&mut self) -> bool {
        self.ws();
        self.i == self.b.len()
    }

    /// Steps over bytes that need no second look inside a string (not
    /// `"`, `\` or a control character): one table lookup each.
    fn plain(&mut self) {
        let (b, mut i) = (self.b, self.i);
        while i < b.len() && PLAIN[b[i] as usize] {
            i += 1;
        }
        self.i = i;
    }

    /// An object key without escapes: its bytes between the quotes.
    pub(crate) fn key(&mut self) -> Option<&'a [u8]> {
        if self.next()? != b'"' {
            return None;
        }
        let (b, start) = (self.b, self.i);
        self.plain();
        let end = self.i;
        (self.next()? == b'"').then(|| &b[start..end])
    }

    /// A string (the opening quote already read) whose escapes, if any,
    /// are single characters (`\"`, `\n`, …).
    fn string(&mut self) -> Option<()> {
        loop {
            self.plain();
            match self.next()? {
                b'"' => return Some(()),
                b'\\' => match self.next()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    _ => return None,
                },
                _ => return None,
            }
        }
    }

    /// A number (its first byte already read) of at most 18 digits,
    /// without an exponent.
    fn number(&mut self, first: u8) -> Option<()> {
        let mut digits = 0;
        let lead = if first == b'-' { self.next()? } else { first };
        if !lead.is_ascii_digit() {
            return None;
        }
        digits += 1;
        if lead != b'0' {
            while let Some(b'0'..=b'9') = self.peek() {
                self.i += 1;
                digits += 1;
            }
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            let before = digits;
            while let Some(b'0'..=b'9') = self.peek() {
                self.i += 1;
                digits += 1;
            }
            if digits == before {
                return None;
            }
        }
        match self.peek() {
            Some(b'e' | b'E' | b'0'..=b'9') => None,
            _ => (digits <= 18).then_some(()),
        }
    }

    fn literal(&mut self, rest: &[u8]) -> Option<()> {
        let end = self.i + rest.len();
        (self.b.get(self.i..end)? == rest).then(|| self.i = end)
    }

    /// One value of any kind, nested ones included, read in a loop (a
    /// bit per level says object or array).
    pub(crate) fn value(&mut self) -> Option<()> {
        let mut objects: u64 = 0;
        let mut depth = 0u32;
        loop {
            // A value.
            self.ws();
            let mut opened = false;
            match self.next()? {
                c @ (b'{' | b'[') => {
                    self.ws();
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.i += 1;
                    } else {
                        depth += 1;
                        if depth > MAX_DEPTH {
                            return None;
                        }
                        objects = (objects << 1) | u64::from(c == b'{');
                        if c == b'{' {
                            self.key()?;
                            self.ws();
                            self.eat(b':')?;
                        }
                        opened = true;
                    }
                }
                b'"' => self.string()?,
                b't' => self.literal(b"rue")?,
                b'f' => self.literal(b"alse")?,
                b'n' => self.literal(b"ull")?,
                c @ (b'-' | b'0'..=b'9') => self.number(c)?,
                _ => return None,
            }
            if opened {
                continue;
            }
            // After a value: close what ends here, then a comma (and a
            // key in an object) before the next value.
            loop {
                if depth == 0 {
                    return Some(());
                }
                self.ws();
                let in_object = objects & 1 == 1;
                match self.next()? {
                    b',' => {
                        if in_object {
                            self.ws();
                            self.key()?;
                            self.ws();
                            self.eat(b':')?;
                        }
                        break;
                    }
                    b'}' if in_object => {}
                    b']' if !in_object => {}
                    _ => return None,
                }
                objects >>= 1;
                depth -= 1;
            }
        }
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

    /// Checks `field` and the quick scan against `serde_json::Value` on
    /// `text`; says whether the quick scan was sure.
    fn agrees(text: &str, name: &str) -> bool {
        let ours = field::<Value>(text.as_bytes(), name).map_err(|_| ());
        let theirs = through_value(text, name);
        assert_eq!(ours, theirs, "{text:?}");
        match raw_field(text, name) {
            None => false,
            Some(found) => {
                // What the scan is sure of, serde_json accepts, and the
                // raw text is the field's value.
                let found = found.map(|raw| serde_json::from_str::<Value>(raw).unwrap());
                assert_eq!(Ok(found), theirs, "{text:?}");
                true
            }
        }
    }

    #[test]
    fn the_quick_scan_reads_plain_events_and_leaves_the_rest_to_serde() {
        for text in [
            r#"{"user":"u1234","amount":42,"ts":1700000000123,"region":"eu-west-1","note":"lorem-ipsum-dolor"}"#,
            r#"{"amount":-0.5,"a":[],"b":{},"c":[{"d":[true,false,null]}],"e":"x\"y\n"}"#,
            " {\t\"amount\" :\r\n7 , \"z\" : [ 1 , { } ] } ",
            r#"{"x":"née ☃","amount":0}"#,
            r#"{}"#,
            r#"[1,"a",{"amount":1}]"#,
            r#""amount""#,
            "-12.25",
            "true",
        ] {
            assert!(
                agrees(text, "amount"),
                "the quick scan should be sure of {text}"
            );
        }
        // Sure that these are not JSON would need serde_json's wording:
        // the scan leaves them (and what it does not follow) to serde_json.
        for text in [
            r#"{"amount":1e3}"#,
            r#"{"amount":12345678901234567890}"#,
            r#"{"amount":1,"amount":2}"#,
            r#"{"amount":"x","amount":2}"#,
            r#"{"a\u006dount":7}"#,
            r#"{"x":"\u00e9","amount":1}"#,
            r#"{"x":{"k\n":1},"amount":1}"#,
            r#"{"amount":01}"#,
            r#"{"amount":1.}"#,
            r#"{"amount":-}"#,
            r#"{"amount":.5}"#,
            r#"{"amount":+1}"#,
            r#"{"amount":1,}"#,
            r#"{"amount":[1,]}"#,
            r#"{"amount":[1}"#,
            r#"{"amount":{"a"}}"#,
            r#"{"amount":{"a":1]}"#,
            r#"{"amount" 1}"#,
            r#"{amount:1}"#,
            r#"{"amount":tru}"#,
            r#"{"amount":nul}"#,
            "{\"x\":\"tab\there\",\"amount\":1}",
            r#"{"amount":1} x"#,
            r#"{"amount":1"#,
            r#"{"amount":"#,
            "",
            "   ",
        ] {
            assert!(
                !agrees(text, "amount"),
                "the quick scan should leave {text}"
            );
        }
    }

    #[test]
    fn the_quick_scan_follows_nesting_to_its_limit_then_hands_over() {
        for depth in [1, 63, 64, 65, 126, 127, 128, 129] {
            let text = format!(
                r#"{{"x":{}1{},"amount":2}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            );
            assert_eq!(
                agrees(&text, "amount"),
                depth <= MAX_DEPTH as usize,
                "depth {depth}"
            );
            let objects = format!(
                r#"{{"x":{}1{},"amount":2}}"#,
                r#"{"a":"#.repeat(depth),
                "}".repeat(depth)
            );
            assert_eq!(
                agrees(&objects, "amount"),
                depth <= MAX_DEPTH as usize,
                "depth {depth}"
            );
        }
    }

    #[test]
    fn mangled_events_read_the_same_both_ways() {
        // Every small corruption of a few events (a byte dropped, doubled
        // or replaced by one that matters to JSON), read both ways.
        let bases = [
            r#"{"user":"u1","amount":42,"ts":170,"n":[1,{"a":null}],"s":"a\"b"}"#,
            r#"{"amount":-0.5,"x":{"amount":3},"y":[true,false],"z":"é"}"#,
        ];
        let tokens = b"{}[]:,\"\\ -.0123456789eEtrufalsn\t\x01";
        let mut sure = 0;
        let mut cases = 0;
        for base in bases {
            let b = base.as_bytes();
            for at in 0..b.len() {
                let mut variants = vec![
                    [&b[..at], &b[at + 1..]].concat(),
                    [&b[..at], &b[at..at + 1], &b[at..]].concat(),
                ];
                for &t in tokens {
                    variants.push([&b[..at], &[t][..], &b[at + 1..]].concat());
                }
                for v in variants {
                    let Ok(text) = std::str::from_utf8(&v) else {
                        continue;
                    };
                    cases += 1;
                    sure += usize::from(agrees(text, "amount"));
                }
            }
        }
        assert!(cases > 1000 && sure > 100, "{sure} of {cases} read quickly");
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!(r#"{{"x":{}1{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        assert!(field::<Value>(deep.as_bytes(), "amount").is_err());
    }
}
