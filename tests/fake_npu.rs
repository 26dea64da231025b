//! The `npu` backend's host code on a fake XRT (`kernels/fake-xrt`): whole encoders through
//! `Npu` give the `emu` backend's bits, the placement report's traffic is the bytes the fake
//! device measured, a plan is checked before anything reaches the device, and `auto` falls
//! back when one kernel is missing.

mod common;

use std::sync::Arc;

use amanuensis::backend::Backend;
use amanuensis::model::convert::convert_ct2;
use amanuensis::model::{Encoder, EncoderOptions};
use amanuensis::placement::KernelBuild;
use amanuensis_fake_xrt::{FakeConfig, FakeXrt, Measured, TempKernels, Xclbins, write_kernels_as};
use amanuensis_kernels::bf16::Rounding;
use amanuensis_kernels::contexts::ContextLimit;
use amanuensis_kernels::device::{Kernel, KernelNeed};
use amanuensis_kernels::gemm::GemmContract;
use amanuensis_kernels::hw::DeviceFamily;
use amanuensis_kernels::npu::Npu;
use amanuensis_ops::DeviceHandle;
use common::*;

fn options(backend: Backend) -> EncoderOptions {
    EncoderOptions {
        backend,
        threads: 2,
        ..EncoderOptions::default()
    }
}

/// A fake XDNA1 NPU with kernels for `needs`, and the fake below it.
fn fake_npu(needs: &[KernelNeed], dir: &TempKernels) -> (DeviceHandle, FakeXrt) {
    fake_npu_of(FakeConfig::xdna1(), needs, dir)
}

/// A fake NPU as `config` describes it with kernels for `needs`, and the fake below it.
fn fake_npu_of(
    config: FakeConfig,
    needs: &[KernelNeed],
    dir: &TempKernels,
) -> (DeviceHandle, FakeXrt) {
    let family = config.family();
    let fake = FakeXrt::new(config);
    let manifest = write_kernels_as(
        &dir.dir,
        Rounding::NearestEven,
        needs,
        Xclbins::PerShape,
        family,
    );
    let npu = Npu::open_with(fake.clone(), 0, manifest, GemmContract::for_family(family)).unwrap();
    (DeviceHandle::new(Arc::new(npu)), fake)
}

