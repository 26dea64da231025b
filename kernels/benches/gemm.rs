//! Throughput of the emulated GEMM at Whisper's shapes: `cargo bench -p amanuensis-kernels`.

use std::time::Instant;

use amanuensis_kernels::emu::{PackedB, gemm};
use amanuensis_kernels::gemm::GemmContract;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let contract = GemmContract::XDNA1;
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
        let mut c = vec![0.0; m * n];
        gemm(contract.rounding, &a, m, &packed, None, &mut c);
        let runs = 10;
        let t = Instant::now();
        for _ in 0..runs {
            gemm(contract.rounding, &a, m, &packed, None, &mut c);
        }
        let s = t.elapsed().as_secs_f64() / runs as f64;
        println!(
            "{label:<34} {:8.2} ms {:7.1} GFLOP/s",
            s * 1e3,
            2.0 * (m * k * n) as f64 / s / 1e9
        );
    }
}
