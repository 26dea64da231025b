//! Batched transcription (`--batch-size`): a batch of windows decodes each window as it
//! decodes alone, and the pipeline cuts the speech into faster-whisper 1.2.1's windows
//! (`BatchedInferencePipeline`, tests/data/reference/faster_whisper/batched.json, made by
//! make_faster_whisper.py there).

mod common;

use amanuensis::audio::{AudioStream, Input, LogMel, MelSpool, N_FRAMES};
use amanuensis::backend::Backend;
use amanuensis::model::EncoderOptions;
use amanuensis::transcribe::{
    DecodingOptions, DecodingTask, Quiet, Rng, TranscribeOptions, Transcriber, compare_words,
};
use common::*;
use serde_json::Value;

fn tiny() -> Transcriber {
    let encoder = EncoderOptions {
        backend: Backend::Cpu,
        ..EncoderOptions::default()
    };
    Transcriber::load(&catalog_model("tiny.en"), &encoder).unwrap()
}

/// Three windows of long speech (and one of the same window twice) decoded together give, for
/// each, the tokens and the log probabilities, to the bit, of that window decoded alone: the
/// rows of a batch share the reading of the weights, not their sums.
#[test]
fn a_batch_decodes_each_window_as_alone() {
    let t = tiny();
    let audio = Input::Path(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/transcribe/long.flac"),
    );
    let mut stream = AudioStream::open(&audio).unwrap();
    let mut spool = MelSpool::build(&mut stream, &LogMel::new(80), &mut |_| {}).unwrap();
    let mut features = Vec::new();
    for seek in [0, 3000, 9000, 3000] {
        let mut window = vec![0.0f32; 80 * N_FRAMES];
        spool.window(seek, N_FRAMES, &mut window).unwrap();
        features.push(t.encoder().encode(&window).unwrap());
    }
    let options = DecodingOptions {
        language: Some("en".into()),
        ..DecodingOptions::default()
    };
    let task = DecodingTask::new(t.tokenizer(), options, 448, 1500).unwrap();
    let decoder = t.decoder().unwrap();
    let refs: Vec<&[f32]> = features.iter().map(Vec::as_slice).collect();
    let mut batch = decoder.batch_session(&refs).unwrap();
    let together = task
        .run_batch(&mut batch, refs.len(), &mut Rng::new(0))
        .unwrap();
    for (i, f) in features.iter().enumerate() {
        let mut alone = decoder.session(f).unwrap();
        let alone = task.run(&mut alone, &mut Rng::new(0)).unwrap();
        let batched = &together[i];
        assert_eq!(batched.tokens, alone.tokens, "window {i}");
        assert!(!alone.tokens.is_empty(), "window {i}");
        assert_eq!(
            batched.avg_logprob.to_bits(),
            alone.avg_logprob.to_bits(),
            "window {i}"
        );
        assert_eq!(
            batched.no_speech_prob.to_bits(),
            alone.no_speech_prob.to_bits(),
            "window {i}"
        );
    }
    // Windows that end early leave the batch: fewer passes than windows times tokens.
    let longest = together.iter().map(|r| r.tokens.len()).max().unwrap();
    assert!(
        batch.forwards() <= longest + 2,
        "{} passes",
        batch.forwards()
    );
}

/// faster-whisper's batched pipeline on speech with pauses and on 61 s of news (tiny.en,
/// without timestamps, its default): the same windows, so the same segment times to 0.01 s;
/// the words as faster-whisper's (which decodes with beam search, 5 beams, where the batch
/// is greedy): measured 0.957 on pauses.flac and 1.0 on news_en; bound 0.93.
#[test]
fn batched_transcription_cuts_the_speech_as_faster_whisper() {
    let t = tiny();
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(reference("faster_whisper/batched.json")).unwrap(),
    )
    .unwrap();
    let mut options = TranscribeOptions {
        batch_size: Some(8),
        ..Default::default()
    };
    options.decoding.without_timestamps = true;
    for name in ["pauses", "news_en"] {
        let result = &json["results"][name];
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(result["input"]["path"].as_str().unwrap());
        let ours = t
            .transcribe(&Input::Path(path), &options, &mut Quiet)
            .unwrap();
        let theirs = result["tiny.en"]["batched"]["segments"].as_array().unwrap();
        assert_eq!(ours.segments.len(), theirs.len(), "{name}");
        for (a, b) in ours.segments.iter().zip(theirs) {
            let (start, end) = (b["start"].as_f64().unwrap(), b["end"].as_f64().unwrap());
            assert!(
                (a.start - start).abs() < 0.011 && (a.end - end).abs() < 0.011,
                "{name}: {a:?} against {start} - {end}"
            );
        }
        let text: Vec<&str> = theirs.iter().map(|s| s["text"].as_str().unwrap()).collect();
        let c = compare_words(&text.concat(), &ours.text);
        eprintln!(
            "{name}: word agreement with faster-whisper {:.3}",
            c.agreement
        );
        assert!(c.agreement > 0.93, "{name}: {c:?}");
    }
}

