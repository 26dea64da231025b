//! Every parser of user files, fed mutated copies of real files, on stable Rust: a
//! deterministic mutation loop (bit flips, bytes set to 0 or 0xff, forged 32- and 64-bit
//! sizes, truncations, duplicated and deleted runs) over seed files. Each case must end in a
//! value or an error, never a panic, within a time bound; a rejection must name the file.
//!
//! `cargo test --release --test fuzz` runs the default number of cases of each target (printed);
//! `AMANUENSIS_FUZZ_CASES=N` runs `N` of each (for example 100000 for a long run).

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use amanuensis::audio::{Input, load_audio};
use amanuensis::backend::Backend;
use amanuensis::model::convert::{ct2_decoder_dims, ct2_encoder_dims};
use amanuensis::model::ct2::Ct2Model;
use amanuensis::model::hf::convert_hf;
use amanuensis::model::{Encoder, EncoderOptions};
use amanuensis::transcribe::WhisperTokenizer;
use amanuensis_kernels::manifest::Manifest;
use amanuensis_kernels::npu::read_instructions;
use common::*;

/// A xorshift generator: the same cases on every run.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `seed` with one to four mutations.
fn mutate(seed: &[u8], g: &mut Gen) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + g.below(4) {
        if b.is_empty() {
            b.push(g.next() as u8);
            continue;
        }
        let at = g.below(b.len());
        match g.below(8) {
            0 => b[at] ^= 1 << g.below(8),
            1 => b[at] = 0,
            2 => b[at] = 0xff,
            3 => {
                // A forged 32-bit size or count.
                let v = [u32::MAX, 0x7fff_ffff, 0x8000_0000, 0, 1 << 20][g.below(5)];
                let end = (at + 4).min(b.len());
                b[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
            }
            4 => {
                let v = [u64::MAX, 1 << 40, 0][g.below(3)];
                let end = (at + 8).min(b.len());
                b[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
            }
            5 => b.truncate(at),
            6 => {
                let len = g.below(64).min(b.len() - at);
                let run = b[at..at + len].to_vec();
                b.splice(at..at, run);
            }
            _ => {
                let len = g.below(64).min(b.len() - at);
                b.drain(at..at + len);
            }
        }
    }
    b
}

/// How many cases a target runs: `AMANUENSIS_FUZZ_CASES`, else `default`.
fn cases(default: usize) -> usize {
    std::env::var("AMANUENSIS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `cases` mutated copies of `seed` through `parse` (which gets the file written at
/// `path`): no panic, at most `limit` a case; an error names `path`'s file (when `names`).
fn fuzz(
    target: &str,
    seed: &[u8],
    path: &Path,
    cases: usize,
    limit: Duration,
    names: bool,
    parse: impl Fn(&Path) -> Result<(), String>,
) {
    let mut g = Gen(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
    let (mut ok, mut refused) = (0, 0);
    let started = Instant::now();
    let file_name = path.file_name().unwrap().to_string_lossy().to_string();
    for case in 0..cases {
        let bytes = mutate(seed, &mut g);
        std::fs::write(path, &bytes).unwrap();
        let t = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| parse(path)));
        let took = t.elapsed();
        match result {
            Err(panic) => {
                let keep = path.with_extension(format!("crash-{case}"));
                std::fs::write(&keep, &bytes).unwrap();
                panic!(
                    "{target}: case {case} panicked ({:?}); the input is kept at {}",
                    panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or(panic.downcast_ref::<&str>().copied()),
                    keep.display()
                );
            }
            Ok(Ok(())) => ok += 1,
            Ok(Err(message)) => {
                refused += 1;
                if names {
                    assert!(
                        message.contains(&file_name)
                            || message.contains(&path.display().to_string()),
                        "{target}: case {case}: the error does not name the file: {message}"
                    );
                }
            }
        }
        assert!(
            took <= limit,
            "{target}: case {case} took {took:?} (limit {limit:?})"
        );
    }
    eprintln!(
        "{target}: {cases} cases in {:.1} s: {ok} read, {refused} refused with a message",
        started.elapsed().as_secs_f64()
    );
}

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// CTranslate2 `model.bin`: a small random Whisper, read and checked for its dimensions.
#[test]
fn ct2_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let dims = RandomWhisper {
        n_mels: 80,
        d: 64,
        ffn: 128,
        layers: 1,
        ctx: 1500,
        vocab: 100,
        text_ctx: 448,
    };
    let weights = random_whisper(&mut Rng(1), &dims);
    let mut vars: Vec<Ct2Var> = weights.iter().map(|(n, s, d)| ct2_f32(n, s, d)).collect();
    vars.push(ct2_i16_scalar("encoder/num_heads", 2));
    let seed_path = tmp.path().join("seed.bin");
    write_ct2(&seed_path, &vars);
    let seed = std::fs::read(&seed_path).unwrap();
    fuzz(
        "CTranslate2 model.bin",
        &seed,
        &tmp.path().join("model.bin"),
        cases(4000),
        Duration::from_secs(5),
        true,
        |path| {
            let ct2 = Ct2Model::open(path).map_err(|e| e.to_string())?;
            ct2_encoder_dims(&ct2).map_err(|e| e.to_string())?;
            ct2_decoder_dims(&ct2).map_err(|e| e.to_string())?;
            Ok(())
        },
    );
}

/// Hugging Face safetensors (tests/data/hf/tiny), converted: weights and the index.
#[test]
fn safetensors_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hf");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(
        data("tests/data/hf/tiny/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    let seed = std::fs::read(data("tests/data/hf/tiny/model.safetensors")).unwrap();
    let out = tmp.path().join("out");
    fuzz(
        "safetensors",
        &seed,
        &dir.join("model.safetensors"),
        cases(600),
        Duration::from_secs(10),
        false,
        |_| {
            let _ = std::fs::remove_dir_all(&out);
            convert_hf(&dir, &out)
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );
}

/// The kernel manifest and instruction files.
#[test]
fn kernel_manifests_and_instructions() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = b"format = 2\ntarget = \"npu1_4col\"\nrounding = \"nearest_even\"\n\n[[kernel]]\n\
        kind = \"gemm\"\nepilogue = \"bias\"\noutput = \"f32\"\nxclbin = \"k0.xclbin\"\n\
        kernel_name = \"MLIR_AIE\"\ninstructions = \"k0.insts.bin\"\nshape = [1536, 512, 512]\n\
        tile = [64, 64, 32]\nsha256 = { xclbin = \"00\", instructions = \"00\" }\n\n[[kernel]]\n\
        kind = \"softmax\"\nxclbin = \"k1.xclbin\"\nkernel_name = \"MLIR_AIE\"\n\
        instructions = \"k1.insts.bin\"\nshape = [1500, 1500, 1536]\n\
        sha256 = { xclbin = \"00\", instructions = \"00\" }\n";
    fuzz(
        "manifest.toml",
        seed,
        &tmp.path().join("manifest.toml"),
        cases(10000),
        Duration::from_secs(2),
        true,
        |path| {
            let m = Manifest::read(path).map_err(|e| e.to_string())?;
            m.check_files();
            Ok(())
        },
    );
    let words: Vec<u8> = (0..64u32)
        .flat_map(|w| (0x0600_0000 | w).to_le_bytes())
        .collect();
    fuzz(
        "instruction stream",
        &words,
        &tmp.path().join("k0.insts.bin"),
        cases(10000),
        Duration::from_secs(2),
        true,
        |path| {
            read_instructions(path)
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );
}

/// Audio in every container and codec of tests/data (AAC in MP4, FLAC, MP3, Vorbis, Opus).
#[test]
fn audio_files() {
    let tmp = tempfile::tempdir().unwrap();
    for name in [
        "speech-22k05-stereo.m4a",
        "speech-44k1-stereo-s24.flac",
        "speech-44k1-stereo.mp3",
        "speech-48k-mono.ogg",
        "speech.opus",
    ] {
        let seed = std::fs::read(data("tests/data").join(name)).unwrap();
        let ext = Path::new(name)
            .extension()
            .unwrap()
            .to_string_lossy()
            .to_string();
        fuzz(
            &format!("audio {name}"),
            &seed,
            &tmp.path().join(format!("input.{ext}")),
            cases(400),
            Duration::from_secs(20),
            true,
            |path| {
                load_audio(&Input::Path(path.to_path_buf()))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        );
    }
}

/// ONNX encoders (an exporter fixture), loaded and planned.
#[test]
fn onnx_encoders() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = std::fs::read(data("tests/data/exporters/optimum-opset17.onnx")).unwrap();
    fuzz(
        "ONNX encoder",
        &seed,
        &tmp.path().join("encoder_model.onnx"),
        cases(400),
        Duration::from_secs(30),
        true,
        |path| {
            Encoder::load(
                path,
                &EncoderOptions {
                    backend: Backend::Cpu,
                    threads: 1,
                    ..EncoderOptions::default()
                },
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        },
    );
}

/// ONNX decoders (optimum's merged export of the exporter fixture, loaded as its two
/// branches).
#[test]
fn onnx_decoders() {
    use amanuensis::model::{DecoderFiles, DecoderHints, DecoderModel};
    let tmp = tempfile::tempdir().unwrap();
    let seed = std::fs::read(data(
        "tests/data/exporters/decoders/optimum-merged-opset18/decoder_model_merged.onnx",
    ))
    .unwrap();
    let path = tmp.path().join("decoder_model_merged.onnx");
    fuzz(
        "ONNX decoder",
        &seed,
        &path,
        cases(200),
        Duration::from_secs(30),
        true,
        |path| {
            let hints = DecoderHints {
                d_model: 64,
                n_audio_ctx: 1500,
                n_heads: None,
            };
            DecoderModel::load(DecoderFiles::Merged(path.to_path_buf()), hints, 1)
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );
}

/// tokenizer.json (tiny.en's, from the catalog model).
#[test]
fn tokenizers() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = std::fs::read(catalog_model("tiny.en").join("tokenizer.json")).unwrap();
    fuzz(
        "tokenizer.json",
        &seed,
        &tmp.path().join("tokenizer.json"),
        cases(200),
        Duration::from_secs(10),
        true,
        |path| {
            WhisperTokenizer::load(path, None, 51864)
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );
}
