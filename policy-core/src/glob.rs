//! Glob patterns for one path segment (an owner or a repository name), and the same
//! matching for claim values (`[[binding]]`).
//!
//! `*` matches any run of characters (including none), `?` exactly one; everything else
//! matches itself. Segments never contain `/`, so a `*` cannot reach across owner and repo.
//! Matching is linear-time backtracking on bytes (names are ASCII), with no recursion.

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SegmentGlob {
    pattern: alloc::vec::Vec<u8>,
}

impl SegmentGlob {
    /// `pattern` must already be validated and lowercased.
    pub(crate) fn new(pattern: &str) -> Self {
        SegmentGlob {
            pattern: pattern.as_bytes().to_vec(),
        }
    }

    pub(crate) fn matches(&self, text: &str) -> bool {
        glob_match(&self.pattern, text.as_bytes())
    }
}

pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // Where to resume after the most recent `*`: (pattern index after it, text index).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match (pattern.get(p), text.get(t)) {
            (Some(b'*'), _) => {
                star = Some((p + 1, t));
                p += 1;
            }
            (Some(b'?'), Some(_)) => {
                p += 1;
                t += 1;
            }
            (Some(pc), Some(tc)) if pc == tc => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    // Let the last `*` swallow one more character and retry.
                    p = sp;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        SegmentGlob::new(p).matches(t)
    }

    #[test]
    fn literals_and_wildcards() {
        assert!(m("app", "app"));
        assert!(!m("app", "apps"));
        assert!(!m("app", "ap"));
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("app-*", "app-web"));
        assert!(!m("app-*", "ap-web"));
        assert!(m("*-svc", "pay-svc"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "axxbyy"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("**", "x"));
    }

    proptest::proptest! {
        #[test]
        fn star_matches_everything(t in "[a-z0-9._-]{0,40}") {
            proptest::prop_assert!(m("*", &t));
        }

        #[test]
        fn literal_matches_only_itself(a in "[a-z0-9._-]{1,20}", b in "[a-z0-9._-]{1,20}") {
            proptest::prop_assert_eq!(m(&a, &b), a == b);
        }

        #[test]
        fn prefix_star(a in "[a-z0-9]{1,10}", rest in "[a-z0-9._-]{0,20}") {
            let text = alloc::format!("{a}{rest}");
            let pattern = alloc::format!("{a}*");
            proptest::prop_assert!(m(&pattern, &text));
        }
    }
}
