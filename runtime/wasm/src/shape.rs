//! What a component may contain, checked by a plain parse (linear in its
//! size) before anything is compiled. Compile time and memory grow with
//! the size of single functions and their locals, so a small upload can
//! hold a function that takes minutes and gigabytes to compile; these
//! bounds refuse it in milliseconds.

use crate::error::ModuleError;

/// Bounds on the code of a component's core modules, all of them together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeLimits {
    /// Largest body of one function, bytes.
    pub max_function_body_bytes: usize,
    /// Most locals of one function (parameters not counted).
    pub max_function_locals: u64,
    /// Most functions with a body.
    pub max_functions: usize,
    /// Most bytes of function bodies in all.
    pub max_code_bytes: usize,
}

/// Default of [`ShapeLimits::max_function_body_bytes`].
pub const DEFAULT_MAX_FUNCTION_BODY_BYTES: usize = 1 << 20;
/// Default of [`ShapeLimits::max_function_locals`].
pub const DEFAULT_MAX_FUNCTION_LOCALS: u64 = 500;
/// Default of [`ShapeLimits::max_functions`].
pub const DEFAULT_MAX_FUNCTIONS: usize = 100_000;
/// Default of [`ShapeLimits::max_code_bytes`].
pub const DEFAULT_MAX_CODE_BYTES: usize = 32 << 20;

impl Default for ShapeLimits {
    fn default() -> Self {
        ShapeLimits {
            max_function_body_bytes: DEFAULT_MAX_FUNCTION_BODY_BYTES,
            max_function_locals: DEFAULT_MAX_FUNCTION_LOCALS,
            max_functions: DEFAULT_MAX_FUNCTIONS,
            max_code_bytes: DEFAULT_MAX_CODE_BYTES,
        }
    }
}

/// Checks every function body of every core module in `bytes` (a
/// component) against `limits`; a parse error is left to the compiler,
/// which words it better.
pub(crate) fn check_shape(bytes: &[u8], limits: &ShapeLimits) -> Result<(), ModuleError> {
    let too_big = |what: String| Err(ModuleError::TooComplex { what });
    let mut functions = 0usize;
    let mut code_bytes = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            return Ok(());
        };
        let wasmparser::Payload::CodeSectionEntry(body) = payload else {
            continue;
        };
        functions += 1;
        let range = body.range();
        let size = usize::try_from(range.end - range.start).unwrap_or(usize::MAX);
        code_bytes += size;
        if functions > limits.max_functions {
            return too_big(format!(
                "more than {} functions (--max-functions)",
                limits.max_functions
            ));
        }
        if code_bytes > limits.max_code_bytes {
            return too_big(format!(
                "more than {} bytes of code in all (--max-code-bytes)",
                limits.max_code_bytes
            ));
        }
        if size > limits.max_function_body_bytes {
            return too_big(format!(
                "function {} has a body of {size} bytes, over {} (--max-function-body-bytes)",
                functions - 1,
                limits.max_function_body_bytes
            ));
        }
        let Ok(mut locals) = body.get_locals_reader() else {
            return Ok(());
        };
        let mut count = 0u64;
        for _ in 0..locals.get_count() {
            let Ok((n, _)) = locals.read() else {
                return Ok(());
            };
            count += u64::from(n);
            if count > limits.max_function_locals {
                return too_big(format!(
                    "function {} declares more than {} locals (--max-function-locals)",
                    functions - 1,
                    limits.max_function_locals
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component around one core function with `locals` locals and a
    /// body of about `body_bytes` bytes.
    fn bomb(locals: usize, body_bytes: usize) -> Vec<u8> {
        let mut wat = String::from("(component (core module (func");
        wat.push_str(&format!(" (local {})", "i64 ".repeat(locals)));
        // `local.get 0 local.set 1`: 4 bytes each.
        for _ in 0..body_bytes / 4 {
            wat.push_str(" local.get 0 local.set 1");
        }
        wat.push_str(")))");
        wat::parse_str(&wat).unwrap()
    }

    #[test]
    fn bounds_are_checked_per_function_and_in_all() {
        let limits = ShapeLimits {
            max_function_body_bytes: 10_000,
            max_function_locals: 100,
            max_functions: 10,
            max_code_bytes: 100_000,
        };
        assert!(check_shape(&bomb(100, 9_000), &limits).is_ok());
        let err = check_shape(&bomb(101, 100), &limits).unwrap_err();
        assert!(err.to_string().contains("more than 100 locals"), "{err}");
        let err = check_shape(&bomb(1, 20_000), &limits).unwrap_err();
        assert!(
            err.to_string()
                .contains("over 10000 (--max-function-body-bytes)"),
            "{err}"
        );
        let many = {
            let funcs = "(func)".repeat(11);
            wat::parse_str(format!("(component (core module {funcs}))")).unwrap()
        };
        let err = check_shape(&many, &limits).unwrap_err();
        assert!(err.to_string().contains("more than 10 functions"), "{err}");
        // Garbage is left to the compiler.
        assert!(check_shape(b"\0asm\x0d\0\x01\0junk", &limits).is_ok());
    }
}
