//! Captures the git commit the binary is built from as `VEXLENS_GIT_COMMIT` (used in export
//! manifests). An explicit `VEXLENS_GIT_COMMIT` in the environment wins; without git or
//! outside a checkout the commit is `unknown`. Never fails the build.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=VEXLENS_GIT_COMMIT");
    if let Ok(c) = std::env::var("VEXLENS_GIT_COMMIT") {
        println!("cargo:rustc-env=VEXLENS_GIT_COMMIT={c}");
        return;
    }
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=VEXLENS_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves: HEAD itself, the branch it points to, packed refs.
    // (Refs live in the common dir, which differs from the git dir in a linked worktree.)
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let dir = PathBuf::from(dir);
        let common = git(&["rev-parse", "--git-common-dir"]).map(PathBuf::from).unwrap_or_else(|| dir.clone());
        let common =
            if common.is_absolute() { common } else { std::env::current_dir().unwrap_or_default().join(common) };
        let mut watch = vec![dir.join("HEAD"), common.join("packed-refs")];
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.push(common.join(r));
        }
        for p in watch.into_iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
}
