//! The random source the bytes a browser sign-in draws its state, nonce and PKCE verifier
//! from come from ([`policy_core::RequestFacts::entropy`]): the operating system's,
//! through getrandom, for native hosts and WASI (Fastly); JavaScript's
//! `crypto.getRandomValues` in a JavaScript runtime (feature `js`).

/// 32 fresh random bytes, or `None` if the source failed (a sign-in then fails closed).
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub fn os_entropy() -> Option<[u8; 32]> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes)
}

/// 32 bytes from `globalThis.crypto.getRandomValues`, or `None` where there is no such
/// function (a sign-in then fails closed).
#[cfg(feature = "js")]
pub fn js_entropy() -> Option<[u8; 32]> {
    use wasm_bindgen::JsCast;
    let crypto = js_sys::Reflect::get(&js_sys::global(), &"crypto".into()).ok()?;
    let fill = js_sys::Reflect::get(&crypto, &"getRandomValues".into())
        .ok()?
        .dyn_into::<js_sys::Function>()
        .ok()?;
    let array = js_sys::Uint8Array::new_with_length(32);
    fill.call1(&crypto, &array).ok()?;
    let mut bytes = [0u8; 32];
    array.copy_to(&mut bytes);
    Some(bytes)
}

#[cfg(all(test, not(all(target_arch = "wasm32", target_os = "unknown"))))]
mod tests {
    #[test]
    fn two_draws_differ() {
        let (a, b) = (super::os_entropy().unwrap(), super::os_entropy().unwrap());
        assert_ne!(a, b);
    }
}
