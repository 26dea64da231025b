//! `amanuensis serve` under load: `cargo bench --bench serve`.
//!
//! tiny.en (fetched through the catalog on first use) on the `cpu` backend at 2 threads,
//! jfk.flac (11 s, tests/data/reference/audio) sent as OpenAI's multipart request by 1, 4
//! and 16 clients at once, each sending its requests one after another, to two servers: the
//! default (openai-whisper's sequential rules, `--max-concurrent 2`) and the batched one
//! (`--batch-size 8 --max-concurrent 8`: requests running at once share the decoder's
//! batches). Printed a level: requests, wall time, throughput (requests and audio seconds a
//! second), latency p50 and p95 (nearest rank), the throughput's ratio to one client's, and
//! p50 over the baseline. The baseline, measured in the same run before the servers start, is
//! the library's own transcription of the same file in this process (model loaded, no HTTP,
//! sequential or batched as the server): one client's p50 over it is what the server adds to
//! a request. `AMANUENSIS_BENCH_REQUESTS` sets the requests a level (default 16).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const THREADS: usize = 2;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn multipart(audio: &[u8]) -> (String, Vec<u8>) {
    let boundary = "amanuensis-bench-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
         filename=\"jfk.flac\"\r\nContent-Type: audio/flac\r\n\r\n"
    )
    .into_bytes();
    body.extend(audio);
    body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn main() {
    let requests: usize = std::env::var("AMANUENSIS_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let model = amanuensis::model::resolve_model("tiny.en", &mut |l| eprintln!("{l}"))
        .expect("tiny.en through the catalog");
    let audio_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/reference/audio/jfk.flac");
    let audio = std::fs::read(&audio_path).unwrap();

    // The baselines: the library in this process, the model loaded once.
    let options = amanuensis::model::EncoderOptions {
        backend: amanuensis::backend::Backend::Cpu,
        threads: THREADS,
        ..Default::default()
    };
    let transcriber = amanuensis::transcribe::Transcriber::load(&model, &options).unwrap();
    let input = amanuensis::audio::Input::Path(audio_path.clone());
    let baseline = |batch_size: Option<usize>| -> (f64, f64, String) {
        let options = amanuensis::transcribe::TranscribeOptions {
            batch_size,
            ..Default::default()
        };
        let mut times = Vec::new();
        let mut duration = 0.0;
        let mut text = String::new();
        for _ in 0..5 {
            let t = Instant::now();
            let transcript = transcriber
                .transcribe(&input, &options, &mut amanuensis::transcribe::Quiet)
                .unwrap();
            times.push(t.elapsed().as_secs_f64());
            duration = transcript.duration;
            text = transcript.text.trim().to_string();
        }
        times.sort_by(f64::total_cmp);
        (times[times.len() / 2], duration, text)
    };
    let sequential = baseline(None);
    let batched = baseline(Some(8));
    drop(transcriber);
    let duration = sequential.1;
    println!(
        "baseline: the library in process, tiny.en on cpu, {THREADS} threads, jfk \
         ({duration:.1} s), median of 5: {:.3} s sequential, {:.3} s batched",
        sequential.0, batched.0
    );
    let mut one_request = Vec::new();
    for (label, args, (base, _, text)) in [
        (
            "sequential, --max-concurrent 2",
            &["--max-concurrent", "2"][..],
            &sequential,
        ),
        (
            "batched, --batch-size 8 --max-concurrent 8",
            &["--batch-size", "8", "--max-concurrent", "8"][..],
            &batched,
        ),
    ] {
        println!("server: {label}");
        let levels = load(&model, args, &audio, text, requests);
        println!(
            "{:>7} {:>8} {:>8} {:>8} {:>13} {:>8} {:>8} {:>9} {:>12}",
            "clients",
            "requests",
            "wall s",
            "req/s",
            "audio s / s",
            "p50 s",
            "p95 s",
            "vs 1",
            "p50 / base"
        );
        let one = levels[0].1;
        for (clients, throughput, latencies, wall) in &levels {
            let p50 = percentile(latencies, 50.0);
            println!(
                "{clients:>7} {:>8} {wall:>8.2} {throughput:>8.3} {:>13.1} {p50:>8.3} {:>8.3} \
                 {:>8.2}x {:>11.2}x",
                latencies.len(),
                throughput * duration,
                percentile(latencies, 95.0),
                throughput / one,
                p50 / base
            );
        }
        one_request.push(levels);
    }
    println!("batched over sequential, throughput at the same clients:");
    for (s, b) in one_request[0].iter().zip(&one_request[1]) {
        println!("{:>7} clients: {:.2}x", s.0, b.1 / s.1);
    }
}

/// A server on `model` with `args`, loaded by 1, 4 and 16 clients: for each level, the
/// clients, the throughput (requests a second), the sorted latencies and the wall time.
fn load(
    model: &Path,
    args: &[&str],
    audio: &[u8],
    text: &str,
    requests: usize,
) -> Vec<(usize, f64, Vec<f64>, f64)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .args(["serve", "--port", "0", "--backend", "cpu", "--threads"])
        .arg(THREADS.to_string())
        .arg("--model")
        .arg(model)
        .args(["--max-queue", "64"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let started = Instant::now();
    while ureq::get(&format!("{url}/health")).call().is_err() {
        assert!(started.elapsed() < Duration::from_secs(120), "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (content_type, body) = multipart(audio);
    let post = || -> f64 {
        let t = Instant::now();
        let response = ureq::post(&format!("{url}/v1/audio/transcriptions"))
            .set("Content-Type", &content_type)
            .send_bytes(&body)
            .expect("the request succeeds");
        let mut answer = String::new();
        response.into_reader().read_to_string(&mut answer).unwrap();
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v["text"], text, "the server's text is the library's");
        t.elapsed().as_secs_f64()
    };
    // One request to warm the server (its first allocations), not counted.
    post();
    let mut levels = Vec::new();
    for clients in [1, 4, 16] {
        let per_client = requests.div_ceil(clients);
        let t = Instant::now();
        let mut latencies: Vec<f64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..clients)
                .map(|_| s.spawn(|| (0..per_client).map(|_| post()).collect::<Vec<f64>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let wall = t.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        levels.push((clients, latencies.len() as f64 / wall, latencies, wall));
    }
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    levels
}
