//! weir-scaffold: what `weir new NAME --lang LANG` writes, a buildable
//! operator project in Rust, C, JavaScript, Python or Go, from the
//! templates in `templates/` (compiled into the binary).
//!
//! Every project has the same sample operator (upper-case a string, count
//! per key), `build.sh` (the one command that makes `NAME.wasm`), sample
//! input `events.jsonl` with the output `weir run` must print for it
//! (`expected.jsonl`), and a README. The SDK is taken by path from a Weir
//! checkout (the SDKs are not published yet).
//!
//! It does not build anything: xtask builds every scaffold (`cargo xtask
//! guests`) and the tests run what it built. Key items: [`Lang`],
//! [`write_project`], [`ScaffoldError`].

use std::path::{Path, PathBuf};

/// A guest language `weir new` can scaffold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    C,
    Js,
    Python,
    Go,
}

impl Lang {
    pub const ALL: [Lang; 5] = [Lang::Rust, Lang::C, Lang::Js, Lang::Python, Lang::Go];

    /// The name `--lang` takes.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::C => "c",
            Lang::Js => "js",
            Lang::Python => "python",
            Lang::Go => "go",
        }
    }

    /// The language's name in prose, for the README.
    fn title(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::C => "C",
            Lang::Js => "JavaScript",
            Lang::Python => "Python",
            Lang::Go => "Go",
        }
    }

    /// The language's own files: (path in the project, template).
    fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Lang::Rust => &[
                ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
                ("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
                ("build.sh", include_str!("../templates/rust/build.sh")),
            ],
            Lang::C => &[
                ("operator.c", include_str!("../templates/c/operator.c")),
                ("build.sh", include_str!("../templates/c/build.sh")),
            ],
            Lang::Js => &[
                ("package.json", include_str!("../templates/js/package.json")),
                ("operator.js", include_str!("../templates/js/operator.js")),
                ("build.sh", include_str!("../templates/js/build.sh")),
            ],
            Lang::Python => &[
                ("app.py", include_str!("../templates/python/app.py")),
                ("build.sh", include_str!("../templates/python/build.sh")),
            ],
            Lang::Go => &[
                ("go.mod", include_str!("../templates/go/go.mod")),
                ("main.go", include_str!("../templates/go/main.go")),
                ("build.sh", include_str!("../templates/go/build.sh")),
            ],
        }
    }

    /// The guide of the language's SDK, relative to the checkout.
    fn guide(self) -> &'static str {
        match self {
            Lang::Rust => "sdk/rust/README.md",
            Lang::C => "sdk/c/README.md",
            Lang::Js => "sdk/js/README.md",
            Lang::Python => "sdk/python/README.md",
            Lang::Go => "sdk/go/README.md",
        }
    }
}

impl std::str::FromStr for Lang {
    type Err = ScaffoldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Lang::ALL
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| ScaffoldError::UnknownLang(s.to_string()))
    }
}

/// Files every project has, whatever its language.
const COMMON: &[(&str, &str)] = &[
    ("README.md", include_str!("../templates/common/README.md")),
    (
        "events.jsonl",
        include_str!("../templates/common/events.jsonl"),
    ),
    (
        "expected.jsonl",
        include_str!("../templates/common/expected.jsonl"),
    ),
];

/// Longest operator name accepted.
pub const MAX_NAME_CHARS: usize = 64;

