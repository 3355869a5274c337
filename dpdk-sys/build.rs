//! Generates the DPDK bindings at build time from the system's DPDK (22.11,
//! Debian's `libdpdk-dev`) through pkg-config, and compiles the C shim that
//! re-exports DPDK's `static inline` fast-path functions.
//!
//! The pkg-config flags are passed verbatim to both bindgen and `cc`: the parsed
//! form loses `-include rte_config.h` and `-march=corei7`, and gcc then fails
//! inside `rte_memcpy` (see shared MACHINE-NOTES).
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn pkg_config(args: &[&str]) -> String {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("libdpdk")
        .output()
        .unwrap_or_else(|e| panic!("pkg-config not runnable ({e}); run scripts/setup.sh"));
    if !out.status.success() {
        panic!(
            "pkg-config {args:?} libdpdk failed: {}; install libdpdk-dev (scripts/setup.sh does)",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).expect("pkg-config output is UTF-8")
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let shim_h = manifest.join("shim/shim.h");
    let shim_c = manifest.join("shim/shim.c");
    println!("cargo:rerun-if-changed={}", shim_h.display());
    println!("cargo:rerun-if-changed={}", shim_c.display());
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let cflags: Vec<String> = pkg_config(&["--cflags"]).split_whitespace().map(str::to_owned).collect();

    // The C shim.
    let mut build = cc::Build::new();
    build.file(&shim_c).include(manifest.join("shim")).opt_level(3);
    for f in &cflags {
        build.flag(f);
    }
    build.flag("-DALLOW_EXPERIMENTAL_API").flag("-Wno-unused-parameter");
    build.compile("dpdk_sys_shim");

    // Link against the shared DPDK libraries: EAL then loads every PMD from the
    // system's PMD directory by itself, so vdev drivers register without `-d`.
    for tok in pkg_config(&["--libs"]).split_whitespace() {
        if let Some(dir) = tok.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = tok.strip_prefix("-l") {
            println!("cargo:rustc-link-lib={lib}");
        }
    }
    // Libraries whose symbols we use directly but pkg-config --libs may not list
    // (it lists the umbrella set); harmless if already present.
    for lib in ["rte_ethdev", "rte_mbuf", "rte_mempool", "rte_ring", "rte_eal", "rte_bus_vdev", "rte_net"] {
        println!("cargo:rustc-link-lib={lib}");
    }

    let bindings = bindgen::Builder::default()
        .header(shim_h.to_str().unwrap())
        .clang_args(cflags.iter().filter(|f| !f.starts_with("-march")))
        .clang_arg("-DALLOW_EXPERIMENTAL_API")
        .clang_macro_fallback()
        .allowlist_function("rte_.*")
        .allowlist_function("shim_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        .allowlist_var("RING_F_.*")
        .allowlist_var("SOCKET_ID_ANY")
        .opaque_type("rte_arp_ipv4")
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen failed on DPDK headers");
    bindings.write_to_file(out_dir.join("bindings.rs")).expect("writing bindings.rs");
}
