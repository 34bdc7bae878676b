//! A cache-line prefetch for writing, ahead of a broadcast's claims on a chunk of mailboxes.

/// Asks the CPU to start loading the cache line at `at` for writing. A broadcast does this for
/// a whole chunk of mailboxes before it claims a place in each: each claim is a locked
/// instruction, which lets no later load start before it completes, so without the prefetch
/// the chunk's misses are taken one after another. `prefetchw` fetches the line exclusive, as
/// the claim that follows needs it: a prefetch for reading would leave the claim to ask for
/// ownership again. A hint only: it reads nothing and changes no state, so it is a no-op under
/// loom and off x86-64, and a read prefetch on a CPU without `prefetchw`.
#[inline(always)]
pub(crate) fn prefetch_for_write<T>(at: &T) {
    #[cfg(all(target_arch = "x86_64", not(fanout_loom)))]
    {
        let at = std::ptr::from_ref(at);
        if cpu_has_prefetchw() {
            // SAFETY: the CPU has the instruction; a prefetch never faults and changes no
            // state the program can observe.
            unsafe {
                std::arch::asm!("prefetchw [{0}]", in(reg) at, options(nostack, preserves_flags, readonly));
            }
        } else {
            // SAFETY: as above; SSE is part of x86-64.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast::<i8>()) }
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(fanout_loom))))]
    let _ = at;
}

/// Whether the CPU has `prefetchw` (CPUID leaf `0x8000_0001`, ECX bit 8: AMD's
/// `3DNowPrefetch`, Intel's `PRFCHW`); `std`'s feature detection does not name it. Asked once.
#[cfg(all(target_arch = "x86_64", not(fanout_loom)))]
fn cpu_has_prefetchw() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        use std::arch::x86_64::__cpuid;
        #[allow(unused_unsafe)]
        // SAFETY: every x86-64 CPU has `cpuid`; leaf 0x8000_0000 gives the highest extended
        // leaf, and 0x8000_0001 is read only if it exists.
        unsafe {
            __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
        }
    })
}
