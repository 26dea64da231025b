use std::cell::RefCell;
use std::sync::Arc;

use rayon::prelude::*;
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

/// Frames whose power spectra are projected on the mel bank together.
const FRAME_BLOCK: usize = 16;

use super::{HOP_LENGTH, MelFilters, N_FFT, N_FRAMES, N_FREQS, N_SAMPLES};

/// Whisper's log-mel spectrogram, as `whisper.audio.log_mel_spectrogram` computes it.
///
/// For one window of at most [`N_SAMPLES`] samples at 16 kHz (zero-padded to `N_SAMPLES`, as
/// `pad_or_trim` does):
/// 1. periodic Hann window of [`N_FFT`] samples, frames every [`HOP_LENGTH`] samples, centred
///    with reflect padding of `N_FFT / 2` on both sides (`torch.stft(center=True)`);
/// 2. power spectrum `|X|^2` of each frame; the last of the 3001 frames is dropped;
/// 3. projection on the Slaney mel filter bank ([`MelFilters`]);
/// 4. `log10(max(x, 1e-10))`, floored at `max - 8`, then `(x + 4) / 4`.
///
/// The output is `[n_mels, N_FRAMES]`, row-major. The FFT runs in `f64` (the power spectrum is
/// then rounded to `f32`), so that what separates the result from OpenAI's is essentially the
/// rounding of OpenAI's own `f32` STFT. The FFT plan and the filter bank are built once;
/// [`compute`](LogMel::compute) allocates nothing after its first call on a thread.
pub struct LogMel {
    filters: MelFilters,
    fft: Arc<dyn RealToComplex<f64>>,
    window: Vec<f64>,
}

impl std::fmt::Debug for LogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMel")
            .field("n_mels", &self.n_mels())
            .finish_non_exhaustive()
    }
}

/// Per-thread buffers, reused across calls.
#[derive(Default)]
struct Scratch {
    padded: Vec<f32>,
    frame: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    fft_scratch: Vec<Complex<f64>>,
    power: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl LogMel {
    /// A log-mel extractor with `n_mels` bins (80 for Whisper up to large-v2, 128 for large-v3).
    pub fn new(n_mels: usize) -> LogMel {
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
        // torch.hann_window(N_FFT) is periodic: sin^2(pi n / N).
        let window = (0..N_FFT)
            .map(|n| {
                let s = (std::f64::consts::PI * n as f64 / N_FFT as f64).sin();
                s * s
            })
            .collect();
        LogMel {
            filters: MelFilters::new(n_mels),
            fft,
            window,
        }
    }

    /// Number of mel bins.
    pub fn n_mels(&self) -> usize {
        self.filters.n_mels()
    }

    /// Values in one window's output: `n_mels * N_FRAMES`.
    pub fn window_len(&self) -> usize {
        self.n_mels() * N_FRAMES
    }

    /// The log-mel spectrogram of one window, `[n_mels, N_FRAMES]`.
    ///
    /// `samples` longer than [`N_SAMPLES`] are trimmed, shorter ones zero-padded.
    pub fn compute(&self, samples: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; self.window_len()];
        self.compute_into(samples, &mut out);
        out
    }

    /// Like [`compute`](LogMel::compute), into `out` of length [`window_len`](LogMel::window_len).
    pub fn compute_into(&self, samples: &[f32], out: &mut [f32]) {
        assert_eq!(
            out.len(),
            self.window_len(),
            "output buffer must hold n_mels * N_FRAMES"
        );
        SCRATCH.with(|scratch| self.compute_with(samples, out, &mut scratch.borrow_mut()));
    }

    /// The log-mel spectrograms of several windows, `[windows, n_mels, N_FRAMES]`, computed in
    /// parallel on rayon's pool.
    pub fn compute_batch<S: AsRef<[f32]> + Sync>(&self, windows: &[S]) -> Vec<f32> {
        let mut out = vec![0.0; windows.len() * self.window_len()];
        out.par_chunks_mut(self.window_len())
            .zip(windows.par_iter())
            .for_each(|(out, samples)| self.compute_into(samples.as_ref(), out));
        out
    }

