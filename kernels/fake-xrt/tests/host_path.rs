//! The NPU host code (`Npu`) run on the fake XRT: bit for bit the emulator, traffic counted
//! as measured on the bytes, contexts within the driver's budget, failures reported, and a
//! deliberately broken host path noticed.

use amanuensis_fake_xrt::{
    FakeConfig, FakeXrt, Faults, Measured, Sabotage, Sabotaged, TempKernels, Xclbins,
    write_kernels, write_kernels_as,
};
use amanuensis_kernels::bf16::Rounding;
use amanuensis_kernels::device::{
    AttentionDims, Device, Epilogue, Kernel, KernelNeed, StreamLayout,
};
use amanuensis_kernels::emulator::Emulator;
use amanuensis_kernels::gemm::{GemmContract, Precision};
use amanuensis_kernels::hw::DeviceFamily;
use amanuensis_kernels::npu::{Npu, Xrt};
use proptest::prelude::*;

fn values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// One call of the scenario a test runs on a device.
#[derive(Debug, Clone)]
enum Call {
    /// `[m, k] @ weights [k, n]` (+ bias), with an epilogue; run twice with different A.
    MatMul {
        m: usize,
        k: usize,
        n: usize,
        bias: bool,
        epilogue: Epilogue,
    },
    /// `[m, k] @ [k, n]`, both activations.
    MatMulAct { m: usize, k: usize, n: usize },
    /// Attention of one head; run twice with different operands.
    Attention(AttentionDims),
    /// Softmax over rows of `cols`.
    Softmax { rows: usize, cols: usize },
    /// GELU of `len` values.
    Gelu { len: usize },
}

impl Call {
    /// The kernels the call needs under `contract`.
    fn needs(&self, contract: &GemmContract) -> Vec<KernelNeed> {
        match *self {
            Call::MatMul {
                m,
                k,
                n,
                bias,
                epilogue,
            } => vec![KernelNeed::gemm(
                &contract.layout(m, k, n),
                bias,
                epilogue == Epilogue::Gelu && contract.softmax_gelu_on_device(),
            )],
            Call::MatMulAct { m, k, n } => {
                vec![KernelNeed::gemm(&contract.layout(m, k, n), false, false)]
            }
            Call::Attention(dims) => contract
                .attention(dims)
                .calls(contract)
                .into_iter()
                .map(|(need, _)| need)
                .collect(),
            // Under bf16x3 softmax and GELU run on the host: no kernel.
            _ if !contract.softmax_gelu_on_device() => Vec::new(),
            Call::Softmax { rows, cols } => vec![KernelNeed::stream(
                Kernel::Softmax,
                &StreamLayout::new(contract, rows, cols),
            )],
            Call::Gelu { len } => vec![KernelNeed::stream(
                Kernel::Gelu,
                &StreamLayout::new(contract, len, 1),
            )],
        }
    }

    /// Runs the call on `device`: the outputs of every run, in order.
    fn run(&self, device: &dyn Device, seed: u64) -> Result<Vec<Vec<f32>>, String> {
        let e = |e: amanuensis_kernels::device::DeviceError| e.to_string();
        match *self {
            Call::MatMul {
                m,
                k,
                n,
                bias,
                epilogue,
            } => {
                let b = values(k * n, seed, 2.0);
                let bias_values = values(n, seed + 1, 1.0);
                let w = device
                    .prepare_weights(&b, k, n, bias.then_some(&bias_values[..]))
                    .map_err(e)?;
                let mut outs = Vec::new();
                for round in 0..2 {
                    let a = values(m * k, seed + 2 + round, 4.0);
                    let mut c = vec![f32::NAN; m * n];
                    device.matmul(&a, m, &w, epilogue, &mut c).map_err(e)?;
                    outs.push(c);
                }
                Ok(outs)
            }
            Call::MatMulAct { m, k, n } => {
                let a = values(m * k, seed, 4.0);
                let b = values(k * n, seed + 1, 2.0);
                let mut c = vec![f32::NAN; m * n];
                device.matmul_act(&a, &b, (m, k, n), &mut c).map_err(e)?;
                Ok(vec![c])
            }
            Call::Attention(dims) => {
                let AttentionDims { m, d, n, dv } = dims;
                let mut outs = Vec::new();
                for round in 0..2 {
                    let s = seed + 10 * round;
                    let q = values(m * d, s, 6.0);
                    let kt = values(d * n, s + 1, 6.0);
                    let v = values(n * dv, s + 2, 2.0);
                    let mut o = vec![f32::NAN; m * dv];
                    device.attention(&q, &kt, &v, dims, &mut o).map_err(e)?;
                    outs.push(o);
                }
                Ok(outs)
            }
            Call::Softmax { rows, cols } => {
                let mut x = values(rows * cols, seed, 20.0);
                device.softmax(&mut x, cols).map_err(e)?;
                Ok(vec![x])
            }
            Call::Gelu { len } => {
                let mut x = values(len, seed, 12.0);
                device.gelu(&mut x).map_err(e)?;
                Ok(vec![x])
            }
        }
    }
}

