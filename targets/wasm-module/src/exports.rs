//! The exported functions. The module owns both buffers that cross: the host asks
//! `tollgate_input(len)` for room to write its encoded input, calls an operation with that
//! length, and gets back `(out_ptr << 32) | out_len`: the encoded answer in the module's
//! output buffer, valid until the next call. Nothing is freed per call, and no pointer
//! from the host is ever dereferenced.
// `#[no_mangle]` counts as unsafe code; there is no `unsafe` block here.
#![allow(unsafe_code)]

use std::cell::RefCell;

use policy_core::abi::{Module, Op};

// wasm32-unknown-unknown has one thread; thread_local! gives interior mutability with no
// `unsafe` and no locking.
thread_local! {
    /// The policy, keys, secrets and verified tokens, kept between calls.
    static MODULE: RefCell<Module> = RefCell::new(Module::default());
    /// Where the host writes its input; grown to the largest input seen.
    static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Where the last answer was encoded.
    static OUTPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The interface version (`policy_core::abi::ABI_VERSION`); hosts check it first.
#[no_mangle]
pub extern "C" fn tollgate_abi_version() -> u32 {
    policy_core::abi::ABI_VERSION
}

/// Makes room for `len` input bytes and returns where the host writes them.
#[no_mangle]
pub extern "C" fn tollgate_input(len: u32) -> u32 {
    INPUT.with_borrow_mut(|input| {
        input.resize(len as usize, 0);
        input.as_ptr() as usize as u32
    })
}

/// Runs `op` on the first `len` bytes of the input buffer and points at its answer.
fn run(op: Op, len: u32) -> u64 {
    INPUT.with_borrow(|input| {
        OUTPUT.with_borrow_mut(|output| {
            MODULE.with_borrow_mut(|module| {
                // A length beyond what `tollgate_input` made room for reads no input at
                // all, which every operation refuses as malformed.
                module.call(op, input.get(..len as usize).unwrap_or_default(), output);
            });
            ((output.as_ptr() as usize as u64) << 32) | output.len() as u64
        })
    })
}

macro_rules! export {
    ($name:ident, $op:expr) => {
        #[no_mangle]
        pub extern "C" fn $name(len: u32) -> u64 {
            run($op, len)
        }
    };
}

export!(tollgate_init, Op::Init);
export!(tollgate_set_keys, Op::SetKeys);
export!(tollgate_set_secrets, Op::SetSecrets);
export!(tollgate_decide, Op::Decide);
export!(tollgate_complete_sign_in, Op::CompleteSignIn);
