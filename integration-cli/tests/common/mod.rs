//! Runs the `integration` binary as a user would, with an environment of the test's choosing.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt as _;

/// The variables the binary reads, removed so the machine's own never leak into a test.
const OURS: [&str; 9] = [
    "INTEGRATION_CONFIG",
    "INTEGRATION_ENV_PREFIX",
    "INTEGRATION_SCHEMA",
    "INTEGRATION_ACTOR",
    "DATABASE_URL",
    "REDIS_URL",
    "CLICOLOR_FORCE",
    "NO_COLOR",
    "RUST_LOG",
];

/// What one run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics unless the run exited with `code`, showing what it printed.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// Panics if `secret` appears in stdout or stderr.
    pub fn assert_hides(&self, secret: &str) {
        assert!(
            !self.stdout.contains(secret) && !self.stderr.contains(secret),
            "the secret was printed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
    }
}

/// A command line to run.
#[derive(Debug, Default)]
pub struct Cli {
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
}

pub fn cli<I, S>(args: I) -> Cli
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    Cli {
        args: args.into_iter().map(|a| a.as_ref().to_owned()).collect(),
        ..Cli::default()
    }
}

impl Cli {
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn stdin(mut self, bytes: &[u8]) -> Self {
        self.stdin = Some(bytes.to_vec());
        self
    }

    pub async fn run(self) -> Run {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_integration"));
        command.args(&self.args);
        for name in OURS {
            command.env_remove(name);
        }
        command
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("the binary runs");
        if let Some(bytes) = self.stdin {
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(&bytes).await.unwrap();
            drop(stdin);
        }
        let output = tokio::time::timeout(
            std::time::Duration::from_secs(120),
            child.wait_with_output(),
        )
        .await
        .expect("the binary finishes within two minutes")
        .unwrap();
        Run {
            code: output.status.code().expect("an exit code"),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// A file in `dir`.
pub fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