/// A kernel directory for `calls` and an `Npu` over `xrt` with it.
fn npu_for<X: Xrt>(
    xrt: X,
    family: DeviceFamily,
    rounding: Rounding,
    calls: &[Call],
    dir: &TempKernels,
) -> Npu<X> {
    npu_for_precision(xrt, family, rounding, Precision::Bf16, calls, dir)
}

/// [`npu_for`] under `precision`.
fn npu_for_precision<X: Xrt>(
    xrt: X,
    family: DeviceFamily,
    rounding: Rounding,
    precision: Precision,
    calls: &[Call],
    dir: &TempKernels,
) -> Npu<X> {
    let contract = GemmContract::for_family(family)
        .with_rounding(rounding)
        .with_precision(precision);
    let mut needs: Vec<KernelNeed> = calls.iter().flat_map(|c| c.needs(&contract)).collect();
    needs.sort();
    needs.dedup();
    let manifest = write_kernels_as(&dir.dir, rounding, &needs, Xclbins::PerShape, family);
    Npu::open_with(xrt, 0, manifest, contract).expect("the fake device opens")
}

/// Runs `calls` on the emulator and on `Npu` over the fake device: the outputs bit for bit,
/// the counters, and the counters against the bytes the fake device measured.
fn same_as_emulator(rounding: Rounding, calls: &[Call]) {
    same_as_emulator_in(Precision::Bf16, rounding, calls)
}

/// [`same_as_emulator`] under `precision`.
fn same_as_emulator_in(precision: Precision, rounding: Rounding, calls: &[Call]) {
    for config in [FakeConfig::xdna1(), FakeConfig::xdna2()] {
        let family = config.family();
        let dir = TempKernels::new("same");
        let fake = FakeXrt::new(config);
        let npu = npu_for_precision(fake.clone(), family, rounding, precision, calls, &dir);
        let emu = Emulator::new(
            GemmContract::for_family(family)
                .with_rounding(rounding)
                .with_precision(precision),
        );
        for (i, call) in calls.iter().enumerate() {
            let expected = call.run(&emu, i as u64 * 100).unwrap();
            let got = call
                .run(&npu, i as u64 * 100)
                .unwrap_or_else(|e| panic!("{call:?} on the fake {family:?} NPU: {e}"));
            for (r, (g, x)) in got.iter().zip(&expected).enumerate() {
                assert!(
                    bits(g) == bits(x),
                    "{call:?} run {r} under {rounding:?} on {family:?}"
                );
            }
        }
        let (counted, predicted) = (npu.counters().snapshot(), emu.counters().snapshot());
        assert_eq!(
            counted, predicted,
            "the NPU's counters against the layouts'"
        );
        let measured = fake.measured();
        assert_counted_is_measured(&counted, &measured);
    }
}

/// Every counter of host traffic equals what the fake device measured on the bytes.
fn assert_counted_is_measured(counted: &amanuensis_kernels::device::Snapshot, measured: &Measured) {
    for kernel in Kernel::ALL {
        let (c, m) = (counted.get(kernel), measured.get(kernel));
        assert_eq!(c.dispatches, m.dispatches, "{kernel:?} dispatches");
        assert_eq!(c.bytes_out, m.bytes_out, "{kernel:?} bytes out");
        // The first call of a kernel also reads the weights and the buffers written once
        // (zeros), which the counters hold apart.
        assert!(c.bytes_in <= m.bytes_in, "{kernel:?} bytes in");
    }
    let total_in: u64 = Kernel::ALL.iter().map(|k| counted.get(*k).bytes_in).sum();
    assert!(total_in + counted.weight_bytes <= measured.synced_in);
}

