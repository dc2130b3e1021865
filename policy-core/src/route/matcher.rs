//! Finding the route a request reaches in a router tree, trying children in the tree's
//! order and backtracking as macaron (tree.go `matchNextSegment`) and flamego do: static
//! segments first, then regular expressions, then parameters, then the rest of the path.

use alloc::vec::Vec;

use crate::route::table::{Node, Pattern, Piece, Regex, Spec};

/// Parameters a match bound: a name and the index of the segment it holds.
#[derive(Debug, Default)]
pub(crate) struct Captures(Vec<(&'static str, usize)>);

impl Captures {
    pub(crate) fn segment(&self, name: &str) -> Option<usize> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, i)| *i)
    }
}

/// The route `segments` (decoded, never empty: `/` is one empty segment) reach in the
/// tree under `root`.
pub(crate) fn find(root: &Node, segments: &[&str]) -> Option<(&'static Spec, Captures)> {
    let mut captures = Captures::default();
    next_segment(root, segments, 0, &mut captures).map(|spec| (spec, captures))
}

fn next_segment(
    node: &Node,
    segments: &[&str],
    at: usize,
    captures: &mut Captures,
) -> Option<&'static Spec> {
    let segment = segments.get(at)?;
    if at + 1 == segments.len() {
        leaf(node, segment, at, captures)
    } else {
        subtree(node, segments, at, captures)
    }
}

fn leaf(node: &Node, segment: &str, at: usize, captures: &mut Captures) -> Option<&'static Spec> {
    for leaf in node.leaves {
        match leaf.pattern {
            Pattern::Static(s) if s == segment => return Some(leaf.spec),
            Pattern::Regex(re) if re.is_match(segment) => return Some(leaf.spec),
            Pattern::Holder(name) => {
                captures.0.push((name, at));
                return Some(leaf.spec);
            }
            Pattern::MatchAll => return Some(leaf.spec),
            Pattern::Static(_) | Pattern::Regex(_) => {}
        }
    }
    None
}

fn subtree(
    node: &Node,
    segments: &[&str],
    at: usize,
    captures: &mut Captures,
) -> Option<&'static Spec> {
    let segment = segments.get(at)?;
    for child in node.subtrees {
        let enters = match child.pattern {
            Pattern::Static(s) => s == *segment,
            Pattern::Regex(re) => re.is_match(segment),
            Pattern::Holder(_) | Pattern::MatchAll => true,
        };
        if !enters {
            continue;
        }
        let mark = captures.0.len();
        if let Some(spec) = next_segment(child, segments, at + 1, captures) {
            if let Pattern::Holder(name) = child.pattern {
                captures.0.push((name, at));
            }
            return Some(spec);
        }
        captures.0.truncate(mark);
    }
    // Neither router gives up yet: a node whose last leaf takes the rest of the path
    // takes these segments too.
    match node.leaves.last() {
        Some(leaf) if matches!(leaf.pattern, Pattern::MatchAll) => Some(leaf.spec),
        _ => None,
    }
}

impl Regex {
    /// Does the expression match `text` anywhere (Go's `FindStringSubmatch` != nil)?
    pub(crate) fn is_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        let last_start = if self.anchored_start { 0 } else { chars.len() };
        (0..=last_start).any(|start| self.matches_from(self.pieces, &chars, start))
    }

    fn matches_from(&self, pieces: &[Piece], chars: &[char], at: usize) -> bool {
        let Some((piece, rest)) = pieces.split_first() else {
            return !self.anchored_end || at == chars.len();
        };
        let remaining = chars.get(at..).unwrap_or_default();
        match piece {
            Piece::Literal(literal) => {
                starts_with(remaining, literal)
                    && self.matches_from(rest, chars, at + literal.chars().count())
            }
            Piece::OneOf(words) => words.iter().any(|w| {
                starts_with(remaining, w) && self.matches_from(rest, chars, at + w.chars().count())
            }),
            Piece::Class {
                ranges,
                any,
                min,
                max,
            } => {
                let fits = |c: &char| *any || ranges.iter().any(|(lo, hi)| (lo..=hi).contains(&c));
                let limit = max.map_or(usize::MAX, |m| m as usize);
                let run = remaining.iter().take(limit).take_while(|c| fits(c)).count();
                let least = *min as usize;
                (least..=run)
                    .rev()
                    .any(|n| self.matches_from(rest, chars, at + n))
            }
        }
    }
}

fn starts_with(chars: &[char], literal: &str) -> bool {
    let mut it = chars.iter();
    literal.chars().all(|c| it.next() == Some(&c))
}
