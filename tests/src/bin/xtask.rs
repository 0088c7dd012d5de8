//! `cargo xtask <command>`: the one build entry point for guests, tests and
//! the demo.

#![allow(clippy::print_stdout)]
//!
//! - `guests`: builds every guest from source into `target/guests`: the
//!   Rust ones (examples and test fixtures) for wasm32-wasip2, adding the
//!   target if missing, and the Python ones with componentize-py (installed
//!   into `target/py-venv` from PyPI on first use).
//! - `test`: `guests` and `kafka`, then every workspace test (nextest
//!   when installed); up to three tests that fail are run once more and,
//!   when they pass then, reported as flaky (`target/flaky-tests.txt`)
//!   instead of failing the run; then `api-fuzz`.
//! - `api-fuzz`: schemathesis (installed into `target/api-fuzz-venv` from
//!   PyPI on first use) against a live `weir serve`'s `/v1/openapi.json`,
//!   bounded in examples and time: no answer may be a 5xx, and every
//!   answer must match the status, content type and schema the document
//!   gives it. `test` runs it after the workspace tests.
//! - `kafka`: copies the Apache Kafka broker the Kafka tests start
//!   (`tests/kafka/pom.xml`) with its dependencies into `target/kafka/libs`
//!   through Maven, once (skipped when the jars are there).
//! - `demo`: the Rust guests, then a running Weir doing its job: starts
//!   `weir serve` (data in `target/demo/weir-data`), uploads `split-words`
//!   and `word-count`, applies and starts the word-count topology
//!   (`guest-examples/topologies/word-count.yaml`), produces the sample
//!   text, prints the top counts and the URLs to look at, and keeps serving
//!   until Ctrl-C (when stdin is not a terminal it stops at once).
//! - `console`: the web console (`runtime/console`, TypeScript) built with
//!   Vite into `target/console`, which `weir serve` embeds when it is
//!   next built; `console-test`: its browser test (Playwright driving
//!   Debian's Chromium) against a real `weir serve`. `test` and `demo` build
//!   the console when npm is installed, and `test` runs its browser test.
//! - `sdk-packages`: the SDKs as packages in `target/sdk-packages` (a
//!   Python wheel, an npm tarball, the Rust crate from `cargo package`,
//!   the C SDK as a static library with `weir.h` and a pkg-config file);
//!   `guests` builds them for the `weir new` scaffolds, which install them.
//! - `bench`: every guest and a release build, then every workload of
//!   `weir-bench` in turn with the sizes of `docs/benchmarks.md`; the
//!   output goes to the terminal and to `target/bench/<workload>.txt`
//!   (its `RESULT` records as JSON beside it), and the `RESULT` lines of
//!   all of them are printed again at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use weir_tests::{guest_dir, repo_root};

const GUEST_TARGET: &str = "wasm32-wasip2";
const GUEST_WORKSPACES: &[&str] = &["guest-examples/rust", "tests/fixtures"];
/// componentize-py, pinned: it turns Python guests into components.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
/// schemathesis, pinned: it fuzzes the API from its OpenAPI document;
/// with hypothesis pinned below the versions that parse a whole module to
/// describe a lambda, which CPython 3.11.7's `ast.parse` fails with
/// "AST constructor recursion depth mismatch" (a SystemError that ends the
/// run).
const API_FUZZ_PACKAGES: &[&str] = &["schemathesis==4.32.5", "hypothesis==6.131.0"];
/// The checks schemathesis makes of every answer.
const API_FUZZ_CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";
/// Time schemathesis may take over its phases (coverage, fuzzing,
/// stateful), seconds; and examples per operation in each.
const API_FUZZ_SECONDS: &str = "60";
const API_FUZZ_EXAMPLES: &str = "25";

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn ensure_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup not found: install the wasm32-wasip2 target by hand")?;
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == GUEST_TARGET)
    {
        eprintln!("xtask: adding the {GUEST_TARGET} target");
        run(Command::new("rustup").args(["target", "add", GUEST_TARGET]))?;
    }
    Ok(())
}

/// Every guest: Rust, Python, C, JavaScript and Go, and the polyglot
/// fixtures.
fn build_guests() -> Result<()> {
    build_rust_guests()?;
    build_python_guests()?;
    build_c_guests()?;
    build_js_guests()?;
    build_go_guests()?;
    build_polyglot_fixtures()?;
    build_scaffolds()
}

fn build_rust_guests() -> Result<()> {
    ensure_target()?;
    let root = repo_root();
    let target_dir = root.join("target/guests");
    for ws in GUEST_WORKSPACES {
        eprintln!("xtask: building guests in {ws}");
        run(cargo()
            .current_dir(root.join(ws))
            .args(["build", "--release", "--locked", "--target", GUEST_TARGET])
            .arg("--target-dir")
            .arg(&target_dir))?;
    }
    Ok(())
}

/// The newest modification time of the files under `dirs`.
fn newest(dirs: &[std::path::PathBuf]) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut stack: Vec<std::path::PathBuf> = dirs.to_vec();
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        } else if let Ok(modified) = meta.modified() {
            newest = newest.max(Some(modified));
        }
    }
    newest
}

/// Builds the Python guests (`guest-examples/python/*`) with
/// componentize-py from a virtualenv in `target/py-venv`, into the guest
/// directory as `python_<name>.wasm`. Skips guests whose component is newer
/// than their sources, the SDK and the WIT.
fn build_python_guests() -> Result<()> {
    let root = repo_root();
    let venv = root.join("target/py-venv");
    let tool = venv.join("bin/componentize-py");
    if !tool.exists() {
        eprintln!(
            "xtask: installing {COMPONENTIZE_PY} into {}",
            venv.display()
        );
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", COMPONENTIZE_PY]))?;
    }
    let out_dir = guest_dir();
    std::fs::create_dir_all(&out_dir)?;
    let sdk = root.join("sdk/python");
    // The Python SDK speaks contract 0.2.0 (inputs, side outputs, TTL).
    let wit = root.join("wit/0.2.0");
    let mut guests: Vec<_> = std::fs::read_dir(root.join("guest-examples/python"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("app.py").exists())
        .collect();
    guests.sort();
    for guest in guests {
        let name = guest
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .replace('-', "_");
        let out = out_dir.join(format!("python_{name}.wasm"));
        let built = std::fs::metadata(&out).and_then(|m| m.modified()).ok();
        let sources = newest(&[guest.clone(), sdk.clone(), wit.clone()]);
        if built.is_some() && sources.is_some() && built > sources {
            continue;
        }
        eprintln!("xtask: building Python guest {}", guest.display());
        run(Command::new(&tool)
            .arg("-d")
            .arg(&wit)
            .args(["-w", "operator", "componentize", "app", "-p"])
            .arg(&guest)
            .arg("-p")
            .arg(&sdk)
            .arg("-o")
            .arg(&out))?;
    }
    Ok(())
}

/// Whether `out` exists and is newer than every file under `sources`.
fn up_to_date(out: &Path, sources: &[PathBuf]) -> bool {
    let built = std::fs::metadata(out).and_then(|m| m.modified()).ok();
    let newest = newest(sources);
    built.is_some() && newest.is_some() && built > newest
}

/// The example directories under `dir` that hold a `file`, sorted.
fn guests_in(dir: &Path, file: &str) -> Result<Vec<PathBuf>> {
    let mut guests: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join(file).exists())
        .collect();
    guests.sort();
    Ok(guests)
}

/// `<prefix>_<dir name with '-' → '_'>.wasm` in the guest directory.
fn guest_output(prefix: &str, guest: &Path) -> PathBuf {
    let name = guest
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .replace('-', "_");
    guest_dir().join(format!("{prefix}_{name}.wasm"))
}

/// Debian's clang that targets wasm32-wasi (see the README's prerequisites).
const CLANG: &str = "clang-14";

/// How C guests are compiled: for speed, not size (`-Os` made word-count
/// 1.3× slower for 10% fewer bytes); `-mbulk-memory` makes `memcpy` one
/// `memory.copy` instead of wasi-libc's byte loop (wasmtime runs it by
/// default). The repository's guests add `-flto` (so the SDK's small
/// helpers inline into the operator); the C SDK package's library is
/// compiled without it, as its objects must link with any clang.
const C_FLAGS: &[&str] = &[
    "--target=wasm32-wasi",
    "-O2",
    "-mbulk-memory",
    "-std=c11",
    "-Wall",
    "-Wextra",
    "-Werror",
];

