//! `amanuensis serve` started on 127.0.0.1 (any free port) for a test, and requests to it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::common::catalog_model;

/// A running server; stopped (SIGTERM) when dropped.
pub struct Server {
    child: Child,
    pub url: String,
    /// The server's TMPDIR: uploads go there.
    tmp: tempfile::TempDir,
}

impl Server {
    /// The server on tiny.en, with `extra` arguments.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_with(&[catalog_model("tiny.en")], extra)
    }

    /// The server on `models` (the first is `whisper-1`), with `extra` arguments, once
    /// `/health` says they are loaded.
    pub fn start_with(models: &[std::path::PathBuf], extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
            .args(["serve", "--port", "0", "--backend", "cpu", "--threads", "2"])
            .args(
                models
                    .iter()
                    .flat_map(|m| [std::ffi::OsStr::new("--model"), m.as_os_str()]),
            )
            .args(extra)
            .env("TMPDIR", tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the binary runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line: {line:?}"))
            .to_string();
        let server = Server { child, url, tmp };
        let started = Instant::now();
        loop {
            match ureq::get(&format!("{}/health", server.url)).call() {
                Ok(r) if r.status() == 200 => break,
                Ok(_) | Err(ureq::Error::Status(503, _)) => {}
                Err(e) => panic!("health: {e}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the model never loaded"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// POSTs a multipart form to `route`: `fields` as text, `file` as the file field.
    pub fn post(
        &self,
        route: &str,
        file: Option<(&str, &[u8])>,
        fields: &[(&str, &str)],
        key: Option<&str>,
    ) -> (u16, String, Option<String>, String) {
        let boundary = "amanuensis-test-boundary";
        let mut body = Vec::new();
        for (name, value) in fields {
            body.extend(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n\
                     {value}\r\n"
                )
                .as_bytes(),
            );
        }
        if let Some((name, bytes)) = file {
            body.extend(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
                     filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend(bytes);
            body.extend(b"\r\n");
        }
        body.extend(format!("--{boundary}--\r\n").as_bytes());
        let mut request = ureq::post(&format!("{}{route}", self.url)).set(
            "Content-Type",
            &format!("multipart/form-data; boundary={boundary}"),
        );
        if let Some(key) = key {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        let response = match request.send_bytes(&body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{route}: {e}"),
        };
        let status = response.status();
        let backend = response.header("x-amanuensis-backend").map(str::to_string);
        let retry = response.header("retry-after").unwrap_or("").to_string();
        let mut text = String::new();
        response.into_reader().read_to_string(&mut text).unwrap();
        (status, text, backend, retry)
    }

    /// POSTs `file` as the form's file over a plain socket, the body written on a thread of
    /// its own: a server that answers before reading the whole body (413) and closes the
    /// connection fails the writing, not the reading of its answer. The status and the body.
    pub fn post_oversized(&self, route: &str, file: &[u8], key: &str) -> (u16, String) {
        use std::io::Write;
        let (boundary, body) = whisper_form("big.flac", file);
        let address = self.url.strip_prefix("http://").unwrap().to_string();
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        let head = format!(
            "POST {route} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        let mut writer = stream.try_clone().unwrap();
        let writing = std::thread::spawn(move || {
            let _ = writer.write_all(head.as_bytes());
            let _ = writer.write_all(&body);
        });
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let _ = writing.join();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {answer:?}"));
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    /// Sends a whole transcription request for `file` over a plain socket and leaves
    /// without reading the answer.
    pub fn post_and_leave(&self, route: &str, file: &[u8], key: &str) {
        use std::io::Write;
        let (boundary, body) = whisper_form("left.wav", file);
        let address = self.url.strip_prefix("http://").unwrap().to_string();
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        let head = format!(
            "POST {route} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\
             \r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }

    /// Sends `head` (the request line and headers, without the blank line) and `body` over a
    /// plain socket (closing the writing side after it when `close`: a body cut short), and
    /// reads the answer: its status (`None` when the server closed without one) and its body.
    pub fn raw(&self, head: &str, body: &[u8], close: bool) -> (Option<u16>, String) {
        use std::io::Write;
        let address = self.url.strip_prefix("http://").unwrap().to_string();
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let head = format!("{head}\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
        if close {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok());
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    /// The server's peak resident memory so far (VmHWM), in MB.
    pub fn peak_mb(&self) -> f64 {
        self.status_mb("VmHWM:")
    }

    /// The server's resident memory now (VmRSS), in MB.
    pub fn rss_mb(&self) -> f64 {
        self.status_mb("VmRSS:")
    }

    fn status_mb(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"));
        kb / 1024.0
    }

    /// The upload files left in the server's temporary directory.
    pub fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Sends SIGTERM and waits: the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A form of `model=whisper-1` and `file` named `filename`: its boundary and its body.
fn whisper_form(filename: &str, file: &[u8]) -> (&'static str, Vec<u8>) {
    let boundary = "amanuensis-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n\
         whisper-1\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
         filename=\"{filename}\"\r\n\r\n"
    )
    .into_bytes();
    body.extend(file);
    body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    (boundary, body)
}

/// `amanuensis transcribe`'s output of `audio` with `model` in `format`, on the CPU.
pub fn cli_output(
    model: &std::path::Path,
    audio: &std::path::Path,
    format: &str,
    extra: &[&str],
) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .args([
            "transcribe",
            "--quiet",
            "--threads",
            "2",
            "--backend",
            "cpu",
            "--model",
        ])
        .arg(model)
        .arg(audio)
        .args(["--format", format, "-o", "-"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
