//! `amanuensis serve` as a client sees it: the real server started on 127.0.0.1 (any free
//! port), requests over HTTP: every response format of both routes against `amanuensis
//! transcribe`'s own output, OpenAI's error shape and status for each bad request, the queue's
//! 503, no upload left behind, and a clean stop on SIGTERM. Uses the catalog's tiny.en.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A running server; stopped (SIGTERM) when dropped.
struct Server {
    child: Child,
    url: String,
    /// The server's TMPDIR: uploads go there.
    tmp: tempfile::TempDir,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let model = catalog_model("tiny.en");
        let tmp = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
            .args([
                "serve",
                "--port",
                "0",
                "--backend",
                "cpu",
                "--threads",
                "2",
                "--model",
            ])
            .arg(&model)
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
    fn post(
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
    fn post_oversized(&self, route: &str, file: &[u8], key: &str) -> (u16, String) {
        use std::io::Write;
        let boundary = "amanuensis-test-boundary";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n\
             whisper-1\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"big.flac\"\r\n\r\n"
        )
        .into_bytes();
        body.extend(file);
        body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
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

    /// The upload files left in the server's temporary directory.
    fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Sends SIGTERM and waits: the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
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

/// `amanuensis transcribe`'s output of jfk in `format` (its JSON's text for `json`).
fn cli(format: &str, extra: &[&str]) -> String {
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
        .arg(catalog_model("tiny.en"))
        .arg(reference("audio/jfk.flac"))
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

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Every response format against the command's output, the backend named in a header, the
/// model list and health, and every error in OpenAI's shape with its status.
#[test]
fn formats_and_errors_as_openais_api() {
    let server = Server::start(&[]);
    let jfk = std::fs::read(reference("audio/jfk.flac")).unwrap();
    let file = Some(("jfk.flac", &jfk[..]));
    let route = "/v1/audio/transcriptions";
    let cli_text = json(&cli("json", &[]))["text"]
        .as_str()
        .unwrap()
        .trim()
        .to_string();

    let (status, body, backend, _) = server.post(route, file, &[("model", "whisper-1")], None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(backend.as_deref(), Some("cpu"));
    assert_eq!(json(&body)["text"], cli_text.as_str());

    let (status, body, _, _) = server.post(
        route,
        file,
        &[("model", "whisper-1"), ("response_format", "text")],
        None,
    );
    assert_eq!((status, body.trim()), (200, cli_text.as_str()));
    for format in ["srt", "vtt"] {
        let (status, body, _, _) = server.post(
            route,
            file,
            &[("model", "whisper-1"), ("response_format", format)],
            None,
        );
        assert_eq!(status, 200);
        assert_eq!(body, cli(format, &[]), "{format}");
    }
    let (status, body, _, _) = server.post(
        route,
        file,
        &[
            ("model", "whisper-1"),
            ("response_format", "verbose_json"),
            ("timestamp_granularities[]", "word"),
            ("timestamp_granularities[]", "segment"),
        ],
        None,
    );
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["task"], "transcribe");
    assert_eq!(v["language"], "english");
    assert_eq!(v["duration"], 11.0);
    assert_eq!(v["text"], cli_text.as_str());
    let ours = json(&cli("json", &["--word-timestamps"]));
    let segments = v["segments"].as_array().unwrap();
    assert_eq!(segments.len(), ours["segments"].as_array().unwrap().len());
    for (a, b) in segments.iter().zip(ours["segments"].as_array().unwrap()) {
        for key in [
            "id",
            "seek",
            "start",
            "end",
            "text",
            "tokens",
            "temperature",
        ] {
            assert_eq!(a[key], b[key], "{key}");
        }
        for key in ["avg_logprob", "compression_ratio", "no_speech_prob"] {
            assert!(a[key].is_f64(), "{key}");
        }
    }
    let words = v["words"].as_array().unwrap();
    let cli_words: Vec<&serde_json::Value> = ours["segments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["words"].as_array().unwrap())
        .collect();
    assert_eq!(words.len(), cli_words.len());
    for (a, b) in words.iter().zip(cli_words) {
        assert_eq!(a["word"], b["word"].as_str().unwrap().trim());
        assert_eq!((&a["start"], &a["end"]), (&b["start"], &b["end"]));
    }

    // Two at once (--max-concurrent 2 by default): both answered, each with its own text.
    let texts: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let (status, body, _, _) =
                        server.post(route, file, &[("model", "whisper-1")], None);
                    (status, body)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, body) in texts {
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["text"], cli_text.as_str());
    }

    // Streamed: a delta a segment, then the whole text.
    let (status, body, backend, _) = server.post(
        route,
        file,
        &[("model", "whisper-1"), ("stream", "true")],
        None,
    );
    assert_eq!((status, backend.as_deref()), (200, Some("cpu")), "{body}");
    let events: Vec<serde_json::Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(json)
        .collect();
    let (last, deltas) = events.split_last().expect("events");
    assert_eq!(last["type"], "transcript.text.done", "{body}");
    assert_eq!(last["text"], cli_text.as_str());
    assert_eq!(deltas.len(), 2, "{body}");
    let joined: String = deltas
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "transcript.text.delta");
            e["delta"].as_str().unwrap()
        })
        .collect();
    assert_eq!(joined.trim(), cli_text);
    let (status, body, _, _) = server.post(
        route,
        Some(("notes.txt", b"not audio".repeat(100).as_slice())),
        &[("model", "whisper-1"), ("stream", "true")],
        None,
    );
    assert_eq!(status, 200);
    assert!(
        body.contains("event: error") && body.contains("notes.txt"),
        "{body}"
    );

    // The list of models and health.
    let models: serde_json::Value = ureq::get(&format!("{}/v1/models", server.url))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"whisper-1") && ids.contains(&"large-v3"),
        "{ids:?}"
    );
    let health: serde_json::Value = ureq::get(&format!("{}/health", server.url))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(health["status"], "ready");

    // Errors: status, OpenAI's shape, a message that names the problem.
    let error = |status: u16, body: &str, param: serde_json::Value, says: &str| {
        let v = json(body);
        let e = &v["error"];
        assert!(
            e["message"].as_str().unwrap().contains(says),
            "{status}: {body}"
        );
        assert_eq!(e["param"], param, "{body}");
        assert!(e["type"].is_string() && e.get("code").is_some(), "{body}");
        let _ = status;
    };
    let not_audio = b"this is not audio at all, just text".repeat(40);
    let (status, body, _, _) = server.post(
        route,
        Some(("notes.txt", &not_audio)),
        &[("model", "whisper-1")],
        None,
    );
    assert_eq!(status, 400);
    error(status, &body, "file".into(), "notes.txt");
    let (status, body, _, _) = server.post(route, file, &[("model", "large-v9")], None);
    assert_eq!(status, 404);
    error(status, &body, "model".into(), "large-v9");
    let (status, body, _, _) = server.post(route, None, &[("model", "whisper-1")], None);
    assert_eq!(status, 400);
    error(status, &body, "file".into(), "no file");
    let (status, body, _, _) = server.post(
        route,
        file,
        &[("model", "whisper-1"), ("response_format", "docx")],
        None,
    );
    assert_eq!(status, 400);
    error(status, &body, "response_format".into(), "docx");
    let (status, body, _, _) = server.post(
        route,
        file,
        &[("model", "whisper-1"), ("temperature", "hot")],
        None,
    );
    assert_eq!(status, 400);
    error(status, &body, "temperature".into(), "hot");
    // tiny.en is English-only: no translation, no French.
    let (status, body, _, _) = server.post(
        "/v1/audio/translations",
        file,
        &[("model", "whisper-1")],
        None,
    );
    assert_eq!(status, 400);
    error(status, &body, "language".into(), "English-only");
    let (status, body, _, _) = server.post(
        route,
        file,
        &[("model", "whisper-1"), ("language", "fr")],
        None,
    );
    assert_eq!(status, 400);
    error(status, &body, "language".into(), "English-only");

    assert!(server.leftovers().is_empty(), "{:?}", server.leftovers());
    assert!(server.stop().success());
}

