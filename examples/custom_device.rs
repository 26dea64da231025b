//! A device of one's own: the [`Device`] trait implemented outside the crate, here by a
//! wrapper that runs the emulator and counts every call by kernel, plugged into the encoder
//! (`EncoderOptions::device`) in place of the one `--backend` would open.
//!
//! ```text
//! cargo run --release --example custom_device -- AUDIO [MODEL]
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use amanuensis::audio::{AudioStream, Input, LogMel};
use amanuensis::backend::Backend;
use amanuensis::model::{Encoder, EncoderOptions, resolve_model};
use amanuensis_kernels::device::{
    AttentionDims, Counters, Device, DeviceError, Epilogue, KernelNeed, Weights,
};
use amanuensis_kernels::emulator::Emulator;
use amanuensis_kernels::gemm::GemmContract;
use amanuensis_ops::DeviceHandle;

/// The emulator, with a count of the calls each kernel receives.
#[derive(Debug)]
struct Logging {
    inner: Emulator,
    calls: Mutex<BTreeMap<&'static str, u64>>,
}

impl Logging {
    fn log(&self, what: &'static str) {
        *self.calls.lock().unwrap().entry(what).or_default() += 1;
    }
}

impl Device for Logging {
    fn prefix(&self) -> &'static str {
        // The ops' names in a placement report: LoggingMatMul, LoggingAttention, ...
        "Logging"
    }

    fn contract(&self) -> &GemmContract {
        self.inner.contract()
    }

    fn prepare_weights(
        &self,
        b: &[f32],
        k: usize,
        n: usize,
        bias: Option<&[f32]>,
    ) -> Result<Arc<Weights>, DeviceError> {
        self.log("prepare_weights");
        self.inner.prepare_weights(b, k, n, bias)
    }

    fn matmul(
        &self,
        a: &[f32],
        m: usize,
        w: &Weights,
        epilogue: Epilogue,
        c: &mut [f32],
    ) -> Result<(), DeviceError> {
        self.log("matmul");
        self.inner.matmul(a, m, w, epilogue, c)
    }

    fn matmul_act(
        &self,
        a: &[f32],
        b: &[f32],
        dims: (usize, usize, usize),
        c: &mut [f32],
    ) -> Result<(), DeviceError> {
        self.log("matmul_act");
        self.inner.matmul_act(a, b, dims, c)
    }

    fn attention(
        &self,
        q: &[f32],
        kt: &[f32],
        v: &[f32],
        dims: AttentionDims,
        out: &mut [f32],
    ) -> Result<(), DeviceError> {
        self.log("attention");
        self.inner.attention(q, kt, v, dims, out)
    }

    fn attention_heads(
        &self,
        q: &[f32],
        kt: &[f32],
        v: &[f32],
        dims: AttentionDims,
        heads: usize,
        out: &mut [f32],
    ) -> Result<(), DeviceError> {
        self.log("attention_heads");
        self.inner.attention_heads(q, kt, v, dims, heads, out)
    }

    fn softmax(&self, x: &mut [f32], cols: usize) -> Result<(), DeviceError> {
        self.log("softmax");
        self.inner.softmax(x, cols)
    }

    fn gelu(&self, x: &mut [f32]) -> Result<(), DeviceError> {
        self.log("gelu");
        self.inner.gelu(x)
    }

    fn counters(&self) -> &Counters {
        self.inner.counters()
    }

    fn check_plan(&self, needs: &[KernelNeed]) -> Result<(), DeviceError> {
        // A real accelerator would refuse shapes it has no kernel for; this one takes all.
        println!("the plan needs {} kernels:", needs.len());
        for need in needs {
            println!("  {need}");
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(audio) = args.first() else {
        anyhow::bail!("usage: custom_device AUDIO [MODEL]");
    };
    let dir = resolve_model(args.get(1).map_or("tiny.en", String::as_str), &mut |line| {
        eprintln!("{line}")
    })?;
    let device = Arc::new(Logging {
        inner: Emulator::new(GemmContract::XDNA1),
        calls: Mutex::default(),
    });
    let encoder = Encoder::load(
        &dir,
        &EncoderOptions {
            backend: Backend::Emu,
            device: Some(DeviceHandle::new(device.clone())),
            ..EncoderOptions::default()
        },
    )?;
    let p = encoder.placement();
    println!(
        "{:.2}% of the FLOPs on the device; left on the CPU: {}",
        100.0 * p.device_share(),
        p.left_on_cpu.len()
    );
    let mel = LogMel::new(encoder.dims().n_mels);
    let mut stream = AudioStream::open(&Input::Path(audio.into()))?;
    while let Some(window) = stream.next_window()? {
        encoder.encode(&mel.compute(&window.samples))?;
    }
    println!("calls the device received:");
    for (what, count) in device.calls.lock().unwrap().iter() {
        println!("  {what:<16} {count}");
    }
    let traffic = device.counters().snapshot().total();
    println!(
        "its counters: {} dispatches, {:.1} MiB in, {:.1} MiB out",
        traffic.dispatches,
        traffic.bytes_in as f64 / (1 << 20) as f64,
        traffic.bytes_out as f64 / (1 << 20) as f64
    );
    Ok(())
}