/// Writes the C bindings of `wit`'s `operator` world (`operator.h`,
/// `operator.c`, `operator_component_type.o`) into `out` with the
/// `wit-bindgen-c` library, as `wit-bindgen c` would; files are rewritten
/// only when their bytes change, so timestamps stay meaningful.
fn generate_c_bindings(wit: &Path, out: &Path) -> Result<()> {
    use wit_bindgen_core::wit_parser::Resolve;
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve
        .push_dir(wit)
        .with_context(|| format!("cannot read the WIT in {}", wit.display()))?;
    let world = resolve.select_world(&[pkg], Some("operator"))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)?;
    std::fs::create_dir_all(out)?;
    for (name, bytes) in files.iter() {
        let path = out.join(name);
        if std::fs::read(&path).ok().as_deref() != Some(bytes) {
            std::fs::write(&path, bytes)?;
        }
    }
    Ok(())
}

/// The contract the C and JavaScript SDKs speak by default: `wit/0.2.0`.
/// Guests built against `wit/` (0.1.0, and the wrong-WIT fixtures made
/// from it) prove that the SDKs still serve a 0.1.0 host shape.
const SDK_WIT: &str = "wit/0.2.0";

/// The shape of the contract a C or JavaScript guest is built against:
/// 0.1.0 has no input index, side outputs or TTL, so the C SDK is
/// compiled without them (`WEIR_CONTRACT_0_1`) and the JavaScript SDK's
/// imports name `@0.1.0`.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    V0_1,
    V0_2,
}

/// Compiles C `sources` against the bindings of `wit` (of `shape`) into a
/// core module with clang, then wraps it into a component with
/// `wit-component` and the WASI preview1 reactor adapter (wasi-libc
/// speaks preview1).
fn build_c_component(wit: &Path, shape: Shape, sources: &[PathBuf], out: &Path) -> Result<()> {
    let root = repo_root();
    let scratch = root
        .join("target/c-build")
        .join(out.file_stem().and_then(|n| n.to_str()).unwrap_or("guest"));
    let bindings = scratch.join("bindings");
    generate_c_bindings(wit, &bindings)?;
    let core = scratch.join("core.wasm");
    let sdk = root.join("sdk/c");
    run(Command::new(CLANG)
        .args(C_FLAGS)
        .args(["-flto", "-mexec-model=reactor", "-Wl,--strip-debug"])
        .args((shape == Shape::V0_1).then_some("-DWEIR_CONTRACT_0_1"))
        .arg("-I")
        .arg(&bindings)
        .arg("-I")
        .arg(&sdk)
        .arg("-o")
        .arg(&core)
        .arg(bindings.join("operator.c"))
        .arg(bindings.join("operator_component_type.o"))
        .arg(sdk.join("weir.c"))
        .arg(sdk.join("weir_unicode.c"))
        .args(sources))
    .with_context(|| {
        format!("building a C guest needs {CLANG} with the wasm32-wasi sysroot: see the README's prerequisites")
    })?;
    componentize(&std::fs::read(&core)?, &core, out)
}

/// Makes a component of the core `module` (read from `core`, which errors
/// name) with `wit-component` and the WASI preview1 reactor adapter, into
/// `out`. The module carries its world (a `component-type` section).
fn componentize(module: &[u8], core: &Path, out: &Path) -> Result<()> {
    let component = wit_component::ComponentEncoder::default()
        .module(module)?
        .adapter(
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .validate(true)
        .encode()
        .with_context(|| format!("cannot make a component of {}", core.display()))?;
    std::fs::write(out, component)?;
    Ok(())
}

/// The C sources of a guest directory, sorted.
fn c_sources(guest: &Path) -> Result<Vec<PathBuf>> {
    let mut sources: Vec<_> = std::fs::read_dir(guest)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();
    Ok(sources)
}

/// Builds the C guests (`guest-examples/c/*`, each an `operator.c`) into
/// the guest directory as `c_<name>.wasm`. Skips guests whose component is
/// newer than their sources, the SDK and the WIT.
fn build_c_guests() -> Result<()> {
    let root = repo_root();
    let wit = root.join(SDK_WIT);
    std::fs::create_dir_all(guest_dir())?;
    for guest in guests_in(&root.join("guest-examples/c"), "operator.c")? {
        let out = guest_output("c", &guest);
        if up_to_date(&out, &[guest.clone(), root.join("sdk/c"), wit.clone()]) {
            continue;
        }
        eprintln!("xtask: building C guest {}", guest.display());
        build_c_component(&wit, Shape::V0_2, &c_sources(&guest)?, &out)?;
    }
    Ok(())
}

/// componentize-js and its lock live in `guest-examples/js`; they are
/// installed (`npm ci`) into `target/js-tools` when the lock changes.
fn js_tools() -> Result<PathBuf> {
    let root = repo_root();
    let tools = root.join("target/js-tools");
    let tool = tools.join("node_modules/.bin/componentize-js");
    let manifest = root.join("guest-examples/js/package.json");
    let lock = root.join("guest-examples/js/package-lock.json");
    if !tool.exists()
        || !up_to_date(
            &tools.join("package-lock.json"),
            &[manifest.clone(), lock.clone()],
        )
    {
        eprintln!("xtask: installing componentize-js into {}", tools.display());
        std::fs::create_dir_all(&tools)?;
        std::fs::copy(&manifest, tools.join("package.json"))?;
        std::fs::copy(&lock, tools.join("package-lock.json"))?;
        run(Command::new("npm").current_dir(&tools).args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ]))
        .context(
            "installing componentize-js needs Node.js and npm: see the README's prerequisites",
        )?;
    }
    Ok(tool)
}

/// Turns the JavaScript module `source` into a component for `wit`'s
/// `operator` world with componentize-js (StarlingMonkey), leaving out
/// the `wasi:http` imports a Weir host does not serve.
fn build_js_component(tool: &Path, wit: &Path, source: &Path, out: &Path) -> Result<()> {
    run(Command::new(tool)
        .arg(source)
        .arg("--wit")
        .arg(wit)
        .args([
            "--world-name",
            "operator",
            "--disable",
            "http",
            "fetch-event",
            "-o",
        ])
        .arg(out))
}

/// Builds the JavaScript guests (`guest-examples/js/*`, each an
/// `operator.js` importing `sdk/js/weir.js`) into the guest directory as
/// `js_<name>.wasm`. Skips guests whose component is newer than their
/// sources, the SDK and the WIT.
fn build_js_guests() -> Result<()> {
    let root = repo_root();
    let wit = root.join(SDK_WIT);
    std::fs::create_dir_all(guest_dir())?;
    let guests = guests_in(&root.join("guest-examples/js"), "operator.js")?;
    let mut tool = None;
    for guest in guests {
        let out = guest_output("js", &guest);
        if up_to_date(&out, &[guest.clone(), root.join("sdk/js"), wit.clone()]) {
            continue;
        }
        let tool = match &tool {
            Some(t) => t,
            None => tool.insert(js_tools()?),
        };
        eprintln!("xtask: building JavaScript guest {}", guest.display());
        build_js_component(tool, &wit, &guest.join("operator.js"), &out)?;
    }
    Ok(())
}

/// The contract with one deliberate change, for fixtures that must be
/// refused: `wit/` copied into `target/wrong-wit/<name>` with `from`
/// replaced by `to` (which must occur), rewritten only when it changes.
fn wrong_wit(name: &str, from: &str, to: &str) -> Result<PathBuf> {
    let root = repo_root();
    let out = root.join("target/wrong-wit").join(name);
    std::fs::create_dir_all(&out)?;
    let mut replaced = false;
    for entry in std::fs::read_dir(root.join("wit"))? {
        let path = entry?.path();
        if path.extension().is_none_or(|x| x != "wit") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        replaced |= text.contains(from);
        let text = text.replace(from, to);
        let dest = out.join(path.file_name().unwrap_or_default());
        if std::fs::read_to_string(&dest).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&dest, text)?;
        }
    }
    if !replaced {
        bail!("wrong-WIT fixture {name}: `{from}` no longer occurs in wit/; update xtask");
    }
    Ok(out)
}

