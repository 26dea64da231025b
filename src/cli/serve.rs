//! `amanuensis serve`: OpenAI's transcription API (`/v1/audio/transcriptions` and
//! `/v1/audio/translations`) over this project's transcriber, on axum and tokio.
//!
//! The models are loaded once the socket is bound (`/health` says `loading` until then).
//! `--max-concurrent` transcriptions run at once: their encoder runs take the device's turn one
//! window at a time ([`EncoderTurn`](amanuensis::transcribe::EncoderTurn)), their decoding runs
//! side by side. Others wait in a bounded queue; one that finds it full is answered 503 with
//! `Retry-After`. Every upload goes to a
//! temporary file that is removed with the request, whatever happens. Errors have OpenAI's
//! shape, `{"error": {"message", "type", "param", "code"}}`. Ctrl-C or SIGTERM stops taking
//! requests and finishes those in flight.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use anyhow::{Context, Result};
use axum::extract::{DefaultBodyLimit, Multipart, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use serde_json::json;

use amanuensis::audio::Input;
use amanuensis::backend::Backend;
use amanuensis::transcribe::output::{Format, JsonContext, SubtitleOptions, render};
use amanuensis::transcribe::{
    Quiet, Task, TranscribeError, TranscribeOptions, Transcriber, Transcript, WordOptions,
};

/// Serve transcription over HTTP, as OpenAI's audio API.
///
/// `POST /v1/audio/transcriptions` and `/v1/audio/translations` take OpenAI's multipart
/// fields (file, model, language, prompt, response_format, temperature,
/// timestamp_granularities[], stream); `GET /v1/models` lists the models, `GET /health` says whether
/// they are loaded. The model `whisper-1` is the first `--model`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    amanuensis serve\n  \
    amanuensis serve --model base --model tiny.en --port 8080\n  \
    curl -F file=@talk.flac -F model=whisper-1 http://127.0.0.1:8000/v1/audio/transcriptions")]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,

    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8000)]
    port: u16,

    /// A model to serve (catalog name or directory), loaded at start; repeat for several. The
    /// first also answers to `whisper-1`.
    #[arg(short, long = "model", value_name = "MODEL", default_value = "tiny.en")]
    models: Vec<String>,

    /// Where the encoder runs (the decoder runs on the CPU).
    #[arg(long, value_parser = super::named::<Backend>(Backend::NAMES), default_value_t = Backend::Auto)]
    backend: Backend,

    /// Threads of the encoder and decoder (default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,

    /// Largest upload accepted, in megabytes (413 beyond).
    #[arg(long, value_name = "MB", default_value_t = 25)]
    max_upload_mb: usize,

    /// Requests that may wait for a turn; more are answered 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 8)]
    max_queue: usize,

    /// Transcriptions at once: their encoder runs take turns on the device, their decoding
    /// runs side by side on the CPU.
    #[arg(long, value_name = "N", default_value_t = 2)]
    max_concurrent: usize,

    /// Transcribe with faster-whisper's batched pipeline (the speech VAD finds, in windows of
    /// up to 30 s decoded N at a time), the windows of requests running at once sharing the
    /// decoder's batches; raise --max-concurrent with it. Without it, each request follows
    /// openai-whisper's sequential rules (as `amanuensis transcribe`).
    #[arg(long, value_name = "N")]
    batch_size: Option<usize>,

    /// Unload a model after this many seconds without a request (0: keep them loaded); the
    /// next request for it loads it again.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    unload_after: u64,

    /// Require `Authorization: Bearer KEY` (401 otherwise).
    #[arg(
        long,
        value_name = "KEY",
        env = "AMANUENSIS_API_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
}

/// The threads transcriptions run on, `--max-concurrent` of them, kept for the server's
/// life: a transcription on a fresh thread would leave the memory it freed in that thread's
/// allocator arena, and a server of many requests would hold an arena's worth for each.
struct Workers {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
}

impl Workers {
    fn new(n: usize) -> Result<Workers> {
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..n {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("transcribe-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .context("cannot start the transcription threads")?;
        }
        Ok(Workers {
            jobs: std::sync::Mutex::new(tx),
        })
    }

    /// `f` on a worker: its value, or `None` if it panicked.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = Box::new(move || {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job);
        if sent.is_err() {
            return None;
        }
        rx.await.ok().and_then(Result::ok)
    }
}

