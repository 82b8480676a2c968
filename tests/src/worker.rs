//! Starting and stopping `idem-worker` processes from a suite.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// Where the worker finds its ledger, its providers and its jobs.
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    /// A SQLite file or a `postgres://` URL.
    pub ledger: String,
    /// Base URL of the (fake) Stripe.
    pub stripe: String,
    /// Base URL of the (fake) Twilio.
    pub twilio: String,
    /// The key shop slug of the job list.
    pub shop: String,
    /// How many jobs.
    pub jobs: usize,
    /// The job the worker starts at (it wraps around).
    pub start: usize,
    /// Per-attempt timeout in milliseconds.
    pub attempt_ms: u64,
    /// Extra lease time in milliseconds.
    pub lease_margin_ms: u64,
    /// Seconds after which the worker gives up.
    pub deadline_s: u64,
}

/// A running worker.
#[derive(Debug)]
pub struct Worker {
    /// The process (killed when dropped).
    pub child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    /// Starts the worker binary at `bin` and waits (at most `ready_within`)
    /// until it has opened its ledger.
    ///
    /// # Errors
    ///
    /// When the process cannot start or does not report ready in time.
    pub async fn start(
        bin: &Path,
        args: &WorkerArgs,
        ready_within: Duration,
    ) -> Result<Self, String> {
        let mut child = Command::new(bin)
            .args(["--ledger", &args.ledger])
            .args(["--stripe", &args.stripe])
            .args(["--twilio", &args.twilio])
            .args(["--shop", &args.shop])
            .args(["--jobs", &args.jobs.to_string()])
            .args(["--start", &args.start.to_string()])
            .args(["--attempt-ms", &args.attempt_ms.to_string()])
            .args(["--lease-margin-ms", &args.lease_margin_ms.to_string()])
            .args(["--deadline-s", &args.deadline_s.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        match tokio::time::timeout(ready_within, lines.next_line()).await {
            Ok(Ok(Some(line))) if line == "ready" => Ok(Self { child, lines }),
            other => Err(format!("worker did not report ready: {other:?}")),
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process with SIGKILL and reaps it.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Waits (at most `limit`) for the worker to finish on its own and
    /// returns its `finished ...` line.
    ///
    /// # Errors
    ///
    /// When it exits with a failure, prints no `finished` line, or runs past
    /// `limit` (it is then killed).
    pub async fn finish(mut self, limit: Duration) -> Result<String, String> {
        let run = async {
            let mut last = None;
            while let Ok(Some(line)) = self.lines.next_line().await {
                last = Some(line);
            }
            let status = self.child.wait().await.map_err(|e| e.to_string())?;
            match last {
                Some(line) if status.success() && line.starts_with("finished") => Ok(line),
                _ => Err(format!("worker ended {status} after printing {last:?}")),
            }
        };
        match tokio::time::timeout(limit, run).await {
            Ok(result) => result,
            Err(_) => {
                self.kill().await;
                Err(format!("worker still running after {limit:?}; killed"))
            }
        }
    }
}
