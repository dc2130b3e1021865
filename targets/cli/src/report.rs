//! Human-readable error reports.

use policy_core::PolicyError;

/// `file:line:col: message`, then the offending line with a caret under the column.
pub fn policy_error(error: &PolicyError, source: &str) -> String {
    let mut out = error.to_string();
    if let Some(pos) = error.position {
        if let Some(line) = source.lines().nth(pos.line.saturating_sub(1)) {
            let gutter = pos.line.to_string();
            let pad = " ".repeat(gutter.len());
            let caret = " ".repeat(pos.column.saturating_sub(1));
            out.push_str(&format!("\n{pad} |\n{gutter} | {line}\n{pad} | {caret}^"));
        }
    }
    out
}
