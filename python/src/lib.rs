//! `amanuensis._amanuensis`: the transcriber for Python (the package `amanuensis` wraps it in
//! faster-whisper's shapes).
//!
//! A transcription runs on a thread of its own; its segments come through a channel as they
//! are decoded, and Python waits for them with the GIL released, so other Python threads run
//! meanwhile and an iterator left half read stops nothing but its own thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use numpy::PyReadonlyArray1;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyFileNotFoundError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use amanuensis::audio::{AudioError, Input};
use amanuensis::backend::Backend;
use amanuensis::model::EncoderOptions;
use amanuensis::transcribe::{
    Progress, Segment, Task, TranscribeError, TranscribeOptions, Transcriber, Transcript,
    WordOptions,
};
use amanuensis::vad::VadOptions;

create_exception!(
    _amanuensis,
    AmanuensisError,
    PyException,
    "An error of amanuensis."
);
create_exception!(
    _amanuensis,
    AudioDecodeError,
    AmanuensisError,
    "The audio cannot be read."
);
create_exception!(
    _amanuensis,
    ModelError,
    AmanuensisError,
    "The model cannot be found, loaded or run."
);
create_exception!(
    _amanuensis,
    OptionsError,
    AmanuensisError,
    "The options do not fit the model or each other."
);

/// A transcription error as the Python exception that says the same.
fn py_error(e: TranscribeError) -> PyErr {
    match e {
        TranscribeError::Audio(AudioError::Io { ref err, .. })
            if err.kind() == std::io::ErrorKind::NotFound =>
        {
            PyFileNotFoundError::new_err(e.to_string())
        }
        TranscribeError::Audio(_) => AudioDecodeError::new_err(e.to_string()),
        TranscribeError::Options(_) => OptionsError::new_err(e.to_string()),
        _ => ModelError::new_err(e.to_string()),
    }
}

/// A Whisper model loaded for transcription.
#[pyclass(module = "amanuensis._amanuensis", frozen)]
struct Model {
    transcriber: Arc<Transcriber>,
    path: String,
    backend: String,
}

#[pymethods]
impl Model {
    /// Loads `name_or_path` (a catalog name, fetched on first use, or a model directory) with
    /// the encoder on `backend` (`auto`, `cpu`, `emu`, `npu`, `tract`).
    #[new]
    #[pyo3(signature = (name_or_path, backend = "auto", threads = None))]
    fn new(
        py: Python<'_>,
        name_or_path: &str,
        backend: &str,
        threads: Option<usize>,
    ) -> PyResult<Model> {
        let backend: Backend = backend.parse().map_err(|_| {
            PyValueError::new_err(format!(
                "backend `{backend}` is not one of {}",
                Backend::NAMES.join(", ")
            ))
        })?;
        if threads == Some(0) {
            return Err(PyValueError::new_err("threads must be at least 1"));
        }
        let name = name_or_path.to_string();
        py.detach(move || {
            let dir = amanuensis::model::resolve_model(&name, &mut |line| eprintln!("{line}"))
                .map_err(|e| ModelError::new_err(format!("{e:#}")))?;
            let mut options = EncoderOptions {
                backend,
                ..EncoderOptions::default()
            };
            if let Some(t) = threads {
                options.threads = t;
            }
            let transcriber = Transcriber::load(&dir, &options).map_err(py_error)?;
            let backend = transcriber.encoder().backend().backend.to_string();
            Ok(Model {
                transcriber: Arc::new(transcriber),
                path: dir.display().to_string(),
                backend,
            })
        })
    }

    /// The model's directory.
    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    /// The backend the encoder runs on (what `auto` chose).
    #[getter]
    fn backend(&self) -> &str {
        &self.backend
    }

    /// Whether the model knows other languages than English.
    #[getter]
    fn is_multilingual(&self) -> bool {
        self.transcriber.tokenizer().is_multilingual()
    }

