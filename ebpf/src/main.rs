//! bpfkill kernel programs: one raw tracepoint program per hook (see `probes/`), sharing the
//! maps in `maps.rs`. Kernel structure offsets come from BTF at load time through the
//! `LAYOUT` global; nothing here hardcodes a kernel's layout.
#![no_std]
#![no_main]
// The reap program's kfunc call is a raw instruction (see probes/reap.rs).
#![feature(asm_experimental_arch)]

mod event;
mod kernel;
mod maps;
mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never called.
    loop {}
}
