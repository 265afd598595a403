//! Gives memory freed by departed subscribers back to the OS. Their pages
//! are freed when they leave, but glibc's malloc keeps freed chunks of this
//! size in its per-thread arenas, so the process would stay at its peak;
//! `malloc_trim` releases them. Debounced: one trim a few seconds after a
//! subscriber leaves, however many leave meanwhile, on a blocking thread.

/// Asks for a trim a little later (glibc on Linux; elsewhere nothing).
pub(super) fn soon() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::soon();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// How long after a departure the trim runs: departures in a burst
    /// share one trim.
    const DELAY: Duration = Duration::from_secs(2);

    static PENDING: AtomicBool = AtomicBool::new(false);

    unsafe extern "C" {
        /// glibc: returns free memory of every arena to the OS; always safe
        /// to call.
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }

    pub(super) fn soon() {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if PENDING.swap(true, Ordering::AcqRel) {
            return;
        }
        runtime.spawn(async {
            tokio::time::sleep(DELAY).await;
            PENDING.store(false, Ordering::Release);
            // SAFETY: malloc_trim takes no pointers and only works on the
            // allocator's own free lists, under its own locks.
            let _ = tokio::task::spawn_blocking(|| unsafe { malloc_trim(0) }).await;
        });
    }
}
