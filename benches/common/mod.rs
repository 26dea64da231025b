//! What the benchmarks share: a baseline written in Python, run as a server beside the
//! benchmark so that its runs interleave with ours.

use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

/// A Python script that sets itself up, prints one line (what it is, e.g. a version), then
/// for every line it reads runs its work once and prints the time in ms, until its input
/// ends.
pub struct PythonBaseline {
    child: Child,
    input: ChildStdin,
    output: Lines<BufReader<ChildStdout>>,
    /// The script's first line.
    pub version: String,
}

impl PythonBaseline {
    /// Starts `script` with `args` under `$AMANUENSIS_PYTHON` (default `python3`); exits the
    /// benchmark with a message naming `install` when it does not start.
    pub fn start(script: &str, args: &[String], install: &str) -> PythonBaseline {
        let python = std::env::var("AMANUENSIS_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(&python)
            .args(["-c", script])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
        let input = child.stdin.take().expect("piped");
        let mut output = BufReader::new(child.stdout.take().expect("piped")).lines();
        let Some(Ok(version)) = output.next() else {
            eprintln!(
                "the Python baseline did not start (its error is above); install it with \
                 `{python} -m pip install {install}` (or set AMANUENSIS_PYTHON)"
            );
            std::process::exit(1);
        };
        PythonBaseline {
            child,
            input,
            output,
            version,
        }
    }

    /// One timed run.
    pub fn run(&mut self) -> Duration {
        writeln!(self.input, "run").expect("the baseline is running");
        let line = self
            .output
            .next()
            .and_then(Result::ok)
            .expect("the baseline answers");
        Duration::from_secs_f64(line.trim().parse::<f64>().expect("ms") * 1e-3)
    }
}

impl Drop for PythonBaseline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
