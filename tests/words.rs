//! Word timestamps and the subtitles cut from them, against openai-whisper 20250625's own
//! `transcribe(word_timestamps=True)` and subtitle writers:
//! tests/data/reference/transcribe/openai_words.json and words/ (made by
//! tests/data/reference/make.py), openai_words_more.json (made by make_words_more.py).

mod common;

use std::path::{Path, PathBuf};

use amanuensis::audio::Input;
use amanuensis::model::{DecoderFiles, DecoderHints, DecoderModel, EncoderOptions};
use amanuensis::transcribe::output::{Format, JsonContext, SubtitleOptions, render};
use amanuensis::transcribe::{
    Quiet, Task, TranscribeOptions, Transcriber, Transcript, WordOptions,
};
use common::*;

/// Transcriptions take turns: each runs the encoder and the decoder on every core.
fn turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn transcriber(model: &str) -> Transcriber {
    Transcriber::load(&catalog_model(model), &EncoderOptions::default())
        .unwrap_or_else(|e| panic!("{model}: {e}"))
}

fn transcribe(t: &Transcriber, audio: &Path, options: &TranscribeOptions) -> Transcript {
    t.transcribe(&Input::Path(audio.to_path_buf()), options, &mut Quiet)
        .unwrap_or_else(|e| panic!("{}: {e}", audio.display()))
}

fn json(path: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(reference(path)).unwrap()).unwrap()
}

fn with_words() -> TranscribeOptions {
    TranscribeOptions {
        word_timestamps: Some(WordOptions::default()),
        ..TranscribeOptions::default()
    }
}

/// Word probabilities: the mean softmax probability of the word's tokens from the logits of
/// the alignment pass, ours (float32, this project's kernels) against PyTorch's float32.
/// Measured on the 278 words of jfk and news_en with both models: at most 6.9e-4 (logits
/// agree to about 1e-3 of their spread; probabilities near 0.5 move the most). The bound is
/// 1.5e-3.
const PROBABILITY: f64 = 1.5e-3;