/// Lighter decoder weights (`--decoder-precision`): against the float32 decoder on one window
/// of news (tiny.en, 61 s), the logits of the prompt's last position move by what the weights'
/// rounding allows, and the transcript of the whole file keeps its words.
#[test]
fn lighter_decoder_weights_keep_the_words() {
    use amanuensis::model::WeightPrecision;
    let news = Input::Path(reference("transcribe/news_en.flac"));
    let load = |weights| {
        let encoder = EncoderOptions {
            backend: Backend::Cpu,
            decoder_weights: weights,
            ..EncoderOptions::default()
        };
        Transcriber::load(&catalog_model("tiny.en"), &encoder).unwrap()
    };
    let reference = load(WeightPrecision::F32);
    let mut stream = AudioStream::open(&news).unwrap();
    let mut spool = MelSpool::build(&mut stream, &LogMel::new(80), &mut |_| {}).unwrap();
    let mut window = vec![0.0f32; 80 * N_FRAMES];
    spool.window(0, N_FRAMES, &mut window).unwrap();
    let features = reference.encoder().encode(&window).unwrap();
    let prompt = vec![50257u32, 50362, 50363];
    let logits = |t: &Transcriber| {
        let mut s = t.decoder().unwrap().session(&features).unwrap();
        s.forward(std::slice::from_ref(&prompt)).unwrap()
    };
    let exact = logits(&reference);
    let text = reference
        .transcribe(&news, &TranscribeOptions::default(), &mut Quiet)
        .unwrap()
        .text;
    for (weights, max_logit, min_agreement) in [
        (WeightPrecision::Bf16, BF16_LOGITS, 0.98),
        (WeightPrecision::Int8, INT8_LOGITS, 0.98),
    ] {
        let t = load(weights);
        let got = logits(&t);
        let diff = max_abs_diff(&got, &exact);
        let ours = t
            .transcribe(&news, &TranscribeOptions::default(), &mut Quiet)
            .unwrap()
            .text;
        let c = compare_words(&text, &ours);
        eprintln!(
            "{weights}: logits within {diff:.3} of float32's; {:.3} of the words ({:?})",
            c.agreement, c.differences
        );
        assert!(diff < max_logit, "{weights}: {diff}");
        assert!(c.agreement >= min_agreement, "{weights}: {c:?}");
    }
}

/// Bounds of the logits' difference against float32 weights (logits of order 10), the measured
/// values plus half: bfloat16 0.060 (a weight's relative error is at most 2^-8), int8 1.146 (a
/// weight's absolute error is up to half its channel's step, max |w| / 254). The words:
/// bfloat16 all of float32's on news_en, int8 0.992 ("on" for "of").
const BF16_LOGITS: f32 = 0.09;
const INT8_LOGITS: f32 = 1.7;

/// Six batched transcriptions at once on one transcriber: the windows that come while a batch
/// decodes share the next batch (the library's `shared_batch_windows`), and each transcript
/// is the one it gets alone (a batch decodes each window as alone, above).
#[test]
fn concurrent_transcriptions_share_the_decoders_batches() {
    let t = tiny();
    // 25 s of dense speech: one window each, encoded side by side (the CPU's threads shared
    // fairly, they end about together), then about 70 tokens to decode: the windows that
    // come while the first batch decodes wait for the next, together.
    let (samples, _) =
        amanuensis::audio::load_audio(&Input::Path(reference("transcribe/news_en.flac"))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.wav");
    write_wav_f32(&clip, 16000, &samples[..25 * 16000]);
    let options = TranscribeOptions {
        batch_size: Some(8),
        ..TranscribeOptions::default()
    };
    let input = Input::Path(clip);
    let alone = t.transcribe(&input, &options, &mut Quiet).unwrap();
    assert_eq!(alone.timings.shared_batch_windows, 0);
    let together: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| t.transcribe(&input, &options, &mut Quiet).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for transcript in &together {
        assert_eq!(transcript.text, alone.text);
        let times = |t: &amanuensis::transcribe::Transcript| -> Vec<(f64, f64)> {
            t.segments.iter().map(|s| (s.start, s.end)).collect()
        };
        assert_eq!(times(transcript), times(&alone));
    }
    let shared: Vec<usize> = together
        .iter()
        .map(|t| t.timings.shared_batch_windows)
        .collect();
    eprintln!("windows of others in each transcription's batches: {shared:?}");
    assert!(shared.iter().sum::<usize>() >= 2, "{shared:?}");
}