/// How models are loaded.
#[derive(Clone)]
struct Loader {
    backend: Backend,
    threads: Option<usize>,
    turn: amanuensis::transcribe::EncoderTurn,
}

/// A loaded model.
struct Served {
    name: String,
    transcriber: Arc<Transcriber>,
    backend: String,
}

/// What the handlers share.
struct Shared {
    /// The models loaded now, by name (empty while loading).
    models: RwLock<HashMap<String, Arc<Served>>>,
    /// The names in the order given (the first is `whisper-1`).
    names: Vec<String>,
    /// Why loading failed, if it did.
    failed: RwLock<Option<String>>,
    /// Whether the models given have been loaded once (later, an unloaded model loads on
    /// demand).
    preloaded: std::sync::atomic::AtomicBool,
    /// How models load: backend, threads, and the device's one turn.
    loader: Loader,
    /// One load at a time per model.
    loading: HashMap<String, tokio::sync::Mutex<()>>,
    /// When each model last served a request.
    last_used: std::sync::Mutex<HashMap<String, Instant>>,
    /// `--unload-after`, if set.
    unload_after: Option<std::time::Duration>,
    /// `--batch-size`, if set.
    batch_size: Option<usize>,
    /// Transcriptions running (`--max-concurrent` permits); their encoder runs also take the
    /// device's turn, one window at a time.
    device: Arc<tokio::sync::Semaphore>,
    /// The threads transcriptions run on.
    workers: Workers,
    /// Requests waiting for a permit or holding one.
    queued: AtomicUsize,
    /// How many may: `--max-queue` waiting beyond `--max-concurrent` running.
    max_queue: usize,
    api_key: Option<String>,
    /// The upload limit, in megabytes.
    limit_mb: usize,
}

/// An error in OpenAI's shape.
struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
    retry_after: Option<u32>,
}

impl ApiError {
    fn bad_request(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
            retry_after: None,
        }
    }

    fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: Some("overloaded"),
            retry_after: Some(1),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub fn run(args: ServeArgs) -> Result<()> {
    anyhow::ensure!(
        args.max_upload_mb >= 1,
        "--max-upload-mb must be at least 1"
    );
    anyhow::ensure!(args.max_queue >= 1, "--max-queue must be at least 1");
    anyhow::ensure!(
        args.batch_size != Some(0),
        "--batch-size must be at least 1"
    );
    anyhow::ensure!(
        args.max_concurrent >= 1,
        "--max-concurrent must be at least 1"
    );
    limit_arenas(args.max_concurrent + 1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the server's runtime")?;
    runtime.block_on(serve(args))
}

/// Caps glibc's malloc arenas at `n` (unless `MALLOC_ARENA_MAX` says otherwise), before any
/// thread starts. By default glibc gives a thread that contends for the lock an arena of its
/// own, up to 8 a core, each keeping the memory freed in it: a server whose transcriptions and
/// uploads pass through many threads held 80 MB more for it (`tests/serve.rs`).
fn limit_arenas(n: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no thread of ours runs yet.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, n.min(64) as libc::c_int) };
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = n;
}

