//! How a guest's trap reads to a user: the guest's own panic message first
//! (from what it printed to stderr), then the trap, then the innermost
//! frames of the guest's code, demangled, with the standard library's
//! panic machinery and the `RUST_BACKTRACE` hint (which nobody can act on
//! inside the sandbox) left out.

/// Frames of the guest's own code shown at most.
const FRAMES_SHOWN: usize = 3;

/// Longest stderr tail kept when the guest printed something that is not a
/// panic message.
const STDERR_TAIL_BYTES: usize = 1024;

/// `trap`: what wasmtime says (`wasm trap: wasm 'unreachable' …`);
/// `frames`: function names, innermost first, as the name section has them
/// (mangled); `stderr`: the tail of what the guest printed.
pub(crate) fn trap_message(trap: &str, frames: &[String], stderr: &str) -> String {
    let own: Vec<String> = frames
        .iter()
        .map(|f| format!("{:#}", rustc_demangle::demangle(f)))
        .filter(|f| !is_runtime_frame(f))
        .take(FRAMES_SHOWN)
        .collect();
    let trap = trap.lines().next().unwrap_or(trap).trim();
    let panic = panic_of(stderr);
    let mut message = match &panic {
        Some(panic) => format!("{panic} ({trap}"),
        None => format!("{trap} ("),
    };
    if !own.is_empty() {
        if !message.ends_with('(') {
            message.push_str("; ");
        }
        message.push_str(&format!("in {}", own.join(" < ")));
    }
    if message.ends_with('(') {
        message.truncate(message.len() - 2);
    } else {
        message.push(')');
    }
    if panic.is_none() && !stderr.trim().is_empty() {
        let tail = stderr.trim();
        let cut = tail.len().saturating_sub(STDERR_TAIL_BYTES);
        let cut = (cut..=tail.len())
            .find(|&i| tail.is_char_boundary(i))
            .unwrap_or(tail.len());
        message.push_str(&format!("; guest stderr: {}", &tail[cut..]));
    }
    message
}

/// Most frames a trap's backtrace keeps (a deep recursion would otherwise
/// make every dead letter of it huge).
const BACKTRACE_FRAMES: usize = 64;

/// The whole named call stack of a trap, innermost first, demangled, at
/// most [`BACKTRACE_FRAMES`] frames: what a dead letter carries.
pub(crate) fn backtrace(frames: &[String]) -> Vec<String> {
    frames
        .iter()
        .take(BACKTRACE_FRAMES)
        .map(|f| format!("{:#}", rustc_demangle::demangle(f)))
        .collect()
}

/// `panicked at src/lib.rs:3:5: poison event` from Rust's panic output.
fn panic_of(stderr: &str) -> Option<String> {
    let start = stderr.rfind("panicked at ")?;
    let text = &stderr[start..];
    let mut lines = text.lines();
    let head = lines.next()?.trim_end().trim_end_matches(':');
    let body: Vec<&str> = lines
        .take_while(|l| !l.starts_with("note:") && !l.starts_with("stack backtrace"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    Some(if body.is_empty() {
        head.to_string()
    } else {
        format!("{head}: {}", body.join(" "))
    })
}

/// Frames of the language runtime (Rust's std, core, alloc, panic
/// machinery, WASI start-up glue) rather than of the operator.
fn is_runtime_frame(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "std::",
        "core::",
        "alloc::",
        "__rust",
        "rust_panic",
        "rust_begin_unwind",
        "panic_abort::",
        "<std::",
        "<core::",
        "<alloc::",
        "abort",
        "__wasi",
        "wit_bindgen",
        "<wit_bindgen",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PANIC: &str = "\nthread '<unnamed>' panicked at src/lib.rs:22:31:\npoison event\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";

    #[test]
    fn the_panic_message_comes_first_and_std_frames_and_the_hint_go() {
        let frames = [
            "_RNvNtNtNtNtCshXfaRvt2tfW_3std3sys3pal4wasi7helpers14abort_internal".to_string(),
            "_ZN3std9panicking20rust_panic_with_hook17h0123456789abcdefE".to_string(),
            "_ZN11poison_trap10PoisonTrap7process17h0123456789abcdefE".to_string(),
        ];
        let m = trap_message(
            "wasm trap: wasm `unreachable` instruction executed",
            &frames,
            PANIC,
        );
        assert!(
            m.starts_with("panicked at src/lib.rs:22:31: poison event ("),
            "{m}"
        );
        assert!(m.contains("in poison_trap::PoisonTrap::process"), "{m}");
        assert!(!m.contains("abort_internal") && !m.contains("std::"), "{m}");
        assert!(!m.contains("RUST_BACKTRACE"), "{m}");
        assert!(!m.contains("17h0123456789abcdef"), "hash kept: {m}");
    }

    #[test]
    fn a_backtrace_keeps_every_frame_demangled_up_to_its_bound() {
        let frames = vec![
            "_ZN11poison_trap10PoisonTrap7process17h0123456789abcdefE".to_string();
            BACKTRACE_FRAMES + 5
        ];
        let trace = backtrace(&frames);
        assert_eq!(trace.len(), BACKTRACE_FRAMES);
        assert_eq!(trace[0], "poison_trap::PoisonTrap::process");
    }

    #[test]
    fn without_a_panic_the_trap_and_the_stderr_tail_are_kept() {
        let frames = ["my_func".to_string()];
        let m = trap_message(
            "wasm trap: integer divide by zero",
            &frames,
            "dividing now\n",
        );
        assert_eq!(
            m,
            "wasm trap: integer divide by zero (in my_func); guest stderr: dividing now"
        );
        let m = trap_message("wasm trap: integer divide by zero", &[], "");
        assert_eq!(m, "wasm trap: integer divide by zero");
    }

    #[test]
    fn a_long_stderr_is_cut_to_its_tail_on_a_char_boundary() {
        let noise = "é".repeat(STDERR_TAIL_BYTES);
        let m = trap_message("wasm trap: x", &[], &noise);
        assert!(m.len() < STDERR_TAIL_BYTES + 64, "{}", m.len());
        assert!(m.ends_with('é'));
    }
}