    fn compute_with(&self, samples: &[f32], out: &mut [f32], s: &mut Scratch) {
        let half = N_FFT / 2;
        let samples = &samples[..samples.len().min(N_SAMPLES)];

        // pad_or_trim to N_SAMPLES, then reflect-pad N_FFT / 2 on both sides.
        s.padded.clear();
        s.padded.resize(N_SAMPLES + N_FFT, 0.0);
        s.padded[half..half + samples.len()].copy_from_slice(samples);
        for i in 0..half {
            s.padded[half - 1 - i] = s.padded[half + 1 + i];
            s.padded[half + N_SAMPLES + i] = s.padded[half + N_SAMPLES - 2 - i];
        }

        let padded = std::mem::take(&mut s.padded);
        self.frames_with(&padded, N_FRAMES, out, s);
        s.padded = padded;
        simd::log_compress(out);
    }

    /// `log10(max(mel power, 1e-10))` of `n_frames` frames of an already padded signal (frame
    /// `t` is the [`N_FFT`] samples from `padded[t * HOP_LENGTH]`), before Whisper's floor and
    /// scaling: `[n_mels, n_frames]`, row-major, into `out`.
    pub(crate) fn log10_frames(&self, padded: &[f32], n_frames: usize, out: &mut [f32]) {
        assert!(padded.len() >= (n_frames.max(1) - 1) * HOP_LENGTH + N_FFT || n_frames == 0);
        assert_eq!(out.len(), self.n_mels() * n_frames);
        SCRATCH.with(|scratch| {
            self.frames_with(padded, n_frames, out, &mut scratch.borrow_mut());
        });
        simd::log10_clamped(out);
    }

    /// The value [`log10_frames`](LogMel::log10_frames) gives a frame of silence:
    /// `log10(1e-10)` as computed here.
    pub(crate) fn log10_floor(&self) -> f32 {
        let mut v = [0.0f32];
        simd::log10_clamped(&mut v);
        v[0]
    }

    /// The mel power of `n_frames` frames of `padded` into `out` (`[n_mels, n_frames]`): the
    /// windowing and power loops compiled for AVX-512 where the CPU has it (the same
    /// operations in the same order, no contraction into FMA: the same bits).
    fn frames_with(&self, padded: &[f32], n_frames: usize, out: &mut [f32], s: &mut Scratch) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the running CPU supports AVX-512F, checked just above.
            return unsafe { self.frames_with_avx512(padded, n_frames, out, s) };
        }
        self.frames_with_body(padded, n_frames, out, s)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn frames_with_avx512(
        &self,
        padded: &[f32],
        n_frames: usize,
        out: &mut [f32],
        s: &mut Scratch,
    ) {
        self.frames_with_body(padded, n_frames, out, s)
    }

    #[inline(always)]
    fn frames_with_body(&self, padded: &[f32], n_frames: usize, out: &mut [f32], s: &mut Scratch) {
        s.frame.resize(N_FFT, 0.0);
        s.spectrum.resize(N_FREQS, Complex::default());
        s.fft_scratch
            .resize(self.fft.get_scratch_len(), Complex::default());
        s.power.resize(N_FREQS * FRAME_BLOCK, 0.0);

        // Frames go through the FFT a block at a time; the block's power spectra are stored
        // frequency-major so that the mel projection runs across frames in SIMD lanes and
        // writes the [n_mels, N_FRAMES] output in place.
        for block in (0..n_frames).step_by(FRAME_BLOCK) {
            let frames = FRAME_BLOCK.min(n_frames - block);
            for j in 0..frames {
                let start = (block + j) * HOP_LENGTH;
                let input = &padded[start..start + N_FFT];
                for ((f, x), w) in s.frame.iter_mut().zip(input).zip(&self.window) {
                    *f = *x as f64 * w;
                }
                self.fft
                    .process_with_scratch(&mut s.frame, &mut s.spectrum, &mut s.fft_scratch)
                    .expect("buffers are sized from the plan");
                for (k, c) in s.spectrum.iter().enumerate() {
                    s.power[k * FRAME_BLOCK + j] = (c.re * c.re + c.im * c.im) as f32;
                }
            }
            simd::project(&self.filters, &s.power, &mut out[block..], frames, n_frames);
        }
    }
}