    /// Starts transcribing `audio` (a path, or a 1-D float32 array of 16 kHz mono samples)
    /// with `options` (see the package's `transcribe`); the run yields the segments.
    #[pyo3(signature = (audio, options))]
    fn transcribe(
        &self,
        py: Python<'_>,
        audio: &Bound<'_, PyAny>,
        options: &Bound<'_, PyDict>,
    ) -> PyResult<Run> {
        let input = input_of(audio)?;
        let options = transcribe_options(options)?;
        self.transcriber.check_options(&options).map_err(py_error)?;
        Run::start(py, self.transcriber.clone(), input, options)
    }
}

/// `audio` as an input: a path (str or os.PathLike) or a 1-D float32 array.
fn input_of(audio: &Bound<'_, PyAny>) -> PyResult<Input> {
    if let Ok(path) = audio.extract::<std::path::PathBuf>() {
        return Ok(Input::Path(path));
    }
    if let Ok(array) = audio.extract::<PyReadonlyArray1<'_, f32>>() {
        let samples = array
            .as_slice()
            .map(<[f32]>::to_vec)
            .unwrap_or_else(|_| array.as_array().iter().copied().collect());
        // What decoding would find later, said now.
        let name = "<samples>".to_string();
        if samples.is_empty() {
            return Err(py_error(TranscribeError::Audio(AudioError::NoSamples {
                name,
            })));
        }
        if let Some(i) = samples.iter().position(|x| !x.is_finite()) {
            let what = if samples[i].is_nan() {
                "NaN"
            } else {
                "infinity"
            };
            return Err(py_error(TranscribeError::Audio(AudioError::NonFinite {
                name,
                at: i as f64 / 16000.0,
                what,
            })));
        }
        return Ok(Input::samples(samples));
    }
    // A numpy array of another dtype or shape: say which.
    if let (Ok(dtype), Ok(shape)) = (audio.getattr("dtype"), audio.getattr("shape")) {
        let shape: Vec<usize> = shape.extract().unwrap_or_default();
        if shape.len() != 1 {
            return Err(PyValueError::new_err(format!(
                "audio has shape {shape:?}: pass a 1-D array of mono samples (average the \
                 channels first, for example audio.mean(axis=1))"
            )));
        }
        return Err(PyTypeError::new_err(format!(
            "audio has dtype {dtype}: pass float32 samples in -1 to 1 at 16 kHz (for example \
             audio.astype(numpy.float32))"
        )));
    }
    Err(PyTypeError::new_err(format!(
        "audio is a {}: pass a path or a 1-D float32 numpy array of 16 kHz samples",
        audio.get_type().name()?
    )))
}