async fn serve(args: ServeArgs) -> Result<()> {
    let address = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let bound = listener.local_addr()?;
    let loader = Loader {
        backend: args.backend,
        threads: args.threads,
        turn: amanuensis::transcribe::EncoderTurn::default(),
    };
    let shared = Arc::new(Shared {
        models: RwLock::new(HashMap::new()),
        names: args.models.clone(),
        failed: RwLock::new(None),
        preloaded: false.into(),
        loader: loader.clone(),
        loading: args
            .models
            .iter()
            .map(|n| (n.clone(), tokio::sync::Mutex::new(())))
            .collect(),
        last_used: std::sync::Mutex::new(HashMap::new()),
        batch_size: args.batch_size,
        unload_after: (args.unload_after > 0)
            .then(|| std::time::Duration::from_secs(args.unload_after)),
        device: Arc::new(tokio::sync::Semaphore::new(args.max_concurrent)),
        workers: Workers::new(args.max_concurrent)?,
        queued: AtomicUsize::new(0),
        max_queue: args.max_queue + args.max_concurrent,
        api_key: args.api_key.clone(),
        limit_mb: args.max_upload_mb,
    });
    // The models load beside the listening socket: /health says `loading` meanwhile.
    let loading = shared.clone();
    let models = args.models.clone();
    tokio::task::spawn_blocking(move || {
        for name in models {
            match load(&name, &loader) {
                Ok(served) => {
                    eprintln!("{name}: loaded, encoder on {}", served.backend);
                    touch(&loading, &name);
                    write(&loading.models).insert(name, Arc::new(served));
                }
                Err(e) => {
                    eprintln!("error: {name}: {e:#}");
                    *write(&loading.failed) = Some(format!("{name}: {e:#}"));
                    return;
                }
            }
        }
        loading.preloaded.store(true, Ordering::SeqCst);
    });
    if let Some(ttl) = shared.unload_after {
        tokio::spawn(unload_idle(shared.clone(), ttl));
    }
    let limit = args.max_upload_mb * 1024 * 1024;
    // The API asks for the key when one is set; /health never does (for load balancers).
    let api = Router::new()
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/audio/translations", post(translations))
        .route("/v1/models", get(list_models))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(shared.clone(), authorize));
    // The page and /health are open; the page asks for the key when the API wants one.
    let app = api
        .route("/", get(page))
        .route("/health", get(health))
        .with_state(shared);
    println!("listening on http://{bound}");
    std::io::stdout().flush().ok();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .context("the server failed")?;
    eprintln!("stopped: the requests in flight are answered");
    Ok(())
}

/// Loads one model for serving.
fn load(name: &str, loader: &Loader) -> Result<Served> {
    let dir = amanuensis::model::resolve_model(name, &mut |line| eprintln!("{line}"))?;
    let mut options = amanuensis::model::EncoderOptions {
        backend: loader.backend,
        ..Default::default()
    };
    if let Some(t) = loader.threads {
        options.threads = t;
    }
    let transcriber = Transcriber::load(&dir, &options)?;
    // One device: every model's encoder takes the same turn.
    transcriber.share_encoder(loader.turn.clone())?;
    let backend = transcriber.encoder().backend().backend.to_string();
    Ok(Served {
        name: name.to_string(),
        transcriber: Arc::new(transcriber),
        backend,
    })
}

/// Notes that `name` serves a request now.
fn touch(shared: &Shared, name: &str) {
    shared
        .last_used
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_string(), Instant::now());
}

/// Unloads the models that have served no request for `ttl` and serve none now; a later
/// request loads them again.
async fn unload_idle(shared: Arc<Shared>, ttl: std::time::Duration) {
    let period = (ttl / 4).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(10),
    );
    loop {
        tokio::time::sleep(period).await;
        let idle: Vec<String> = {
            let used = shared.last_used.lock().unwrap_or_else(|e| e.into_inner());
            let mut models = write(&shared.models);
            let idle: Vec<String> = models
                .iter()
                // A request holding the model holds a reference to it.
                .filter(|(name, served)| {
                    Arc::strong_count(served) == 1
                        && used.get(*name).is_none_or(|t| t.elapsed() >= ttl)
                })
                .map(|(name, _)| name.clone())
                .collect();
            for name in &idle {
                models.remove(name);
            }
            idle
        };
        for name in idle {
            eprintln!(
                "{} {name}: unloaded after {} s without a request",
                now(),
                ttl.as_secs()
            );
        }
    }
}

/// The model `name` (one of `--model`), loading it if it was unloaded.
async fn model(shared: &Shared, name: &str) -> Result<Arc<Served>, ApiError> {
    // (The models' lock is let go before `touch` takes the times': `unload_idle` takes the
    // times', then the models'.)
    let loaded = read(&shared.models).get(name).cloned();
    if let Some(served) = loaded {
        touch(shared, name);
        return Ok(served);
    }
    if !shared.preloaded.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable(format!(
            "the model `{name}` is loading: retry shortly"
        )));
    }
    let _one_load = shared.loading[name].lock().await;
    let loaded = read(&shared.models).get(name).cloned();
    if let Some(served) = loaded {
        touch(shared, name);
        return Ok(served);
    }
    let started = Instant::now();
    let (owned, loader) = (name.to_string(), shared.loader.clone());
    let served = tokio::task::spawn_blocking(move || load(&owned, &loader))
        .await
        .map_err(|e| ApiError::unavailable(format!("loading `{name}` failed: {e}")))?
        .map_err(|e| ApiError::unavailable(format!("loading `{name}` failed: {e:#}")))?;
    eprintln!(
        "{} {name}: loaded again in {:.2} s, encoder on {}",
        now(),
        started.elapsed().as_secs_f64(),
        served.backend
    );
    let served = Arc::new(served);
    touch(shared, name);
    write(&shared.models).insert(name.to_string(), served.clone());
    Ok(served)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// Ctrl-C or SIGTERM.