/// The JavaScript sources' side of building against `wit/` (0.1.0): the
/// SDK names its contract version in its imports (`…@0.2.0'`).
const JS_TO_0_1: (&str, &str) = ("@0.2.0'", "@0.1.0'");

/// The WIT changes of the wrong-WIT fixtures, each: name, WIT text
/// replaced, its replacement, and the same change in the JavaScript
/// sources (which name the version in their imports). `version` moves the
/// package to a version the host has never served (the handler export then
/// has a name it does not know); `signature`
/// narrows `counter-add`'s delta (an import the host serves differently).
const WRONG_WITS: &[(&str, &str, &str, (&str, &str))] = &[
    (
        "version",
        "weir:operator@0.1.0",
        "weir:operator@0.9.0",
        ("@0.2.0'", "@0.9.0'"),
    ),
    (
        "signature",
        "counter-add: func(name: string, delta: u64);",
        "counter-add: func(name: string, delta: u32);",
        JS_TO_0_1,
    ),
];

/// The polyglot fixtures of `tests/fixtures-polyglot/counter` (an operator
/// that counts its events through the host's `counter-add` and forwards
/// them, in C and JavaScript): `c_counter.wasm` and `js_counter.wasm`
/// against `wit/` (contract 0.1.0, so the SDKs' 0.1.0 shape is built and
/// run), and `c_wrong_<change>.wasm`, `js_wrong_<change>.wasm`
/// against each WIT of [`WRONG_WITS`], which the host must refuse; and
/// `c_large_amounts_0_1.wasm`, the C `large-amounts` example against
/// `wit/`, whose side output and TTL the 0.1.0 SDK must refuse at init.
fn build_polyglot_fixtures() -> Result<()> {
    let root = repo_root();
    let large = root.join("guest-examples/c/large-amounts");
    let out = guest_dir().join("c_large_amounts_0_1.wasm");
    if !up_to_date(&out, &[large.clone(), root.join("sdk/c"), root.join("wit")]) {
        eprintln!("xtask: building fixture {}", out.display());
        build_c_component(&root.join("wit"), Shape::V0_1, &c_sources(&large)?, &out)?;
    }
    let rel = "tests/fixtures-polyglot/counter";
    let guest = root.join(rel);
    let c_sdk = root.join("sdk/c");
    let js_sdk = root.join("sdk/js");
    let mut builds = vec![("counter".to_string(), root.join("wit"), JS_TO_0_1)];
    for (name, from, to, js_change) in WRONG_WITS {
        builds.push((
            format!("wrong_{name}"),
            wrong_wit(name, from, to)?,
            *js_change,
        ));
    }
    for (name, wit, (js_from, js_to)) in builds {
        let c_out = guest_dir().join(format!("c_{name}.wasm"));
        if !up_to_date(&c_out, &[guest.clone(), c_sdk.clone(), wit.clone()]) {
            eprintln!("xtask: building fixture {}", c_out.display());
            build_c_component(&wit, Shape::V0_1, &c_sources(&guest)?, &c_out)?;
        }
        let js_out = guest_dir().join(format!("js_{name}.wasm"));
        if up_to_date(&js_out, &[guest.clone(), js_sdk.clone(), wit.clone()]) {
            continue;
        }
        eprintln!("xtask: building fixture {}", js_out.display());
        // A copy of the sources with the JavaScript side of the change,
        // laid out as in the repository so relative imports still resolve.
        let copy = root.join("target/fixtures-polyglot").join(&name);
        for (dir, sub) in [(&guest, rel), (&js_sdk, "sdk/js")] {
            std::fs::create_dir_all(copy.join(sub))?;
            for entry in std::fs::read_dir(dir)? {
                let path = entry?.path();
                if path.extension().is_none_or(|x| x != "js") {
                    continue;
                }
                let text = std::fs::read_to_string(&path)?.replace(js_from, js_to);
                std::fs::write(
                    copy.join(sub).join(path.file_name().unwrap_or_default()),
                    text,
                )?;
            }
        }
        build_js_component(
            &js_tools()?,
            &wit,
            &copy.join(rel).join("operator.js"),
            &js_out,
        )?;
    }
    Ok(())
}

/// `cargo xtask build-c DIR OUT`: one C operator (every `.c` in DIR)
/// into the component OUT, against this checkout's `wit/0.2.0` and `sdk/c`.
fn build_c_cli(args: &[String]) -> Result<()> {
    let [dir, out] = args else {
        bail!("usage: cargo xtask build-c <dir with .c files> <out.wasm>");
    };
    let dir = std::path::absolute(dir)?;
    let sources = c_sources(&dir)?;
    if sources.is_empty() {
        bail!("no .c file in {}", dir.display());
    }
    build_c_component(
        &repo_root().join(SDK_WIT),
        Shape::V0_2,
        &sources,
        &std::path::absolute(out)?,
    )
}

/// `cargo xtask build-js FILE OUT`: one JavaScript operator module into
/// the component OUT, against this checkout's `wit/0.2.0`.
fn build_js_cli(args: &[String]) -> Result<()> {
    let [file, out] = args else {
        bail!("usage: cargo xtask build-js <operator.js> <out.wasm>");
    };
    build_js_component(
        &js_tools()?,
        &repo_root().join(SDK_WIT),
        &std::path::absolute(file)?,
        &std::path::absolute(out)?,
    )
}

/// `sdk/c/weir_unicode.c`, generated from Rust's own `char` methods by
/// [`unicode_tables`] so that C operators split and lowercase text exactly
/// as Rust operators do (`cargo xtask unicode-tables` rewrites it).
const UNICODE_TABLES: &str = "sdk/c/weir_unicode.c";

/// Inclusive ranges `[first, last]` of code points.
type Ranges = Vec<(u32, u32)>;

/// Ranges `[start, end]` of the chars for which `pred` holds.
fn char_ranges(pred: impl Fn(char) -> bool) -> Ranges {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for c in (0..=0x10FFFFu32)
        .filter_map(char::from_u32)
        .filter(|&c| pred(c))
    {
        let c = c as u32;
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == c => *end = c,
            _ => ranges.push((c, c)),
        }
    }
    ranges
}

/// The text of [`UNICODE_TABLES`]: white space, one-char lowercase
/// mappings (as runs of `start, end, stride, delta`), the chars whose
/// lowercase is longer, and the two properties Rust's final-sigma rule
/// reads (Case_Ignorable, and Cased among the rest), found by asking
/// `str::to_lowercase` where `Σ` becomes `ς`.
fn unicode_tables() -> String {
    use std::fmt::Write;
    let (ignorable, cased) = sigma_context();
    let mut out = String::from(
        "/* Generated by `cargo xtask unicode-tables` from Rust's char methods; do not edit. */\n\
         #include \"weir_unicode.h\"\n\n",
    );
    let mut table = |name: &str, ranges: Ranges| {
        let _ = writeln!(out, "const weir_range weir_{name}[] = {{");
        for (a, b) in &ranges {
            let _ = writeln!(out, "    {{0x{a:X}, 0x{b:X}}},");
        }
        let _ = writeln!(
            out,
            "}};\nconst size_t weir_{name}_len = {};\n",
            ranges.len()
        );
    };
    table("white_space", char_ranges(char::is_whitespace));
    table("case_ignorable", ignorable);
    table("cased", cased);
    let (runs, multi) = lower_runs();
    let _ = writeln!(out, "const weir_lower_run weir_lower_runs[] = {{");
    for (start, end, stride, delta) in &runs {
        let _ = writeln!(out, "    {{0x{start:X}, 0x{end:X}, {stride}, {delta}}},");
    }
    let _ = writeln!(
        out,
        "}};\nconst size_t weir_lower_runs_len = {};\n",
        runs.len()
    );
    let _ = writeln!(out, "const weir_lower_special weir_lower_specials[] = {{");
    for (c, text) in &multi {
        let bytes: String = text.bytes().map(|b| format!("\\x{b:02X}")).collect();
        let _ = writeln!(out, "    {{0x{c:X}, \"{bytes}\", {}}},", text.len());
    }
    let _ = writeln!(
        out,
        "}};\nconst size_t weir_lower_specials_len = {};",
        multi.len()
    );
    out
}

