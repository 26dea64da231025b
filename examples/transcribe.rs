//! Transcription of one audio file: the encoder on a chosen backend, the decoder on the CPU,
//! OpenAI's decoding rules; prints the segments with their times.
//!
//! ```text
//! cargo run --release --example transcribe -- AUDIO [MODEL] [cpu|emu|npu|auto]
//! ```

use amanuensis::audio::Input;
use amanuensis::backend::Backend;
use amanuensis::model::{EncoderOptions, resolve_model};
use amanuensis::transcribe::{Quiet, TranscribeOptions, Transcriber};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(audio) = args.first() else {
        anyhow::bail!("usage: transcribe AUDIO [MODEL] [cpu|emu|npu|auto]");
    };
    let dir = resolve_model(args.get(1).map_or("tiny.en", String::as_str), &mut |line| {
        eprintln!("{line}")
    })?;
    let backend = match args.get(2) {
        Some(name) => name.parse::<Backend>().map_err(anyhow::Error::msg)?,
        None => Backend::Cpu,
    };
    let transcriber = Transcriber::load(
        &dir,
        &EncoderOptions {
            backend,
            ..EncoderOptions::default()
        },
    )?;
    let transcript = transcriber.transcribe(
        &Input::Path(audio.into()),
        &TranscribeOptions::default(),
        &mut Quiet,
    )?;
    for s in &transcript.segments {
        println!("[{:7.2} -> {:7.2}] {}", s.start, s.end, s.text.trim());
    }
    Ok(())
}
