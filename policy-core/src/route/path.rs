//! A request path as Gogs' routers see it, refused wherever the edge and the origin could
//! read it differently.

use alloc::{borrow::ToOwned, string::String, vec::Vec};
use percent_encoding::percent_decode_str;

use crate::route::RouteError;

/// Percent-decodes `raw` once (as Go's net/http does for Gogs) and splits it into
/// segments; `/` is no segment at all, and one trailing `/` is dropped (macaron trims it).
pub(crate) fn decode_segments(raw: &str) -> Result<Vec<String>, RouteError> {
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
    let mut segments: Vec<String> = decoded.split('/').map(ToOwned::to_owned).collect();
    if segments.len() > 1 && segments.last().is_some_and(String::is_empty) {
        segments.pop();
    }
    if segments.len() == 1 && segments.first().is_some_and(String::is_empty) {
        segments.clear(); // "/"
    }
    for segment in &segments {
        if segment.is_empty() {
            return Err(RouteError::EmptySegment);
        }
        if segment == "." || segment == ".." {
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
pub(crate) fn query_values<'q>(query: &'q str, key: &'q str) -> impl Iterator<Item = String> + 'q {
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(k) == key).then(|| form_decode(v))
    })
}

fn form_decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}