/// Runs `(start, end, stride, delta)` and longer mappings `(char, text)`.
type LowerRuns = (Vec<(u32, u32, u32, i64)>, Vec<(u32, String)>);

/// Rust's lowercase mappings: the one-char ones as runs with a constant
/// stride (1 or 2) and delta, and the chars whose lowercase is longer,
/// with that text. Σ is left out (the SDKs apply the final-sigma rule).
fn lower_runs() -> LowerRuns {
    let mut runs: Vec<(u32, u32, u32, i64)> = Vec::new();
    let mut multi = Vec::new();
    for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
        let lower: Vec<char> = c.to_lowercase().collect();
        if c == 'Σ' || lower == [c] {
            continue;
        }
        if lower.len() != 1 {
            multi.push((c as u32, lower.iter().collect::<String>()));
            continue;
        }
        let (c, delta) = (c as u32, lower[0] as i64 - c as i64);
        match runs.last_mut() {
            Some((start, end, stride, d))
                if *d == delta && (c - *end == *stride || (*start == *end && c - *end <= 2)) =>
            {
                *stride = c - *end;
                *end = c;
            }
            _ => runs.push((c, c, 1, delta)),
        }
    }
    (runs, multi)
}

/// What Rust's final-sigma rule reads: the ranges of Case_Ignorable, and
/// of Cased minus Case_Ignorable. Rust does not expose either, so they are
/// found by asking `str::to_lowercase`: "cΣ" ends in ς iff c is cased and
/// not case-ignorable; "AcΣ" iff c is case-ignorable or cased.
fn sigma_context() -> (Ranges, Ranges) {
    let last = |s: String| s.chars().last().unwrap_or_default();
    let cased_not_ignorable = |c: char| last(format!("{c}Σ").to_lowercase()) == 'ς';
    let ignorable =
        |c: char| last(format!("A{c}Σ").to_lowercase()) == 'ς' && !cased_not_ignorable(c);
    (char_ranges(ignorable), char_ranges(cased_not_ignorable))
}

/// `sdk/js/weir_unicode.js`: the final-sigma tables for the JavaScript
/// SDK (StarlingMonkey's `toLowerCase` maps Σ to σ everywhere).
const UNICODE_TABLES_JS: &str = "sdk/js/weir_unicode.js";

fn unicode_tables_js() -> String {
    let (ignorable, cased) = sigma_context();
    let list = |ranges: Ranges| {
        ranges
            .iter()
            .map(|(a, b)| format!("0x{a:x},0x{b:x}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "// Generated by `cargo xtask unicode-tables` from Rust's char methods; do not edit.\n\
         // Ranges as flat [first, last, first, last, ...] lists.\n\n\
         /** Case_Ignorable. */\n\
         export const CASE_IGNORABLE = [{}];\n\n\
         /** Cased, minus Case_Ignorable. */\n\
         export const CASED = [{}];\n",
        list(ignorable),
        list(cased)
    )
}

// ---- Go guests (issue 23) ---------------------------------------------------

/// `sdk/go/unicode_tables.go`: the same tables as [`UNICODE_TABLES`] for
/// the Go SDK (Go's `strings.ToLower` has neither the full mapping nor the
/// final-sigma rule, and its Unicode version may differ from Rust's).
const UNICODE_TABLES_GO: &str = "sdk/go/unicode_tables.go";

fn unicode_tables_go() -> String {
    use std::fmt::Write;
    let (ignorable, cased) = sigma_context();
    let mut out = String::from(
        "// Code generated by `cargo xtask unicode-tables` from Rust's char methods. DO NOT EDIT.\n\n\
         package weir\n",
    );
    let mut table = |name: &str, ranges: Ranges| {
        let _ = writeln!(out, "\nvar {name} = []runeRange{{");
        for (a, b) in &ranges {
            let _ = writeln!(out, "\t{{0x{a:X}, 0x{b:X}}},");
        }
        let _ = writeln!(out, "}}");
    };
    table("whiteSpace", char_ranges(char::is_whitespace));
    table("caseIgnorable", ignorable);
    table("cased", cased);
    let (runs, multi) = lower_runs();
    let _ = writeln!(out, "\nvar lowerRuns = []lowerRun{{");
    for (start, end, stride, delta) in &runs {
        let _ = writeln!(out, "\t{{0x{start:X}, 0x{end:X}, {stride}, {delta}}},");
    }
    let _ = writeln!(out, "}}\n\nvar lowerSpecials = []lowerSpecial{{");
    for (c, text) in &multi {
        let bytes: String = text.bytes().map(|b| format!("\\x{b:02x}")).collect();
        let _ = writeln!(out, "\t{{0x{c:X}, \"{bytes}\"}},");
    }
    let _ = writeln!(out, "}}");
    out
}

/// The Go toolchain: `$GO`, or `go` on the PATH.
fn go() -> Command {
    Command::new(std::env::var_os("GO").unwrap_or_else(|| "go".into()))
}

/// Builds the Go package in `dir` (a `package main` using `sdk/go`, in a
/// module whose `go.mod` is in `module`) into a core module with mainline
/// Go (`GOOS=wasip1 GOARCH=wasm -buildmode=c-shared`, which exports
/// `_initialize`, run by the component at instantiation), embeds the
/// `operator` world of `wit` in it, and makes it a component with the WASI
/// preview1 reactor adapter (Go's runtime speaks preview1).
fn build_go_component(module: &Path, dir: &Path, wit: &Path, out: &Path) -> Result<()> {
    let scratch = repo_root()
        .join("target/go-build")
        .join(out.file_stem().and_then(|n| n.to_str()).unwrap_or("guest"));
    std::fs::create_dir_all(&scratch)?;
    let core = scratch.join("core.wasm");
    run(go()
        .current_dir(module)
        .env("GOOS", "wasip1")
        .env("GOARCH", "wasm")
        .env("CGO_ENABLED", "0")
        .args([
            "build",
            "-buildmode=c-shared",
            "-trimpath",
            "-ldflags=-w",
            "-o",
        ])
        .arg(&core)
        .arg(dir))
    .context(
        "building a Go guest needs Go 1.24 or newer (`go` on the PATH, or $GO): see sdk/go/README.md",
    )?;
    let mut module = std::fs::read(&core)?;
    let mut resolve = wit_bindgen_core::wit_parser::Resolve::default();
    let (pkg, _) = resolve
        .push_dir(wit)
        .with_context(|| format!("cannot read the WIT in {}", wit.display()))?;
    let world = resolve.select_world(&[pkg], Some("operator"))?;
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
        false,
    )?;
    componentize(&module, &core, out)
}

/// Builds the Go guests (`guest-examples/go/*`, each a `package main` in
/// the module `guest-examples/go`) and the Go fixtures
/// (`tests/fixtures-polyglot/go/*`) into the guest directory as
/// `go_<name>.wasm`. Skips guests whose component is newer than their
/// sources, the SDK and the WIT.
fn build_go_guests() -> Result<()> {
    let root = repo_root();
    let wit = root.join("wit");
    std::fs::create_dir_all(guest_dir())?;
    for module in ["guest-examples/go", "tests/fixtures-polyglot/go"] {
        let module = root.join(module);
        for guest in guests_in(&module, "main.go")? {
            let out = guest_output("go", &guest);
            let sources = [
                guest.clone(),
                module.join("go.mod"),
                root.join("sdk/go"),
                wit.clone(),
            ];
            if up_to_date(&out, &sources) {
                continue;
            }
            eprintln!("xtask: building Go guest {}", guest.display());
            build_go_component(&module, &guest, &wit, &out)?;
        }
    }
    Ok(())
}

/// `cargo xtask build-go DIR OUT`: the Go operator in DIR (a `package
/// main` inside a module that requires `weir`) into the component OUT,
/// against this checkout's `wit/`.
fn build_go_cli(args: &[String]) -> Result<()> {
    let [dir, out] = args else {
        bail!("usage: cargo xtask build-go <dir of a Go package main> <out.wasm>");
    };
    let dir = std::path::absolute(dir)?;
    let mut module = dir.clone();
    while !module.join("go.mod").exists() {
        if !module.pop() {
            bail!("{} is in no Go module (no go.mod above it)", dir.display());
        }
    }
    build_go_component(
        &module,
        &dir,
        &repo_root().join("wit"),
        &std::path::absolute(out)?,
    )
}

// ---- end of Go guests --------------------------------------------------------

// ---- SDK packages (issue 23) -------------------------------------------------

/// The SDKs as the packages a user installs, built from this checkout.
struct SdkPackages {
    /// The Python wheel (`weir_sdk-<version>-py3-none-any.whl`).
    wheel: PathBuf,
    /// The npm tarball (`weir-sdk-<version>.tgz`).
    npm: PathBuf,
    /// The Rust crate as `cargo package` made it, unpacked.
    crate_dir: PathBuf,
    /// The C SDK package, unpacked (`weir-sdk-c-<version>/`, also as a
    /// `.tar.gz` beside it).
    c_dir: PathBuf,
}

/// The version of the C SDK package (the other SDKs carry theirs in their
/// own manifests).
const C_SDK_VERSION: &str = "0.2.0";

/// Builds the C SDK package into `out`: `weir-sdk-c-<version>/` with
/// `include/weir.h`, `lib/libweir.a` (the SDK and the `wit/0.2.0`
/// bindings, compiled for wasm32-wasi, with the component type object),
/// the WASI preview1 reactor adapter, `lib/pkgconfig/weir.pc` and
/// `bin/weir-c-build` (sources to component in one command), and a
/// `.tar.gz` of it. A C user needs only clang for wasm32-wasi and
/// pkg-config, plus wasm-tools or jco for the component step.
fn build_c_package(out: &Path) -> Result<PathBuf> {
    let root = repo_root();
    let sdk = root.join("sdk/c");
    let name = format!("weir-sdk-c-{C_SDK_VERSION}");
    let dir = out.join(&name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    for sub in ["include", "lib/pkgconfig", "bin"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let scratch = root.join("target/c-build/sdk-package");
    let bindings = scratch.join("bindings");
    generate_c_bindings(&root.join(SDK_WIT), &bindings)?;
    let mut objects = Vec::new();
    for source in [
        bindings.join("operator.c"),
        sdk.join("weir.c"),
        sdk.join("weir_unicode.c"),
    ] {
        let object = scratch.join(source.with_extension("o").file_name().unwrap_or_default());
        run(Command::new(CLANG)
            .args(C_FLAGS)
            .arg("-c")
            .arg("-I")
            .arg(&bindings)
            .arg("-I")
            .arg(&sdk)
            .arg("-o")
            .arg(&object)
            .arg(&source))
        .with_context(|| {
            format!("building the C SDK package needs {CLANG} with the wasm32-wasi sysroot: see the README's prerequisites")
        })?;
        objects.push(object);
    }
    // No symbol refers to the component type, so the archive is linked
    // whole (see weir.pc).
    objects.push(bindings.join("operator_component_type.o"));
    run(Command::new("llvm-ar-14")
        .arg("rcs")
        .arg(dir.join("lib/libweir.a"))
        .args(&objects))?;
    std::fs::copy(sdk.join("weir.h"), dir.join("include/weir.h"))?;
    std::fs::copy(sdk.join("README.md"), dir.join("README.md"))?;
    std::fs::write(
        dir.join("lib/wasi_snapshot_preview1.reactor.wasm"),
        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    )?;
    let pc = std::fs::read_to_string(sdk.join("weir.pc.in"))?;
    std::fs::write(
        dir.join("lib/pkgconfig/weir.pc"),
        pc.replace("@VERSION@", C_SDK_VERSION),
    )?;
    let script = dir.join("bin/weir-c-build");
    std::fs::copy(sdk.join("weir-c-build"), &script)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    }
    run(Command::new("tar")
        .arg("czf")
        .arg(out.join(format!("{name}.tar.gz")))
        .arg("-C")
        .arg(out)
        .arg(&name))?;
    Ok(dir)
}

/// Builds every SDK package into `target/sdk-packages` (nothing is
/// published): the Python wheel with pip (installed into `target/py-venv`,
/// where the Python scaffold's build finds it), the npm tarball with
/// `npm pack`, and the Rust crate with `cargo package`, unpacked so that a
/// project can use it through `[patch.crates-io]`.
fn build_sdk_packages() -> Result<SdkPackages> {
    let root = repo_root();
    let out = root.join("target/sdk-packages");
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    let venv = root.join("target/py-venv");
    if !venv.join("bin/pip").exists() {
        build_python_guests()?;
    }
    run(Command::new(venv.join("bin/pip"))
        .args(["wheel", "--quiet", "--no-deps", "-w"])
        .arg(&out)
        .arg(root.join("sdk/python")))?;
    let wheel = only_file(&out, "weir_sdk-", ".whl")?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--force-reinstall", "--no-deps"])
        .arg(&wheel))?;
    run(Command::new("npm")
        .current_dir(root.join("sdk/js"))
        .args(["pack", "--quiet", "--pack-destination"])
        .arg(&out))?;
    let npm = only_file(&out, "weir-sdk-", ".tgz")?;
    run(cargo().current_dir(&root).args([
        "package",
        "--quiet",
        "-p",
        "weir-sdk",
        "--no-verify",
        "--allow-dirty",
    ]))?;
    let packaged = only_file(&root.join("target/package"), "weir-sdk-", ".crate")?;
    let unpacked = out.join("rust");
    std::fs::create_dir_all(&unpacked)?;
    run(Command::new("tar")
        .arg("xzf")
        .arg(&packaged)
        .arg("-C")
        .arg(&unpacked))?;
    let crate_dir = only_file(&unpacked, "weir-sdk-", "")?;
    let c_dir = build_c_package(&out)?;
    eprintln!("xtask: SDK packages in {}", out.display());
    Ok(SdkPackages {
        wheel,
        npm,
        crate_dir,
        c_dir,
    })
}

/// The one entry of `dir` named `prefix…suffix`.
fn only_file(dir: &Path, prefix: &str, suffix: &str) -> Result<PathBuf> {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one {prefix}*{suffix} in {}, found {}",
            dir.display(),
            found.len()
        ),
    }
}