/// The package's options (a dict of plain values) as transcription options.
fn transcribe_options(d: &Bound<'_, PyDict>) -> PyResult<TranscribeOptions> {
    fn get<'py, T: pyo3::conversion::FromPyObjectOwned<'py>>(
        d: &Bound<'py, PyDict>,
        key: &str,
    ) -> PyResult<Option<T>> {
        match d.get_item(key)? {
            None => Ok(None),
            Some(v) if v.is_none() => Ok(None),
            Some(v) => v.extract::<T>().map(Some).map_err(|e| {
                let e: PyErr = e.into();
                PyTypeError::new_err(format!("{key}: {e}"))
            }),
        }
    }
    let mut o = TranscribeOptions::default();
    if let Some(language) = get::<String>(d, "language")? {
        o.decoding.language = Some(language);
    }
    match get::<String>(d, "task")?.as_deref() {
        None | Some("transcribe") => o.decoding.task = Task::Transcribe,
        Some("translate") => o.decoding.task = Task::Translate,
        Some(other) => {
            return Err(PyValueError::new_err(format!(
                "task `{other}` is not transcribe or translate"
            )));
        }
    }
    o.decoding.beam_size = get(d, "beam_size")?;
    o.decoding.best_of = get(d, "best_of")?;
    o.decoding.patience = get(d, "patience")?;
    o.decoding.length_penalty = get(d, "length_penalty")?;
    if let Some(t) = get::<Vec<f32>>(d, "temperature")? {
        o.temperatures = t;
    }
    o.compression_ratio_threshold = get(d, "compression_ratio_threshold")?;
    o.logprob_threshold = get(d, "log_prob_threshold")?;
    o.no_speech_threshold = get(d, "no_speech_threshold")?;
    if let Some(c) = get(d, "condition_on_previous_text")? {
        o.condition_on_previous_text = c;
    }
    o.initial_prompt = get(d, "initial_prompt")?;
    if let Some(w) = get(d, "without_timestamps")? {
        o.decoding.without_timestamps = w;
    }
    if let Some(s) = get(d, "seed")? {
        o.seed = s;
    }
    if get::<bool>(d, "word_timestamps")? == Some(true) {
        let mut words = WordOptions::default();
        if let Some(p) = get(d, "prepend_punctuations")? {
            words.prepend_punctuations = p;
        }
        if let Some(p) = get(d, "append_punctuations")? {
            words.append_punctuations = p;
        }
        words.hallucination_silence_threshold = get(d, "hallucination_silence_threshold")?;
        o.word_timestamps = Some(words);
    }
    o.batch_size = get(d, "batch_size")?;
    // VAD's options: given, or VadOptions' defaults for the sequential rules with
    // `vad_filter`; batching always finds the speech, with faster-whisper's batched defaults
    // unless given others.
    let parameters = d.get_item("vad_parameters")?.filter(|v| !v.is_none());
    let vad_filter = get::<bool>(d, "vad_filter")? == Some(true);
    let batched = o.batch_size.is_some();
    if (vad_filter || batched) && (parameters.is_some() || !batched) {
        let mut vad = VadOptions::default();
        if let Some(p) = parameters {
            let p = p.cast::<PyDict>().map_err(|_| {
                PyTypeError::new_err("vad_parameters: a dict of VadOptions' fields")
            })?;
            for (key, value) in p.iter() {
                let key: String = key.extract()?;
                let bad = |e: PyErr| PyTypeError::new_err(format!("vad_parameters[{key}]: {e}"));
                let value = &value;
                match key.as_str() {
                    "threshold" => vad.threshold = value.extract().map_err(bad)?,
                    "neg_threshold" => vad.neg_threshold = value.extract().map_err(bad)?,
                    "min_speech_duration_ms" => {
                        vad.min_speech_duration_ms = value.extract().map_err(bad)?
                    }
                    "max_speech_duration_s" => {
                        vad.max_speech_duration_s = value.extract().map_err(bad)?
                    }
                    "min_silence_duration_ms" => {
                        vad.min_silence_duration_ms = value.extract().map_err(bad)?
                    }
                    "speech_pad_ms" => vad.speech_pad_ms = value.extract().map_err(bad)?,
                    _ => {
                        return Err(PyValueError::new_err(format!(
                            "vad_parameters: `{key}` is not one of threshold, neg_threshold, \
                             min_speech_duration_ms, max_speech_duration_s, \
                             min_silence_duration_ms, speech_pad_ms"
                        )));
                    }
                }
            }
        }
        o.vad = Some(vad);
    }
    if let Some(clips) = get::<Vec<f64>>(d, "clip_timestamps")? {
        o.clip_timestamps = clips;
    }
    o.verify().map_err(OptionsError::new_err)?;
    Ok(o)
}

/// What the transcription thread sends.
enum Event {
    Language(String, f64),
    Segment(Box<Segment>),
    Done(Box<Result<Transcript, TranscribeError>>),
}

/// Segments to the channel, as they are decoded, while the run is wanted.
struct Sender(mpsc::Sender<Event>, Arc<AtomicBool>);

