//! A request path as Gogs' routers see it, refused wherever the edge and the origin could
//! read it differently.

use alloc::{borrow::Cow, vec::Vec};
use percent_encoding::percent_decode_str;

use crate::route::RouteError;

/// Percent-decodes `raw` once (as Go's net/http does for Gogs), refusing what the edge and
/// the origin could read differently. The result is the path after its leading `/`: its
/// segments joined by `/`, borrowed from `raw` when nothing was escaped.
pub(crate) fn decode_path(raw: &str) -> Result<Cow<'_, str>, RouteError> {
    let rest = raw.strip_prefix('/').ok_or(RouteError::NotAbsolute)?;
    let bytes = raw.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(RouteError::BadEscape)?;
            let value = match (hex_digit(hex.first()), hex_digit(hex.get(1))) {
                (Some(hi), Some(lo)) => hi * 16 + lo,
                _ => return Err(RouteError::BadEscape),
            };
            if value == b'/' || value == b'\\' {
                return Err(RouteError::EncodedSeparator);
            }
            // Routers compare some segments encoded (flamego) and some decoded (macaron);
            // no client needs to encode these, so nobody gets to.
            if value.is_ascii_alphanumeric() || b"-._~".contains(&value) {
                return Err(RouteError::EncodedUnreserved);
            }
        }
    }
    let decoded = percent_decode_str(rest)
        .decode_utf8()
        .map_err(|_| RouteError::NotUtf8)?;
    if decoded.chars().any(char::is_control) {
        return Err(RouteError::ControlCharacter);
    }
    if decoded.contains('\\') {
        return Err(RouteError::Backslash);
    }
    Ok(decoded)
}

/// One trailing `/` of a path [`decode_path`] decoded dropped, as macaron trims it: `a/b/`
/// is `a/b`.
pub(crate) fn trim_trailing_slash(decoded: &str) -> &str {
    decoded.strip_suffix('/').unwrap_or(decoded)
}

/// The segments of a path [`trim_trailing_slash`] trimmed; `/` is no segment at all.
pub(crate) fn segments(trimmed: &str) -> Result<Vec<&str>, RouteError> {
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let segments: Vec<&str> = trimmed.split('/').collect();
    for segment in &segments {
        if segment.is_empty() {
            return Err(RouteError::EmptySegment);
        }
        if *segment == "." || *segment == ".." {
            return Err(RouteError::DotSegment);
        }
    }
    Ok(segments)
}

fn hex_digit(b: Option<&u8>) -> Option<u8> {
    let b = *b?;
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Values of query parameter `key` (form-decoded), in order.
pub(crate) fn query_values<'q>(
    query: &'q str,
    key: &'q str,
) -> impl Iterator<Item = Cow<'q, str>> + 'q {
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(k) == key).then(|| form_decode(v))
    })
}

/// `+` as a space, then percent-decoded (invalid UTF-8 replaced); borrowed when neither
/// occurs, as in almost every query.
fn form_decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['+', '%']) {
        return Cow::Borrowed(s);
    }
    let spaced = s.replace('+', " ");
    Cow::Owned(percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
}