/// Our segments and words against openai-whisper's `reference` (a result with `segments`), up
/// to a window sampled at a temperature above 0: the same segments (text, tokens, start and end exactly: the times are multiples of 0.01
/// rounded as Python rounds them), the same words with the same start and end exactly, and
/// probabilities within [`PROBABILITY`]. Returns the word count and the largest probability
/// difference.
fn check_words(ours: &Transcript, reference: &serde_json::Value, label: &str) -> (usize, f64) {
    let theirs = reference["segments"].as_array().unwrap();
    for s in &ours.segments {
        eprintln!("{label}: [{:.2} -> {:.2}] {}", s.start, s.end, s.text);
    }
    // A window that falls back to a temperature above 0 samples with PyTorch's generator,
    // which nothing else reproduces: segments are compared up to the first such window, which
    // must fall back here too.
    let sampled = theirs
        .iter()
        .position(|s| s["temperature"].as_f64().unwrap_or(0.0) > 0.0);
    let compared = match sampled {
        None => {
            assert_eq!(ours.segments.len(), theirs.len(), "{label}: segment count");
            theirs.len()
        }
        Some(k) => {
            assert!(
                ours.segments.get(k).is_some_and(|s| s.temperature > 0.0),
                "{label}: openai-whisper falls back to sampling at segment {k}, this did not"
            );
            eprintln!("{label}: compared up to segment {k}, sampled at a temperature above 0");
            k
        }
    };
    let (mut n, mut worst) = (0, 0.0f64);
    for (i, (a, b)) in ours.segments.iter().zip(theirs).take(compared).enumerate() {
        assert_eq!(a.text, b["text"].as_str().unwrap(), "{label}: text of {i}");
        let tokens: Vec<u32> = serde_json::from_value(b["tokens"].clone()).unwrap();
        assert_eq!(a.tokens, tokens, "{label}: tokens of {i}");
        assert_eq!(
            a.start,
            b["start"].as_f64().unwrap(),
            "{label}: start of {i}"
        );
        assert_eq!(a.end, b["end"].as_f64().unwrap(), "{label}: end of {i}");
        let Some(theirs) = b.get("words") else {
            assert!(a.words.is_none(), "{label}: words without word timestamps");
            continue;
        };
        let words = a.words.as_ref().expect("words");
        let theirs = theirs.as_array().unwrap();
        let show = |w: &[amanuensis::transcribe::Word]| {
            w.iter()
                .map(|w| format!("{}@{:.2}-{:.2}", w.word, w.start, w.end))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let expected: Vec<amanuensis::transcribe::Word> =
            serde_json::from_value(serde_json::Value::Array(theirs.clone())).unwrap();
        assert_eq!(
            words.len(),
            expected.len(),
            "{label}: words of segment {i}:\n ours   {}\n theirs {}",
            show(words),
            show(&expected)
        );
        for (w, e) in words.iter().zip(&expected) {
            assert_eq!(
                (&w.word, w.start, w.end),
                (&e.word, e.start, e.end),
                "{label}: segment {i}:\n ours   {}\n theirs {}",
                show(words),
                show(&expected)
            );
            worst = worst.max((w.probability - e.probability).abs());
            n += 1;
        }
    }
    assert!(
        worst <= PROBABILITY,
        "{label}: word probability off by {worst}"
    );
    (n, worst)
}

/// What make.py's `options` say of a subtitle variant.
fn subtitle_options(options: &serde_json::Value) -> SubtitleOptions {
    let n = |key: &str| options[key].as_u64().map(|v| v as usize);
    SubtitleOptions {
        highlight_words: options["highlight_words"].as_bool().unwrap(),
        max_line_width: n("max_line_width"),
        max_line_count: n("max_line_count"),
        max_words_per_line: n("max_words_per_line"),
    }
}

/// jfk and news_en with `model`: words and times as openai-whisper's, and every subtitle
/// variant's srt and vtt byte for byte as its writers'.
fn words_and_subtitles_match_openai(model: &str) {
    let _turn = turn();
    let t = transcriber(model);
    let all = json("transcribe/openai_words.json");
    let mut words = 0;
    let mut worst = 0.0f64;
    for (key, audio, stem) in [
        ("jfk.flac", reference("audio/jfk.flac"), "jfk"),
        (
            "news_en.wav",
            reference("transcribe/news_en.flac"),
            "news_en",
        ),
    ] {
        let mut options = with_words();
        options.decoding.language = Some("en".into());
        let ours = transcribe(&t, &audio, &options);
        let (n, w) = check_words(
            &ours,
            &all["results"][key][model],
            &format!("{model} {key}"),
        );
        words += n;
        worst = worst.max(w);
        let context = JsonContext {
            audio: key,
            model,
            backend: "cpu",
        };
        for (variant, options) in all["options"].as_object().unwrap() {
            let subtitles = subtitle_options(options);
            for format in [Format::Srt, Format::Vtt] {
                let path = reference(&format!(
                    "transcribe/words/{model}.{variant}/{stem}.{}",
                    format.extension()
                ));
                let expected = std::fs::read_to_string(&path).unwrap();
                let got = render(&ours, format, &context, &subtitles);
                assert!(
                    got == expected,
                    "{}: differs\n--- ours\n{got}\n--- openai-whisper\n{expected}",
                    path.display()
                );
            }
        }
    }
    eprintln!("{model}: {words} words, probabilities within {worst:.2e}");
}

#[test]
fn tiny_en_words_and_subtitles_match_openai() {
    words_and_subtitles_match_openai("tiny.en");
}

#[test]
fn base_words_and_subtitles_match_openai() {
    words_and_subtitles_match_openai("base");
}

/// The options of a run of make_words_more.py.
fn run_options(run: &serde_json::Value) -> TranscribeOptions {
    let o = &run["options"];
    let mut options = TranscribeOptions::default();
    options.decoding.language = o["language"].as_str().map(str::to_string);
    if let Some(t) = o["temperature"].as_f64() {
        options.temperatures = vec![t as f32];
    }
    if o["task"].as_str() == Some("translate") {
        options.decoding.task = Task::Translate;
    }
    if o["word_timestamps"].as_bool() == Some(true) {
        options.word_timestamps = Some(WordOptions {
            hallucination_silence_threshold: o["hallucination_silence_threshold"].as_f64(),
            ..WordOptions::default()
        });
    }
    if let Some(clips) = o["clip_timestamps"].as_str() {
        options.clip_timestamps = clips.split(',').map(|c| c.parse().unwrap()).collect();
    }
    options
}

/// An input make_words_more.py made from parts of a file (`from`: `parts`, each `[start,
/// end, reversed]` in samples, with `zeros_between` zeros between them), written as a WAV
/// into `dir`: the samples are the file's 16-bit ones over 32768, as openai-whisper reads them.
fn made_audio(made: &serde_json::Value, root: &Path, dir: &Path) -> PathBuf {
    let from = root.join(made["from"].as_str().unwrap());
    let (samples, info) = amanuensis::audio::load_audio(&Input::Path(from)).unwrap();
    assert_eq!(info.sample_rate, 16000, "the parts are 16 kHz samples");
    let zeros = made["zeros_between"].as_u64().unwrap() as usize;
    let mut out = Vec::new();
    for (i, part) in made["parts"].as_array().unwrap().iter().enumerate() {
        if i > 0 {
            out.extend(std::iter::repeat_n(0.0f32, zeros));
        }
        let (a, b) = (
            part[0].as_u64().unwrap() as usize,
            part[1].as_u64().unwrap() as usize,
        );
        let mut piece = samples[a..b].to_vec();
        if part[2].as_bool().unwrap() {
            piece.reverse();
        }
        out.extend(piece);
    }
    let path = dir.join("made.wav");
    write_wav_f32(&path, 16000, &out);
    path
}

/// The runs of openai_words_more.json with `model`: LibriVox speech (pauses.flac), French
/// transcribed and translated, clip timestamps, and the hallucination silence threshold on
/// speech played backwards (which the models hallucinate on).
fn more_runs_match_openai(model: &str) {
    let _turn = turn();
    let t = transcriber(model);
    let all = json("transcribe/openai_words_more.json");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for run in all["runs"].as_array().unwrap() {
        if run["model"].as_str() != Some(model) {
            continue;
        }
        let audio = match &all["audio"][run["audio"].as_str().unwrap()] {
            serde_json::Value::String(path) => root.join(path),
            made => made_audio(made, root, tmp.path()),
        };
        let label = format!("{model} {} {}", run["audio"], run["options"]);
        let ours = transcribe(&t, &audio, &run_options(run));
        let (n, worst) = check_words(&ours, run, &label);
        eprintln!("{label}: {n} words, probabilities within {worst:.2e}");
        ran += 1;
    }
    assert!(
        ran >= 4,
        "{model}: only {ran} runs in openai_words_more.json"
    );
}

#[test]
fn tiny_en_more_runs_match_openai() {
    more_runs_match_openai("tiny.en");
}

#[test]
fn base_more_runs_match_openai() {
    more_runs_match_openai("base");
}

/// openai-whisper's tokenizer splits tokens into words at spaces and punctuation, and for
/// Japanese, Chinese and Thai at whole characters: the same words and tokens here.
#[test]
fn words_are_split_as_openai_whisper_splits_them() {
    let all = json("transcribe/openai_words_more.json");
    let _turn = turn();
    let tokenizers: Vec<(String, Transcriber)> = ["tiny.en", "base"]
        .iter()
        .map(|m| (m.to_string(), transcriber(m)))
        .collect();
    for split in all["splits"].as_array().unwrap() {
        let model = split["model"].as_str().unwrap();
        let language = split["language"].as_str().unwrap();
        let tokenizer = tokenizers
            .iter()
            .find(|(m, _)| m == model)
            .unwrap()
            .1
            .tokenizer();
        let tokens: Vec<u32> = serde_json::from_value(split["tokens"].clone()).unwrap();
        let mut with_eot = tokens.clone();
        with_eot.push(tokenizer.special().eot);
        let (words, word_tokens): (Vec<String>, Vec<Vec<u32>>) = tokenizer
            .split_to_word_tokens(&with_eot, language)
            .into_iter()
            .unzip();
        let expected: Vec<String> = serde_json::from_value(split["words"].clone()).unwrap();
        let expected_tokens: Vec<Vec<u32>> =
            serde_json::from_value(split["word_tokens"].clone()).unwrap();
        assert_eq!(words, expected, "{model} {language}");
        assert_eq!(word_tokens, expected_tokens, "{model} {language}");
        // The tokenizer encodes the text as openai-whisper's does.
        assert_eq!(
            tokenizer.encode(split["text"].as_str().unwrap()),
            tokens,
            "{model} {language}: tokens"
        );
    }
}

/// The alignment pass on every layout of optimum's decoders (tests/data/exporters/decoders,
/// see tests/decoders.rs): the logits of every position are PyTorch's (the 8 rows of
/// decoder.expected.npy, within the bound tests/decoders.rs states), and the cross-attention
/// scores are the same whichever layout computed them.
#[test]
fn every_decoder_layout_gives_the_alignment_pass() {
    let fixture = |name: &str| -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/exporters")
            .join(name)
    };
    let hints = DecoderHints {
        d_model: 64,
        n_audio_ctx: 1500,
        n_heads: None,
    };
    let features = read_npy(&fixture("optimum.expected.npy")).1;
    let (shape, expected) = read_npy(&fixture("decoders/decoder.expected.npy"));
    assert_eq!(shape, [8, 1000]);
    let tokens = [998, 3, 17, 256, 999, 42, 7, 512];
    let heads = [(0, 1), (1, 0), (1, 1)];
    let tmp = tempfile::tempdir().unwrap();
    // optimum's first-tokens graph alone: a decoder without a cache.
    std::fs::copy(
        fixture("decoders/optimum-split-opset18/decoder_model.onnx"),
        tmp.path().join("decoder_model.onnx"),
    )
    .unwrap();
    let mut first: Option<Vec<Vec<f32>>> = None;
    for dir in [
        fixture("decoders/optimum-split-opset14"),
        fixture("decoders/optimum-split-opset18"),
        fixture("decoders/optimum-merged-opset18"),
        tmp.path().to_path_buf(),
    ] {
        let files = DecoderFiles::locate(&dir).unwrap();
        let model = DecoderModel::load(files, hints, 1).unwrap();
        let mut session = model.session(&features).unwrap();
        let scores = session.cross_scores(&tokens, &heads).unwrap();
        assert_eq!((scores.tokens, scores.frames), (8, 1500));
        assert_close(
            &format!("{}: logits of every position", dir.display()),
            &scores.logits,
            &expected,
            2e-6,
            0.999_999,
        );
        assert_eq!(scores.scores.len(), heads.len());
        match &first {
            None => first = Some(scores.scores),
            Some(first) => {
                for (a, b) in first.iter().zip(&scores.scores) {
                    // The same products in the same kernels: equal to float32 rounding.
                    assert_close(&format!("{}: scores", dir.display()), b, a, 1e-5, 0.999_999);
                }
            }
        }
        // Heads the decoder does not have are refused with a message.
        let err = session.cross_scores(&tokens, &[(2, 0)]).unwrap_err();
        assert!(err.to_string().contains("alignment head (2, 0)"), "{err}");
    }
}

