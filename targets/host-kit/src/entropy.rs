//! The operating system's random source, for the bytes a browser sign-in draws its
//! state, nonce and PKCE verifier from ([`policy_core::RequestFacts::entropy`]). Native
//! hosts and WASI (Fastly) read it through getrandom; a Workers isolate uses
//! `crypto.getRandomValues` itself.

/// 32 fresh random bytes, or `None` if the source failed (a sign-in then fails closed).
pub fn os_entropy() -> Option<[u8; 32]> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_draws_differ() {
        let (a, b) = (super::os_entropy().unwrap(), super::os_entropy().unwrap());
        assert_ne!(a, b);
    }
}