async fn shutdown() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    eprintln!("stopping: no new requests; finishing those in flight");
}

/// `Authorization: Bearer KEY` when a key is set.
async fn authorize(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if let Some(key) = &shared.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            let message = match given {
                None => "no API key given: send `Authorization: Bearer KEY`".into(),
                Some(_) => "incorrect API key".into(),
            };
            // The upload is read (up to the limit) and dropped as it comes, so that a client
            // still sending it reads the answer instead of a connection closed under it.
            let limit = shared.limit_mb * 1024 * 1024;
            let mut body = request.into_body().into_data_stream();
            let mut read = 0;
            while let Some(Ok(chunk)) = futures_util::StreamExt::next(&mut body).await {
                read += chunk.len();
                if read > limit {
                    break;
                }
            }
            return ApiError {
                status: StatusCode::UNAUTHORIZED,
                message,
                kind: "invalid_request_error",
                param: None,
                code: Some("invalid_api_key"),
                retry_after: None,
            }
            .into_response();
        }
    }
    next.run(request).await
}

/// The web page: plain HTML and JavaScript, the language list filled in.
async fn page() -> Response {
    static PAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let page = PAGE.get_or_init(|| {
        let languages: Vec<(&str, String)> = amanuensis::transcribe::languages::LANGUAGES
            .iter()
            .map(|(code, _)| {
                (
                    *code,
                    amanuensis::transcribe::languages::language_name(code),
                )
            })
            .collect();
        include_str!("serve/index.html").replace(
            "__LANGUAGES__",
            &serde_json::to_string(&languages).expect("the languages serialise"),
        )
    });
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page.as_str(),
    )
        .into_response()
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    if let Some(e) = read(&shared.failed).clone() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "failed", "error": e})),
        )
            .into_response();
    }
    let loaded: Vec<String> = {
        let models = read(&shared.models);
        (shared.names.iter())
            .filter(|n| models.contains_key(*n))
            .cloned()
            .collect()
    };
    if !shared.preloaded.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading", "loaded": loaded, "models": shared.names})),
        )
            .into_response();
    }
    // Ready: every model answers (one unloaded for being idle loads with its next request).
    Json(json!({"status": "ready", "models": shared.names, "loaded": loaded})).into_response()
}

async fn list_models(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let loaded = read(&shared.models);
    let mut data = Vec::new();
    // `served`: answered here (by `--model`); `loaded`: in memory now.
    let entry = |id: &str, served: bool, loaded: bool| {
        json!({"id": id, "object": "model", "created": 0, "owned_by": "amanuensis",
               "served": served, "loaded": loaded})
    };
    data.push(entry(
        "whisper-1",
        true,
        loaded.contains_key(&shared.names[0]),
    ));
    for name in &shared.names {
        data.push(entry(name, true, loaded.contains_key(name)));
    }
    for model in amanuensis::model::catalog::catalog() {
        if !shared.names.contains(&model.name) {
            data.push(entry(&model.name, false, false));
        }
    }
    Json(json!({"object": "list", "data": data}))
}

/// A multipart body, or why the request has none.
type Form = Result<Multipart, axum::extract::multipart::MultipartRejection>;

async fn transcriptions(state: State<Arc<Shared>>, multipart: Form) -> Response {
    handle(state, multipart, Task::Transcribe).await
}

async fn translations(state: State<Arc<Shared>>, multipart: Form) -> Response {
    handle(state, multipart, Task::Translate).await
}

