//! Records the git commit the binary is built from, for `ringkv --version`: the environment
//! variable `RINGKV_GIT_COMMIT` if set (a build without the repository, as in the
//! Dockerfile), else what git says of the checkout, else "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=RINGKV_GIT_COMMIT");
    // A new commit or checkout changes one of these, so the commit is read again.
    for watched in ["HEAD", "refs/heads", "packed-refs"] {
        println!("cargo:rerun-if-changed=../../.git/{watched}");
    }
    let commit = std::env::var("RINGKV_GIT_COMMIT")
        .ok()
        .filter(|commit| !commit.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=RINGKV_GIT_COMMIT={commit}");
}

/// The checkout's commit, abbreviated.
fn git_commit() -> Option<String> {
    let output = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    let commit = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (output.status.success() && !commit.is_empty()).then_some(commit)
}
