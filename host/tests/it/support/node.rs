//! A `sluice serve` child process on a free port, for multi-node and process
//! tests. Its log (stderr) goes to a file ([`Node::log`]). Killed when
//! dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The child's stderr, in its temp dir.
const LOG: &str = "stderr.log";

/// One running sluice process.
pub struct Node {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl Node {
    /// Starts `sluice serve` with `config` (TOML text) and waits until it
    /// listens. `extra_env` is added to the child's environment.
    pub fn start(config: &str, extra_env: &[(&str, &str)]) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, config).expect("write config");
        Self::start_file(&path, extra_env, dir)
    }

    fn start_file(path: &Path, extra_env: &[(&str, &str)], dir: tempfile::TempDir) -> Node {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(path)
            .env(
                "SLUICE_CACHE_DIR",
                std::env::temp_dir().join("sluice-test-cache"),
            )
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join(LOG)).expect("create log"));
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn sluice");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        // The first stdout line is printed once the listener is bound.
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let url = line
            .trim()
            .strip_prefix("sluice listening on ")
            .unwrap_or_else(|| {
                let _ = child.kill();
                let log = std::fs::read_to_string(dir.path().join(LOG)).unwrap_or_default();
                panic!("sluice did not start: {line:?}; its log:\n{log}")
            })
            .to_string();
        Node { child, url, dir }
    }

    /// `{url}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// What the child logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(LOG)).unwrap_or_default()
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