/// A request's fields.
#[derive(Default)]
struct Fields {
    file: Option<(String, tempfile::NamedTempFile, usize)>,
    model: Option<String>,
    language: Option<String>,
    prompt: Option<String>,
    response_format: Option<String>,
    temperature: Option<String>,
    granularities: Vec<String>,
    stream: bool,
    /// With `stream`: the formats (txt, srt, vtt, json) the done event carries.
    outputs: Vec<Format>,
}

/// Reads the multipart fields; the file goes to a temporary file.
async fn fields(mut multipart: Multipart, limit_mb: usize) -> Result<Fields, ApiError> {
    let mut f = Fields::default();
    let too_large = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!(
                    "the upload is larger than this server's limit of {limit_mb} MB: send a \
                     smaller file, or start the server with a larger --max-upload-mb"
                ),
                kind: "invalid_request_error",
                param: Some("file"),
                code: Some("file_too_large"),
                retry_after: None,
            }
        } else {
            ApiError::bad_request(format!("cannot read the form: {}", e.body_text()), None)
        }
    };
    while let Some(mut field) = multipart.next_field().await.map_err(too_large)? {
        let name = field.name().unwrap_or("").to_string();
        if name == "file" {
            let filename = field.file_name().unwrap_or("upload").to_string();
            let mut tmp = tempfile::Builder::new()
                .prefix("amanuensis-upload-")
                .tempfile()
                .map_err(|e| ApiError::unavailable(format!("cannot store the upload: {e}")))?;
            let mut bytes = 0;
            while let Some(chunk) = field.chunk().await.map_err(too_large)? {
                bytes += chunk.len();
                tmp.write_all(&chunk)
                    .map_err(|e| ApiError::unavailable(format!("cannot store the upload: {e}")))?;
            }
            f.file = Some((filename, tmp, bytes));
            continue;
        }
        let text = field.text().await.map_err(too_large)?;
        match name.as_str() {
            "model" => f.model = Some(text),
            "language" => f.language = Some(text).filter(|t| !t.is_empty()),
            "prompt" => f.prompt = Some(text).filter(|t| !t.is_empty()),
            "response_format" => f.response_format = Some(text),
            "temperature" => f.temperature = Some(text),
            "timestamp_granularities[]" | "timestamp_granularities" => f.granularities.push(text),
            "stream" => f.stream = text.trim() == "true",
            "outputs" => {
                for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let format = match name {
                        "txt" => Format::Txt,
                        "srt" => Format::Srt,
                        "vtt" => Format::Vtt,
                        "json" => Format::Json,
                        _ => {
                            return Err(ApiError::bad_request(
                                format!("output `{name}` is not one of txt, srt, vtt, json"),
                                Some("outputs"),
                            ));
                        }
                    };
                    f.outputs.push(format);
                }
            }
            // OpenAI's other fields (stream, chunking_strategy, include[]) are not taken here.
            _ => {}
        }
    }
    Ok(f)
}

async fn handle(State(shared): State<Arc<Shared>>, multipart: Form, task: Task) -> Response {
    let started = Instant::now();
    let result = match multipart {
        Ok(multipart) => transcribe(&shared, multipart, task).await,
        Err(e) => Err(ApiError::bad_request(
            format!(
                "the request is not a multipart form ({}): send the audio as \
                 multipart/form-data with the fields file and model",
                e.body_text()
            ),
            None,
        )),
    };
    match result {
        Ok((response, log)) => {
            eprintln!(
                "{} {log} in {:.2} s",
                now(),
                started.elapsed().as_secs_f64()
            );
            response
        }
        Err(e) => {
            eprintln!(
                "{} {} {}: {}",
                now(),
                task_name(task),
                e.status.as_u16(),
                e.message
            );
            e.into_response()
        }
    }
}

/// The time now, UTC, as `2026-12-07T08:15:02Z` (days to a civil date by Howard Hinnant's
/// algorithm).
fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

fn task_name(task: Task) -> &'static str {
    match task {
        Task::Transcribe => "transcription",
        Task::Translate => "translation",
    }
}