/// Word timestamps with `--vad` and with `--batch-size` (pauses.flac, tiny.en): every segment
/// has words, which spell its text, in order, inside it, and (mapped back from the speech)
/// inside the speech chunks VAD found, give or take its padding; and most keep the plain run's
/// times to a tenth of a second (measured: 102 of 122 words with VAD, 111 of 124 batched, whose
/// windows start elsewhere; the bound is 80%).
#[test]
fn words_with_vad_and_batches_stay_in_their_segments_and_speech() {
    let _turn = turn();
    let t = transcriber("tiny.en");
    let audio = reference("faster_whisper/pauses.flac");
    let mut plain = with_words();
    plain.decoding.language = Some("en".into());
    let reference_words: Vec<amanuensis::transcribe::Word> = transcribe(&t, &audio, &plain)
        .segments
        .into_iter()
        .flat_map(|s| s.words.unwrap())
        .collect();
    for (label, options) in [
        (
            "vad",
            TranscribeOptions {
                vad: Some(amanuensis::vad::VadOptions::default()),
                ..plain.clone()
            },
        ),
        (
            "batch",
            TranscribeOptions {
                batch_size: Some(4),
                ..plain.clone()
            },
        ),
    ] {
        let ours = transcribe(&t, &audio, &options);
        let speech = ours.speech.clone().expect("speech chunks");
        let mut last = 0.0f64;
        let mut close = 0;
        let mut words = 0;
        for s in &ours.segments {
            let list = s.words.as_ref().expect("words");
            let text: String = list.iter().map(|w| w.word.as_str()).collect();
            assert_eq!(text, s.text, "{label}");
            for w in list {
                assert!(
                    s.start <= w.start && w.start <= w.end && w.end <= s.end,
                    "{label}: {w:?} in {s:?}"
                );
                assert!(w.start >= last - 1e-9, "{label}: {w:?} before {last}");
                last = w.start;
                // Speech chunks are in samples; words may run into the padding around them.
                let inside = speech.iter().any(|c| {
                    let (a, b) = (c.start as f64 / 16000.0, c.end as f64 / 16000.0);
                    w.start >= a - 0.5 && w.end <= b + 0.5
                });
                assert!(inside, "{label}: {w:?} outside the speech {speech:?}");
                words += 1;
                let near = |r: &&amanuensis::transcribe::Word| {
                    r.word == w.word && (r.start - w.start).abs() < 1.0
                };
                if let Some(r) = reference_words.iter().find(near)
                    && (r.start - w.start).abs() <= 0.1
                    && (r.end - w.end).abs() <= 0.1
                {
                    close += 1;
                }
            }
        }
        eprintln!("{label}: {words} words, {close} within 0.1 s of the plain run's");
        assert!(words > 100, "{label}: {words} words");
        assert!(
            close * 10 >= words * 8,
            "{label}: {close} of {words} words near the plain run's"
        );
    }
}

