use std::ffi::{c_void, CString};
use std::os::raw::{c_char, c_int};
use std::path::PathBuf;
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
    /// Unlink the hugepage files after `rte_eal_cleanup`.
    remove_hugepage_files: AtomicBool,
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
        Ok(Arc::new(Eal { remove_hugepage_files: AtomicBool::new(false) }))
    }

    /// Without `--huge-unlink` the files backing EAL's hugepages stay in the
    /// hugetlbfs mount (secondary processes such as `dpdk-dumpcap` map them),
    /// and `rte_eal_cleanup` leaves them there (measured with 22.11). After
    /// this call, the last drop of the `Eal` unlinks the files its memory
    /// segments were mapped from, after cleanup. (Files of a process that
    /// died are removed by the next EAL that starts on the machine: it
    /// deletes every page file no process holds a lock on.)
    pub fn remove_hugepage_files_at_cleanup(&self) {
        self.remove_hugepage_files.store(true, Ordering::SeqCst);
    }

    /// The files backing this process's hugepage memory segments, as the
    /// kernel names them (`/dev/hugepages/<prefix>map_<n>`), each once.
    /// Empty with `--huge-unlink` or `--in-memory` (no file has a name).
    pub fn hugepage_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = Vec::new();
        // SAFETY: `collect_segment_file` matches rte_memseg_walk_t and only
        // reads the segment it is given; `files` outlives the walk, which
        // calls back on this thread only.
        unsafe {
            dpdk_sys::rte_memseg_walk(Some(collect_segment_file), (&mut files as *mut Vec<PathBuf>).cast::<c_void>());
        }
        files.sort();
        files.dedup();
        files
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

/// rte_memseg_walk callback: pushes the path of the file behind `ms` (if it
/// has one) onto the `Vec<PathBuf>` at `arg`. Always continues the walk.
unsafe extern "C" fn collect_segment_file(
    msl: *const dpdk_sys::rte_memseg_list,
    ms: *const dpdk_sys::rte_memseg,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: EAL passes a valid list and segment for the duration of the
    // call, and the walk holds the memory lock, so the thread-unsafe fd
    // getter is the one to use; `arg` is the Vec that `hugepage_files`
    // passed, borrowed by nobody else during the walk.
    unsafe {
        if (*msl).external != 0 {
            return 0;
        }
        let fd = dpdk_sys::rte_memseg_get_fd_thread_unsafe(ms);
        if fd < 0 {
            return 0;
        }
        // memfd-backed segments read as "/memfd:... (deleted)": not a file to remove.
        if let Ok(path) = std::fs::read_link(format!("/proc/self/fd/{fd}")) {
            if path.is_absolute() && !path.to_string_lossy().ends_with(" (deleted)") {
                (*arg.cast::<Vec<PathBuf>>()).push(path);
            }
        }
    }
    0
}

impl Drop for Eal {
    fn drop(&mut self) {
        let files = if self.remove_hugepage_files.load(Ordering::SeqCst) { self.hugepage_files() } else { Vec::new() };
        // SAFETY: no pool, port or ring handle is left (each holds an
        // Arc<Eal>), so no DPDK object is used after this.
        unsafe {
            dpdk_sys::rte_eal_cleanup();
        }
        // The memory is unmapped now; a secondary still attached keeps its own mappings.
        for f in files {
            let _ = std::fs::remove_file(f);
        }
    }
}
