//! Transcription against openai-whisper's own outputs: the whole-input spectrogram that
//! `transcribe()` computes (tests/data/transcribe, made by make.py there).

mod common;

use std::path::Path;

use amanuensis::audio::{AudioStream, Input, LogMel, MelSpool, N_FRAMES};
use common::*;

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/transcribe")
        .join(name)
}

/// Frames of the spectrogram over the whole of news_en.wav (its floor at the whole file's
/// maximum minus 8, windows read at any frame) against openai-whisper's
/// `log_mel_spectrogram(audio, padding=N_SAMPLES)`. What separates the two is the rounding of
/// OpenAI's float32 STFT (ours runs in f64), largest on quiet frames where it is a larger share
/// of the power: measured 2.3e-5 (frame 201, a pause 6.5 decades below full scale); the bound
/// is 3e-5.
#[test]
fn whole_input_spectrogram_matches_openai_transcribe() {
    let input = Input::from_arg(&reference("transcribe/news_en.wav"));
    let mut stream = AudioStream::open(&input).unwrap();
    let mut spool = MelSpool::build(&mut stream, &LogMel::new(80), &mut |_| {}).unwrap();
    assert_eq!(spool.content_frames(), 6120);
    let frames: Vec<i64> = {
        let bytes = std::fs::read(data("news_en.mel80_frames.npy")).unwrap();
        npyz::NpyFile::new(&bytes[..]).unwrap().into_vec().unwrap()
    };
    let (shape, expected) = read_npy(&data("news_en.mel80_values.npy"));
    assert_eq!(shape, [frames.len(), 80]);
    let mut window = vec![0.0f32; 80 * N_FRAMES];
    let mut ours = Vec::with_capacity(expected.len());
    for &f in &frames {
        spool.window(f as usize, N_FRAMES, &mut window).unwrap();
        ours.extend((0..80).map(|m| window[m * N_FRAMES]));
    }
    assert_close("whole-input log-mel", &ours, &expected, 3e-5, 0.999_999_9);
    // Past the audio, a window holds zeros (pad_or_trim of the sliced spectrogram).
    spool.window(6000, N_FRAMES, &mut window).unwrap();
    assert!(window[120..N_FRAMES].iter().all(|&v| v == 0.0));
    assert!(window[..120].iter().all(|&v| v != 0.0));
}
