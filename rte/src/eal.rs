use std::ffi::CString;
use std::os::raw::c_char;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::RteError;

static EAL_STARTED: AtomicBool = AtomicBool::new(false);

/// The DPDK Environment Abstraction Layer of this process.
///
/// Created once with [`Eal::init`]; `rte_eal_cleanup` runs when the last
/// `Arc<Eal>` (held by every pool, port and ring) is dropped.
#[derive(Debug)]
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Starts EAL with `args` (argv[0] first). Fails if EAL was already
    /// started in this process (DPDK allows one init per process).
    pub fn init(args: &[String]) -> Result<Arc<Eal>, RteError> {
        if EAL_STARTED.swap(true, Ordering::SeqCst) {
            return Err(RteError::other("rte_eal_init", "EAL already initialised in this process"));
        }
        let cargs: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_str()))
            .collect::<Result<_, _>>()
            .map_err(|_| RteError::other("rte_eal_init", "an EAL argument contains a NUL byte"))?;
        // EAL may permute argv and keeps pointers into it: leak the strings
        // and the array for the life of the process (a few hundred bytes).
        let mut argv: Vec<*mut c_char> = cargs.into_iter().map(|c| c.into_raw()).collect();
        argv.push(std::ptr::null_mut());
        let argc = (argv.len() - 1) as i32;
        let argv = Box::leak(argv.into_boxed_slice());
        // SAFETY: argv holds argc valid NUL-terminated strings plus a NULL
        // terminator, and lives for the rest of the process.
        let rc = unsafe { dpdk_sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if rc < 0 {
            return Err(RteError::last("rte_eal_init"));
        }
        Ok(Arc::new(Eal { _private: () }))
    }

    /// The lcore id of the calling thread (u32::MAX on a non-EAL thread).
    pub fn lcore_id() -> u32 {
        // SAFETY: reads a thread-local set by EAL.
        unsafe { dpdk_sys::shim_rte_lcore_id() }
    }

    /// The NUMA socket of the calling lcore.
    pub fn socket_id() -> i32 {
        // SAFETY: reads a thread-local set by EAL.
        unsafe { dpdk_sys::rte_socket_id() as i32 }
    }

    /// The NUMA socket of lcore `lcore` (0 where EAL does not know it).
    pub fn lcore_socket(&self, lcore: u32) -> u32 {
        // SAFETY: EAL is initialised (we are its handle); an unknown lcore
        // id is answered, not dereferenced.
        let s = unsafe { dpdk_sys::rte_lcore_to_socket_id(lcore) };
        if s == u32::MAX {
            0
        } else {
            s
        }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: no pool, port or ring handle is left (each holds an
        // Arc<Eal>), so no DPDK object is used after this.
        unsafe {
            dpdk_sys::rte_eal_cleanup();
        }
    }
}