/// `cargo xtask sdk-packages`: builds them and says where.
fn sdk_packages_cli() -> Result<()> {
    let p = build_sdk_packages()?;
    for path in [&p.wheel, &p.npm, &p.crate_dir, &p.c_dir] {
        println!("{}", path.display());
    }
    Ok(())
}

// ---- end of SDK packages -----------------------------------------------------

// ---- Scaffolds of `weir new` (issue 23) --------------------------------------

/// Writes the project `weir new scaffold-<lang> --lang <lang>` would, for
/// every language, into `target/scaffolds/<lang>`, builds it with its own
/// `build.sh`, and copies the component to the guest directory as
/// `scaffold_<lang>.wasm` (the tests run it over the project's sample).
/// The Rust scaffold builds in the guests' target directory with their
/// lock file, so it compiles only its own crate. Skips scaffolds whose
/// component is newer than the templates, the SDK and the WIT.
fn build_scaffolds() -> Result<()> {
    use weir_scaffold::Lang;
    let root = repo_root();
    let templates = root.join("runtime/scaffold/templates");
    let mut built: Option<SdkPackages> = None;
    for lang in Lang::ALL {
        let name = format!("scaffold-{}", lang.name());
        let out = guest_dir().join(format!("{}.wasm", name.replace('-', "_")));
        let sdk = root.join("sdk").join(lang.name());
        if up_to_date(&out, &[templates.clone(), sdk, root.join("wit")]) {
            continue;
        }
        let packages = match &built {
            Some(p) => p,
            None => built.insert(build_sdk_packages()?),
        };
        eprintln!("xtask: building the {} scaffold of `weir new`", lang.name());
        let dir = root.join("target/scaffolds").join(lang.name());
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        weir_scaffold::write_project(&dir, &name, lang, &root)?;
        let mut build = Command::new("sh");
        build
            .arg(dir.join("build.sh"))
            .env(
                "COMPONENTIZE_PY",
                root.join("target/py-venv/bin/componentize-py"),
            )
            .env("PYTHON", root.join("target/py-venv/bin/python"));
        // Each project takes its SDK from the package built above, as a
        // user installs it, not from the checkout.
        match lang {
            Lang::Js => {
                run(Command::new("npm")
                    .current_dir(&dir)
                    .args(["install", "--no-audit", "--no-fund", "--quiet"])
                    .arg(&packages.npm))?;
                build.env("COMPONENTIZE_JS", js_tools()?);
            }
            Lang::Rust => {
                let manifest = dir.join("Cargo.toml");
                let text = std::fs::read_to_string(&manifest)?;
                let checkout_sdk = format!("{}/sdk/rust", root.display());
                if !text.contains(&checkout_sdk) {
                    bail!("the Rust scaffold no longer patches weir-sdk to {checkout_sdk}");
                }
                let packaged = packages.crate_dir.display().to_string();
                std::fs::write(&manifest, text.replace(&checkout_sdk, &packaged))?;
                std::fs::copy(
                    root.join("guest-examples/rust/Cargo.lock"),
                    dir.join("Cargo.lock"),
                )?;
                build.env("CARGO_TARGET_DIR", root.join("target/guests"));
            }
            Lang::C => {
                // The package's own build command, as a user who unpacked
                // it runs it, with jco from the JavaScript tools for the
                // component step.
                let jco = js_tools()?.with_file_name("jco");
                build
                    .env("WEIR_C_BUILD", packages.c_dir.join("bin/weir-c-build"))
                    .env("JCO", jco);
            }
            _ => {}
        }
        run(&mut build)?;
        std::fs::copy(dir.join(format!("{name}.wasm")), &out)?;
    }
    Ok(())
}

