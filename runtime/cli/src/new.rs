//! `weir new NAME --lang LANG`: writes a buildable operator project (see
//! the weir-scaffold crate) and says how to build and try it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use weir_scaffold::{Lang, write_project};

#[derive(Args)]
pub struct NewArgs {
    /// The operator's name: lowercase letters, digits and '-'.
    name: String,
    /// The language: rust, c, js, python or go.
    #[arg(long, value_parser = parse_lang)]
    lang: Lang,
    /// Where to write the project [default: ./NAME].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The Weir checkout whose SDKs and WIT the project uses [default: the
    /// one this `weir` was built from].
    #[arg(long, env = "WEIR_CHECKOUT")]
    weir: Option<PathBuf>,
}

fn parse_lang(s: &str) -> Result<Lang, String> {
    s.parse()
        .map_err(|e: weir_scaffold::ScaffoldError| e.to_string())
}

/// The checkout this binary was built from (`runtime/cli` in it).
fn built_from() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn run(args: NewArgs) -> Result<std::process::ExitCode> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    let weir = args.weir.unwrap_or_else(built_from);
    let weir =
        std::path::absolute(&weir).with_context(|| format!("cannot resolve {}", weir.display()))?;
    // `a/b/../..` in a path written into Cargo.toml or go.mod reads badly.
    let weir = weir.canonicalize().unwrap_or(weir);
    let files = write_project(&dir, &args.name, args.lang, &weir)?;
    eprintln!(
        "weir new: wrote {} ({} project, {} files):",
        dir.display(),
        args.lang.name(),
        files.len()
    );
    for file in &files {
        eprintln!("  {}", file.display());
    }
    eprintln!(
        "build:  sh {}/build.sh\ntry:    weir run --module {}/{}.wasm --input {}/events.jsonl",
        dir.display(),
        dir.display(),
        args.name,
        dir.display()
    );
    Ok(std::process::ExitCode::SUCCESS)
}
