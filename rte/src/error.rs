use std::ffi::CStr;

/// A DPDK call failed. `op` names the call, `errno` is DPDK's error number
/// (rte_errno or the negated return code) and `message` its text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op}: {message} (errno {errno})")]
pub struct RteError {
    pub op: &'static str,
    pub errno: i32,
    pub message: String,
}

impl RteError {
    /// Builds an error from an explicit errno (e.g. a negative return value).
    pub fn from_errno(op: &'static str, errno: i32) -> Self {
        let errno = errno.abs();
        // SAFETY: rte_strerror returns a pointer to a NUL-terminated string
        // that stays valid at least until the next call on this thread.
        let message = unsafe { CStr::from_ptr(dpdk_sys::rte_strerror(errno)) }.to_string_lossy().into_owned();
        RteError { op, errno, message }
    }

    /// Builds an error from the calling thread's rte_errno.
    pub fn last(op: &'static str) -> Self {
        // SAFETY: reads the thread-local rte_errno.
        let errno = unsafe { dpdk_sys::shim_rte_errno() };
        Self::from_errno(op, errno)
    }

    /// An error detected on the Rust side (bad argument, not found).
    pub fn other(op: &'static str, message: impl Into<String>) -> Self {
        RteError { op, errno: libc::EINVAL, message: message.into() }
    }

    /// The device or driver does not implement the operation (ENOTSUP).
    pub fn is_not_supported(&self) -> bool {
        self.errno == libc::ENOTSUP
    }
}