// ---- end of scaffolds ---------------------------------------------------------

fn write_unicode_tables() -> Result<()> {
    let root = repo_root();
    std::fs::write(root.join(UNICODE_TABLES), unicode_tables())?;
    std::fs::write(root.join(UNICODE_TABLES_JS), unicode_tables_js())?;
    std::fs::write(root.join(UNICODE_TABLES_GO), unicode_tables_go())?;
    Ok(())
}

// ---- Kafka broker jars (issue 18) ----

/// Copies the broker's jars into `target/kafka/libs` with Maven unless they
/// are there; a partial copy (an interrupted run) is never taken for done.
fn fetch_kafka() -> Result<()> {
    let root = repo_root();
    let libs = root.join("target/kafka/libs");
    if libs.join(".complete").is_file() {
        return Ok(());
    }
    let partial = root.join("target/kafka/libs.partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)?;
    }
    let started = std::time::Instant::now();
    run(Command::new("mvn")
        .current_dir(&root)
        .args([
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            "tests/kafka/pom.xml",
        ])
        .arg("dependency:copy-dependencies")
        .arg(format!("-DoutputDirectory={}", partial.display()))
        .arg("-DincludeScope=runtime"))
    .context("fetching the Kafka broker's jars needs Maven (`mvn`) and Java 17")?;
    std::fs::write(partial.join(".complete"), b"")?;
    if libs.exists() {
        std::fs::remove_dir_all(&libs)?;
    }
    std::fs::rename(&partial, &libs)?;
    eprintln!(
        "xtask: the Kafka broker's jars are in {} ({:.1}s)",
        libs.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---- end Kafka ----

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn test(extra: &[String]) -> Result<()> {
    build_guests()?;
    let console = build_console_if_npm()?;
    fetch_kafka()?;
    let root = repo_root();
    let mut cmd = cargo();
    cmd.current_dir(&root).env("WEIR_GUEST_DIR", guest_dir());
    if has_nextest() {
        cmd.args([
            "nextest",
            "run",
            "--workspace",
            "--no-fail-fast",
            "--retries",
            "1",
        ]);
        run(cmd.args(extra))?;
    } else {
        cmd.args(["test", "--workspace", "--no-fail-fast"]);
        workspace_tests_with_one_retry(cmd.args(extra))?;
    }
    python_sdk_test()?;
    if console {
        check_js_sdk_types()?;
        console_test()?;
    }
    api_fuzz()
}

/// The Python SDK's batch layer on a native CPython, with componentize-py's
/// bindings from the venv `build_guests` made (about a second).
fn python_sdk_test() -> Result<()> {
    let root = repo_root();
    run(Command::new(root.join("target/py-venv/bin/python"))
        .current_dir(&root)
        .arg("sdk/python/tests/test_batch.py"))
    .context("the Python SDK's batch-layer test (sdk/python/tests/test_batch.py) failed")
}

/// Type-checks the JavaScript scaffold (`// @ts-check`, importing the
/// installed weir-sdk package) against the package's `weir.d.ts`, with the
/// console's TypeScript: declarations that drift from `weir.js` fail here.
fn check_js_sdk_types() -> Result<()> {
    let root = repo_root();
    let tsc = root.join(CONSOLE_BUILD).join("node_modules/.bin/tsc");
    let project = root.join("target/scaffolds/js");
    run(Command::new(&tsc).current_dir(&project).args([
        "--noEmit",
        "--allowJs",
        "--checkJs",
        "--strict",
        "--target",
        "es2022",
        "--module",
        "es2022",
        "--moduleResolution",
        "bundler",
        "operator.js",
    ]))
    .context("the JavaScript SDK's types (sdk/js/weir.d.ts) do not fit the scaffold")
}

/// At most this many failed tests are run again; more is a breakage, not
/// bad luck.
const MAX_RETRIED_TESTS: usize = 3;

/// Runs `cargo test` (`cmd`), echoing its output, and runs the tests that
/// failed once more by exact name when there are at most
/// [`MAX_RETRIED_TESTS`] of them. A test that passes on its retry is
/// reported as flaky (on stderr and in `target/flaky-tests.txt`) and does
/// not fail the run; one that fails twice does.
fn workspace_tests_with_one_retry(cmd: &mut Command) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let mut failed = Vec::new();
    if let Some(out) = child.stdout.take() {
        let mut stdout = std::io::stdout();
        for line in BufReader::new(out).lines() {
            let line = line?;
            writeln!(stdout, "{line}")?;
            if let Some(name) = failed_test(&line) {
                failed.push(name.to_string());
            }
        }
    }
    let status = child.wait()?;
    if status.success() {
        return Ok(());
    }
    if failed.is_empty() || failed.len() > MAX_RETRIED_TESTS {
        bail!(
            "{cmd:?} failed with {status} ({} failed tests)",
            failed.len()
        );
    }
    failed.sort();
    failed.dedup();
    eprintln!(
        "xtask: running the failed tests once more: {}",
        failed.join(", ")
    );
    let mut again = cargo();
    again
        .current_dir(repo_root())
        .env("WEIR_GUEST_DIR", guest_dir())
        .args(["test", "--workspace", "--tests", "--", "--exact"])
        .args(&failed);
    run(&mut again).with_context(|| format!("failed twice: {}", failed.join(", ")))?;
    let report = format!(
        "flaky: failed once, then passed on a retry: {}\n",
        failed.join(", ")
    );
    eprintln!("xtask: {report}");
    std::fs::write(repo_root().join("target/flaky-tests.txt"), report)?;
    Ok(())
}

/// The test a libtest output line reports as failed.
fn failed_test(line: &str) -> Option<&str> {
    line.strip_prefix("test ")?.strip_suffix(" ... FAILED")
}

/// schemathesis against a live `weir serve` holding a module, a topology
/// and a stream (so that reads and links find something), bounded by
/// [`API_FUZZ_SECONDS`] and [`API_FUZZ_EXAMPLES`].
fn api_fuzz() -> Result<()> {
    let root = repo_root();
    let venv = root.join("target/api-fuzz-venv");
    let tool = venv.join("bin/schemathesis");
    // What is installed, so that changed pins install again.
    let stamp = venv.join("weir-pins");
    let pins = API_FUZZ_PACKAGES.join(" ");
    if !tool.exists() || std::fs::read_to_string(&stamp).ok().as_deref() != Some(pins.as_str()) {
        eprintln!("xtask: installing {pins} into {} (PyPI)", venv.display());
        if !venv.join("bin/pip").exists() {
            run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        }
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet"])
            .args(API_FUZZ_PACKAGES))?;
        std::fs::write(&stamp, &pins)?;
    }
    // The test build's `weir` (a no-op after `cargo test`).
    run(cargo()
        .current_dir(&root)
        .args(["test", "--workspace", "--no-run", "--quiet"]))?;
    let weir = root.join("target/debug/weir");
    let data = root.join("target/api-fuzz/weir-data");
    if data.exists() {
        std::fs::remove_dir_all(&data)
            .with_context(|| format!("cannot clear {}", data.display()))?;
    }
    let (mut server, url) = start_server(&weir, &data, "127.0.0.1:0")?
        .context("weir serve could not start (see its error above)")?;
    let outcome = (|| {
        let guests = guest_dir();
        for (name, file) in [("split-words", "split_words"), ("word-count", "word_count")] {
            let path = guests.join(format!("{file}.wasm"));
            let path = path.to_string_lossy();
            weir_cli(&weir, &url, &["module", "push", &path, "--name", name])?;
        }
        let topology = root.join("guest-examples/topologies/word-count.yaml");
        weir_cli(
            &weir,
            &url,
            &["topology", "apply", &topology.to_string_lossy()],
        )?;
        let lines = root.join("guest-examples/data/lines.jsonl");
        weir_cli(&weir, &url, &["produce", "lines", &lines.to_string_lossy()])?;
        let started = std::time::Instant::now();
        // Its example database goes beside the data, not into the tree.
        let result = run(Command::new(&tool)
            .current_dir(root.join("target/api-fuzz"))
            .args(["run", &format!("{url}/v1/openapi.json")])
            .args(["--checks", API_FUZZ_CHECKS])
            .args(["--max-examples", API_FUZZ_EXAMPLES])
            .args(["--max-time", API_FUZZ_SECONDS])
            .args(["--request-timeout", "20", "--workers", "2", "--no-color"]));
        eprintln!(
            "xtask: schemathesis took {:.1} s",
            started.elapsed().as_secs_f64()
        );
        result
    })();
    let _ = server.kill();
    let _ = server.wait();
    outcome
}