/// The NPU plan's numerics (`emu`: bf16 products in the encoder) keep jfk's words and times
/// (tiny.en) as openai-whisper gives them; the probabilities move with the encoder's
/// features: measured within 4.3e-3 of openai-whisper's, bound 1e-2.
#[test]
fn emu_keeps_jfks_words_and_times() {
    let _turn = turn();
    let t = Transcriber::load(
        &catalog_model("tiny.en"),
        &EncoderOptions {
            backend: amanuensis::backend::Backend::Emu,
            ..EncoderOptions::default()
        },
    )
    .unwrap();
    let ours = transcribe(&t, &reference("audio/jfk.flac"), &with_words());
    let all = json("transcribe/openai_words.json");
    let reference = &all["results"]["jfk.flac"]["tiny.en"];
    let mut worst = 0.0f64;
    let theirs: Vec<amanuensis::transcribe::Word> = reference["segments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| serde_json::from_value::<Vec<_>>(s["words"].clone()).unwrap())
        .collect();
    let words: Vec<&amanuensis::transcribe::Word> = ours
        .segments
        .iter()
        .flat_map(|s| s.words.iter().flatten())
        .collect();
    assert_eq!(words.len(), theirs.len());
    for (a, b) in words.iter().zip(&theirs) {
        assert_eq!((&a.word, a.start, a.end), (&b.word, b.start, b.end));
        worst = worst.max((a.probability - b.probability).abs());
    }
    eprintln!(
        "emu: {} words, probabilities within {worst:.2e}",
        words.len()
    );
    assert!(worst <= 1e-2, "{worst}");
}
