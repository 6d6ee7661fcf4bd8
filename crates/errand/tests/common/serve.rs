//! A real `errand serve` process and the `errand` client run against it.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const ERRAND: &str = env!("CARGO_BIN_EXE_errand");

/// A running `errand serve` in a folder of its own.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub process: Child,
}

impl Server {
    /// `errand serve ARGS` with `dir` as its working directory.
    ///
    /// Up once it says it serves on its port. Tests run in parallel, and
    /// another may take the port between `free_port` and the bind: then
    /// this server exits, and it is started again on another port (a probe
    /// that connects could be answered by the other test's server).
    pub fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Self {
        let log = dir.path().join("serve.log");
        for _ in 0..5 {
            let port = super::free_port();
            let mut process = Command::new(ERRAND)
                .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
                .args(args)
                .current_dir(dir.path())
                .env_remove("ERRAND_URL")
                .env_remove("ERRAND_API_TOKEN")
                .env_remove("ERRAND_LOG_FORMAT")
                .env("ERRAND_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let serving = format!("serving on http://127.0.0.1:{port}/");
            for _ in 0..500 {
                if std::fs::read_to_string(&log).is_ok_and(|l| l.contains(&serving)) {
                    return Self {
                        dir,
                        url: format!("http://127.0.0.1:{port}"),
                        process,
                    };
                }
                if process.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = process.kill();
            let _ = process.wait();
        }
        panic!(
            "errand serve did not come up: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// `errand ARGS` against this server, from its folder.
    pub fn errand(&self, args: &[&str]) -> Output {
        errand_in(self.dir.path(), &self.url, args)
    }

    /// Submits and returns the job id.
    pub fn submit(&self, command: &str, input: &str) -> String {
        let out = self.errand(&["submit", command, "--input", input]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    }

    pub fn job(&self, id: &str) -> Value {
        json(&self.errand(&["status", id, "--json"]))
    }

    pub fn wait_for_status(&self, id: &str, status: &str) -> Value {
        for _ in 0..500 {
            let job = self.job(id);
            if job["status"] == status {
                return job;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("job {id} never became {status}: {}", self.job(id));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.process.id().to_string()])
            .status();
        let _ = self.process.wait();
    }
}

pub fn errand_in(dir: &Path, url: &str, args: &[&str]) -> Output {
    Command::new(ERRAND)
        .args(args)
        .current_dir(dir)
        .env("ERRAND_URL", url)
        .env_remove("ERRAND_API_TOKEN")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn json(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}
