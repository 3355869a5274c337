//! Records the git commit the binary is built from (`appliance_build_info{git_commit}`):
//! `$APPLIANCE_GIT_COMMIT` when set (a build from a tarball can say), else `git rev-parse`
//! in the source tree, else `unknown`. Rebuilt when the checked-out commit moves.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=APPLIANCE_GIT_COMMIT");
    let commit = match std::env::var("APPLIANCE_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_owned(),
        _ => {
            // HEAD names the branch; the branch's ref (or packed-refs) moves with each commit.
            for path in ["HEAD", "packed-refs"].iter().filter_map(|p| git(&["rev-parse", "--git-path", p])) {
                watch(path);
            }
            if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]).and_then(|r| git(&["rev-parse", "--git-path", &r])) {
                watch(r);
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    println!("cargo:rustc-env=APPLIANCE_GIT_COMMIT={commit}");
}

/// Reruns the build script when `path` (relative to the crate or absolute) changes, if it
/// exists (a missing path would rerun it on every build).
fn watch(path: String) {
    let mut p = PathBuf::from(&path);
    if p.is_relative() {
        p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p);
    }
    if p.exists() {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
