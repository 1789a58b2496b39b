//! The README's placement cluster example, run as written: three `rapr placement` nodes and two
//! `rapr run` apps from its `control-plane` block (in a scratch copy of examples/, each port of
//! the block replaced by a free one), until its `curl` line prints what the block says.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn block() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("<!-- readme-test: control-plane -->").expect("the README marks its control-plane block");
    let body = &readme[start..];
    let open = body.find("```bash\n").unwrap() + "```bash\n".len();
    let close = body[open..].find("\n```").unwrap();
    body[open..open + close].to_string()
}

/// Lines with backslash continuations joined.
fn logical_lines(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in block.lines() {
        if let Some(head) = line.trim_end().strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
            continue;
        }
        cur.push_str(line);
        out.push(std::mem::take(&mut cur));
    }
    out
}

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        // `rapr run` stops its app and sidecar on SIGTERM; the placement nodes stop too.
        for c in self.0.iter().rev() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        }
        for c in &mut self.0 {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test]
async fn the_readme_placement_cluster_runs_as_written() {
    let text = block();
    // Every port in the block gets a free one.
    let re = regex::Regex::new(r"\b\d{4,5}\b").unwrap();
    let mut ports: BTreeMap<String, String> = BTreeMap::new();
    for m in re.find_iter(&text) {
        if !ports.contains_key(m.as_str()) {
            ports.insert(m.as_str().to_string(), rapr::net_ports::free_port().unwrap().to_string());
        }
    }
    let text = re.replace_all(&text, |c: &regex::Captures| ports[&c[0]].clone()).into_owned();

    let work = tempfile::tempdir().unwrap();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    assert!(Command::new("cp").args(["-r", examples]).arg(work.path()).status().unwrap().success());
    // `rapr` on the PATH is the binary under test.
    let bin = work.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rapr"), bin.join("rapr")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());

    let mut vars: Vec<(String, String)> = Vec::new();
    let mut started = Killed(Vec::new());
    let mut check: Option<(String, String)> = None;
    let lines = logical_lines(&text);
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("# =>") {
            continue;
        }
        if let Some((k, v)) = line.split_once('=').filter(|(k, _)| k.chars().all(|c| c.is_ascii_uppercase() || c == '_')) {
            vars.push((k.to_string(), v.to_string()));
            continue;
        }
        if let Some(bg) = line.strip_suffix('&') {
            let log = std::fs::File::create(work.path().join(format!("bg-{i}.log"))).unwrap();
            let child = Command::new("sh")
                .arg("-c")
                .arg(format!("exec {bg}"))
                .current_dir(work.path())
                .env("PATH", &path)
                .env("RAPR_HOME", work.path().join("home"))
                .envs(vars.iter().cloned())
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap();
            started.0.push(child);
            continue;
        }
        let expect = lines.get(i + 1).and_then(|l| l.trim().strip_prefix("# =>")).expect("a command is followed by `# => output`");
        check = Some((line.to_string(), expect.trim().to_string()));
    }
    let (cmd, expect) = check.expect("the block ends with a checked command");
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(60) {
        let out = Command::new("sh").arg("-c").arg(&cmd).current_dir(work.path()).env("PATH", &path).envs(vars.iter().cloned()).output().unwrap();
        last = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if last == expect {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let logs: Vec<String> = (0..lines.len())
        .filter_map(|i| std::fs::read_to_string(work.path().join(format!("bg-{i}.log"))).ok().map(|l| format!("--- line {i} ---\n{l}")))
        .collect();
    panic!("`{cmd}` printed {last:?}, the README says {expect:?}\n{}", logs.join("\n"));
}
