//! The emulator's side of hostcheck: kernels/src (amanuensis-kernels) run on files of
//! little-endian float32, and the manifest parser run on build.sh's output. run.sh builds this
//! file as the `main.rs` of a throwaway crate in a temporary directory.
//!
//!   emuref gelu IN OUT
//!   emuref softmax IN OUT COLS
//!   emuref gemm A B BIAS|- M K N EPILOGUE OUT     (EPILOGUE none, bias, bias_gelu or bf16)
//!   emuref attention Q KT V M D N DV OUT           (Emulator::attention, one head)
//!   emuref attention-layout M D N DV npu|npu2      (GemmContract::attention, as JSON)
//!   emuref dataflow M K N EPILOGUE npu|npu2        (GemmContract::dataflow of one dispatch of
//!                                                  M x K x N, padded: the bytes, as JSON)
//!   emuref manifest MANIFEST

use std::path::Path;

use amanuensis_kernels::bf16::{self, Rounding};
use amanuensis_kernels::device::{AttentionDims, Device};
use amanuensis_kernels::emulator::Emulator;
use amanuensis_kernels::gemm::{GemmContract, GemmLayout, Precision};
use amanuensis_kernels::hw::cost::TileEnd;
use amanuensis_kernels::manifest::{FileCheck, Manifest};
use amanuensis_kernels::{gelu, packed_gemm, softmax};

fn read(path: &str) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn write(path: &str, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

/// The whole-array contract of mlir-aie's device name (`npu`, `npu2`).
fn contract_of(dev: &str) -> GemmContract {
    match dev {
        "npu" => GemmContract::XDNA1,
        "npu2" => GemmContract::XDNA2,
        other => panic!("unknown device {other}"),
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let rounding = Rounding::NearestEven;
    match a[1].as_str() {
        "gelu" => {
            let mut x = read(&a[2]);
            gelu::gelu(rounding, &mut x);
            write(&a[3], &x);
        }
        "softmax" => {
            let mut x = read(&a[2]);
            softmax::softmax_rows(rounding, &mut x, a[4].parse().unwrap());
            write(&a[3], &x);
        }
        "gemm" => {
            let dims: Vec<usize> = a[5..8].iter().map(|s| s.parse().unwrap()).collect();
            let (m, k, n) = (dims[0], dims[1], dims[2]);
            let bias = (a[4] != "-").then(|| read(&a[4]));
            let b = packed_gemm::PackedB::new(&GemmContract::XDNA1, &read(&a[3]), k, n);
            let mut c = vec![0f32; m * n];
            packed_gemm::gemm(rounding, &read(&a[2]), m, &b, bias.as_deref(), &mut c);
            if a[8] == "bias_gelu" {
                gelu::gelu(rounding, &mut c);
            }
            if a[8] == "bf16" {
                c.iter_mut().for_each(|v| *v = bf16::round(*v, rounding));
            }
            write(&a[9], &c);
        }
        "attention" => {
            let d: Vec<usize> = a[5..9].iter().map(|s| s.parse().unwrap()).collect();
            let dims = AttentionDims {
                m: d[0],
                d: d[1],
                n: d[2],
                dv: d[3],
            };
            let mut out = vec![0f32; dims.m * dims.dv];
            Emulator::new(GemmContract::XDNA1)
                .attention(&read(&a[2]), &read(&a[3]), &read(&a[4]), dims, &mut out)
                .unwrap();
            write(&a[9], &out);
        }
        "dataflow" => {
            let d: Vec<usize> = a[2..5].iter().map(|s| s.parse().unwrap()).collect();
            let contract = contract_of(&a[6]);
            let end = match a[5].as_str() {
                "none" => TileEnd::None,
                "bias" => TileEnd::Bias,
                "bias_gelu" => TileEnd::BiasGelu,
                "bf16" => TileEnd::Bf16,
                other => panic!("unknown epilogue {other}"),
            };
            // One dispatch of the padded shape, as gemm.py's plan takes it.
            let layout = GemmLayout {
                m: d[0],
                k: d[1],
                n: d[2],
                m_pad: d[0],
                k_pad: d[1],
                n_pad: d[2],
                m_chunk: d[0],
                dispatches: 1,
                precision: Precision::Bf16,
            };
            let flow = contract.dataflow(&layout, end);
            println!(
                r#"{{"a": {}, "b": {}, "bias": {}, "c": {}}}"#,
                flow.a_bytes, flow.b_bytes, flow.bias_bytes, flow.c_bytes
            );
        }
        "attention-layout" => {
            let d: Vec<usize> = a[2..6].iter().map(|s| s.parse().unwrap()).collect();
            let contract = contract_of(&a[6]);
            let layout = contract.attention(AttentionDims {
                m: d[0],
                d: d[1],
                n: d[2],
                dv: d[3],
            });
            let gemm = |g: &amanuensis_kernels::gemm::GemmLayout| {
                format!(
                    r#"{{"m_chunk": {}, "k_pad": {}, "n_pad": {}, "dispatches": {}}}"#,
                    g.m_chunk, g.k_pad, g.n_pad, g.dispatches
                )
            };
            println!(
                r#"{{"qk": {}, "width": {}, "pv": {}}}"#,
                gemm(&layout.qk),
                layout.width,
                gemm(&layout.pv)
            );
        }
        "manifest" => {
            let m = Manifest::read(Path::new(&a[2])).unwrap_or_else(|e| panic!("{e}"));
            let bad: Vec<_> = m
                .check_files()
                .into_iter()
                .filter(|(_, s)| *s != FileCheck::Ok)
                .collect();
            assert!(
                bad.is_empty(),
                "files that do not match the manifest: {bad:?}"
            );
            println!(
                "{}: target {}, {} kernels, files match",
                a[2],
                m.target,
                m.kernels.len()
            );
        }
        other => panic!("unknown mode {other}"),
    }
}
