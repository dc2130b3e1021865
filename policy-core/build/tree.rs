//! Route trees built the way macaron (tree.go `Tree.Add`) and flamego (internal/route
//! `addNextSegment`) build them: one tree per HTTP method, children of a node kept in the
//! order the router tries them (by pattern kind, then registration order), a repeated
//! pattern at a node keeping its first route, and macaron's optional `?:x` leaves also
//! registered one level up without the parameter.

use crate::pattern::{self, Pat};

pub struct Node {
    pub raw: String,
    pub pat: Pat,
    pub subtrees: Vec<Node>,
    pub leaves: Vec<Leaf>,
}

pub struct Leaf {
    pub raw: String,
    pub pat: Pat,
    pub spec: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Macaron,
    Flamego,
}

impl Node {
    pub fn root() -> Node {
        Node {
            raw: String::new(),
            pat: Pat::Static(String::new()),
            subtrees: Vec::new(),
            leaves: Vec::new(),
        }
    }

    /// Registers `pattern` (a full route path) for `spec`.
    pub fn add(&mut self, dialect: Dialect, pattern: &str, spec: usize) -> Result<(), String> {
        let segments = match dialect {
            Dialect::Macaron => {
                // Tree.Add trims one trailing `/`, addNextSegment one leading `/`.
                let p = pattern.strip_suffix('/').unwrap_or(pattern);
                let p = p.strip_prefix('/').unwrap_or(p);
                p.split('/').map(str::to_owned).collect::<Vec<_>>()
            }
            Dialect::Flamego => flamego_segments(pattern),
        };
        if let Some(extra) = self.add_segments(dialect, &segments, spec)? {
            // An optional leaf directly under the root also matches the root itself.
            self.add_leaf(dialect, &extra, spec)?;
        }
        Ok(())
    }

    /// Returns the pattern of a leaf the caller (this node's parent) must add, for
    /// macaron's optional leaves.
    fn add_segments(
        &mut self,
        dialect: Dialect,
        segments: &[String],
        spec: usize,
    ) -> Result<Option<String>, String> {
        match segments {
            [] => Err("empty route".into()),
            [last] => self.add_leaf(dialect, last, spec),
            [first, rest @ ..] => {
                let index = match self.subtrees.iter().position(|s| s.raw == *first) {
                    Some(i) => i,
                    None => {
                        let pat = parse(dialect, first)?.0;
                        let at = insert_at(self.subtrees.iter().map(|s| s.pat.rank()), pat.rank());
                        self.subtrees.insert(
                            at,
                            Node {
                                raw: first.clone(),
                                pat,
                                subtrees: Vec::new(),
                                leaves: Vec::new(),
                            },
                        );
                        at
                    }
                };
                let child = &mut self.subtrees[index];
                if let Some(extra) = child.add_segments(dialect, rest, spec)? {
                    self.add_leaf(dialect, &extra, spec)?;
                }
                Ok(None)
            }
        }
    }

    fn add_leaf(
        &mut self,
        dialect: Dialect,
        raw: &str,
        spec: usize,
    ) -> Result<Option<String>, String> {
        if self.leaves.iter().any(|l| l.raw == raw) {
            return Ok(None); // the first registration keeps the pattern
        }
        let (pat, optional) = parse(dialect, raw)?;
        let at = insert_at(self.leaves.iter().map(|l| l.pat.rank()), pat.rank());
        self.leaves.insert(
            at,
            Leaf {
                raw: raw.to_owned(),
                pat,
                spec,
            },
        );
        // macaron addLeaf: an optional leaf is also added to the parent, named like this
        // node (the root adds the empty pattern to itself).
        Ok(optional.then(|| self.raw.clone()))
    }
}

fn parse(dialect: Dialect, segment: &str) -> Result<(Pat, bool), String> {
    match dialect {
        Dialect::Macaron => pattern::macaron(segment),
        Dialect::Flamego => pattern::flamego(segment).map(|p| (p, false)),
    }
}

/// Where a new child of `rank` goes: after every child of the same or a lower rank.
fn insert_at(ranks: impl Iterator<Item = u8>, rank: u8) -> usize {
    let ranks: Vec<u8> = ranks.collect();
    ranks.iter().position(|&r| rank < r).unwrap_or(ranks.len())
}

/// flamego route paths split at `/` outside `{...}` (a regex may contain `/`).
fn flamego_segments(pattern: &str) -> Vec<String> {
    let mut segments = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for c in pattern.trim_start_matches('/').chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if c == '/' && depth == 0 {
            segments.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    segments.push(current);
    segments
}
