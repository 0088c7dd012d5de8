//! How deeply a document nests, measured in one linear pass over its text
//! before any parser sees it: a parser's cost (and, for some, its stack)
//! grows with nesting, and a user controls the nesting.
//!
//! The YAML measure is an estimate that never undercounts a real document's
//! nesting by much and overcounts only in odd corners (a plain scalar
//! starting with `[`); it exists to refuse hostile input quickly, not to
//! parse YAML.

/// Deepest nesting of a topology document (JSON or YAML), counting every
/// object, array, mapping and sequence. Real documents use fewer than ten.
pub const MAX_DOCUMENT_DEPTH: usize = 64;

/// The deepest `[`/`{` nesting of JSON text, ignoring brackets in strings.
/// Stops counting once past `stop` (the answer is then `stop + 1`).
pub(crate) fn json_depth(text: &str, stop: usize) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text.as_bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
                if deepest > stop {
                    return deepest;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// An estimate of the nesting of YAML text: block levels (distinct
/// indentations in force, plus compact `- ` / `? ` indicators at a line's
/// start) plus flow levels (`[`/`{` that open a flow collection). Block
/// scalars (`|`, `>`) are skipped. Stops once past `stop`.
pub(crate) fn yaml_depth(text: &str, stop: usize) -> usize {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut deepest = 0usize;
    // Inside a block scalar: lines indented more than this belong to it.
    let mut scalar_of: Option<usize> = None;
    for line in text.lines() {
        let content = line.trim_start_matches(' ');
        let indent = line.len() - content.len();
        if content.trim().is_empty() || content.starts_with('#') {
            continue;
        }
        if let Some(parent) = scalar_of {
            if indent > parent {
                continue;
            }
            scalar_of = None;
        }
        if flow == 0 {
            while indents.last().is_some_and(|&top| top > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
        }
        let (compact, rest) = compact_indicators(content);
        let line_flow = flow_levels(rest, &mut flow);
        let depth = indents.len() + compact + line_flow.max(flow);
        deepest = deepest.max(depth);
        if deepest > stop {
            return deepest;
        }
        if flow == 0 && opens_block_scalar(rest) {
            scalar_of = Some(indent);
        }
    }
    deepest
}

/// How many `- ` / `? ` indicators open the line, and the text after them.
fn compact_indicators(content: &str) -> (usize, &str) {
    let mut count = 0;
    let mut rest = content;
    while let Some(after) = rest.strip_prefix("- ").or_else(|| rest.strip_prefix("? ")) {
        count += 1;
        rest = after.trim_start_matches(' ');
    }
    if rest == "-" || rest == "?" {
        count += 1;
    }
    (count, rest)
}

/// Updates the open flow depth over one line and returns the deepest it
/// reached on it. A bracket opens a flow collection inside another one, or
/// where a value starts (line start, after `: `, `- `, `, `); quoted text
/// and comments are skipped.
fn flow_levels(rest: &str, flow: &mut usize) -> usize {
    let bytes = rest.as_bytes();
    let mut deepest = *flow;
    let mut quote: Option<u8> = None;
    let mut value_start = true;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == b'\\' && q == b'"' {
                i += 2;
                continue;
            }
            if b == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match b {
            b'"' | b'\'' if value_start => quote = Some(b),
            b'#' if i == 0 || bytes[i - 1] == b' ' => break,
            b'[' | b'{' if *flow > 0 || value_start => {
                *flow += 1;
                deepest = deepest.max(*flow);
            }
            b']' | b'}' if *flow > 0 => *flow -= 1,
            _ => {}
        }
        value_start = match b {
            b' ' => value_start,
            b':' | b'-' | b',' | b'[' | b'{' => true,
            _ => false,
        };
        i += 1;
    }
    deepest
}

/// Whether a line's value is a block scalar header (`|`, `>-`, `|2+`…).
fn opens_block_scalar(rest: &str) -> bool {
    let value = match rest.find(": ") {
        Some(at) => &rest[at + 2..],
        None => rest,
    };
    let value = value.split(" #").next().unwrap_or("").trim();
    let mut chars = value.chars();
    matches!(chars.next(), Some('|' | '>')) && chars.all(|c| matches!(c, '-' | '+' | '1'..='9'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_counts_brackets_outside_strings() {
        assert_eq!(json_depth(r#"{"a": [1, {"b": "[[[{{"}]}"#, 99), 3);
        assert_eq!(json_depth(r#"{"a": "\"[["}"#, 99), 1);
        let deep = "[".repeat(100_000);
        assert_eq!(json_depth(&deep, 64), 65);
    }

    #[test]
    fn yaml_depth_of_ordinary_documents_is_small() {
        let doc = r#"
name: word-count # a comment with [ and {
sources: [{ name: lines, stream: lines }]
operators:
  - name: big
    module: filter
    input: [split, count]
    key_by: { field: user }
    config:
      pattern: a[b{c
      script: |
        if (x) { [[[[
          more
      quoted: "[[[["
sinks: [{ name: out, stream: counts, input: count }]
"#;
        let depth = yaml_depth(doc, 99);
        assert!((3..=6).contains(&depth), "{depth}");
    }

    #[test]
    fn yaml_depth_sees_flow_block_and_compact_nesting() {
        let flow = format!("a: {}", "[".repeat(100_000));
        assert!(yaml_depth(&flow, 64) > 64);
        let compact = format!("{}x", "- ".repeat(1_000));
        assert!(yaml_depth(&compact, 64) > 64);
        let mut block = String::new();
        for level in 0..100 {
            block.push_str(&" ".repeat(level));
            block.push_str("k:\n");
        }
        assert!(yaml_depth(&block, 64) > 64);
    }
}
