//! Locking a writer-side mutex, through poisoning.

use super::{Mutex, MutexGuard};

/// Locks a writer-side mutex. Writer sections never run user code, so a poisoned lock can only
/// come from a bug already reported by its panic; the data is still consistent at every
/// statement boundary we unlock from, so we keep going rather than cascade the panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
