//! The kernel contract that the NPU and its emulator both implement.
//!
//! - [`hw`]: the hardware figures the contract is sized by, each with its source;
//! - [`bf16`]: bfloat16 rounding, as the AIE converts float32 operands;
//! - [`gemm`]: the GEMM contract: tiles, padding, dispatch chunking, and its numerics;
//! - [`emu`]: the contract computed on the CPU, bit for bit as specified.
//!
//! This crate knows nothing of tract or ONNX: it takes and returns plain `f32` slices.

pub mod bf16;
pub mod emu;
pub mod gemm;
pub mod hw;
