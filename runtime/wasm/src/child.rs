//! Compiling in a child process: wasmtime cannot stop a compile once it has
//! started, and a module within every shape limit may still cost minutes
//! and gigabytes. A [`CompileSandbox`] names a program that, run with its
//! arguments, compiles the component on its stdin into an artifact on its
//! stdout ([`serve_compile_request`]). It runs with a data-size rlimit it
//! sets on itself before reading anything, and the parent kills it at the
//! deadline, so a costly module is refused with the limit it hit and the
//! server's own memory and threads are never spent on it.
//!
//! Protocol: the parent appends `--memory-bytes N` to the arguments and
//! writes the component to stdin; exit 0 with the artifact on stdout, or
//! [`EXIT_INVALID`] with the compiler's message on stderr. Anything else
//! (an abort on a failed allocation, a signal) is a failure of the child.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use wasmtime::Engine;

use crate::ModuleError;
use crate::loader::engine_config;

/// Default of [`CompileSandbox::memory_bytes`]: compiling the 18 MB Python
/// component peaks at about 0.4 GiB resident.
pub const DEFAULT_COMPILE_MEMORY_BYTES: u64 = 2 << 30;
/// Default of [`CompileSandbox::timeout`]: the Python component compiles
/// in about 6 s on two cores (debug build).
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(120);
/// The child's exit code for a module the compiler refused.
pub const EXIT_INVALID: i32 = 2;
/// Most of the child's stderr kept for the error message.
const MAX_STDERR_BYTES: u64 = 16 << 10;

/// How modules are compiled out of process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileSandbox {
    /// The program to run (the `weir` binary itself, re-invoked).
    pub program: PathBuf,
    /// Its arguments before `--memory-bytes N` (a hidden subcommand).
    pub args: Vec<OsString>,
    /// Data (heap and anonymous mappings) the child may use (RLIMIT_DATA).
    pub memory_bytes: u64,
    /// Wall-clock time the compile may take before the child is killed.
    pub timeout: Duration,
}

/// The child's side: limits its own data size to `memory_bytes`, asks to be
/// killed if its parent dies, then compiles the component on `input` and
/// writes the artifact to `output`. An error of the module is
/// [`ModuleError::Invalid`]; the caller exits with [`EXIT_INVALID`].
pub fn serve_compile_request(
    memory_bytes: u64,
    input: &mut impl Read,
    output: &mut impl Write,
) -> Result<(), ModuleError> {
    let limit = rustix::process::Rlimit {
        current: Some(memory_bytes),
        maximum: Some(memory_bytes),
    };
    rustix::process::setrlimit(rustix::process::Resource::Data, limit)
        .map_err(|e| ModuleError::Engine(format!("cannot limit the compiler's memory: {e}")))?;
    #[cfg(target_os = "linux")]
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .map_err(|e| ModuleError::Engine(format!("cannot read the module: {e}")))?;
    let engine = Engine::new(&engine_config()).map_err(|e| ModuleError::Engine(e.to_string()))?;
    let artifact = engine
        .precompile_component(&bytes)
        .map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
    output
        .write_all(&artifact)
        .and_then(|()| output.flush())
        .map_err(|e| ModuleError::Engine(format!("cannot write the artifact: {e}")))
}

/// Why a child's exit is not an artifact.
fn failure(
    sandbox: &CompileSandbox,
    status: ExitStatus,
    stderr: &[u8],
) -> Result<Vec<u8>, ModuleError> {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if status.code() == Some(EXIT_INVALID) {
        return Err(ModuleError::Invalid(
            text.strip_prefix("error: ").unwrap_or(text).to_string(),
        ));
    }
    let lower = text.to_ascii_lowercase();
    // A failed allocation aborts (SIGABRT) with "memory allocation of N
    // bytes failed"; an mmap refused by the rlimit surfaces as ENOMEM.
    if status.code().is_none()
        || lower.contains("memory allocation")
        || lower.contains("out of memory")
        || lower.contains("cannot allocate memory")
    {
        return Err(ModuleError::CompileMemory {
            limit: sandbox.memory_bytes,
        });
    }
    Err(ModuleError::CompileProcess {
        reason: format!("{status}: {text}"),
    })
}

/// Compiles `bytes` in a child process under `sandbox`'s limits; the
/// artifact it returns is the child's `Engine::precompile_component`.
pub(crate) fn compile_in_child(
    sandbox: &CompileSandbox,
    bytes: &[u8],
) -> Result<Vec<u8>, ModuleError> {
    let spawn_error = |e: std::io::Error| ModuleError::CompileProcess {
        reason: format!("cannot run {}: {e}", sandbox.program.display()),
    };
    let mut child = Command::new(&sandbox.program)
        .args(&sandbox.args)
        .arg("--memory-bytes")
        .arg(sandbox.memory_bytes.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(spawn_error(std::io::Error::other("no pipes")));
    };
    let deadline = Instant::now() + sandbox.timeout;
    std::thread::scope(|scope| {
        // A child killed mid-read makes the write fail: that is expected.
        scope.spawn(move || {
            let _ = stdin.write_all(bytes);
        });
        let artifact = scope.spawn(move || {
            let mut out = Vec::new();
            // The artifact lives in the child's data: it cannot be larger.
            let _ = stdout.take(sandbox.memory_bytes).read_to_end(&mut out);
            out
        });
        let errors = scope.spawn(move || {
            let mut out = Vec::new();
            let _ = stderr.take(MAX_STDERR_BYTES).read_to_end(&mut out);
            out
        });
        let mut pause = Duration::from_millis(1);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ModuleError::CompileProcess {
                        reason: format!("cannot wait for the compiler: {e}"),
                    });
                }
            }
        };
        let artifact = artifact.join().unwrap_or_default();
        let errors = errors.join().unwrap_or_default();
        match status {
            None => Err(ModuleError::CompileTimeout {
                limit: sandbox.timeout,
            }),
            Some(status) if status.success() => Ok(artifact),
            Some(status) => failure(sandbox, status, &errors),
        }
    })
}