/// The vectorisable loops, compiled three times on x86-64: for the baseline (SSE2), for AVX2
/// and for AVX-512, chosen at run time. All three perform the same operations in the same order
/// (no FMA contraction), so their results are identical.
mod simd {
    use super::{FRAME_BLOCK, MelFilters};

    /// Projects a block of power spectra (`[N_FREQS][FRAME_BLOCK]`, frequency-major) on the
    /// mel bank, writing `frames` values of each mel row of `out` (`[n_mels][N_FRAMES]`).
    pub(super) fn project(
        filters: &MelFilters,
        power: &[f32],
        out: &mut [f32],
        frames: usize,
        stride: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the running CPU supports AVX-512F, checked just above.
            return unsafe { project_avx512(filters, power, out, frames, stride) };
        }
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: the running CPU supports AVX2, checked just above.
            return unsafe { project_avx2(filters, power, out, frames, stride) };
        }
        project_body(filters, power, out, frames, stride)
    }

    /// `log10(max(x, 1e-10))` in place.
    pub(super) fn log10_clamped(out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the running CPU supports AVX-512F, checked just above.
            return unsafe { log10_clamped_avx512(out) };
        }
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: the running CPU supports AVX2, checked just above.
            return unsafe { log10_clamped_avx2(out) };
        }
        log10_clamped_body(out)
    }

    /// `(max(log10(max(x, 1e-10)), max - 8) + 4) / 4` over a whole spectrogram, in place.
    pub(super) fn log_compress(out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the running CPU supports AVX-512F, checked just above.
            return unsafe { log_compress_avx512(out) };
        }
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: the running CPU supports AVX2, checked just above.
            return unsafe { log_compress_avx2(out) };
        }
        log_compress_body(out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn project_avx512(
        filters: &MelFilters,
        power: &[f32],
        out: &mut [f32],
        frames: usize,
        stride: usize,
    ) {
        project_body(filters, power, out, frames, stride)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn log10_clamped_avx512(out: &mut [f32]) {
        log10_clamped_body(out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn log_compress_avx512(out: &mut [f32]) {
        log_compress_body(out)
    }

    #[cfg(target_arch = "x86_64")]
    fn avx2() -> bool {
        std::arch::is_x86_feature_detected!("avx2")
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn project_avx2(
        filters: &MelFilters,
        power: &[f32],
        out: &mut [f32],
        frames: usize,
        stride: usize,
    ) {
        project_body(filters, power, out, frames, stride)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn log10_clamped_avx2(out: &mut [f32]) {
        log10_clamped_body(out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn log_compress_avx2(out: &mut [f32]) {
        log_compress_body(out)
    }

    /// Asserts that the baseline build of each loop gives the bits of the build this CPU
    /// picks, on the mel power `power` (`[n_mels, N_FRAMES]`).
    #[cfg(test)]
    pub(super) fn check_builds(filters: &MelFilters, power: &[f32]) {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        // A block of power spectra, frequency-major, from the values at hand.
        let block: Vec<f32> = power[..super::N_FREQS * FRAME_BLOCK].to_vec();
        let n = filters.n_mels() * FRAME_BLOCK;
        let (mut picked, mut baseline) = (vec![0f32; n], vec![0f32; n]);
        project(filters, &block, &mut picked, FRAME_BLOCK, FRAME_BLOCK);
        project_body(filters, &block, &mut baseline, FRAME_BLOCK, FRAME_BLOCK);
        assert_eq!(bits(&picked), bits(&baseline), "mel projection");
        let (mut picked, mut baseline) = (power.to_vec(), power.to_vec());
        log_compress(&mut picked);
        log_compress_body(&mut baseline);
        assert_eq!(bits(&picked), bits(&baseline), "log compression");
    }

    #[inline(always)]
    fn project_body(
        filters: &MelFilters,
        power: &[f32],
        out: &mut [f32],
        frames: usize,
        stride: usize,
    ) {
        for m in 0..filters.n_mels() {
            let (first, weights) = filters.row(m);
            let mut acc = [0.0f32; FRAME_BLOCK];
            for (k, &w) in weights.iter().enumerate() {
                let power = &power[(first + k) * FRAME_BLOCK..][..FRAME_BLOCK];
                for (a, p) in acc.iter_mut().zip(power) {
                    *a += w * p;
                }
            }
            out[m * stride..][..frames].copy_from_slice(&acc[..frames]);
        }
    }

    #[inline(always)]
    fn log10_clamped_body(out: &mut [f32]) {
        for v in out.iter_mut() {
            *v = fast_log10(if *v > 1e-10 { *v } else { 1e-10 });
        }
    }

    #[inline(always)]
    fn log_compress_body(out: &mut [f32]) {
        const LANES: usize = 16;
        log10_clamped_body(out);
        let mut lanes = [f32::NEG_INFINITY; LANES];
        let mut chunks = out.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (l, &v) in lanes.iter_mut().zip(chunk) {
                *l = if v > *l { v } else { *l };
            }
        }
        let max = chunks
            .remainder()
            .iter()
            .chain(&lanes)
            .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let floor = max - 8.0;
        for v in out.iter_mut() {
            *v = ((if *v > floor { *v } else { floor }) + 4.0) / 4.0;
        }
    }

    /// `log10(x)` for positive normal `x`, to within 2 ulp, in straight-line code that the
    /// compiler vectorises.
    ///
    /// The natural logarithm is Cephes' `logf` (Stephen L. Moshier, Cephes Math Library 2.2):
    /// `x = 2^e * m` with `m` in `[sqrt(1/2), sqrt(2))`, `ln(m)` by its degree-9 minimax
    /// polynomial, `e * ln 2` added in two parts for precision.
    // The constants are Cephes' as published; clippy would truncate digits f32 cannot hold.
    #[allow(clippy::excessive_precision)]
    #[inline(always)]
    pub(super) fn fast_log10(x: f32) -> f32 {
        const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
        const P: [f32; 9] = [
            7.037_683_6e-2,
            -1.151_461_0e-1,
            1.167_699_9e-1,
            -1.242_014_1e-1,
            1.424_932_3e-1,
            -1.666_805_8e-1,
            2.000_071_5e-1,
            -2.499_999_4e-1,
            3.333_333_1e-1,
        ];
        let bits = x.to_bits();
        // Mantissa in [0.5, 1), exponent to match.
        let mut e = ((bits >> 23) & 0xff) as i32 - 126;
        let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
        let small = m < SQRT_HALF;
        e -= small as i32;
        m = if small { m + m - 1.0 } else { m - 1.0 };
        let z = m * m;
        let mut y = P[0];
        for c in &P[1..] {
            y = y * m + c;
        }
        let ef = e as f32;
        let mut y = y * m * z;
        y += ef * -2.121_944_4e-4;
        y += -0.5 * z;
        let ln = m + y + ef * 0.693_359_375;
        ln * std::f32::consts::LOG10_E
    }
}

#[cfg(test)]
mod tests {
    use super::simd::fast_log10;
    use super::*;

    /// The windowing and power loops, the mel projection and the log compression give the
    /// same bits whichever build of them runs (baseline against the one this CPU picks).
    #[test]
    fn every_build_of_the_loops_gives_the_same_bits() {
        let mel = LogMel::new(80);
        let len = (N_FRAMES - 1) * HOP_LENGTH + N_FFT;
        let padded: Vec<f32> = (0..len)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let mut picked = vec![0f32; 80 * N_FRAMES];
        let mut baseline = vec![0f32; 80 * N_FRAMES];
        let mut s = Scratch::default();
        mel.frames_with(&padded, N_FRAMES, &mut picked, &mut s);
        mel.frames_with_body(&padded, N_FRAMES, &mut baseline, &mut s);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&picked), bits(&baseline), "windowing and power");
        simd::check_builds(&mel.filters, &picked);
    }

    #[test]
    fn fast_log10_is_within_two_ulp_of_libm() {
        let mut x = 1e-10f32;
        while x < 1e10 {
            let (ours, libm) = (fast_log10(x), x.log10());
            let ulp = f32::EPSILON * libm.abs().max(f32::MIN_POSITIVE);
            assert!(
                (ours - libm).abs() <= 2.0 * ulp.max(1e-7),
                "log10({x:e}): {ours} vs {libm}"
            );
            x *= 1.000_37;
        }
    }
}
