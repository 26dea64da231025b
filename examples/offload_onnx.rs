//! The offload rewrite on an ONNX model that is not Whisper: every product, softmax and GELU
//! the device can run moves onto it, the rest stays on the CPU with a reason. Prints the
//! placement and the error of the offloaded plan against tract's own plan.
//!
//! ```text
//! cargo run --release --example offload_onnx -- [MODEL.onnx INPUT.npy] [--backend emu|cpu]
//! ```
//!
//! Without arguments it runs `tests/data/offload/bert_like.onnx` (a small BERT-like encoder
//! with random weights, made by `tests/data/offload/make.py`) on its input.

use std::path::PathBuf;
use std::time::Instant;

use amanuensis::backend::{Backend, Kernels, resolve};
use amanuensis::rewrite::offload;
use tract_onnx::prelude::*;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let backend = match args.iter().position(|a| a == "--backend") {
        Some(i) => match args.get(i + 1).map(String::as_str) {
            Some("cpu") => Backend::Cpu,
            Some("emu") | None => Backend::Emu,
            Some(other) => anyhow::bail!("--backend {other}: give emu or cpu"),
        },
        None => Backend::Emu,
    };
    let files: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || args[i - 1] != "--backend"))
        .map(|(_, a)| a)
        .collect();
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/offload");
    let (model_path, input_path) = match files[..] {
        [] => (
            data.join("bert_like.onnx"),
            data.join("bert_like.input.npy"),
        ),
        [m, i] => (PathBuf::from(m), PathBuf::from(i)),
        _ => anyhow::bail!("give MODEL.onnx and INPUT.npy, or nothing for the bundled model"),
    };

    // The input, and the model typed and decluttered with the input's concrete shape.
    let input = read_npy(&input_path)?;
    let model = tract_onnx::onnx()
        .model_for_path(&model_path)?
        .with_input_fact(0, f32::fact(input.shape()).into())?
        .into_typed()?
        .into_decluttered()?;

    // tract's own plan: the reference.
    let reference = model.clone().into_optimized()?.into_runnable()?;
    let started = Instant::now();
    let expected = reference.run(tvec!(input.clone().into_tvalue()))?;
    let tract_ms = started.elapsed().as_secs_f64() * 1e3;

    // The offload rewrite on the backend's device.
    let device = resolve(backend, false, Kernels::default())?
        .device
        .expect("emu and cpu have a device");
    let (offloaded, placement) = offload(model, device)?;
    let shape: Vec<String> = input.shape().iter().map(usize::to_string).collect();
    println!("{}: input {}", model_path.display(), shape.join(" x "));
    println!("{:<12} {:>8} {:>8}", "op kind", "device", "cpu");
    for k in &placement.kinds {
        println!("{:<12} {:>8} {:>8}", k.kind, k.device, k.cpu);
    }
    println!(
        "FLOPs on the device ({backend}): {:.2}% of {:.3} GFLOP",
        100.0 * placement.device_share(),
        placement.total_flops as f64 / 1e9
    );
    for left in &placement.left_on_cpu {
        println!(
            "left on the CPU: {} ({}): {}",
            left.node, left.op, left.reason
        );
    }
    let plan = offloaded.into_optimized()?.into_runnable()?;
    let started = Instant::now();
    let ours = plan.run(tvec!(input.into_tvalue()))?;
    let ours_ms = started.elapsed().as_secs_f64() * 1e3;
    let (a, b) = (
        ours[0].to_plain_array_view::<f32>()?,
        expected[0].to_plain_array_view::<f32>()?,
    );
    let max_abs = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let dot: f64 = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| *x as f64 * *y as f64)
        .sum();
    let norm = |v: &tract_onnx::tract_core::ndarray::ArrayViewD<f32>| {
        v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
    };
    println!(
        "against tract's plan: max abs {max_abs:.3e}, cosine {:.7}; {ours_ms:.1} ms against \
         tract's {tract_ms:.1} ms",
        dot / (norm(&a) * norm(&b))
    );
    Ok(())
}

/// A float32 `.npy` file as a tensor.
fn read_npy(path: &std::path::Path) -> anyhow::Result<Tensor> {
    let bytes = std::fs::read(path)?;
    let npy = npyz::NpyFile::new(&bytes[..])?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let values: Vec<f32> = npy.into_vec()?;
    Tensor::from_shape(&shape, &values)
}