/// Why a project was not written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScaffoldError {
    #[error(
        "invalid operator name `{name}`: {reason}; use lowercase letters, digits and '-', starting with a letter (e.g. my-operator)"
    )]
    InvalidName { name: String, reason: &'static str },
    #[error("unknown language `{0}`: choose one of rust, c, js, python, go")]
    UnknownLang(String),
    #[error("{} already exists and is not empty: choose another name or --dir", .0.display())]
    NotEmpty(PathBuf),
    #[error(
        "{} is not a Weir checkout (no sdk/ and wit/ in it): pass the checkout whose SDKs the project should use with --weir",
        .0.display()
    )]
    NotACheckout(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Checks that `name` can name a crate, a Go module, a file and an
/// operator alike.
pub fn validate_name(name: &str) -> Result<(), ScaffoldError> {
    let invalid = |reason| {
        Err(ScaffoldError::InvalidName {
            name: name.chars().take(MAX_NAME_CHARS).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return invalid("it is longer than 64 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return invalid("it does not start with a lowercase letter");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return invalid("it has a character other than a-z, 0-9 and '-'");
    }
    if name.ends_with('-') || name.contains("--") {
        return invalid("it has a '-' at the end or two in a row");
    }
    Ok(())
}

/// Writes the project of operator `name` in `lang` into `dir` (created;
/// it must not exist or be empty), its SDK taken from the Weir checkout
/// `weir`. Returns the files written, relative to `dir`.
pub fn write_project(
    dir: &Path,
    name: &str,
    lang: Lang,
    weir: &Path,
) -> Result<Vec<PathBuf>, ScaffoldError> {
    validate_name(name)?;
    if !weir.join("sdk").is_dir() || !weir.join("wit").is_dir() {
        return Err(ScaffoldError::NotACheckout(weir.to_path_buf()));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScaffoldError::Io { path, source }
    };
    if let Ok(mut entries) = std::fs::read_dir(dir)
        && entries.next().is_some()
    {
        return Err(ScaffoldError::NotEmpty(dir.to_path_buf()));
    }
    let source = lang
        .files()
        .iter()
        .map(|(path, _)| *path)
        .find(|p| {
            *p != "build.sh"
                && !p.ends_with(".toml")
                && !p.ends_with(".mod")
                && !p.ends_with(".json")
        })
        .unwrap_or("the source");
    let weir_text = weir.display().to_string();
    let render = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{ident}}", &name.replace('-', "_"))
            .replace("{{weir}}", &weir_text)
            .replace("{{language}}", lang.title())
            .replace("{{guide}}", lang.guide())
            .replace("{{source}}", &format!("`{source}`"))
    };
    let mut written = Vec::new();
    for (path, template) in COMMON.iter().chain(lang.files()) {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&full, render(template)).map_err(io(&full))?;
        written.push(PathBuf::from(path));
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkout() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn every_language_gets_its_sources_a_build_script_and_the_sample() {
        let tmp = tempfile::tempdir().unwrap();
        for lang in Lang::ALL {
            let dir = tmp.path().join(lang.name());
            let files = write_project(&dir, "my-op", lang, &checkout()).unwrap();
            for common in ["README.md", "events.jsonl", "expected.jsonl", "build.sh"] {
                assert!(
                    files.contains(&PathBuf::from(common)),
                    "{lang:?}: {files:?}"
                );
            }
            for file in &files {
                let text = std::fs::read_to_string(dir.join(file)).unwrap();
                assert!(
                    !text.contains("{{"),
                    "{lang:?} {}: a placeholder is left",
                    file.display()
                );
            }
            let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
            assert!(
                readme.contains("# my-op") && readme.contains(lang.guide()),
                "{readme}"
            );
        }
        let cargo = std::fs::read_to_string(tmp.path().join("rust/Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"my-op\""), "{cargo}");
        assert!(cargo.contains(&format!("path = \"{}/sdk/rust\"", checkout().display())));
        let build = std::fs::read_to_string(tmp.path().join("rust/build.sh")).unwrap();
        assert!(build.contains("release/my_op.wasm"), "{build}");
    }

    #[test]
    fn a_bad_name_an_unknown_language_or_a_used_folder_is_refused() {
        for (name, reason) in [
            ("", "empty"),
            ("My-Op", "lowercase"),
            ("1op", "lowercase letter"),
            ("my_op", "other than"),
            ("my op", "other than"),
            ("../escape", "lowercase letter"),
            ("op-", "at the end"),
            ("a--b", "two in a row"),
        ] {
            let err = validate_name(name).unwrap_err().to_string();
            assert!(
                err.contains(reason) && err.contains("e.g. my-operator"),
                "{name:?}: {err}"
            );
        }
        let long = "a".repeat(10_000);
        let err = validate_name(&long).unwrap_err().to_string();
        assert!(
            err.contains("longer than 64") && err.len() < 400,
            "{}",
            err.len()
        );
        assert!(validate_name("word-count2").is_ok());

        let err = "cobol".parse::<Lang>().unwrap_err().to_string();
        assert!(
            err.contains("cobol") && err.contains("rust, c, js, python, go"),
            "{err}"
        );

        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("mine.txt"), "keep me").unwrap();
        let err = write_project(tmp.path(), "op", Lang::Go, &checkout()).unwrap_err();
        assert!(matches!(err, ScaffoldError::NotEmpty(_)), "{err}");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("mine.txt")).unwrap(),
            "keep me"
        );

        let err = write_project(&tmp.path().join("x"), "op", Lang::Go, tmp.path()).unwrap_err();
        assert!(err.to_string().contains("--weir"), "{err}");
        assert!(!tmp.path().join("x").exists());
    }
}
