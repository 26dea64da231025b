//! `cpu` against `emu` on one audio file: each backend's time per window, and the error of
//! `emu` (the NPU kernels' numerics, bf16 operands) against `cpu` (float32).
//!
//! ```text
//! cargo run --release --example compare_backends -- AUDIO [MODEL]
//! ```

use std::time::Instant;

use amanuensis::audio::{AudioStream, Input, LogMel};
use amanuensis::backend::Backend;
use amanuensis::model::{Encoder, EncoderOptions, resolve_model};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(audio) = args.first() else {
        anyhow::bail!("usage: compare_backends AUDIO [MODEL]");
    };
    let dir = resolve_model(args.get(1).map_or("tiny.en", String::as_str), &mut |line| {
        eprintln!("{line}")
    })?;
    let load = |backend| {
        Encoder::load(
            &dir,
            &EncoderOptions {
                backend,
                ..EncoderOptions::default()
            },
        )
    };
    let (cpu, emu) = (load(Backend::Cpu)?, load(Backend::Emu)?);
    let mel = LogMel::new(cpu.dims().n_mels);
    let mut stream = AudioStream::open(&Input::Path(audio.into()))?;
    let (mut cpu_s, mut emu_s, mut windows) = (0.0, 0.0, 0);
    let (mut max_abs, mut dot, mut cc, mut ee) = (0f32, 0f64, 0f64, 0f64);
    while let Some(window) = stream.next_window()? {
        let spectrogram = mel.compute(&window.samples);
        let started = Instant::now();
        let reference = cpu.encode(&spectrogram)?;
        cpu_s += started.elapsed().as_secs_f64();
        let started = Instant::now();
        let ours = emu.encode(&spectrogram)?;
        emu_s += started.elapsed().as_secs_f64();
        windows += 1;
        for (c, e) in reference.iter().zip(&ours) {
            max_abs = max_abs.max((c - e).abs());
            dot += *c as f64 * *e as f64;
            cc += (*c as f64).powi(2);
            ee += (*e as f64).powi(2);
        }
    }
    println!(
        "{windows} window(s): cpu {:.1} ms a window, emu {:.1} ms; emu against cpu: max abs \
         {max_abs:.3e}, cosine {:.7}",
        cpu_s * 1e3 / windows.max(1) as f64,
        emu_s * 1e3 / windows.max(1) as f64,
        dot / (cc * ee).sqrt()
    );
    Ok(())
}
