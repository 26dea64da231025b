//! `amanuensis serve` as a client sees it: the real server started on 127.0.0.1 (any free
//! port), requests over HTTP: every response format of both routes against `amanuensis
//! transcribe`'s own output, OpenAI's error shape and status for each bad request, the queue's
//! 503, no upload left behind, and a clean stop on SIGTERM. Uses the catalog's tiny.en.

mod common;
#[path = "common/server.rs"]
mod server;

use common::*;
use server::Server;

/// `amanuensis transcribe`'s output of jfk with tiny.en in `format`.
fn cli(format: &str, extra: &[&str]) -> String {
    server::cli_output(
        &catalog_model("tiny.en"),
        &reference("audio/jfk.flac"),
        format,
        extra,
    )
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
    // Clients that leave before their answer give their place back: once their
    // transcriptions end, a request is taken again (a place kept would answer 503 forever).
    for _ in 0..3 {
        server.post_and_leave(route, &small, "k3y");
    }
    let started = std::time::Instant::now();
    loop {
        let (status, body, _, _) = server.post(route, file, &[("model", "whisper-1")], Some("k3y"));
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "still 503 a minute after the clients left: their places were kept"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(server.leftovers().is_empty(), "{:?}", server.leftovers());
    assert!(server.stop().success());
}

/// Sixteen requests at once (a queue of 16): every one answered with the text of
/// `amanuensis transcribe`, and the server's peak memory that of two transcriptions running
/// (`--max-concurrent 2`) plus what the waiting requests hold (their uploads are on disk).
#[test]
fn sixteen_at_once_in_bounded_memory() {
    let server = Server::start(&["--max-queue", "16"]);
    let jfk = std::fs::read(reference("audio/jfk.flac")).unwrap();
    let file = Some(("jfk.flac", &jfk[..]));
    let route = "/v1/audio/transcriptions";
    let cli_text = json(&cli("json", &[]))["text"]
        .as_str()
        .unwrap()
        .trim()
        .to_string();
    // `clients` at once, each sending `each` requests one after another.
    let at_once = |clients: usize, each: usize| -> Vec<(u16, String)> {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..clients)
                .map(|_| {
                    s.spawn(|| {
                        (0..each)
                            .map(|_| {
                                let (status, body, _, _) =
                                    server.post(route, file, &[("model", "whisper-1")], None);
                                (status, body)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        })
    };
    let loaded = server.rss_mb();
    // The peak of two running: two clients, four requests each.
    for (status, body) in at_once(2, 4) {
        assert_eq!(status, 200, "{body}");
    }
    let two = server.peak_mb();
    let answers = at_once(16, 1);
    let sixteen = server.peak_mb();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(json(body)["text"], cli_text.as_str());
    }
    eprintln!(
        "memory: {loaded:.1} MB resident once loaded; peak {two:.1} MB after two at once, \
         {sixteen:.1} MB after sixteen"
    );
    // What one transcription running adds: half of what two add to the loaded server. The
    // fourteen waiting (their uploads on disk, their buffers passing) must add less than
    // one more: measured 13 to 21 MB against 39 to 46 MB a transcription (tiny.en, jfk).
    let one = (two - loaded) / 2.0;
    assert!(
        sixteen - two < one,
        "sixteen at once peaked {:.1} MB above two at once, more than one transcription's \
         {one:.1} MB: requests past --max-concurrent hold memory",
        sixteen - two
    );
    assert!(server.leftovers().is_empty(), "{:?}", server.leftovers());
    assert!(server.stop().success());
}

/// `--unload-after`: an idle model leaves memory (the model list says so), the next request
/// loads it again and gets the same text; the page is served at `/`.
#[test]
fn idle_models_unload_and_load_again() {
    let server = Server::start(&["--unload-after", "1"]);
    let jfk = std::fs::read(reference("audio/jfk.flac")).unwrap();
    let file = Some(("jfk.flac", &jfk[..]));
    let route = "/v1/audio/transcriptions";
    let loaded = || -> bool {
        let models: serde_json::Value = ureq::get(&format!("{}/v1/models", server.url))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        models["data"][0]["loaded"].as_bool().unwrap()
    };
    let (status, first, _, _) = server.post(route, file, &[("model", "whisper-1")], None);
    assert_eq!(status, 200, "{first}");
    let started = std::time::Instant::now();
    while loaded() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "still loaded 10 s after the last request, with --unload-after 1"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    let health: serde_json::Value = ureq::get(&format!("{}/health", server.url))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(health["status"], "ready");
    assert_eq!(health["loaded"], serde_json::json!([]));
    let (status, again, _, _) = server.post(route, file, &[("model", "whisper-1")], None);
    assert_eq!(status, 200, "{again}");
    assert_eq!(json(&again)["text"], json(&first)["text"]);

    let page = ureq::get(&format!("{}/", server.url)).call().unwrap();
    assert_eq!(page.content_type(), "text/html");
    let html = page.into_string().unwrap();
    assert!(
        html.contains("<title>amanuensis</title>") && html.contains(r#"["en","English"]"#),
        "{html}"
    );
    assert!(!html.contains("__LANGUAGES__"));
    // `outputs` only come with a stream.
    let (status, body, _, _) = server.post(
        route,
        file,
        &[("model", "whisper-1"), ("outputs", "srt")],
        None,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("stream=true"), "{body}");
    assert!(server.stop().success());
}

/// Requests no client should send: not a form, a form without its boundary, a body cut
/// short, a field that is not UTF-8, and cuts and byte flips of a good request (a fixed
/// generator, so every run sends the same). Each is answered 4xx in OpenAI's shape or, for a
/// body cut short, the connection closed; none is a 500 or takes the server down, and no
/// upload is left behind.
#[test]
fn malformed_requests_are_refused_and_the_server_lives() {
    let server = Server::start(&[]);
    let route = "POST /v1/audio/transcriptions HTTP/1.1";
    let boundary = "b0undary";
    let form = |ctype: &str, len: usize| {
        format!("{route}\r\nContent-Type: {ctype}\r\nContent-Length: {len}")
    };
    let multipart = format!("multipart/form-data; boundary={boundary}");
    let openai_400 = |status: Option<u16>, body: &str, says: &str| {
        assert_eq!(status, Some(400), "{body}");
        let v = json(body);
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{body}"
        );
    };

    let body = br#"{"file": "jfk.flac", "model": "whisper-1"}"#;
    let (status, answer) = server.raw(&form("application/json", body.len()), body, false);
    openai_400(status, &answer, "multipart/form-data");
    let (status, answer) = server.raw(&form("multipart/form-data", body.len()), body, false);
    openai_400(status, &answer, "multipart/form-data");

    // A good request, to cut and flip.
    let mut good = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\
         \r\n"
    )
    .into_bytes();
    let small = {
        let (samples, _) = amanuensis::audio::load_audio(&amanuensis::audio::Input::Path(
            reference("audio/jfk.flac"),
        ))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("small.wav");
        write_wav_f32(&path, 16000, &samples[..16000]);
        std::fs::read(&path).unwrap()
    };
    good.extend(&small);
    good.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    let (status, answer) = server.raw(&form(&multipart, good.len()), &good, false);
    assert_eq!(status, Some(200), "{answer}");

    // Not UTF-8 in a text field, and no file.
    let bad_text = [
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n")
            .into_bytes(),
        vec![0xff, 0xfe, 0x80],
        format!("\r\n--{boundary}--\r\n").into_bytes(),
    ]
    .concat();
    let (status, answer) = server.raw(&form(&multipart, bad_text.len()), &bad_text, false);
    // (read with replacement characters, it is a form without a file)
    openai_400(status, &answer, "no file");

    // A body shorter than its Content-Length: the server gives up on it.
    let half = &good[..good.len() / 2];
    let (status, answer) = server.raw(&form(&multipart, good.len()), half, true);
    assert!(matches!(status, None | Some(400)), "{status:?} {answer}");

    // Cuts and flips, from a fixed generator (SplitMix64).
    let mut state = 0x5eed_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut seen = std::collections::BTreeMap::new();
    for case in 0..48 {
        let mut body = good.clone();
        if case % 2 == 0 {
            body.truncate((next() as usize) % good.len());
        } else {
            for _ in 0..1 + next() % 8 {
                let at = (next() as usize) % body.len();
                body[at] = next() as u8;
            }
        }
        let (status, answer) = server.raw(&form(&multipart, body.len()), &body, false);
        assert!(
            matches!(status, Some(200 | 400 | 404)),
            "case {case}: {status:?} {answer}"
        );
        if status != Some(200) {
            assert!(json(&answer)["error"]["message"].is_string(), "{answer}");
        }
        *seen.entry(status).or_insert(0) += 1;
    }
    eprintln!("cut and flipped requests answered: {seen:?}");
    let health: serde_json::Value = ureq::get(&format!("{}/health", server.url))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(health["status"], "ready");
    assert!(server.leftovers().is_empty(), "{:?}", server.leftovers());
    assert!(server.stop().success());
}
