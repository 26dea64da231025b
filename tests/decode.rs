//! Decoding every supported container and sample format, checked sample by sample where the
//! format is lossless and by correlation with the source where it is lossy.
//!
//! The fixtures in tests/data are the repository's own speech sample (samples/speech.wav, made
//! with espeak-ng) encoded with ffmpeg: flac 44.1 kHz stereo 24-bit, mp3 44.1 kHz stereo
//! 128 kbit/s, vorbis 48 kHz mono q3, aac 22.05 kHz stereo 64 kbit/s in m4a, opus.

mod common;

use std::path::{Path, PathBuf};

use amanuensis::audio::{AudioError, Decoder, Input, SAMPLE_RATE, load_audio};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/speech.wav")
}

fn decode_raw(path: &Path) -> (Vec<f32>, u32) {
    let mut decoder = Decoder::open(&Input::Path(path.to_path_buf())).unwrap();
    let mut out = Vec::new();
    while decoder.decode_next(&mut out).unwrap() {}
    (out, decoder.info().sample_rate)
}

fn write_wav<S: hound::Sample + Copy>(path: &Path, spec: hound::WavSpec, frames: &[Vec<S>]) {
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for frame in frames {
        for &s in frame {
            w.write_sample(s).unwrap();
        }
    }
    w.finalize().unwrap();
}

fn int_spec(channels: u16, bits: u16) -> hound::WavSpec {
    hound::WavSpec {
        channels,
        sample_rate: 16_000,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    }
}

/// Integer PCM is scaled as ffmpeg scales it: by 2^(bits-1), unsigned 8-bit around 128.
#[test]
fn every_integer_wav_format_is_scaled_like_ffmpeg() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(u16, Vec<i32>); 4] = [
        (8, vec![-128, -1, 0, 1, 127]),
        (16, vec![-32768, -12345, 0, 1, 32767]),
        (24, vec![-8_388_608, -1, 0, 4_194_304, 8_388_607]),
        (32, vec![i32::MIN, -65_536, 0, 1 << 30, i32::MAX]),
    ];
    for (bits, values) in cases {
        let path = tmp.path().join(format!("s{bits}.wav"));
        let frames: Vec<Vec<i32>> = values.iter().map(|&v| vec![v]).collect();
        match bits {
            8 => write_wav(
                &path,
                int_spec(1, 8),
                &frames.iter().map(|f| vec![f[0] as i8]).collect::<Vec<_>>(),
            ),
            16 => write_wav(
                &path,
                int_spec(1, 16),
                &frames.iter().map(|f| vec![f[0] as i16]).collect::<Vec<_>>(),
            ),
            _ => write_wav(&path, int_spec(1, bits), &frames),
        }
        let (decoded, rate) = decode_raw(&path);
        assert_eq!(rate, 16_000);
        let scale = 2f64.powi(bits as i32 - 1);
        let expected: Vec<f32> = values.iter().map(|&v| (v as f64 / scale) as f32).collect();
        assert_eq!(decoded, expected, "{bits}-bit PCM");
    }
}

/// 32-bit float WAVs pass through untouched; 64-bit ones are rounded to f32.
#[test]
fn float_wavs_pass_through() {
    let tmp = tempfile::tempdir().unwrap();
    let values = [-1.0f32, -0.333_333_34, 0.0, 1e-30, 0.75, 1.0];
    let f32_path = tmp.path().join("f32.wav");
    common::write_wav_f32(&f32_path, 16_000, &values);
    assert_eq!(decode_raw(&f32_path).0, values);

    let f64_values = [-0.1f64, 0.2, 1.0 / 3.0, -1.0];
    let f64_path = tmp.path().join("f64.wav");
    std::fs::write(&f64_path, wav_f64(16_000, &f64_values)).unwrap();
    let expected: Vec<f32> = f64_values.iter().map(|&v| v as f32).collect();
    assert_eq!(decode_raw(&f64_path).0, expected);
}

