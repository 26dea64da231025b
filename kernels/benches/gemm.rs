//! Throughput of the emulated GEMM and of the CPU's float32 GEMM and attention at Whisper's
//! shapes: `cargo bench -p amanuensis-kernels --bench gemm`.

use std::time::Instant;

use amanuensis_kernels::cpu::CpuDevice;
use amanuensis_kernels::device::{AttentionDims, Device};
use amanuensis_kernels::gemm::GemmContract;
use amanuensis_kernels::packed_gemm::{PackedB, gemm, gemm_f32};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let contract = GemmContract::XDNA1;
    let peak = amanuensis_kernels::cpu::measure_fma_peak(0.5);
    println!(
        "float32 multiply-add peak measured on {} threads: {:.1} GFLOP/s",
        rayon::current_num_threads(),
        peak / 1e9
    );
    println!(
        "emulated bf16 GEMM (contract XDNA1, {} threads)",
        rayon::current_num_threads()
    );
    for (label, m, k, n) in [
        ("base qkv  [1500,512]x[512,512]", 1500, 512, 512),
        ("base fc1  [1500,512]x[512,2048]", 1500, 512, 2048),
        ("base fc2  [1500,2048]x[2048,512]", 1500, 2048, 512),
        ("head QK^T [1500,64]x[64,1500]", 1500, 64, 1500),
        ("head PV   [1500,1500]x[1500,64]", 1500, 1500, 64),
    ] {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let packed = PackedB::new(&contract, &b, k, n);
        let plain = PackedB::plain(&b, k, n);
        let mut c = vec![0.0; m * n];
        let runs = 10;
        let time = |f: &mut dyn FnMut()| {
            f();
            let t = Instant::now();
            for _ in 0..runs {
                f();
            }
            t.elapsed().as_secs_f64() / runs as f64
        };
        let emu = time(&mut || gemm(contract.rounding, &a, m, &packed, None, &mut c));
        let cpu = time(&mut || gemm_f32(&a, m, &plain, None, false, &mut c));
        let flop = 2.0 * (m * k * n) as f64;
        println!(
            "{label:<34} emu {:8.2} ms {:7.1} GFLOP/s   cpu f32 {:8.2} ms {:7.1} GFLOP/s ({:.0}% of peak)",
            emu * 1e3,
            flop / emu / 1e9,
            cpu * 1e3,
            flop / cpu / 1e9,
            100.0 * flop / cpu / peak
        );
    }
    let cpu = CpuDevice::new();
    for (label, m, d, n) in [("tiny/base head 1500x64, 1500 keys", 1500, 64, 1500)] {
        let q: Vec<f32> = (0..m * d)
            .map(|i| ((i * 7919) % 1000) as f32 / 4000.0)
            .collect();
        let kt: Vec<f32> = (0..d * n)
            .map(|i| ((i * 104729) % 1000) as f32 / 4000.0)
            .collect();
        let v: Vec<f32> = (0..n * d)
            .map(|i| ((i * 31) % 1000) as f32 / 1000.0)
            .collect();
        let mut out = vec![0.0; m * d];
        let dims = AttentionDims { m, d, n, dv: d };
        cpu.attention(&q, &kt, &v, dims, &mut out).unwrap();
        let runs = 10;
        let t = Instant::now();
        for _ in 0..runs {
            cpu.attention(&q, &kt, &v, dims, &mut out).unwrap();
        }
        let s = t.elapsed().as_secs_f64() / runs as f64;
        println!(
            "cpu attention, {label:<34} {:8.2} ms {:7.1} GFLOP/s (both products, {:.0}% of peak)",
            s * 1e3,
            4.0 * (m * d * n) as f64 / s / 1e9,
            100.0 * 4.0 * (m * d * n) as f64 / s / peak
        );
    }
}