async fn transcribe(
    shared: &Arc<Shared>,
    multipart: Multipart,
    task: Task,
) -> Result<(Response, String), ApiError> {
    let f = fields(multipart, shared.limit_mb).await?;
    let Some((filename, upload, bytes)) = f.file else {
        return Err(ApiError::bad_request(
            "no file: send the audio as the multipart field `file`",
            Some("file"),
        ));
    };
    let requested = f
        .model
        .ok_or_else(|| ApiError::bad_request("no model: send the field `model`", Some("model")))?;
    let name = if requested == "whisper-1" {
        shared.names[0].clone()
    } else {
        requested.clone()
    };
    if !shared.names.contains(&name) {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "the model `{requested}` is not served here: serve it with `--model \
                 {requested}`, or ask for one of {} (GET /v1/models)",
                shared.names.join(", ")
            ),
            kind: "invalid_request_error",
            param: Some("model"),
            code: Some("model_not_found"),
            retry_after: None,
        });
    }
    let format = f.response_format.as_deref().unwrap_or("json").to_string();
    if !["json", "text", "srt", "vtt", "verbose_json"].contains(&format.as_str()) {
        return Err(ApiError::bad_request(
            format!("response_format `{format}` is not one of json, text, srt, verbose_json, vtt"),
            Some("response_format"),
        ));
    }
    if !f.stream && !f.outputs.is_empty() {
        return Err(ApiError::bad_request(
            "`outputs` comes with `stream=true` (the done event carries them)",
            Some("outputs"),
        ));
    }
    let mut options = TranscribeOptions::default();
    options.decoding.task = task;
    options.decoding.language = f.language.clone();
    options.initial_prompt = f.prompt.clone();
    options.batch_size = shared.batch_size;
    if let Some(t) = &f.temperature {
        let t: f32 = t.trim().parse().map_err(|_| {
            ApiError::bad_request(
                format!("temperature `{t}` is not a number"),
                Some("temperature"),
            )
        })?;
        if !(0.0..=1.0).contains(&t) {
            return Err(ApiError::bad_request(
                format!("temperature {t} is outside 0 to 1"),
                Some("temperature"),
            ));
        }
        // As OpenAI's: 0 lets the fallback raise it; above 0, that temperature alone.
        if t > 0.0 {
            options.temperatures = vec![t];
        }
    }
    let words = f.granularities.iter().any(|g| g == "word");
    if let Some(g) = f
        .granularities
        .iter()
        .find(|g| !["word", "segment"].contains(&g.as_str()))
    {
        return Err(ApiError::bad_request(
            format!("timestamp granularity `{g}` is not word or segment"),
            Some("timestamp_granularities"),
        ));
    }
    if words {
        options.word_timestamps = Some(WordOptions::default());
    }
    // The model, loaded again if it was unloaded for being idle.
    let served = model(shared, &name).await?;
    served
        .transcriber
        .check_options(&options)
        .map_err(|e| ApiError::bad_request(e.to_string(), Some("language")))?;

    // The queue: waiting or running, at most max_queue.
    if shared.queued.fetch_add(1, Ordering::SeqCst) >= shared.max_queue {
        drop(QueueSlot(shared.clone()));
        return Err(ApiError::unavailable(format!(
            "{} requests are running or waiting: retry later",
            shared.max_queue
        )));
    }
    if f.stream {
        let request = Streamed {
            filename,
            model: name,
            outputs: f.outputs,
        };
        return Ok((
            stream(QueueSlot(shared.clone()), served, options, upload, request),
            format!("{} {requested}: streaming", task_name(task)),
        ));
    }
    let slot = QueueSlot(shared.clone());
    let transcript = take_turn(slot, &served, options, upload, &filename, Quiet).await?;
    let mut log = format!(
        "{} {requested} ({name}): {bytes} bytes, {:.2} s of audio, {:.1}x realtime, encoder on {}",
        task_name(task),
        transcript.duration,
        transcript.timings.realtime_factor,
        served.backend
    );
    if shared.batch_size.is_some() {
        log += &format!(
            ", {} windows of other requests in its batches",
            transcript.timings.shared_batch_windows
        );
    }
    let response = respond(&transcript, &format, task, words, &name, &served.backend);
    Ok((with_backend(response, &served.backend), log))
}