impl Progress for Sender {
    fn keep_going(&mut self) -> bool {
        !self.1.load(Ordering::SeqCst)
    }
    fn language(&mut self, code: &str, p: f64) {
        let _ = self.0.send(Event::Language(code.to_string(), p));
    }
    fn segment(&mut self, segment: &Segment) {
        let _ = self.0.send(Event::Segment(Box::new(segment.clone())));
    }
}

/// A transcription running: iterate for its segments (dicts), then `result()` for the rest.
#[pyclass(module = "amanuensis._amanuensis")]
struct Run {
    events: Mutex<mpsc::Receiver<Event>>,
    /// Segments received while waiting for the language.
    early: std::collections::VecDeque<Segment>,
    /// The language, once known, and its probability.
    #[pyo3(get)]
    language: Option<String>,
    #[pyo3(get)]
    language_probability: f64,
    /// The transcript, once done.
    done: Option<Transcript>,
    /// Set when the run is dropped: the transcription stops at its next window.
    dropped: Arc<AtomicBool>,
    /// The operating system's id of the transcription's thread (as Python's
    /// `threading.get_native_id()` gives), on Linux.
    #[pyo3(get)]
    native_id: Option<u64>,
}

impl Drop for Run {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// The next event, waiting with the GIL released a tenth of a second at a time so that
/// Ctrl-C (a signal Python handles) is heard; `None` when the thread has gone without one.
fn next_event(py: Python<'_>, events: &Mutex<mpsc::Receiver<Event>>) -> PyResult<Option<Event>> {
    loop {
        let event = py.detach(|| {
            events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .recv_timeout(Duration::from_millis(100))
        });
        match event {
            Ok(event) => return Ok(Some(event)),
            Err(mpsc::RecvTimeoutError::Timeout) => py.check_signals()?,
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
        }
    }
}

/// This thread's id in the operating system (Linux only).
fn native_thread_id() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions.
        u64::try_from(unsafe { libc::gettid() }).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

fn thread_gone() -> PyErr {
    ModelError::new_err("the transcription's thread ended without its transcript")
}

impl Run {
    /// Starts the thread, and waits for the language (given, English, detected, or told by
    /// the end) or for an error, which is raised here.
    fn start(
        py: Python<'_>,
        transcriber: Arc<Transcriber>,
        input: Input,
        options: TranscribeOptions,
    ) -> PyResult<Run> {
        // A file that cannot be opened fails here, as faster-whisper's does (samples were
        // checked already).
        if !matches!(input, Input::Samples(_)) {
            py.detach(|| amanuensis::audio::Decoder::open(&input).map(drop))
                .map_err(|e| py_error(TranscribeError::Audio(e)))?;
        }
        let given = options
            .decoding
            .language
            .clone()
            .or_else(|| (!transcriber.tokenizer().is_multilingual()).then(|| "en".to_string()));
        let (tx, rx) = mpsc::channel();
        let dropped = Arc::new(AtomicBool::new(false));
        let wanted = dropped.clone();
        let (id_tx, id_rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("amanuensis-transcribe".into())
            .spawn(move || {
                let _ = id_tx.send(native_thread_id());
                let mut progress = Sender(tx.clone(), wanted);
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    transcriber.transcribe(&input, &options, &mut progress)
                }))
                .unwrap_or_else(|_| {
                    Err(TranscribeError::Model("the transcription panicked".into()))
                });
                let _ = tx.send(Event::Done(Box::new(result)));
            })
            .map_err(|e| ModelError::new_err(format!("cannot start a thread: {e}")))?;
        let mut run = Run {
            events: Mutex::new(rx),
            early: Default::default(),
            language: given.clone(),
            language_probability: 1.0,
            done: None,
            dropped,
            native_id: id_rx.recv().ok().flatten(),
        };
        if given.is_none() {
            // Detection: wait for it (or for the end, which carries it).
            loop {
                match next_event(py, &run.events)? {
                    Some(Event::Language(code, p)) => {
                        run.language = Some(code);
                        run.language_probability = p;
                        break;
                    }
                    Some(Event::Segment(s)) => run.early.push_back(*s),
                    Some(Event::Done(result)) => {
                        let t = (*result).map_err(py_error)?;
                        run.language = Some(t.language.clone());
                        run.done = Some(t);
                        break;
                    }
                    None => return Err(thread_gone()),
                }
            }
        }
        Ok(run)
    }
}

