//! The status lines `rapr run` prints about itself, in the Dapr CLI's shape: `✅  ` before a
//! success, `❌  ` before a failure (on stderr), `ℹ️  ` before information, `⚠  ` before a
//! warning; the words of each line are the CLI's (cmd/run.go), so scripts and docs validations
//! that wait for "You're up and running!" or "Exited App successfully" work unchanged.

/// `✅  <msg>` on stdout.
pub fn success(msg: &str) {
    println!("✅  {msg}");
}

/// `❌  <msg>` on stderr.
pub fn failure(msg: &str) {
    eprintln!("❌  {msg}");
}

/// `ℹ️  <msg>` on stdout.
pub fn info(msg: &str) {
    println!("ℹ️  {msg}");
}

/// `⚠  <msg>` on stdout (the CLI writes warnings there too).
pub fn warning(msg: &str) {
    println!("⚠  {msg}");
}
