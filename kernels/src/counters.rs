//! The counters of a device's work and traffic, per kernel kind, and the traffic of one call
//! as the layouts give it.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::device::Kernel;
use crate::gemm::{GemmContract, GemmLayout};
use crate::hw::cost::TileEnd;
use crate::stream::StreamLayout;

#[derive(Debug, Default)]
struct KernelCounters {
    calls: AtomicU64,
    dispatches: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    flops: AtomicU64,
    padded_flops: AtomicU64,
    dma_bytes: AtomicU64,
    dma_out_bytes: AtomicU64,
    core_cycles: AtomicU64,
    model_ns: AtomicU64,
    dma_ns: AtomicU64,
}

/// Counts of the device's work and traffic since it was made, per kernel kind. Thread-safe.
#[derive(Debug, Default)]
pub struct Counters {
    kernels: [KernelCounters; 3],
    weight_bytes: AtomicU64,
}

/// The traffic of one kernel kind over some span of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Traffic {
    /// Kernel invocations by the plan.
    pub calls: u64,
    /// Dispatches to the device (an invocation is cut into one or more).
    pub dispatches: u64,
    /// Bytes sent from host to device, once per call.
    pub bytes_in: u64,
    /// Bytes read back from device to host, once per call.
    pub bytes_out: u64,
    /// Useful floating-point operations (GEMM only).
    pub flops: u64,
    /// Floating-point operations including the padding to tiles (GEMM only).
    pub padded_flops: u64,
    /// Bytes the array's DMAs move between memory and the cores, operands re-read by the
    /// design included ([`GemmContract::dataflow`]); for Softmax and GELU, what goes in and
    /// out.
    pub dma_bytes: u64,
    /// Of [`Traffic::dma_bytes`], those written to memory (GEMM only).
    pub dma_out_bytes: u64,
    /// Cycles of one core of the array (GEMM only: [`crate::hw::cost`]).
    pub core_cycles: u64,
    /// The design's predicted time (ns), compute and DMA overlapped as it overlaps them
    /// ([`crate::gemm::Dataflow::seconds`]; GEMM only).
    pub model_ns: u64,
    /// Of which the DMA alone (ns).
    pub dma_ns: u64,
}

impl Traffic {
    /// One GEMM call of `layout` under `contract` whose output tiles end with `end`;
    /// `b_is_weight` says whether B was uploaded before (a weight) or is sent now (an
    /// activation).
    pub fn gemm(
        contract: &GemmContract,
        layout: &GemmLayout,
        b_is_weight: bool,
        end: TileEnd,
    ) -> Traffic {
        let flow = contract.dataflow(layout, end);
        Traffic {
            calls: 1,
            dispatches: layout.dispatches as u64,
            bytes_in: layout.bytes_in(b_is_weight) as u64,
            bytes_out: layout.bytes_out() as u64,
            flops: layout.flops(),
            padded_flops: layout.padded_flops(),
            dma_bytes: flow.bytes() as u64,
            dma_out_bytes: flow.c_bytes as u64,
            core_cycles: flow.core_cycles,
            model_ns: (flow.seconds * 1e9).round() as u64,
            dma_ns: (flow.dma_seconds * 1e9).round() as u64,
        }
    }

    /// One Softmax or GELU call of `kernel` over `stream` on `contract`'s family.
    pub fn stream(contract: &GemmContract, kernel: Kernel, stream: &StreamLayout) -> Traffic {
        let rows = stream.rows_per_dispatch;
        let cycles = match kernel {
            Kernel::Softmax => crate::hw::cost::softmax_cycles(rows, stream.cols),
            _ => crate::hw::cost::gelu_cycles(rows * stream.cols),
        };
        let per_dispatch = stream.bytes / stream.dispatches.max(1);
        Traffic {
            calls: 1,
            dispatches: stream.dispatches as u64,
            bytes_in: stream.bytes as u64,
            bytes_out: stream.bytes as u64,
            ..Traffic::streamed(contract, stream.dispatches, cycles, per_dispatch)
        }
    }

    /// The device's side of `dispatches` Softmax or GELU dispatches, each `cycles` of its
    /// busiest core and `bytes` each way: per dispatch the longer of the two (the rows are
    /// double-buffered), what crosses between host and device left to the caller.
    pub fn streamed(
        contract: &GemmContract,
        dispatches: usize,
        cycles: u64,
        bytes: usize,
    ) -> Traffic {
        let family = contract.family();
        let compute = cycles as f64 / crate::hw::cost::clock_hz(family);
        let dma = bytes as f64 / family.host_bytes_per_s();
        let n = dispatches as u64;
        Traffic {
            calls: 1,
            dispatches: n,
            dma_bytes: 2 * bytes as u64 * n,
            dma_out_bytes: bytes as u64 * n,
            core_cycles: cycles * n,
            model_ns: (compute.max(dma) * 1e9).round() as u64 * n,
            dma_ns: (dma * 1e9).round() as u64 * n,
            ..Traffic::default()
        }
    }

