//! `weir new` end to end: the real binary writes a project, refuses to
//! write over one, and every language's scaffold (built by `cargo xtask
//! guests` with the project's own build.sh) runs its sample through
//! `weir test` against the project's `expected.jsonl`.

use std::process::{Command, Output};

use weir_fixtures::{guest_path, repo_root};

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env_remove("WEIR_LOG")
        .env_remove("WEIR_CHECKOUT")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn weir_new_writes_a_project_and_never_over_another() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("my-op");
    let dir_text = dir.display().to_string();
    let out = weir(&["new", "my-op", "--lang", "go", "--dir", &dir_text]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("sh "), "{}", text(&out.stderr));
    let go_mod = std::fs::read_to_string(dir.join("go.mod")).unwrap();
    let sdk = repo_root().canonicalize().unwrap().join("sdk/go");
    assert!(
        go_mod.contains(&format!("replace weir => {}", sdk.display())),
        "{go_mod}"
    );
    for file in [
        "main.go",
        "build.sh",
        "README.md",
        "events.jsonl",
        "expected.jsonl",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }

    // Again into the same folder: refused, and the project is untouched.
    std::fs::write(dir.join("main.go"), "// mine").unwrap();
    let out = weir(&["new", "my-op", "--lang", "rust", "--dir", &dir_text]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("main.go")).unwrap(),
        "// mine"
    );
    assert!(!dir.join("Cargo.toml").exists());

    let out = weir(&["new", "my-op", "--lang", "cobol"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("rust, c, js, python, go"),
        "{}",
        text(&out.stderr)
    );
    let out = weir(&["new", "../out", "--lang", "c"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid operator name"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn every_scaffold_builds_and_passes_its_weir_test() {
    let templates = repo_root().join("runtime/scaffold/templates/common");
    let input = templates.join("events.jsonl").display().to_string();
    let expect = templates.join("expected.jsonl");
    assert_eq!(std::fs::read_to_string(&expect).unwrap().lines().count(), 3);
    let expect = expect.display().to_string();
    // A wrong expectation, so each pass below is known to be able to fail.
    let tmp = tempfile::tempdir().unwrap();
    let wrong = tmp.path().join("wrong.jsonl");
    std::fs::write(
        &wrong,
        std::fs::read_to_string(&expect)
            .unwrap()
            .replace("AGAIN", "AGAIN!"),
    )
    .unwrap();
    let wrong = wrong.display().to_string();
    // Compiled components are cached across runs (JavaScript and Python
    // ones take seconds to compile).
    let cache = repo_root().join("target/test-cache").display().to_string();
    for lang in weir_scaffold::Lang::ALL {
        let module = guest_path(&format!("scaffold-{}", lang.name()));
        let module = module.display().to_string();
        // What the project's README tells its author to run.
        let test = |expect: &str| {
            weir(&[
                "test",
                "--module",
                &module,
                "--input",
                &input,
                "--expect",
                expect,
                "--cache-dir",
                &cache,
            ])
        };
        let out = test(&expect);
        assert!(
            out.status.success(),
            "{}: {}{}",
            lang.name(),
            text(&out.stdout),
            text(&out.stderr)
        );
        let out = test(&wrong);
        assert_eq!(out.status.code(), Some(1), "{}", lang.name());
        assert!(
            text(&out.stdout).contains("AGAIN!") || text(&out.stderr).contains("AGAIN!"),
            "{}: the diff does not show the expected text: {}{}",
            lang.name(),
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}