fn rounding() -> impl Strategy<Value = Rounding> {
    prop_oneof![Just(Rounding::NearestEven), Just(Rounding::Truncate)]
}

fn epilogue() -> impl Strategy<Value = Epilogue> {
    prop_oneof![Just(Epilogue::None), Just(Epilogue::Gelu)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// GEMMs of shapes that fill no tile, with and without bias and GELU, weights and
    /// activations, several dispatches (K long enough to cut M) included.
    #[test]
    fn gemms_are_the_emulator_bit_for_bit(
        rounding in rounding(),
        m in 1usize..1400,
        k in prop_oneof![1usize..200, 1500usize..2600],
        n in 1usize..300,
        bias in any::<bool>(),
        epilogue in epilogue(),
    ) {
        same_as_emulator(rounding, &[
            Call::MatMul { m, k, n, bias, epilogue },
            Call::MatMulAct { m: m.min(300), k, n },
        ]);
    }

    /// Attention heads of odd sizes, several dispatches of the second product included.
    #[test]
    fn attention_is_the_emulator_bit_for_bit(
        rounding in rounding(),
        m in 1usize..1100,
        d in 1usize..80,
        n in 1usize..1300,
        dv in 1usize..80,
    ) {
        same_as_emulator(rounding, &[Call::Attention(AttentionDims { m, d, n, dv })]);
    }

    /// Softmax and GELU streams of any length, several dispatches included.
    #[test]
    fn streams_are_the_emulator_bit_for_bit(
        rounding in rounding(),
        rows in 1usize..900,
        cols in 1usize..1700,
        len in 1usize..700_000,
    ) {
        same_as_emulator(rounding, &[Call::Softmax { rows, cols }, Call::Gelu { len }]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// bf16x3 on the device: the plain GEMM kernels over the host's expanded operands (K three
    /// times as long), softmax and GELU in float32 on the host; the emulator's bits and
    /// counters, GELU epilogues, attention and streams included.
    #[test]
    fn bf16x3_is_the_emulator_bit_for_bit(
        rounding in rounding(),
        m in 1usize..700,
        k in prop_oneof![1usize..200, 700usize..1300],
        n in 1usize..300,
        bias in any::<bool>(),
        epilogue in epilogue(),
        (am, d, an) in (1usize..600, 1usize..80, 1usize..900),
    ) {
        same_as_emulator_in(Precision::Bf16x3, rounding, &[
            Call::MatMul { m, k, n, bias, epilogue },
            Call::MatMulAct { m: m.min(300), k, n },
            Call::Attention(AttentionDims { m: am, d, n: an, dv: d }),
            Call::Softmax { rows: am, cols: an },
            Call::Gelu { len: m * n },
        ]);
    }
}

/// A call on an empty tensor moves nothing and asks for no kernel.
#[test]
fn empty_streams_dispatch_nothing() {
    let dir = TempKernels::new("empty");
    let fake = FakeXrt::new(FakeConfig::xdna1());
    let npu = npu_for(
        fake.clone(),
        DeviceFamily::Xdna1,
        Rounding::NearestEven,
        &[],
        &dir,
    );
    npu.gelu(&mut []).unwrap();
    npu.softmax(&mut [], 7).unwrap();
    assert_eq!(fake.measured(), Measured::default());
}

/// The scenario the sabotage tests run: every kind of buffer the host code uses (weights,
/// a zero bias, activations, sub-buffers of attention's several dispatches, streams).
fn scenario() -> Vec<Call> {
    vec![
        Call::MatMul {
            m: 300,
            k: 100,
            n: 70,
            bias: true,
            epilogue: Epilogue::None,
        },
        Call::MatMul {
            m: 40,
            k: 30,
            n: 20,
            bias: false,
            epilogue: Epilogue::Gelu,
        },
        Call::MatMulAct {
            m: 30,
            k: 20,
            n: 10,
        },
        Call::Attention(AttentionDims {
            m: 1000,
            d: 64,
            n: 1100,
            dv: 64,
        }),
        Call::Softmax { rows: 20, cols: 30 },
        Call::Gelu { len: 99 },
    ]
}

/// Runs the scenario on `npu`: Ok when every output equals the emulator's to the bit, else
/// what went wrong.
fn scenario_on<X: Xrt>(npu: &Npu<X>) -> Result<(), String> {
    let emu = Emulator::new(GemmContract::XDNA1);
    for (i, call) in scenario().iter().enumerate() {
        let expected = call.run(&emu, i as u64 * 100).unwrap();
        let got = call.run(npu, i as u64 * 100)?;
        if got.iter().zip(&expected).any(|(g, x)| bits(g) != bits(x)) {
            return Err(format!("{call:?} gave other bits"));
        }
    }
    Ok(())
}

/// A host path broken on purpose (a wrong sub-buffer offset, a missing sync either way, swapped
/// operands, a buffer left stale) does not give the emulator's bits: the fake device notices
/// every one. The same scenario on the unbroken path does.
#[test]
fn a_broken_host_path_is_noticed() {
    let run = |xrt: Sabotaged<FakeXrt>| {
        let dir = TempKernels::new("broken");
        let npu = npu_for(
            xrt,
            DeviceFamily::Xdna1,
            Rounding::NearestEven,
            &scenario(),
            &dir,
        );
        scenario_on(&npu)
    };
    let fake = || FakeXrt::new(FakeConfig::xdna1());
    // The control: nothing broken, and how many syncs to the device the scenario makes.
    let control = fake();
    let dir = TempKernels::new("control");
    let npu = npu_for(
        control.clone(),
        DeviceFamily::Xdna1,
        Rounding::NearestEven,
        &scenario(),
        &dir,
    );
    scenario_on(&npu).expect("the unbroken host path");
    drop(npu);
    let mut sabotages = vec![
        Sabotage::SubOffset(2),
        Sabotage::SubOffset(4096),
        Sabotage::SkipSyncFromDevice,
        Sabotage::SwapOperands,
        Sabotage::StaleWrites,
    ];
    // Every single sync to the device, left out in turn: instruction streams, weights,
    // biases, the zeros of a GELU's bias and of attention's probabilities, activations.
    let syncs = Sabotaged::new(fake(), Sabotage::SkipSyncToDevice(u64::MAX));
    let dir = TempKernels::new("count");
    let npu = npu_for(
        syncs,
        DeviceFamily::Xdna1,
        Rounding::NearestEven,
        &scenario(),
        &dir,
    );
    scenario_on(&npu).unwrap();
    let count = npu_sync_count(&npu);
    assert!(count > 20, "the scenario syncs {count} times");
    sabotages.extend((1..=count).map(Sabotage::SkipSyncToDevice));
    for sabotage in sabotages {
        let result = run(Sabotaged::new(fake(), sabotage));
        assert!(result.is_err(), "{sabotage:?} went unnoticed");
        eprintln!("{sabotage:?}: {}", result.unwrap_err());
    }
}

/// How many syncs to the device the sabotaged XRT below `npu` has seen.
fn npu_sync_count(npu: &Npu<Sabotaged<FakeXrt>>) -> u64 {
    npu.xrt().syncs()
}

/// Kernels that do not all fit the driver's budget run in turn: never more contexts alive
/// than the device allows, all given up at once on XDNA1, the least recently used on XDNA2;
/// contexts held by other processes shrink what is left, and none left is an error that
/// says what to do.
#[test]
fn contexts_stay_within_the_drivers_budget() {
    // Eight GEMM kernels of eight shapes (N pads to 256, 512, ... on both families), called
    // in turn, twice.
    let calls: Vec<Call> = (0..8)
        .map(|i| Call::MatMulAct {
            m: 10,
            k: 10,
            n: 256 * (i + 1) - 100,
        })
        .collect();
    let run = |config: FakeConfig| {
        let dir = TempKernels::new("contexts");
        let family = config.family();
        let fake = FakeXrt::new(config);
        let npu = npu_for(fake.clone(), family, Rounding::NearestEven, &calls, &dir);
        let emu = Emulator::new(GemmContract::for_family(family));
        let mut result = Ok(());
        'rounds: for _ in 0..2 {
            for (i, call) in calls.iter().enumerate() {
                match call.run(&npu, i as u64) {
                    Ok(got) => {
                        assert_eq!(bits(&got[0]), bits(&call.run(&emu, i as u64).unwrap()[0]))
                    }
                    Err(e) => {
                        result = Err(e);
                        break 'rounds;
                    }
                }
            }
        }
        (result, fake, npu.contexts_created())
    };
    // XDNA1: 6 contexts; the 7th kernel drains all six. 16 calls: 6 + 6 + 4 creations.
    let (result, fake, made) = run(FakeConfig::xdna1());
    result.unwrap();
    assert_eq!(fake.max_live_contexts(), 6);
    assert_eq!((made, fake.contexts_created()), (16, 16));
    // XDNA2: 16 contexts hold all eight: eight creations.
    let (result, fake, made) = run(FakeConfig::xdna2());
    result.unwrap();
    assert_eq!((fake.max_live_contexts(), made), (8, 8));
    // Other processes hold 4 of XDNA1's 6: at most 2 of ours alive, older ones given up.
    let (result, fake, _) = run(FakeConfig {
        held_elsewhere: 4,
        ..FakeConfig::xdna1()
    });
    result.unwrap();
    assert_eq!(fake.max_live_contexts(), 2);
    // XDNA2 shared with processes holding 12 of its 16: the least recently used of ours is
    // given up one at a time, four alive.
    let (result, fake, made) = run(FakeConfig {
        held_elsewhere: 12,
        ..FakeConfig::xdna2()
    });
    result.unwrap();
    assert_eq!((fake.max_live_contexts(), made), (4, 16));
    // Others hold all six: the first call fails, saying why and what to do.
    let (result, fake, _) = run(FakeConfig {
        held_elsewhere: 6,
        ..FakeConfig::xdna1()
    });
    let err = result.unwrap_err();
    assert!(
        err.contains("no hardware context left") && err.contains("AMANUENSIS_NPU_CONTEXTS"),
        "{err}"
    );
    assert_eq!(fake.max_live_contexts(), 0);
}

/// A dispatch that hangs or ends in an error state fails the call with the state, and the
/// device keeps working for the next call.
#[test]
fn hung_and_failed_dispatches_are_errors() {
    let call = Call::MatMul {
        m: 600,
        k: 1600,
        n: 100,
        bias: true,
        epilogue: Epilogue::None,
    };
    for (faults, expected) in [
        (
            Faults {
                hang_at: Some(2),
                ..Faults::default()
            },
            "did not finish within 10 s (state Running)",
        ),
        (
            Faults {
                error_at: Some(1),
                ..Faults::default()
            },
            "ended in state Error",
        ),
    ] {
        let dir = TempKernels::new("faults");
        let fake = FakeXrt::new(FakeConfig {
            faults,
            ..FakeConfig::xdna1()
        });
        let npu = npu_for(
            fake,
            DeviceFamily::Xdna1,
            Rounding::NearestEven,
            std::slice::from_ref(&call),
            &dir,
        );
        let err = call.run(&npu, 1).unwrap_err();
        assert!(err.contains(expected), "{err}");
        // Later dispatches are unspoilt: the same call now gives the emulator's bits.
        let emu = Emulator::new(GemmContract::XDNA1);
        assert_eq!(
            bits(&call.run(&npu, 1).unwrap()[1]),
            bits(&call.run(&emu, 1).unwrap()[1])
        );
    }
}

/// A file that is not an xclbin, or a kernel name the xclbin lacks, fails when the device is
/// opened or the kernel first used, naming the file.
#[test]
fn bad_kernel_files_are_refused() {
    let dir = TempKernels::new("bad");
    let call = Call::Gelu { len: 10 };
    let contract = GemmContract::XDNA1;
    let manifest = write_kernels(&dir.dir, Rounding::NearestEven, &call.needs(&contract));
    std::fs::write(dir.dir.join("k0.xclbin"), b"\x00garbage").unwrap();
    let err = Npu::open_with(FakeXrt::new(FakeConfig::xdna1()), 0, manifest, contract)
        .unwrap_err()
        .to_string();
    assert!(err.contains("k0.xclbin"), "{err}");
}
