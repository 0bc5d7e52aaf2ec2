//! Kicking a vCPU thread out of `KVM_RUN`: a real-time signal whose handler sets the thread's
//! `kvm_run.immediate_exit`.
//!
//! A signal that arrives while the thread is inside `KVM_RUN` makes the ioctl return `EINTR`;
//! one that arrives while the thread is handling an exit in user space would be lost, so the
//! handler also sets `immediate_exit`, which makes the *next* `KVM_RUN` return `EINTR` at once.
//! The handler finds the `kvm_run` page through a thread-local pointer that the vCPU thread
//! sets ([`Registration`]) while its vCPU exists and clears before the page is unmapped.

use kvm_bindings::kvm_run;
use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::sync::OnceLock;
use vmm_sys_util::signal::{SIGRTMIN, register_signal_handler};

thread_local! {
    /// The `kvm_run` page of the vCPU this thread runs (null: none).
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal used for kicks: the third real-time signal (the C runtime leaves them alone).
pub fn signal() -> c_int {
    SIGRTMIN() + 2
}

extern "C" fn handle_kick(_num: c_int, _info: *mut libc::siginfo_t, _ctx: *mut c_void) {
    // Async-signal-safe: one thread-local load (const-initialised, no destructor, so no lazy
    // registration) and one volatile store.
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer is non-null only between `Registration::new` and its drop, while
        // the vCPU (and so the mmap'd `kvm_run` page it points into) is alive on this very
        // thread; the handler runs on the thread the pointer belongs to, and a byte store to
        // `immediate_exit` is what the KVM API documents for this purpose.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

/// Installs the handler once per process.
pub fn install() -> Result<(), String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            register_signal_handler(signal(), handle_kick)
                .map_err(|e| format!("installing the vCPU kick signal handler: {e}"))
        })
        .clone()
}

/// While alive, kicks delivered to this thread set `immediate_exit` of `run` (not `Send`: it
/// belongs to the thread that registered).
#[derive(Debug)]
pub struct Registration(PhantomData<*mut kvm_run>);

impl Registration {
    /// Registers `run` for this thread.
    ///
    /// # Safety
    ///
    /// `run` must point to the `kvm_run` page of a vCPU that outlives the returned value, and
    /// the value must be dropped on the thread that created it.
    pub unsafe fn new(run: *mut kvm_run) -> Registration {
        KVM_RUN.with(|c| c.set(run));
        Registration(PhantomData)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        KVM_RUN.with(|c| c.set(std::ptr::null_mut()));
        // Keep the compiler from moving the clear past the unmap that follows.
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}
