//! Human-readable error reports.

use std::path::Path;
use std::str::Utf8Error;

use policy_core::{PolicyError, Position};

/// `file:line:col: message`, then the offending line with a caret under the column.
pub fn policy_error(error: &PolicyError, source: &str) -> String {
    at_position(&error.file, error.position, source, &error.message)
}

/// `file:line:col: message` and an excerpt, or `file: message` without a position.
pub fn at_position(file: &str, position: Option<Position>, source: &str, message: &str) -> String {
    let Some(pos) = position else {
        return format!("{file}: {message}");
    };
    let mut out = format!("{file}:{}:{}: {message}", pos.line, pos.column);
    if let Some(line) = source.lines().nth(pos.line.saturating_sub(1)) {
        let gutter = pos.line.to_string();
        let pad = " ".repeat(gutter.len());
        let caret = " ".repeat(pos.column.saturating_sub(1));
        out.push_str(&format!("\n{pad} |\n{gutter} | {line}\n{pad} | {caret}^"));
    }
    out
}

/// A policy file that is not UTF-8, reported at its first bad byte.
pub fn not_utf8(path: &Path, bytes: &[u8], error: Utf8Error) -> String {
    let valid = error.valid_up_to();
    let bad = bytes.get(valid).copied().unwrap_or_default();
    // The text before the bad byte is valid by definition; the rest is shown lossily.
    let source = String::from_utf8_lossy(bytes);
    let prefix = bytes
        .get(..valid)
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or_default();
    let position = Position::of_offset(prefix, prefix.len());
    at_position(
        &path.display().to_string(),
        Some(position),
        &source,
        &format!("the policy is not UTF-8 (byte 0x{bad:02x}); TOML files must be UTF-8"),
    )
}