    /// `n` times this traffic.
    pub fn times(self, n: u64) -> Traffic {
        Traffic {
            calls: self.calls * n,
            dispatches: self.dispatches * n,
            bytes_in: self.bytes_in * n,
            bytes_out: self.bytes_out * n,
            flops: self.flops * n,
            padded_flops: self.padded_flops * n,
            dma_bytes: self.dma_bytes * n,
            dma_out_bytes: self.dma_out_bytes * n,
            core_cycles: self.core_cycles * n,
            model_ns: self.model_ns * n,
            dma_ns: self.dma_ns * n,
        }
    }
}

impl std::ops::Add for Traffic {
    type Output = Traffic;
    fn add(self, t: Traffic) -> Traffic {
        Traffic {
            calls: self.calls + t.calls,
            dispatches: self.dispatches + t.dispatches,
            bytes_in: self.bytes_in + t.bytes_in,
            bytes_out: self.bytes_out + t.bytes_out,
            flops: self.flops + t.flops,
            padded_flops: self.padded_flops + t.padded_flops,
            dma_bytes: self.dma_bytes + t.dma_bytes,
            dma_out_bytes: self.dma_out_bytes + t.dma_out_bytes,
            core_cycles: self.core_cycles + t.core_cycles,
            model_ns: self.model_ns + t.model_ns,
            dma_ns: self.dma_ns + t.dma_ns,
        }
    }
}

impl std::ops::Sub for Traffic {
    type Output = Traffic;
    fn sub(self, t: Traffic) -> Traffic {
        Traffic {
            calls: self.calls - t.calls,
            dispatches: self.dispatches - t.dispatches,
            bytes_in: self.bytes_in - t.bytes_in,
            bytes_out: self.bytes_out - t.bytes_out,
            flops: self.flops - t.flops,
            padded_flops: self.padded_flops - t.padded_flops,
            dma_bytes: self.dma_bytes - t.dma_bytes,
            dma_out_bytes: self.dma_out_bytes - t.dma_out_bytes,
            core_cycles: self.core_cycles - t.core_cycles,
            model_ns: self.model_ns - t.model_ns,
            dma_ns: self.dma_ns - t.dma_ns,
        }
    }
}

/// A copy of all counters at one moment; subtract two to get the traffic in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Per kernel kind, in the order of [`Kernel::ALL`].
    pub kernels: [Traffic; 3],
    /// Bytes of weights uploaded (once per plan).
    pub weight_bytes: u64,
}

impl Snapshot {
    /// The traffic of one kernel kind.
    pub fn get(&self, kernel: Kernel) -> &Traffic {
        &self.kernels[kernel.index()]
    }

    /// The sum over kernel kinds.
    pub fn total(&self) -> Traffic {
        self.kernels.iter().fold(Traffic::default(), |a, t| a + *t)
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let mut out = *self;
        for (o, e) in out.kernels.iter_mut().zip(&earlier.kernels) {
            *o = *o - *e;
        }
        out.weight_bytes -= earlier.weight_bytes;
        out
    }
}

impl Counters {
    /// Records the traffic of one kernel call (see [`Traffic::gemm`], [`Traffic::stream`]).
    pub fn record(&self, kernel: Kernel, t: Traffic) {
        let k = &self.kernels[kernel.index()];
        k.calls.fetch_add(t.calls, Ordering::Relaxed);
        k.dispatches.fetch_add(t.dispatches, Ordering::Relaxed);
        k.bytes_in.fetch_add(t.bytes_in, Ordering::Relaxed);
        k.bytes_out.fetch_add(t.bytes_out, Ordering::Relaxed);
        k.flops.fetch_add(t.flops, Ordering::Relaxed);
        k.padded_flops.fetch_add(t.padded_flops, Ordering::Relaxed);
        k.dma_bytes.fetch_add(t.dma_bytes, Ordering::Relaxed);
        k.dma_out_bytes
            .fetch_add(t.dma_out_bytes, Ordering::Relaxed);
        k.core_cycles.fetch_add(t.core_cycles, Ordering::Relaxed);
        k.model_ns.fetch_add(t.model_ns, Ordering::Relaxed);
        k.dma_ns.fetch_add(t.dma_ns, Ordering::Relaxed);
    }

    /// Records the upload of a weight matrix.
    pub fn record_weights(&self, bytes: usize) {
        self.weight_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            weight_bytes: self.weight_bytes.load(Ordering::Relaxed),
            ..Snapshot::default()
        };
        for (t, k) in s.kernels.iter_mut().zip(&self.kernels) {
            *t = Traffic {
                calls: k.calls.load(Ordering::Relaxed),
                dispatches: k.dispatches.load(Ordering::Relaxed),
                bytes_in: k.bytes_in.load(Ordering::Relaxed),
                bytes_out: k.bytes_out.load(Ordering::Relaxed),
                flops: k.flops.load(Ordering::Relaxed),
                padded_flops: k.padded_flops.load(Ordering::Relaxed),
                dma_bytes: k.dma_bytes.load(Ordering::Relaxed),
                dma_out_bytes: k.dma_out_bytes.load(Ordering::Relaxed),
                core_cycles: k.core_cycles.load(Ordering::Relaxed),
                model_ns: k.model_ns.load(Ordering::Relaxed),
                dma_ns: k.dma_ns.load(Ordering::Relaxed),
            };
        }
        s
    }
}