/// A request's place in the queue, given back when dropped: when its transcription ends,
/// or when it is refused, or its client leaves before its turn.
struct QueueSlot(Arc<Shared>);

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `options` over `upload` once a transcription's turn comes (`--max-concurrent`), on a
/// transcription thread, `progress` hearing of it. The upload is removed, and the turn and
/// the request's `slot` given back, when the transcription ends, whatever happens (also when
/// the client has gone meanwhile). Audio that cannot be read is a 400 naming `filename`.
async fn take_turn(
    slot: QueueSlot,
    served: &Arc<Served>,
    options: TranscribeOptions,
    upload: tempfile::NamedTempFile,
    filename: &str,
    progress: impl amanuensis::transcribe::Progress + Send + 'static,
) -> Result<Transcript, ApiError> {
    let shared = slot.0.clone();
    // Set when this request's future is dropped (its client gone): the transcription then
    // stops at its next window.
    let gone = Gone(Arc::new(AtomicBool::new(false)));
    let mut progress = Watched {
        inner: progress,
        gone: gone.0.clone(),
    };
    let permit = shared.device.clone().acquire_owned().await;
    // The model, held while it runs (an idle unload leaves it alone).
    let served = served.clone();
    let path = upload.path().to_path_buf();
    let result = shared
        .workers
        .run(move || {
            let r = served
                .transcriber
                .transcribe(&Input::Path(path), &options, &mut progress);
            drop(upload);
            // Idle from now on.
            touch(&slot.0, &served.name);
            drop(permit);
            drop(slot);
            r
        })
        .await;
    drop(gone);
    let server_error = |message: String| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message,
        kind: "server_error",
        param: None,
        code: None,
        retry_after: None,
    };
    match result {
        Some(Ok(t)) => Ok(t),
        Some(Err(TranscribeError::Audio(e))) => Err(ApiError::bad_request(
            format!("{filename}: {}", strip_path(&e.to_string())),
            Some("file"),
        )),
        Some(Err(e)) => Err(server_error(e.to_string())),
        None => Err(server_error("the transcription panicked".into())),
    }
}

/// Sets its flag when dropped.
struct Gone(Arc<AtomicBool>);

impl Drop for Gone {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A transcription's progress, stopped when its request is gone.
struct Watched<P> {
    inner: P,
    gone: Arc<AtomicBool>,
}

impl<P: amanuensis::transcribe::Progress> amanuensis::transcribe::Progress for Watched<P> {
    fn audio_read(&mut self, seconds: f64) {
        self.inner.audio_read(seconds)
    }
    fn language(&mut self, code: &str, p: f64) {
        self.inner.language(code, p)
    }
    fn segment(&mut self, segment: &amanuensis::transcribe::Segment) {
        self.inner.segment(segment)
    }
    fn position(&mut self, done: usize, total: usize) {
        self.inner.position(done, total)
    }
    fn note(&mut self, message: &str) {
        self.inner.note(message)
    }
    fn keep_going(&mut self) -> bool {
        !self.gone.load(Ordering::SeqCst) && self.inner.keep_going()
    }
}

/// `response` with the backend that served it in `x-amanuensis-backend`.
fn with_backend(mut response: Response, backend: &str) -> Response {
    response.headers_mut().insert(
        "x-amanuensis-backend",
        HeaderValue::from_str(backend).unwrap_or(HeaderValue::from_static("unknown")),
    );
    response
}

/// Segments as server-sent events, as they are decoded.
struct Streamer {
    events: tokio::sync::mpsc::UnboundedSender<Event>,
}

impl amanuensis::transcribe::Progress for Streamer {
    fn keep_going(&mut self) -> bool {
        // The client reads the events while it is there.
        !self.events.is_closed()
    }

