//! The language a component was written in, where its `producers` custom
//! sections say: toolchains record themselves there (rustc, clang,
//! ComponentizeJS, componentize-py's component-init). A hint for people
//! listing modules; nothing is decided by it.

use wasmparser::{KnownCustom, Parser, Payload};

/// `(field, value, language)` marks, most telling first: a JavaScript or
/// Python component also carries C and Rust marks (its interpreter, the
/// WASI adapter), a C one the adapter's `rustc`, and a Rust one that keeps
/// its core module's producers (built with `strip = "debuginfo"`)
/// wasi-libc's C11; only Rust guests carry `wit-bindgen-rust`.
const MARKS: &[(&str, &str, &str)] = &[
    ("language", "JavaScript", "JavaScript"),
    ("processed-by", "ComponentizeJS", "JavaScript"),
    ("processed-by", "componentize-py", "Python"),
    ("processed-by", "component-init-transform", "Python"),
    ("processed-by", "TinyGo", "Go"),
    ("language", "Go", "Go"),
    ("processed-by", "wit-bindgen-rust", "Rust"),
    ("language", "C99", "C"),
    ("language", "C11", "C"),
    ("language", "C17", "C"),
];

/// The language `bytes` (a component, or a core module) was written in,
/// when its producers sections tell; `None` when they do not or it does
/// not parse.
pub fn source_language(bytes: &[u8]) -> Option<&'static str> {
    let mut seen: Vec<(String, String)> = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let section = match payload {
            Ok(Payload::CustomSection(section)) => section,
            Ok(_) => continue,
            Err(_) => break,
        };
        let KnownCustom::Producers(fields) = section.as_known() else {
            continue;
        };
        for field in fields.into_iter().flatten() {
            for value in field.values.into_iter().flatten() {
                seen.push((field.name.to_string(), value.name.to_string()));
            }
        }
    }
    MARKS
        .iter()
        .find(|(field, value, _)| seen.iter().any(|(f, v)| f == field && v == value))
        .map(|(_, _, language)| *language)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_fixtures::guest_bytes;

    #[test]
    fn the_example_guests_say_their_language() {
        for (guest, language) in [
            ("word-count", "Rust"),
            ("c-word-count", "C"),
            ("js-word-count", "JavaScript"),
            ("python-word-count", "Python"),
        ] {
            assert_eq!(
                source_language(&guest_bytes(guest)),
                Some(language),
                "{guest}"
            );
        }
    }

    #[test]
    fn without_producers_or_parse_there_is_none() {
        let bare = wat::parse_str("(module (func (export \"f\")))").unwrap();
        assert_eq!(source_language(&bare), None);
        assert_eq!(source_language(b"\0asm\x01\0\0\0\x00\xff\xff"), None);
        assert_eq!(source_language(b"not wasm"), None);
    }
}
