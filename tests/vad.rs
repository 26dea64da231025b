//! Voice activity detection against faster-whisper 1.2.1's own (tests/data/reference/
//! faster_whisper, made by make_faster_whisper.py there): Silero VAD's probabilities frame by
//! frame, the speech chunks of eight option sets on three inputs, their grouping into windows,
//! and `transcribe --vad`.

mod common;

use std::path::Path;

use amanuensis::audio::{Input, load_audio};
use amanuensis::backend::Backend;
use amanuensis::model::EncoderOptions;
use amanuensis::transcribe::{Quiet, TranscribeOptions, Transcriber, compare_words};
use amanuensis::vad::{SileroVad, SpeechChunk, VadOptions, collect_chunks, speech_timestamps};
use common::*;
use serde_json::Value;

fn vad_json() -> Value {
    let text = std::fs::read_to_string(reference("faster_whisper/vad.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The 16 kHz samples faster-whisper read for input `name`, read by our decoder (lossless
/// FLAC at 16 kHz: no resampling) or from the reference's array (jfk).
fn samples(name: &str, json: &Value) -> Vec<f32> {
    let path = json["inputs"][name]["path"].as_str().unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let samples = if path.extension().is_some_and(|e| e == "npy") {
        read_npy(&path).1
    } else {
        load_audio(&Input::Path(path)).unwrap().0
    };
    assert_eq!(
        samples.len() as u64,
        json["inputs"][name]["samples"].as_u64().unwrap(),
        "{name}"
    );
    samples
}

fn vad() -> SileroVad {
    SileroVad::fetch(&mut |m| eprintln!("{m}")).unwrap_or_else(|e| {
        panic!("the VAD model cannot be had (fetching it needs python3 with pip and PyPI): {e}")
    })
}

fn options(o: &Value) -> VadOptions {
    VadOptions {
        threshold: o["threshold"].as_f64().unwrap() as f32,
        neg_threshold: o["neg_threshold"].as_f64().map(|t| t as f32),
        min_speech_duration_ms: o["min_speech_duration_ms"].as_u64().unwrap() as u32,
        max_speech_duration_s: o["max_speech_duration_s"].as_f64().unwrap_or(f64::INFINITY),
        min_silence_duration_ms: o["min_silence_duration_ms"].as_u64().unwrap() as u32,
        speech_pad_ms: o["speech_pad_ms"].as_u64().unwrap() as u32,
    }
}

fn chunks(v: &Value) -> Vec<SpeechChunk> {
    serde_json::from_value(v.clone()).unwrap()
}

const INPUTS: [&str; 3] = ["pauses", "jfk", "news_en"];

/// Our run of the same ONNX model in tract against onnxruntime's, frame by frame. Both are
/// float32 through a convolutional front and an LSTM; measured: 1.4e-6 at most over the 4131
/// frames. Bound: 1e-5.
#[test]
fn speech_probabilities_match_faster_whisper() {
    let json = vad_json();
    let vad = vad();
    for name in INPUTS {
        let audio = samples(name, &json);
        let ours = vad.speech_probs(&audio).unwrap();
        let (_, theirs) = read_npy(&reference(&format!("faster_whisper/vad_probs/{name}.npy")));
        assert_eq!(ours.len(), audio.len() / 512 + 1, "{name}");
        let diff = max_abs_diff(&ours, &theirs);
        eprintln!(
            "{name}: {} frames, largest difference {diff:.2e}",
            ours.len()
        );
        assert!(diff < 1e-5, "{name}: {diff}");
    }
}

/// Fed in pieces of any size, the stream gives the probabilities of the whole.
#[test]
fn speech_probabilities_do_not_depend_on_how_the_audio_is_fed() {
    let json = vad_json();
    let vad = vad();
    let audio = samples("jfk", &json);
    let whole = vad.speech_probs(&audio).unwrap();
    let mut stream = vad.stream();
    for piece in audio.chunks(777) {
        stream.push(piece).unwrap();
    }
    let (pieces, n) = stream.finish().unwrap();
    assert_eq!(n, audio.len());
    assert_eq!(whole, pieces);
    // A length that is a whole number of frames gets one more frame of zeros, as
    // faster-whisper pads.
    assert_eq!(vad.speech_probs(&audio[..1024]).unwrap().len(), 3);
}

/// faster-whisper's chunks from its own probabilities: the same samples exactly, for every
/// option set on every input (the rules alone). From our probabilities: the same within one
/// frame (512 samples) at each end (the model's rounding can move a frame across a threshold).
#[test]
fn speech_chunks_match_faster_whisper() {
    let json = vad_json();
    let vad = vad();
    let sets = json["option_sets"].as_object().unwrap();
    let mut compared = 0;
    for name in INPUTS {
        let audio = samples(name, &json);
        let (_, theirs_probs) =
            read_npy(&reference(&format!("faster_whisper/vad_probs/{name}.npy")));
        let ours_probs = vad.speech_probs(&audio).unwrap();
        for (set, o) in sets {
            let o = options(o);
            let expected = chunks(&json["speech_timestamps"][name][set]);
            let rules = speech_timestamps(&theirs_probs, audio.len(), &o);
            assert_eq!(rules, expected, "{name}, {set}: the rules");
            let ours = speech_timestamps(&ours_probs, audio.len(), &o);
            assert_eq!(ours.len(), expected.len(), "{name}, {set}: {ours:?}");
            for (a, b) in ours.iter().zip(&expected) {
                assert!(
                    a.start.abs_diff(b.start) <= 512 && a.end.abs_diff(b.end) <= 512,
                    "{name}, {set}: {a:?} against {b:?}"
                );
            }
            compared += expected.len();
        }
    }
    eprintln!("{compared} chunks compared");
    assert!(compared > 50, "{compared}");
}

/// Chunks grouped into windows of at most `max_duration` as `collect_chunks` groups them: the
/// same offsets and durations. (faster-whisper's group metadata leaves out the chunk that opens
/// each group after the first; ours lists it. Nothing in faster-whisper reads that list.)
#[test]
fn chunk_groups_match_faster_whisper() {
    let json = vad_json();
    let sets = &json["option_sets"];
    let mut groups_compared = 0;
    for (name, runs) in json["collect_chunks"].as_object().unwrap() {
        for run in runs.as_array().unwrap() {
            let set = run["options"].as_str().unwrap();
            assert!(sets.get(set).is_some(), "{set}");
            let speech = chunks(&json["speech_timestamps"][name][set]);
            let max = run["max_duration"].as_f64().unwrap_or(f64::INFINITY);
            let ours = collect_chunks(&speech, max);
            let theirs = run["chunks"].as_array().unwrap();
            assert_eq!(ours.len(), theirs.len(), "{name} {max}");
            for (a, b) in ours.iter().zip(theirs) {
                assert!(
                    (a.offset - b["offset"].as_f64().unwrap()).abs() < 1e-9,
                    "{name}"
                );
                assert!(
                    (a.duration - b["duration"].as_f64().unwrap()).abs() < 1e-9,
                    "{name}"
                );
                for c in chunks(&b["segments"]) {
                    assert!(a.chunks.contains(&c), "{name}: {c:?} not in {a:?}");
                }
                groups_compared += 1;
            }
        }
    }
    assert!(groups_compared >= 4, "{groups_compared}");
}

/// `transcribe --vad` on speech with pauses: every segment lies in the speech VAD found (times
/// of the input, not of the speech alone), and the words are the script's.
#[test]
fn transcription_with_vad_keeps_the_inputs_times() {
    let json = vad_json();
    let pauses = reference("faster_whisper/pauses.flac");
    let encoder = EncoderOptions {
        backend: Backend::Cpu,
        ..EncoderOptions::default()
    };
    let t = Transcriber::load(&catalog_model("tiny.en"), &encoder).unwrap();
    let plain = t
        .transcribe(
            &Input::Path(pauses.clone()),
            &TranscribeOptions::default(),
            &mut Quiet,
        )
        .unwrap();
    let options = TranscribeOptions {
        vad: Some(VadOptions {
            min_silence_duration_ms: 500,
            speech_pad_ms: 100,
            ..VadOptions::default()
        }),
        ..Default::default()
    };
    let with_vad = t
        .transcribe(&Input::Path(pauses.clone()), &options, &mut Quiet)
        .unwrap();
    let speech = with_vad.speech.clone().expect("the speech found");
    assert_eq!(
        speech,
        chunks(&json["speech_timestamps"]["pauses"]["min_silence_500ms_pad_100ms"]),
        "the chunks transcribed"
    );
    let kept: f64 = speech.iter().map(|c| c.len() as f64 / 16_000.0).sum();
    eprintln!(
        "{} chunks, {kept:.2} of {:.2} s kept; {} segments",
        speech.len(),
        with_vad.duration,
        with_vad.segments.len()
    );
    assert!(kept < with_vad.duration - 10.0, "{kept} s kept");
    assert!((with_vad.duration - plain.duration).abs() < 1e-9);
    let last = with_vad.segments.len() - 1;
    for (i, s) in with_vad.segments.iter().enumerate() {
        if s.text.is_empty() {
            continue;
        }
        // A segment starts in a chunk and ends in one (the same or a later one), to the
        // 0.02 s of a timestamp token. The last may end after the audio, as in openai-whisper
        // and faster-whisper: the model's last timestamp can pass the end of the audio it saw.
        let inside = |t: f64| {
            speech.iter().any(|c| {
                t >= c.start as f64 / 16_000.0 - 0.02 && t <= c.end as f64 / 16_000.0 + 0.02
            })
        };
        assert!(
            inside(s.start),
            "{s:?} starts outside the speech {speech:?}"
        );
        assert!(
            inside(s.end) || i == last,
            "{s:?} ends outside the speech {speech:?}"
        );
    }
    // The words spoken (the recipe of pauses.flac): VAD keeps the model on the speech, where
    // without it the model loses its way after the long pauses.
    let script: Vec<&str> = json["pauses_recipe"]["pieces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["words"].as_str())
        .collect();
    let script = script.join(" ");
    let plain = compare_words(&script, &plain.text);
    let c = compare_words(&script, &with_vad.text);
    eprintln!(
        "word agreement with the script: {:.3} with VAD, {:.3} without",
        c.agreement, plain.agreement
    );
    // Measured 0.874 with tiny.en (most differences are spellings: "mr", "coldhearted",
    // "illdisposed"), 0.490 without VAD. Bound 0.85.
    assert!(c.agreement > 0.85, "{c:?}");
    assert!(c.agreement > plain.agreement);
}
