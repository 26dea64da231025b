#![warn(missing_docs)]
//! The kernel contract that the NPU and its emulator both implement.
//!
//! - [`hw`]: the hardware figures the contract is sized by, each with its source;
//! - [`bf16`]: bfloat16 rounding, as the AIE converts float32 operands;
//! - [`gemm`]: the GEMM contract: tiles, padding, dispatch chunking, and its numerics;
//! - [`packed_gemm`]: the packed GEMM micro-kernels: the contract computed on the CPU, bit
//!   for bit as specified, and the same kernels in plain float32;
//! - [`cpu_math`]: float32 exponential, error function, GELU and softmax for the CPU's own
//!   kernels;
//! - [`aie_math`]: the vector arithmetic of the non-GEMM kernels (exponential, reciprocal,
//!   16-lane sums), as the AIE2 vector unit computes it;
//! - [`softmax`]: the Softmax contract, computed on the CPU bit for bit;
//! - [`gelu`]: the GELU contract (tanh form), computed on the CPU bit for bit;
//! - [`attention`]: one head of attention as three kernels whose intermediates stay on the
//!   device;
//! - [`device`]: the interface of a device that runs the contract;
//! - [`counters`]: the counters of a device's work and traffic;
//! - [`stream`]: how a Softmax or GELU call is cut into dispatches;
//! - [`emulator`]: the contract on the CPU as a device (`--backend emu`);
//! - [`cpu`]: the same interface in plain float32 on the CPU (`--backend cpu`);
//! - [`contexts`]: how many NPU hardware contexts to hold at once, and which to give up;
//! - [`manifest`]: which xclbin and instruction file implement which kernel and shape;
//! - [`npu`]: the contract on an XDNA NPU through XRT (`--backend npu`).
//!
//! `kernels/NUMERICS.md` states the numerics of every kernel in one place, with the AIE2
//! operations each step maps onto.
//!
//! This crate knows nothing of tract or ONNX: it takes and returns plain `f32` slices.

pub mod aie_math;
pub mod attention;
pub mod bf16;
pub mod contexts;
pub mod counters;
pub mod cpu;
pub mod cpu_math;
pub mod device;
pub mod emulator;
pub mod gelu;
pub mod gemm;
pub mod hw;
pub mod low_precision;
pub mod manifest;
pub mod npu;
pub mod packed_gemm;
pub mod softmax;
pub mod stream;
pub mod strided;

/// Implements, for a field-less enum, `NAMES` (its variants' names, in order), `Display` (a
/// variant's name) and `FromStr` (the name back, else an error that lists the names), from
/// `Enum { Variant => "name", ... }`.
#[macro_export]
macro_rules! named_variants {
    ($enum:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $enum {
            /// The names [`FromStr`](std::str::FromStr) reads and
            /// [`Display`](std::fmt::Display) writes, in order.
            pub const NAMES: &'static [&'static str] = &[$($name),+];
        }

        impl std::fmt::Display for $enum {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self {
                    $($enum::$variant => $name,)+
                })
            }
        }

        impl std::str::FromStr for $enum {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($enum::$variant),)+
                    _ => Err(format!(
                        "{s:?} is not one of {}",
                        $enum::NAMES.join(", ")
                    )),
                }
            }
        }
    };
}