/// A WAVE_FORMAT_IEEE_FLOAT file with 64-bit samples (hound writes no f64).
fn wav_f64(rate: u32, samples: &[f64]) -> Vec<u8> {
    let data_len = (samples.len() * 8) as u32;
    let mut b = Vec::new();
    b.extend(b"RIFF");
    b.extend((36 + data_len).to_le_bytes());
    b.extend(b"WAVEfmt ");
    b.extend(16u32.to_le_bytes());
    b.extend(3u16.to_le_bytes()); // IEEE float
    b.extend(1u16.to_le_bytes()); // channels
    b.extend(rate.to_le_bytes());
    b.extend((rate * 8).to_le_bytes());
    b.extend(8u16.to_le_bytes()); // block align
    b.extend(64u16.to_le_bytes());
    b.extend(b"data");
    b.extend(data_len.to_le_bytes());
    for s in samples {
        b.extend(s.to_le_bytes());
    }
    b
}

#[test]
fn channels_are_averaged_to_mono() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("stereo.wav");
    let frames = vec![
        vec![16384i16, -16384],
        vec![8192, 8192],
        vec![-32768, 0],
        vec![100, 300],
    ];
    write_wav(&path, int_spec(2, 16), &frames);
    assert_eq!(decode_raw(&path).0, [0.0, 0.25, -0.5, 200.0 / 32768.0]);

    let path = tmp.path().join("quad.wav");
    let frames = vec![vec![4096i16, 8192, 12288, 16384]];
    write_wav(&path, int_spec(4, 16), &frames);
    assert_eq!(decode_raw(&path).0, [10240.0 / 32768.0]);
}

/// Cosine similarity of `a` shifted by `lag` samples against `b`, and the `lag` in
/// `-max_lag..=max_lag` that maximises it.
fn best_alignment(a: &[f32], b: &[f32], max_lag: i64) -> (i64, f64) {
    let n = a.len().min(b.len()) as i64;
    let cosine = |lag: i64| {
        let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
        for i in max_lag..n - max_lag {
            let x = a[(i + lag) as usize] as f64;
            let y = b[i as usize] as f64;
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
        ab / (aa * bb).sqrt()
    };
    (-max_lag..=max_lag)
        .map(|lag| (lag, cosine(lag)))
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .unwrap()
}

/// Each codec decodes, through resampling, to the speech it was made from: aligned in time and
/// with the same waveform (cosine >= 0.95 for lossy codecs, >= 0.9999 for flac).
#[test]
fn every_codec_decodes_to_the_source_speech() {
    let (source, info) = load_audio(&Input::Path(sample())).unwrap();
    assert_eq!((info.sample_rate, info.channels), (22_050, 1));
    // (file, seconds, codec, expected lag in 16 kHz samples, minimum cosine)
    let cases = [
        ("speech-44k1-stereo-s24.flac", 3.0, "flac", 0, 0.9999),
        ("speech-44k1-stereo.mp3", 9.36, "mp3", 0, 0.95),
        ("speech-48k-mono.ogg", 3.0, "vorbis", 0, 0.95),
        // The AAC encoder's 1024 priming samples and its padding are dropped by the edit list.
        ("speech-22k05-stereo.m4a", 3.0, "aac", 0, 0.95),
    ];
    for (file, seconds, codec, lag, min_cosine) in cases {
        let (decoded, info) = load_audio(&Input::Path(data(file))).unwrap();
        assert_eq!(info.codec, codec, "{file}");
        let expected_len = (seconds * SAMPLE_RATE as f64).round() as i64;
        // Lossy encoders pad the last frame; the containers record the padding with a
        // granularity that leaves up to a couple of milliseconds.
        let slack = if codec == "flac" { 1 } else { 32 };
        assert!(
            (decoded.len() as i64 - expected_len).abs() <= slack,
            "{file}: {} samples, expected {expected_len}",
            decoded.len()
        );
        let (best_lag, cosine) = best_alignment(&decoded, &source, 1000);
        eprintln!("{file}: lag {best_lag}, cosine {cosine:.5}");
        assert_eq!(best_lag, lag, "{file}: misaligned");
        assert!(
            cosine >= min_cosine,
            "{file}: cosine {cosine} < {min_cosine}"
        );
    }
}

#[test]
fn opus_is_refused_with_a_way_out() {
    let err = Decoder::open(&Input::Path(data("speech.opus")))
        .err()
        .expect("opus is refused");
    assert!(
        matches!(err, AudioError::UnsupportedCodec { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("speech.opus") && msg.contains("Opus") && msg.contains("ffmpeg"),
        "{msg}"
    );
}