/// Runs the `weir` CLI against `server`, returning its stdout.
fn weir_cli(weir: &std::path::Path, server: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(weir)
        .args(args)
        .env("WEIR_SERVER", server)
        .env_remove("WEIR_TOKEN")
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", weir.display()))?;
    if !out.status.success() {
        bail!("weir {} failed with {}", args.join(" "), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts `weir serve` on `listen`; returns the child and its URL, or
/// `None` when it could not bind.
fn start_server(
    weir: &std::path::Path,
    data: &std::path::Path,
    listen: &str,
) -> Result<Option<(std::process::Child, String)>> {
    use std::io::BufRead;
    let mut child = Command::new(weir)
        .args(["serve", "--listen", listen, "--data-dir"])
        .arg(data)
        .env_remove("WEIR_TOKEN")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start weir serve")?;
    let mut line = String::new();
    let stdout = child.stdout.take().context("weir serve has no stdout")?;
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    match line.trim().strip_prefix("weir serve: listening on ") {
        Some(url) => Ok(Some((child, url.to_string()))),
        None => {
            let _ = child.wait();
            Ok(None)
        }
    }
}

fn demo() -> Result<()> {
    use std::io::IsTerminal;
    // The demo runs Rust operators only: no Python toolchain needed.
    build_rust_guests()?;
    build_console_if_npm()?;
    let root = repo_root();
    run(cargo()
        .current_dir(&root)
        .args(["build", "--quiet", "--release", "-p", "weir"]))?;
    let weir = root.join("target/release/weir");
    let topology = root.join("guest-examples/topologies/word-count.yaml");
    let input = root.join("guest-examples/data/lines.jsonl");
    let data = tempdir()?.join("weir-data");
    if data.exists() {
        std::fs::remove_dir_all(&data)
            .with_context(|| format!("cannot clear {}", data.display()))?;
    }
    // The documented port, or any free one when it is taken.
    let (mut server, url) = match start_server(&weir, &data, "127.0.0.1:7070")? {
        Some(s) => s,
        None => start_server(&weir, &data, "127.0.0.1:0")?
            .context("weir serve could not start (see its error above)")?,
    };
    let result = (|| -> Result<()> {
        let guests = guest_dir();
        let cli = |args: &[&str]| weir_cli(&weir, &url, args);
        eprint!(
            "{}",
            cli(&[
                "module",
                "push",
                &guests.join("split_words.wasm").display().to_string(),
                "--name",
                "split-words"
            ])?
        );
        eprint!(
            "{}",
            cli(&[
                "module",
                "push",
                &guests.join("word_count.wasm").display().to_string(),
                "--name",
                "word-count"
            ])?
        );
        eprint!(
            "{}",
            cli(&[
                "topology",
                "apply",
                &topology.display().to_string(),
                "--start"
            ])?
        );
        eprint!(
            "{}",
            cli(&["produce", "lines", &input.display().to_string()])?
        );
        // Output is published when its checkpoint commits (every second):
        // wait until every count the operator emitted is in the stream.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let events: Vec<serde_json::Value> = loop {
            let status: serde_json::Value =
                serde_json::from_str(&cli(&["topology", "status", "word-count", "--json"])?)?;
            let emitted: u64 = status["operators"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|o| o["name"] == "count")
                .filter_map(|o| o["events_out"].as_u64())
                .sum();
            let events: Vec<serde_json::Value> = cli(&["consume", "counts"])?
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if emitted > 0 && events.len() as u64 == emitted {
                break events;
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "the counts did not arrive within a minute ({} of {emitted})",
                    events.len()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        let mut last = std::collections::BTreeMap::new();
        for event in &events {
            let word = event["value"]["word"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let count = event["value"]["count"].as_u64().unwrap_or(0);
            let best = last.entry(word).or_insert(0);
            *best = count.max(*best);
        }
        let mut top: Vec<_> = last.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        println!(
            "\nWeir is running at {url}: topology word-count (split-words -> word-count, parallelism 2)\n\
             read stream `lines` ({}) and wrote {} counts, {} distinct words, to stream `counts`. Top words:",
            input.display(),
            events.len(),
            top.len()
        );
        for (word, count) in top.iter().take(10) {
            println!("  {count:>5}  {word}");
        }
        let the = cli(&["state", "get", "word-count", "count", "count", "the"])?;
        println!("state of `the` in operator count: {}", the.trim());
        println!("\nThe web console: {url}/");
        println!("\nLook at:");
        println!(
            "  {url}/v1/topologies/word-count          status, per-operator metrics, last checkpoint"
        );
        println!(
            "  {url}/v1/streams/counts/events?limit=20  the counts (Accept: text/event-stream follows them)"
        );
        println!("  {url}/v1/topologies/word-count/operators/count/state/count?key=weir");
        println!("  {url}/metrics                            Prometheus metrics");
        println!("  {url}/v1/openapi.json                    the API");
        println!("or: WEIR_SERVER={url} target/release/weir consume counts --follow");
        println!("    WEIR_SERVER={url} target/release/weir produce lines < more-lines.jsonl");
        Ok(())
    })();
    if result.is_ok() && std::io::stdin().is_terminal() {
        println!(
            "\nweir serve keeps running (data in {}); Ctrl-C stops it.",
            data.display()
        );
        // Ctrl-C reaches the server too (same process group): it stops cleanly.
        let _ = server.wait();
    } else {
        let _ = Command::new("kill")
            .args(["-TERM", &server.id().to_string()])
            .status();
        let _ = server.wait();
    }
    result
}

// ---- the web console (issue 20) ----

/// The console's sources, copied into [`CONSOLE_BUILD`] to be built there
/// (so `node_modules` and Vite's output stay out of the source tree).
const CONSOLE_SOURCES: &str = "runtime/console";
/// Where the console is built: its toolchain (`npm ci`) and sources.
const CONSOLE_BUILD: &str = "target/console-build";
/// The built console, which `weir-server`'s build script embeds.
const CONSOLE_OUT: &str = "target/console";
/// Debian's Chromium, which the browser test drives.
const CHROMIUM: &str = "/usr/bin/chromium";

fn has_npm() -> bool {
    Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Builds the console when npm is installed; says so and goes on (the
/// server then serves a page saying how to build it) when not.
fn build_console_if_npm() -> Result<bool> {
    if !has_npm() {
        eprintln!(
            "xtask: npm not found: the web console is not built (weir serves a page saying how to build it)"
        );
        return Ok(false);
    }
    build_console()?;
    Ok(true)
}

/// Copies the files under `from` into `to` (rewriting only those whose
/// bytes differ), leaving out `node_modules`; files under `to` that `from`
/// no longer has are removed from its `src` and `tests`.
fn sync_console_sources(from: &Path, to: &Path) -> Result<()> {
    for dir in ["src", "tests"] {
        let stale = to.join(dir);
        if stale.exists() {
            std::fs::remove_dir_all(&stale)?;
        }
    }
    let mut stack = vec![from.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.file_name().is_some_and(|n| n == "node_modules") {
                continue;
            }
            let dest = to.join(path.strip_prefix(from)?);
            if path.is_dir() {
                std::fs::create_dir_all(&dest)?;
                stack.push(path);
            } else if std::fs::read(&dest).ok() != Some(std::fs::read(&path)?) {
                std::fs::copy(&path, &dest)?;
            }
        }
    }
    Ok(())
}

/// `cargo xtask console`: `npm ci` (when the lock changed), a type check
/// and `vite build` into `target/console`; skipped when that is newer than
/// every source. Rebuild `weir` afterwards to embed it.
fn build_console() -> Result<()> {
    let root = repo_root();
    let sources = root.join(CONSOLE_SOURCES);
    let build = root.join(CONSOLE_BUILD);
    let out = root.join(CONSOLE_OUT);
    // The browser test runs from the build directory: its toolchain must
    // be there too.
    if up_to_date(&out.join("index.html"), std::slice::from_ref(&sources))
        && build.join("node_modules/.package-lock.json").exists()
    {
        return Ok(());
    }
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&build)?;
    let lock = std::fs::read(sources.join("package-lock.json"))?;
    let installed = std::fs::read(build.join("node_modules/.package-lock.json")).is_ok()
        && std::fs::read(build.join("package-lock.json")).ok() == Some(lock);
    sync_console_sources(&sources, &build)?;
    if !installed {
        eprintln!(
            "xtask: installing the console's toolchain into {}",
            build.display()
        );
        run(Command::new("npm").current_dir(&build).args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ]))
        .context("building the console needs Node.js and npm: see the README's prerequisites")?;
    }
    eprintln!("xtask: building the web console into {}", out.display());
    run(Command::new(build.join("node_modules/.bin/tsc"))
        .current_dir(&build)
        .arg("--noEmit"))?;
    run(Command::new(build.join("node_modules/.bin/vite"))
        .current_dir(&build)
        .args(["build", "--logLevel", "warn", "--outDir"])
        .arg(&out))?;
    eprintln!(
        "xtask: console built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cargo xtask console-test`: the console's browser test
/// (`runtime/console/tests/console.test.mjs`) against the `weir` of the
/// last test build, which must embed the console; screenshots go to
/// `target/console-screenshots`.
fn console_test() -> Result<()> {
    let root = repo_root();
    if !Path::new(CHROMIUM).exists() {
        bail!(
            "the console's browser test drives Debian's Chromium at {CHROMIUM}: apt-get install chromium"
        );
    }
    build_console()?;
    // The test build's `weir`, embedding the console built just now: a
    // no-op after `cargo test` (a plain `cargo build` unifies features
    // differently and would rebuild much of the workspace).
    run(cargo()
        .current_dir(&root)
        .args(["test", "--workspace", "--no-run", "--quiet"]))?;
    let started = std::time::Instant::now();
    run(Command::new("node")
        .current_dir(root.join(CONSOLE_BUILD))
        .arg("tests/console.test.mjs")
        .env("WEIR_BIN", root.join("target/debug/weir"))
        .env("WEIR_GUEST_DIR", guest_dir())
        .env("WEIR_CONSOLE_DIR", root.join(CONSOLE_OUT))
        .env("WEIR_SCREENSHOTS", root.join("target/console-screenshots")))?;
    eprintln!(
        "xtask: console browser test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The full benchmark run of `docs/benchmarks.md`: each workload with
/// the arguments its table was made with.
const BENCH_RUNS: &[(&str, &[&str])] = &[
    ("fixed", &["--rounds", "3"]),
    ("compare", &["--rounds", "3"]),
    ("checkpointed", &["--rounds", "5"]),
    ("latency", &["--rate", "50000", "--seconds", "4"]),
    ("visibility", &["--seconds", "10"]),
    ("recovery", &["--keys", "1000000"]),
    ("languages", &["--events", "200000", "--rounds", "3"]),
    ("host", &["--events", "200000", "--rounds", "5"]),
];

fn bench() -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    build_guests()?;
    let root = repo_root();
    run(cargo().current_dir(&root).args([
        "build",
        "--quiet",
        "--release",
        "--locked",
        "-p",
        "weir",
        "-p",
        "weir-bench",
    ]))?;
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let started = std::time::Instant::now();
    let mut results = Vec::new();
    for (workload, args) in BENCH_RUNS {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if args.last().is_some_and(|a| a == "--json") {
            args.push(
                out_dir
                    .join(format!("{workload}.json"))
                    .display()
                    .to_string(),
            );
        }
        println!("== weir-bench {workload} {}", args.join(" "));
        let mut child = Command::new(root.join("target/release/weir-bench"))
            .arg(workload)
            .args(&args)
            .env("WEIR_GUEST_DIR", guest_dir())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("cannot start weir-bench")?;
        let mut log = std::fs::File::create(out_dir.join(format!("{workload}.txt")))?;
        let stdout = child.stdout.take().context("weir-bench has no stdout")?;
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            writeln!(log, "{line}")?;
            if line.starts_with("RESULT ") {
                results.push(line);
            }
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("weir-bench {workload} failed with {status}");
        }
    }
    println!(
        "== every workload in {:.0} s; outputs in {}",
        started.elapsed().as_secs_f64(),
        out_dir.display()
    );
    for line in &results {
        println!("{line}");
    }
    std::fs::write(out_dir.join("results.txt"), results.join("\n") + "\n")?;
    Ok(())
}

fn tempdir() -> Result<std::path::PathBuf> {
    let dir = repo_root().join("target/demo");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("guests") => build_guests(),
        Some("test") => test(&args[1..]),
        Some("kafka") => fetch_kafka(),
        Some("api-fuzz") => api_fuzz(),
        Some("demo") => demo(),
        Some("bench") => bench(),
        Some("console") => build_console(),
        Some("console-test") => console_test(),
        Some("build-c") => build_c_cli(&args[1..]),
        Some("unicode-tables") => write_unicode_tables(),
        Some("build-js") => build_js_cli(&args[1..]),
        Some("build-go") => build_go_cli(&args[1..]),
        Some("sdk-packages") => sdk_packages_cli(),
        _ => {
            eprintln!(
                "usage: cargo xtask <guests | test [nextest/test args] | api-fuzz | kafka | demo | bench | console | console-test | build-c DIR OUT | build-js FILE OUT | build-go DIR OUT | sdk-packages>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicode_tables_match_this_rust() {
        for (path, text) in [
            (UNICODE_TABLES, unicode_tables()),
            (UNICODE_TABLES_JS, unicode_tables_js()),
            (UNICODE_TABLES_GO, unicode_tables_go()),
        ] {
            let committed = std::fs::read_to_string(repo_root().join(path)).unwrap();
            assert!(
                committed == text,
                "{path} is stale: run `cargo xtask unicode-tables`"
            );
        }
    }

    #[test]
    fn the_rust_sdk_carries_the_contract_it_is_built_from() {
        let root = repo_root();
        for entry in std::fs::read_dir(root.join("wit/0.2.0")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap();
            let copy = root.join("sdk/rust/wit").join(name);
            assert!(
                std::fs::read(&path).unwrap() == std::fs::read(&copy).unwrap_or_default(),
                "sdk/rust/wit/{} differs from wit/0.2.0: copy wit/0.2.0/*.wit into sdk/rust/wit",
                name.to_string_lossy()
            );
        }
    }

    #[test]
    fn only_failed_test_lines_name_a_test_to_retry() {
        assert_eq!(
            failed_test("test checkpoints::a_crash_keeps_state ... FAILED"),
            Some("checkpoints::a_crash_keeps_state")
        );
        assert_eq!(failed_test("test a_crash_keeps_state ... ok"), None);
        assert_eq!(failed_test("test result: FAILED. 1 passed; 1 failed"), None);
        assert_eq!(failed_test("---- a_crash_keeps_state stdout ----"), None);
    }
}
