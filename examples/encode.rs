//! Whisper encoder features of one audio file: decode, resample, log-mel per 30 s window,
//! encode on a chosen backend; prints each window's feature shape and time.
//!
//! ```text
//! cargo run --release --example encode -- AUDIO [MODEL] [tract|cpu|emu|npu|auto]
//! ```
//!
//! `MODEL` is a directory, an `.onnx` encoder or a catalog name (`tiny.en` by default,
//! fetched on first use).

use std::time::Instant;

use amanuensis::audio::{AudioStream, Input, LogMel};
use amanuensis::backend::Backend;
use amanuensis::model::{Encoder, EncoderOptions, resolve_model};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(audio) = args.first() else {
        anyhow::bail!("usage: encode AUDIO [MODEL] [tract|cpu|emu|npu|auto]");
    };
    let model = args.get(1).map_or("tiny.en", String::as_str);
    let backend = match args.get(2) {
        Some(name) => name.parse::<Backend>().map_err(anyhow::Error::msg)?,
        None => Backend::Cpu,
    };

    let dir = resolve_model(model, &mut |line| eprintln!("{line}"))?;
    let encoder = Encoder::load(
        &dir,
        &EncoderOptions {
            backend,
            ..EncoderOptions::default()
        },
    )?;
    println!(
        "{} on {} (loaded in {:.2} s)",
        dir.display(),
        encoder.backend().backend,
        encoder.load_time().as_secs_f64()
    );
    let mel = LogMel::new(encoder.dims().n_mels);
    let mut stream = AudioStream::open(&Input::Path(audio.into()))?;
    while let Some(window) = stream.next_window()? {
        let started = Instant::now();
        let features = encoder.encode(&mel.compute(&window.samples))?;
        let d_model = encoder.dims().d_model;
        println!(
            "window {}: [1, {}, {d_model}] in {:.1} ms",
            window.index,
            features.len() / d_model,
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}