/// A segment as a dict of plain values.
fn segment_dict<'py>(py: Python<'py>, s: &Segment) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", s.id)?;
    d.set_item("seek", s.seek)?;
    d.set_item("start", s.start)?;
    d.set_item("end", s.end)?;
    d.set_item("text", &s.text)?;
    d.set_item("tokens", &s.tokens)?;
    d.set_item("temperature", s.temperature)?;
    d.set_item("avg_logprob", s.avg_logprob)?;
    d.set_item("compression_ratio", s.compression_ratio)?;
    d.set_item("no_speech_prob", s.no_speech_prob)?;
    match &s.words {
        None => d.set_item("words", py.None())?,
        Some(words) => {
            let list = PyList::empty(py);
            for w in words {
                let wd = PyDict::new(py);
                wd.set_item("start", w.start)?;
                wd.set_item("end", w.end)?;
                wd.set_item("word", &w.word)?;
                wd.set_item("probability", w.probability)?;
                list.append(wd)?;
            }
            d.set_item("words", list)?;
        }
    }
    Ok(d)
}

#[pymethods]
impl Run {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next segment, waiting for it with the GIL released; a failure is raised here.
    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        if let Some(s) = self.early.pop_front() {
            return segment_dict(py, &s).map(Some);
        }
        if self.done.is_some() {
            // Done (while waiting for the language, or before): its segments came first.
            return Ok(None);
        }
        loop {
            match next_event(py, &self.events)? {
                Some(Event::Language(code, p)) => {
                    self.language = Some(code);
                    self.language_probability = p;
                }
                Some(Event::Segment(s)) => return segment_dict(py, &s).map(Some),
                Some(Event::Done(result)) => {
                    self.done = Some((*result).map_err(py_error)?);
                    return Ok(None);
                }
                None => return Err(thread_gone()),
            }
        }
    }

    /// Once the segments are read: the transcript's duration, the speech VAD kept (seconds),
    /// and the languages' probabilities when detected.
    fn result<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let t = self.done.as_ref().ok_or_else(|| {
            PyValueError::new_err("the transcription is not done: read its segments first")
        })?;
        let d = PyDict::new(py);
        d.set_item("duration", t.duration)?;
        d.set_item("language", &t.language)?;
        d.set_item(
            "duration_after_vad",
            t.speech.as_ref().map(|chunks| {
                let samples: usize = chunks.iter().map(|c| c.end - c.start).sum();
                samples as f64 / 16000.0
            }),
        )?;
        d.set_item("all_language_probs", t.language_probs.clone())?;
        Ok(d)
    }
}

/// Decodes `path` (any format amanuensis reads) to mono float32 samples at 16 kHz, the GIL
/// released.
#[pyfunction]
fn decode_audio<'py>(
    py: Python<'py>,
    path: std::path::PathBuf,
) -> PyResult<Bound<'py, numpy::PyArray1<f32>>> {
    let input = Input::Path(path);
    let (samples, _) = py
        .detach(|| amanuensis::audio::load_audio(&input))
        .map_err(|e| py_error(TranscribeError::Audio(e)))?;
    Ok(numpy::PyArray1::from_vec(py, samples))
}

#[pymodule]
fn _amanuensis(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(decode_audio, m)?)?;
    m.add_class::<Model>()?;
    m.add_class::<Run>()?;
    m.add("AmanuensisError", m.py().get_type::<AmanuensisError>())?;
    m.add("AudioDecodeError", m.py().get_type::<AudioDecodeError>())?;
    m.add("ModelError", m.py().get_type::<ModelError>())?;
    m.add("OptionsError", m.py().get_type::<OptionsError>())?;
    Ok(())
}