/// A fake XDNA1 NPU of `contract` with the kernels `emu`'s plan needs in `kernels`, built
/// one xclbin per kind, and the fake below it.
fn per_kind_npu(
    emu: &Encoder,
    contract: GemmContract,
    kernels: &TempKernels,
) -> (DeviceHandle, FakeXrt) {
    let fake = FakeXrt::new(FakeConfig::xdna1());
    let manifest = write_kernels_as(
        &kernels.dir,
        Rounding::NearestEven,
        emu.kernel_needs(),
        Xclbins::PerKind,
        DeviceFamily::Xdna1,
    );
    let npu = Npu::open_with(fake.clone(), 0, manifest, contract).unwrap();
    (DeviceHandle::new(Arc::new(npu)), fake)
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Loads the encoder in `dir` on `emu` and on `npu` over the fake device (kernels for exactly
/// what the plan needs), encodes two windows on both, and checks: the features bit for bit;
/// the weights the fake device received when the plan was built, and the traffic it measured
/// in the second window (dispatches and bytes each way, per kernel kind), against the
/// placement report and the device's own counters; the hardware contexts within XDNA1's
/// budget. Returns the measured traffic of a window.
fn npu_is_emu_and_traffic_is_measured(dir: &std::path::Path, mels: [&[f32]; 2]) -> Measured {
    npu_is_emu_on(FakeConfig::xdna1(), dir, mels)
}

/// [`npu_is_emu_and_traffic_is_measured`] on a fake NPU of `config`'s family, `emu` laid out
/// for the same family.
fn npu_is_emu_on(config: FakeConfig, dir: &std::path::Path, mels: [&[f32]; 2]) -> Measured {
    let family = config.family();
    let budget = config.budget;
    let emu = Encoder::load(
        dir,
        &EncoderOptions {
            family: Some(family),
            ..options(Backend::Emu)
        },
    )
    .unwrap();
    let kernels = TempKernels::new("encoder");
    let (device, fake) = fake_npu_of(config, emu.kernel_needs(), &kernels);
    let npu = Encoder::load(
        dir,
        &EncoderOptions {
            device: Some(device.clone()),
            ..options(Backend::Npu)
        },
    )
    .unwrap();
    let report = npu.placement().snapshot();
    assert_eq!(report, emu.placement().snapshot());
    let loaded = fake.measured();
    assert_eq!(
        loaded.synced_in, report.weight_bytes,
        "bytes of weights and biases sent when the plan was built"
    );
    assert_eq!(
        device.counters().snapshot().weight_bytes,
        report.weight_bytes
    );
    let mut window = Measured::default();
    let mut contexts = 0;
    for (i, mel) in mels.iter().enumerate() {
        let before = (fake.measured(), device.counters().snapshot());
        let contexts_before = fake.contexts_created();
        let ours = npu.encode(mel).unwrap();
        let expected = emu.encode(mel).unwrap();
        assert!(
            bits(&ours) == bits(&expected),
            "window {i}: npu and emu differ"
        );
        if i == 1 {
            contexts = fake.contexts_created() - contexts_before;
            window = fake.measured().since(&before.0);
            let counted = device.counters().snapshot().since(&before.1);
            for kernel in Kernel::ALL {
                let (m, r, c) = (window.get(kernel), report.get(kernel), counted.get(kernel));
                assert_eq!(
                    (m.dispatches, m.bytes_in, m.bytes_out),
                    (r.dispatches, r.bytes_in, r.bytes_out),
                    "{kernel:?}: measured on the fake device against the placement report"
                );
                assert_eq!(c, r, "{kernel:?}: the device's counters");
                if kernel == Kernel::MatMul {
                    assert_eq!(
                        m.array_bytes, r.dma_bytes,
                        "the GEMM design's DMA bytes, walked task by task by the fake device, \
                         against the prediction's (GemmContract::dataflow)"
                    );
                }
            }
            let total = report.total();
            assert_eq!(window.synced_in, total.bytes_in);
            assert_eq!(window.synced_out, total.bytes_out);
        }
    }
    assert!(fake.max_live_contexts() <= budget);
    // The placement's simulation of the contexts, against what the fake device counted.
    let limit = ContextLimit::for_family(family);
    let (_, simulated) = npu
        .placement()
        .contexts_per_window(KernelBuild::PerShape, limit);
    assert_eq!(
        simulated, contexts,
        "contexts created in a window once running"
    );
    eprintln!(
        "{} on {family:?}: {} kernels; per window {} hardware contexts created (a budget of \
         {budget}), {} dispatches, {:.1} MiB in, {:.1} MiB out",
        dir.display(),
        emu.kernel_needs().len(),
        contexts,
        report.total().dispatches,
        window.synced_in as f64 / (1 << 20) as f64,
        window.synced_out as f64 / (1 << 20) as f64
    );
    window
}

/// tiny.en (optimum's export) on OpenAI's jfk log-mel, then on the noise log-mel.
#[test]
fn npu_on_the_fake_device_is_emu_on_tiny_en() {
    let (_, jfk) = read_npy(&reference("jfk.mel80_openai.npy"));
    let (_, noise) = read_npy(&reference("noise_30s.mel80_openai.npy"));
    npu_is_emu_and_traffic_is_measured(&catalog_model("tiny.en"), [&jfk, &noise]);
}

/// tiny.en on a fake XDNA2 (4 x 8 cores, 16 contexts): the bits of `emu` laid out for XDNA2,
/// which are XDNA1's (the numerics do not depend on the array), with XDNA2's traffic, and no
/// context created once running (the plan's 8 kernels fit the budget).
#[test]
fn npu_on_a_fake_xdna2_is_emu_on_tiny_en() {
    let (_, jfk) = read_npy(&reference("jfk.mel80_openai.npy"));
    let (_, noise) = read_npy(&reference("noise_30s.mel80_openai.npy"));
    let window = npu_is_emu_on(
        FakeConfig::xdna2(),
        &catalog_model("tiny.en"),
        [&jfk, &noise],
    );
    let xdna1 = Encoder::load(&catalog_model("tiny.en"), &options(Backend::Emu)).unwrap();
    let xdna2 = Encoder::load(
        &catalog_model("tiny.en"),
        &EncoderOptions {
            family: Some(DeviceFamily::Xdna2),
            ..options(Backend::Emu)
        },
    )
    .unwrap();
    assert!(bits(&xdna1.encode(&jfk).unwrap()) == bits(&xdna2.encode(&jfk).unwrap()));
    let (t1, t2) = (
        xdna1.placement().total_traffic(),
        xdna2.placement().total_traffic(),
    );
    assert!(t1 != t2, "XDNA2's layouts move other bytes");
    assert_eq!(window.synced_in, t2.bytes_in);
}

/// base (the catalog's, converted from its CTranslate2 checkpoint).
#[test]
fn npu_on_the_fake_device_is_emu_on_base() {
    let (_, jfk) = read_npy(&reference("jfk.mel80_openai.npy"));
    let (_, noise) = read_npy(&reference("noise_30s.mel80_openai.npy"));
    npu_is_emu_and_traffic_is_measured(&catalog_model("base"), [&jfk, &noise]);
}

/// Whisper small's shapes (width 768, 12 heads, FFN 3072: the layouts whose M is cut into
/// two dispatches), one layer of random weights: the per-layer traffic is that of each of
/// small's 12 layers.
#[test]
fn npu_on_the_fake_device_is_emu_at_smalls_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let dims = RandomWhisper {
        n_mels: 80,
        d: 768,
        ffn: 3072,
        layers: 1,
        ctx: 1500,
        vocab: 64,
        text_ctx: 448,
    };
    let weights = random_whisper(&mut Rng(0x5a11), &dims);
    let mut vars: Vec<Ct2Var> = weights.iter().map(|(n, s, d)| ct2_f32(n, s, d)).collect();
    vars.push(ct2_i16_scalar("encoder/num_heads", 12));
    let ct2 = tmp.path().join("ct2");
    std::fs::create_dir(&ct2).unwrap();
    write_ct2(&ct2.join("model.bin"), &vars);
    let out = tmp.path().join("onnx");
    convert_ct2(&ct2, &out).unwrap();
    let mel = Rng(3).vec(80 * 3000, 1.0);
    let (_, jfk) = read_npy(&reference("jfk.mel80_openai.npy"));
    let window = npu_is_emu_and_traffic_is_measured(&out, [&mel, &jfk]);
    // The projections' A (1500 rows, K = 768) crosses in two dispatches of 768 rows: the
    // 1536 rows of the padded M, not 2 x 1280.
    assert!(window.get(Kernel::MatMul).dispatches > 0);
}

/// Kernels built one xclbin per kind, the shapes in the instruction streams: tiny.en and base
/// need 5 hardware contexts on XDNA1, all created in the first window, none after, as the
/// placement's simulation says; the features are emu's bits.
#[test]
fn one_xclbin_per_kind_creates_no_context_after_the_first_window() {
    let (_, jfk) = read_npy(&reference("jfk.mel80_openai.npy"));
    for dir in [catalog_model("tiny.en"), catalog_model("base")] {
        let emu = Encoder::load(&dir, &options(Backend::Emu)).unwrap();
        let kernels = TempKernels::new("per-kind");
        let (device, fake) = per_kind_npu(&emu, GemmContract::XDNA1, &kernels);
        let npu = Encoder::load(
            &dir,
            &EncoderOptions {
                device: Some(device),
                ..options(Backend::Npu)
            },
        )
        .unwrap();
        let expected = emu.encode(&jfk).unwrap();
        let mut created = Vec::new();
        for _ in 0..2 {
            let before = fake.contexts_created();
            assert!(bits(&npu.encode(&jfk).unwrap()) == bits(&expected));
            created.push(fake.contexts_created() - before);
        }
        let limit = ContextLimit::for_device("RyzenAI-npu1");
        let (all, steady) = npu
            .placement()
            .contexts_per_window(KernelBuild::PerKind, limit);
        eprintln!(
            "{}: {} contexts in all, created per window {created:?} (simulated {all} then \
             {steady})",
            dir.display(),
            fake.contexts_created()
        );
        assert_eq!((fake.contexts_created(), created[1]), (all, steady));
        assert_eq!((all, steady), (5, 0));
    }
}

/// A kernel directory that lacks one kernel of the plan: `auto` takes the CPU plan and says
/// which kernel is missing, and nothing reached the device (no weight, no context); `npu` and
/// `auto --strict` refuse, naming it.
#[test]
fn auto_falls_back_when_one_kernel_is_missing() {
    let dir = catalog_model("tiny.en");
    let emu = Encoder::load(&dir, &options(Backend::Emu)).unwrap();
    let needs = emu.kernel_needs();
    for missing in [0, needs.len() - 1] {
        let mut short = needs.to_vec();
        let gone = short.remove(missing);
        let kernels = TempKernels::new("short");
        let (device, fake) = fake_npu(&short, &kernels);
        let auto = Encoder::load(
            &dir,
            &EncoderOptions {
                device: Some(device.clone()),
                ..options(Backend::Auto)
            },
        )
        .unwrap();
        assert_eq!(auto.backend().backend, Backend::Cpu);
        let note = auto.backend().note.clone().unwrap();
        assert!(
            note.starts_with("backend auto: cpu (") && note.contains(&gone.to_string()),
            "the note names {gone}: {note}"
        );
        assert_eq!(fake.measured(), Measured::default(), "nothing was sent");
        assert_eq!(fake.contexts_created(), 0);
        for (backend, strict) in [(Backend::Npu, false), (Backend::Auto, true)] {
            let err = Encoder::load(
                &dir,
                &EncoderOptions {
                    device: Some(device.clone()),
                    strict,
                    ..options(backend)
                },
            )
            .err()
            .unwrap_or_else(|| panic!("{backend} strict={strict} loaded without {gone}"))
            .to_string();
            assert!(err.contains(&gone.to_string()), "{err}");
        }
        assert_eq!(fake.contexts_created(), 0);
    }
}

/// Two windows encoded at once on one encoder (two threads) give each window's own features:
/// the offloaded ops keep no state between calls that another call could disturb.
#[test]
fn concurrent_encodes_on_one_encoder() {
    let (_, jfk) = read_npy(&reference("jfk.mel80_openai.npy"));
    let (_, noise) = read_npy(&reference("noise_30s.mel80_openai.npy"));
    for backend in [Backend::Emu, Backend::Cpu] {
        let encoder = Encoder::load(&catalog_model("tiny.en"), &options(backend)).unwrap();
        let alone = [
            encoder.encode(&jfk).unwrap(),
            encoder.encode(&noise).unwrap(),
        ];
        let together = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let (encoder, mel) = (&encoder, if i % 2 == 0 { &jfk } else { &noise });
                    s.spawn(move || encoder.encode(mel).unwrap())
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        for (i, features) in together.iter().enumerate() {
            assert!(
                bits(features) == bits(&alone[i % 2]),
                "{backend}: concurrent window {i}"
            );
        }
    }
}

/// `--precision bf16x3` on the fake device (tiny.en, jfk): the plain GEMM kernels over the
/// host's expanded operands, softmax and GELU in float32 on the host, give `emu`'s bits under
/// bf16x3 in two windows; the traffic measured in the second is the placement report's and
/// the device's counters', with no softmax or GELU dispatch; one xclbin per kind creates no
/// context after the first window.
#[test]
fn npu_on_the_fake_device_is_emu_under_bf16x3() {
    host_softmax_on_the_fake_device(amanuensis::backend::Precision::Bf16x3);
}

/// `--precision bf16-host` likewise: the bfloat16 GEMMs, attention's scores read back in
/// float32 and its probabilities sent, softmax and GELU on the host.
#[test]
fn npu_on_the_fake_device_is_emu_under_bf16_host() {
    host_softmax_on_the_fake_device(amanuensis::backend::Precision::Bf16Host);
}

fn host_softmax_on_the_fake_device(precision: amanuensis::backend::Precision) {
    let (_, jfk) = read_npy(&reference("jfk.mel80_openai.npy"));
    let dir = catalog_model("tiny.en");
    let opts = |backend| EncoderOptions {
        precision,
        ..options(backend)
    };
    let emu = Encoder::load(&dir, &opts(Backend::Emu)).unwrap();
    let kernels = TempKernels::new(&precision.to_string());
    let contract = GemmContract::XDNA1.with_precision(precision);
    let (device, fake) = per_kind_npu(&emu, contract, &kernels);
    let npu = Encoder::load(
        &dir,
        &EncoderOptions {
            device: Some(device.clone()),
            ..opts(Backend::Npu)
        },
    )
    .unwrap();
    let report = npu.placement().snapshot();
    assert_eq!(report, emu.placement().snapshot());
    assert!(
        emu.kernel_needs()
            .iter()
            .all(|n| n.kernel == Kernel::MatMul && !n.gelu && !n.bf16_out),
        "{:?}",
        emu.kernel_needs()
    );
    let mut contexts = Vec::new();
    for window in 0..2 {
        let before = (fake.measured(), device.counters().snapshot());
        let contexts_before = fake.contexts_created();
        let ours = npu.encode(&jfk).unwrap();
        let expected = emu.encode(&jfk).unwrap();
        assert!(
            bits(&ours) == bits(&expected),
            "window {window}: npu and emu differ"
        );
        contexts.push(fake.contexts_created() - contexts_before);
        let measured = fake.measured().since(&before.0);
        let counted = device.counters().snapshot().since(&before.1);
        if window == 0 {
            // The first window also writes each kernel's instruction stream.
            continue;
        }
        for kernel in Kernel::ALL {
            let (m, r, c) = (
                measured.get(kernel),
                report.get(kernel),
                counted.get(kernel),
            );
            assert_eq!(
                (m.dispatches, m.bytes_in, m.bytes_out),
                (r.dispatches, r.bytes_in, r.bytes_out),
                "{kernel:?}: measured on the fake device against the placement report"
            );
            assert_eq!(c, r, "{kernel:?}: the device's counters");
            if kernel == Kernel::MatMul {
                assert_eq!(
                    m.array_bytes, r.dma_bytes,
                    "the GEMM design's DMA bytes, walked by the fake device, against the \
                     prediction's"
                );
            }
        }
        assert_eq!(report.get(Kernel::Softmax).dispatches, 0);
        assert_eq!(report.get(Kernel::Gelu).dispatches, 0);
    }
    assert_eq!(contexts[1], 0, "contexts created in the second window");
    eprintln!(
        "tiny.en {precision} on the fake XDNA1: {} kernels, {} dispatches a window, {} \
         contexts created in the first window, {} in the second",
        emu.kernel_needs().len(),
        report.total().dispatches,
        contexts[0],
        contexts[1]
    );
}
