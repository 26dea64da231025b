//! How a Softmax or GELU call is cut into dispatches.

use crate::gemm::GemmContract;

/// How a Softmax or GELU invocation over `elements` bfloat16 values is cut into dispatches:
/// each dispatch's input fits the memory tiles (whole rows for Softmax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLayout {
    /// Values processed.
    pub elements: usize,
    /// Bytes each way (bfloat16 in, bfloat16 out): every dispatch sends and reads back
    /// `rows_per_dispatch` rows, the last one's padding included.
    pub bytes: usize,
    /// Dispatches.
    pub dispatches: usize,
    /// Rows of one dispatch (the last one padded): even values, the DMAs moving 32-bit words.
    pub rows_per_dispatch: usize,
    /// Values of a row.
    pub cols: usize,
}

impl StreamLayout {
    /// The layout of `rows` rows of `cols` values under `contract`'s staging memory. Half of
    /// the memory tiles hold the input, half the output.
    pub fn new(contract: &GemmContract, rows: usize, cols: usize) -> StreamLayout {
        // bfloat16 values (under bf16x3 no stream runs on the device:
        // `GemmContract::softmax_gelu_on_device`).
        let value_bytes = 2;
        let row_bytes = cols.max(1) * value_bytes;
        let fit = (contract.staging_bytes / 2 / row_bytes).max(1);
        let dispatches = rows.div_ceil(fit).max(1);
        let mut per = rows.div_ceil(dispatches);
        if (per * cols) % 2 == 1 {
            per += 1;
        }
        StreamLayout {
            elements: rows * cols,
            bytes: dispatches * per * cols * value_bytes,
            dispatches,
            rows_per_dispatch: per,
            cols,
        }
    }
}
