//! The exported C ABI. This is the only `unsafe` in the module: the host hands us raw
//! pointers into our own linear memory, which Rust cannot check.
//!
//! Protocol: the host calls `tollgate_alloc(len)`, writes its encoded input there, calls
//! an operation with `(ptr, len)`, and gets back `(out_ptr << 32) | out_len`. It reads the
//! answer and releases both buffers with `tollgate_free(ptr, len)`.
#![allow(unsafe_code)]

use crate::ops::{call, Op};

/// The interface version (`policy_core::abi::ABI_VERSION`); hosts check it first.
#[no_mangle]
pub extern "C" fn tollgate_abi_version() -> u32 {
    policy_core::abi::ABI_VERSION
}

/// Allocates `len` bytes for the host to write into.
#[no_mangle]
pub extern "C" fn tollgate_alloc(len: u32) -> u32 {
    let mut buf: Vec<u8> = Vec::with_capacity(len as usize);
    let ptr = buf.as_mut_ptr();
    core::mem::forget(buf);
    ptr as usize as u32
}

/// Frees a buffer from `tollgate_alloc` or an operation's output.
///
/// # Safety
/// `ptr` and `len` must describe exactly one buffer this module handed out, freed once.
#[no_mangle]
pub unsafe extern "C" fn tollgate_free(ptr: u32, len: u32) {
    if ptr != 0 {
        // SAFETY: per the contract, (ptr, len) is a live Vec<u8> allocation with capacity
        // `len` (outputs are shrunk to fit before being handed out).
        drop(unsafe { Vec::from_raw_parts(ptr as usize as *mut u8, 0, len as usize) });
    }
}

/// Reads the host's input, runs `op`, and hands the output buffer to the host.
///
/// # Safety
/// `(ptr, len)` must be a buffer from `tollgate_alloc` that the host has filled.
unsafe fn run(op: Op, ptr: u32, len: u32) -> u64 {
    let input: &[u8] = if len == 0 {
        &[]
    } else {
        // SAFETY: the host wrote `len` initialised bytes at `ptr`, inside our memory.
        unsafe { core::slice::from_raw_parts(ptr as usize as *const u8, len as usize) }
    };
    let mut output = call(op, input).into_boxed_slice().into_vec();
    output.shrink_to_fit();
    let out_len = output.len() as u64;
    let out_ptr = output.as_mut_ptr() as usize as u64;
    core::mem::forget(output);
    (out_ptr << 32) | out_len
}

macro_rules! export {
    ($name:ident, $op:expr) => {
        /// # Safety
        /// See [`run`].
        #[no_mangle]
        pub unsafe extern "C" fn $name(ptr: u32, len: u32) -> u64 {
            // SAFETY: forwarded contract.
            unsafe { run($op, ptr, len) }
        }
    };
}

export!(tollgate_init, Op::Init);
export!(tollgate_set_keys, Op::SetKeys);
export!(tollgate_set_secrets, Op::SetSecrets);
export!(tollgate_decide, Op::Decide);
export!(tollgate_complete_sign_in, Op::CompleteSignIn);
