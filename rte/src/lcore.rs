//! Launching work on EAL worker lcores.

use std::os::raw::{c_int, c_void};

use crate::RteError;

type Job = Box<dyn FnOnce() -> i32 + Send + 'static>;

/// A job running on a worker lcore; [`LcoreHandle::wait`] joins it.
pub struct LcoreHandle {
    lcore: u32,
    joined: bool,
}

unsafe extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: arg is the Box<Job> leaked by `launch`, handed over exactly once.
    let job: Box<Job> = unsafe { Box::from_raw(arg as *mut Job) };
    // A panic must not unwind into C: turn it into an error code.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).unwrap_or(-1)
}

/// Runs `job` on worker lcore `lcore` (which must be idle).
pub fn launch(lcore: u32, job: impl FnOnce() -> i32 + Send + 'static) -> Result<LcoreHandle, RteError> {
    let boxed: Box<Job> = Box::new(Box::new(job));
    let arg = Box::into_raw(boxed) as *mut c_void;
    // SAFETY: trampoline takes ownership of arg exactly once if the launch
    // succeeds; on failure we take it back.
    let rc = unsafe { dpdk_sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
    if rc != 0 {
        // SAFETY: the launch failed, so the lcore never saw arg.
        drop(unsafe { Box::from_raw(arg as *mut Job) });
        return Err(RteError::from_errno("rte_eal_remote_launch", rc));
    }
    Ok(LcoreHandle { lcore, joined: false })
}

impl LcoreHandle {
    /// Waits for the job to return and gives its return code.
    pub fn wait(mut self) -> i32 {
        self.joined = true;
        // SAFETY: waits on an lcore we launched.
        unsafe { dpdk_sys::rte_eal_wait_lcore(self.lcore) }
    }

    pub fn lcore(&self) -> u32 {
        self.lcore
    }
}

impl Drop for LcoreHandle {
    fn drop(&mut self) {
        if !self.joined {
            // SAFETY: as in wait: never leave a job running past its handle.
            unsafe { dpdk_sys::rte_eal_wait_lcore(self.lcore) };
        }
    }
}
