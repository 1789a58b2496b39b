//! The Debian packages `rapr bench` runs its baselines with (nginx-light, haproxy): found where
//! Debian puts them, or installed with apt-get when missing and we are root, so a fresh machine
//! (CI, a sandbox) measures the same baselines without a manual set-up step.

use std::path::PathBuf;
use std::process::Command;

/// The first of `paths` that exists, installing `package` first if none does.
pub fn ensure(package: &str, paths: &[&str]) -> Result<PathBuf, String> {
    let find = || paths.iter().map(PathBuf::from).find(|p| p.exists());
    if let Some(p) = find() {
        return Ok(p);
    }
    let root = nix::unistd::Uid::effective().is_root();
    if !root || Command::new("apt-get").arg("--version").output().is_err() {
        return Err(format!("{package} is not installed (apt-get install {package}), and rapr bench cannot install it without root and apt-get"));
    }
    eprintln!("installing {package} from Debian's packages for its baseline...");
    let install = || Command::new("apt-get").args(["install", "-y", "-qq", "--no-install-recommends", package]).env("DEBIAN_FRONTEND", "noninteractive").status().is_ok_and(|s| s.success());
    if !install() {
        // A fresh image has no package lists yet.
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        if !install() {
            return Err(format!("apt-get install {package} failed"));
        }
    }
    find().ok_or_else(|| format!("{package} installed but none of {paths:?} exists"))
}
