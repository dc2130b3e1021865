//! jwt-compact's RSA support links getrandom 0.2, which has no entropy source on bare
//! `wasm32-unknown-unknown` / `wasm32v1-none`. Signature verification never needs
//! randomness, so the registered source always fails: if anything ever asks, it gets an
//! error instead of predictable bytes.
#[cfg(all(target_arch = "wasm32", not(target_os = "wasi")))]
mod imp {
    use core::num::NonZeroU32;

    fn no_randomness(_buf: &mut [u8]) -> Result<(), getrandom::Error> {
        // Any code in getrandom's custom range signals "unavailable".
        match NonZeroU32::new(getrandom::Error::CUSTOM_START) {
            Some(code) => Err(getrandom::Error::from(code)),
            None => Err(getrandom::Error::UNSUPPORTED),
        }
    }

    getrandom::register_custom_getrandom!(no_randomness);
}