/// An upload over the limit is 413, a missing or wrong key 401, a full queue 503 with
/// Retry-After; the requests that are taken are all answered.
#[test]
fn limits_keys_and_a_full_queue() {
    let server = Server::start(&[
        "--max-upload-mb",
        "1",
        "--api-key",
        "k3y",
        "--max-queue",
        "1",
        "--max-concurrent",
        "1",
    ]);
    let route = "/v1/audio/transcriptions";
    let jfk = std::fs::read(reference("audio/jfk.flac")).unwrap();
    assert!(jfk.len() > 1 << 20, "jfk.flac is over 1 MB");
    let (status, body) = server.post_oversized(route, &jfk, "k3y");
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("1 MB") && body.contains("file_too_large"),
        "{body}"
    );
    // A small file: the same speech cut to 3 s, as a 16 kHz WAV.
    let small = {
        let (samples, _) = amanuensis::audio::load_audio(&amanuensis::audio::Input::Path(
            reference("audio/jfk.flac"),
        ))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("small.wav");
        write_wav_f32(&path, 16000, &samples[..48000]);
        std::fs::read(&path).unwrap()
    };
    let file = Some(("small.wav", &small[..]));
    for key in [None, Some("wrong")] {
        let (status, body, _, _) = server.post(route, file, &[("model", "whisper-1")], key);
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("invalid_api_key"), "{body}");
    }
    // Four at once, one running and a queue of one: the first is taken, some are turned away.
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let (status, _, _, retry) =
                        server.post(route, file, &[("model", "whisper-1")], Some("k3y"));
                    (status, retry)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let busy = answers
        .iter()
        .filter(|a| a.0 == 503 && !a.1.is_empty())
        .count();
    assert!(ok >= 1 && busy >= 1 && ok + busy == 4, "{answers:?}");
    assert!(server.leftovers().is_empty(), "{:?}", server.leftovers());
    assert!(server.stop().success());
}