    fn segment(&mut self, segment: &amanuensis::transcribe::Segment) {
        // OpenAI's event, and the segment with its times (clients ignore fields they do not
        // know; the web page shows them).
        let data = json!({"type": "transcript.text.delta", "delta": segment.text,
            "segment": {"id": segment.id, "start": segment.start, "end": segment.end,
                        "text": segment.text}});
        let _ = self.events.send(Event::default().data(data.to_string()));
    }
}

/// A streamed request.
struct Streamed {
    filename: String,
    model: String,
    outputs: Vec<Format>,
}

/// OpenAI's streamed transcription: a `transcript.text.delta` event a segment as it is
/// decoded, then `transcript.text.done` with the whole text (and the `outputs` asked for,
/// as `amanuensis transcribe` writes them), or an `error` event. The request holds its place in
/// the queue until the transcription ends.
fn stream(
    slot: QueueSlot,
    served: Arc<Served>,
    options: TranscribeOptions,
    upload: tempfile::NamedTempFile,
    request: Streamed,
) -> Response {
    let Streamed {
        filename,
        model: name,
        outputs,
    } = request;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let backend = served.backend.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let streamer = Streamer { events: tx.clone() };
        let turn = take_turn(slot, &served, options, upload, &filename, streamer);
        // A client that leaves while waiting gives its place back at once (and one that
        // leaves while its transcription runs stops it: `Streamer::keep_going`).
        let result = tokio::select! {
            result = turn => result,
            () = tx.closed() => {
                eprintln!("{} streamed {name}: the client left", now());
                return;
            }
        };
        let event = match result {
            Ok(t) => {
                eprintln!(
                    "{} streamed {name}: {:.2} s of audio, {:.1}x realtime, encoder on {} in \
                     {:.2} s",
                    now(),
                    t.duration,
                    t.timings.realtime_factor,
                    served.backend,
                    started.elapsed().as_secs_f64()
                );
                let mut data = json!({"type": "transcript.text.done", "text": t.text.trim()});
                if !outputs.is_empty() {
                    let context = JsonContext {
                        audio: &filename,
                        model: &name,
                        backend: &served.backend,
                    };
                    let rendered: serde_json::Map<String, serde_json::Value> = outputs
                        .iter()
                        .map(|&format| {
                            let body = render(&t, format, &context, &SubtitleOptions::default());
                            (format.extension().to_string(), body.into())
                        })
                        .collect();
                    data["outputs"] = rendered.into();
                }
                Event::default().data(data.to_string())
            }
            Err(e) => {
                eprintln!("{} streamed {name}: {}", now(), e.message);
                let data = json!({"type": "error", "error": {"message": e.message}});
                Event::default().event("error").data(data.to_string())
            }
        };
        let _ = tx.send(event);
    });
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|e| (Ok::<Event, std::convert::Infallible>(e), rx))
    });
    with_backend(Sse::new(events).into_response(), &backend)
}

/// An audio error's message without the temporary file's path (its first `: `-separated
/// part).
fn strip_path(message: &str) -> String {
    match message.split_once(": ") {
        Some((path, rest)) if path.contains("amanuensis-upload-") => rest.to_string(),
        _ => message.to_string(),
    }
}

/// The transcript in OpenAI's `response_format`.
fn respond(
    t: &Transcript,
    format: &str,
    task: Task,
    words: bool,
    model: &str,
    backend: &str,
) -> Response {
    let text = || t.text.trim().to_string();
    let context = JsonContext {
        audio: "upload",
        model,
        backend,
    };
    let plain = |body: String| {
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
    };
    match format {
        "text" => plain(format!("{}\n", text())),
        "srt" => plain(render(
            t,
            Format::Srt,
            &context,
            &SubtitleOptions::default(),
        )),
        "vtt" => plain(render(
            t,
            Format::Vtt,
            &context,
            &SubtitleOptions::default(),
        )),
        "verbose_json" => {
            let segments: Vec<serde_json::Value> = t
                .segments
                .iter()
                .map(|s| {
                    json!({"id": s.id, "seek": s.seek, "start": s.start, "end": s.end,
                           "text": s.text, "tokens": s.tokens, "temperature": s.temperature,
                           "avg_logprob": s.avg_logprob,
                           "compression_ratio": s.compression_ratio,
                           "no_speech_prob": s.no_speech_prob})
                })
                .collect();
            let mut body = json!({
                "task": match task { Task::Transcribe => "transcribe", Task::Translate => "translate" },
                "language": amanuensis::transcribe::languages::language_name(&t.language).to_lowercase(),
                "duration": t.duration,
                "text": text(),
                "segments": segments,
            });
            if words {
                let list: Vec<serde_json::Value> = t
                    .segments
                    .iter()
                    .flat_map(|s| s.words.iter().flatten())
                    .map(|w| json!({"word": w.word.trim(), "start": w.start, "end": w.end}))
                    .collect();
                body["words"] = serde_json::Value::Array(list);
            }
            Json(body).into_response()
        }
        _ => Json(json!({"text": text()})).into_response(),
    }
}
