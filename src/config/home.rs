//! rapr's home folder: where `rapr init` writes its defaults and where the embedded name
//! resolution, run records and control sockets live.

use std::path::PathBuf;

/// Where rapr keeps its defaults: `$RAPR_HOME`, else `~/.rapr`.
pub fn rapr_home() -> PathBuf {
    if let Some(h) = std::env::var_os("RAPR_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    dirs::home_dir().unwrap_or_else(|| PathBuf::from(".")).join(".rapr")
}
