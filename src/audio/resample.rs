use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler, WindowFunction};

use super::SAMPLE_RATE;

/// Input frames per resampler call: about 0.1 s.
const CHUNK_SECONDS: f64 = 0.1;

/// Input frames per resampler call for `rate`: about [`CHUNK_SECONDS`], as an even multiple of
/// the rate pair's smallest block (`rate / gcd(rate, 16000)`). rubato's FFT resampler then
/// works on FFT blocks of even length on both sides; with an odd input block its output lags
/// by half an input sample more than the delay it reports (0.36 output samples at 22.05 kHz).
fn chunk_frames(rate: u32) -> usize {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let block = 2 * (rate as u64 / gcd(rate as u64, SAMPLE_RATE as u64)) as usize;
    let blocks = ((rate as f64 * CHUNK_SECONDS) / block as f64)
        .round()
        .max(1.0) as usize;
    blocks * block
}

/// A streaming mono resampler from any rate to [`SAMPLE_RATE`].
///
/// It wraps rubato's synchronous FFT resampler (a fixed rational ratio, BlackmanHarris2
/// anti-aliasing window, one FFT block per chunk for the sharpest filter rubato offers). The
/// resampler's start-up delay is removed, so output sample `i` is aligned with input time
/// `i / 16000` s, and [`finish`](StreamResampler::finish) flushes the tail so that the output
/// holds exactly `round(n_in * 16000 / rate)` samples, as ffmpeg's resampler produces.
/// At 16 kHz input the samples pass through untouched.
pub struct StreamResampler {
    inner: Option<Fft<f32>>,
    rate: u32,
    pending: Vec<f32>,
    scratch: Vec<f32>,
    to_skip: usize,
    consumed: u64,
    produced: u64,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl StreamResampler {
    /// A resampler from `rate` Hz to 16 kHz.
    pub fn new(rate: u32) -> Result<StreamResampler, rubato::ResamplerConstructionError> {
        let inner = if rate == SAMPLE_RATE {
            None
        } else {
            Some(Fft::<f32>::new_custom(
                rate as usize,
                SAMPLE_RATE as usize,
                chunk_frames(rate),
                1,
                1,
                WindowFunction::BlackmanHarris2,
                FixedSync::Input,
            )?)
        };
        let to_skip = inner.as_ref().map(|r| r.output_delay()).unwrap_or(0);
        let scratch = vec![0.0; inner.as_ref().map(|r| r.output_frames_max()).unwrap_or(0)];
        Ok(StreamResampler {
            inner,
            rate,
            pending: Vec::new(),
            scratch,
            to_skip,
            consumed: 0,
            produced: 0,
        })
    }

    /// The input rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Resamples `input` and appends the 16 kHz samples that are ready to `out`.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.consumed += input.len() as u64;
        if self.inner.is_none() {
            out.extend_from_slice(input);
            self.produced += input.len() as u64;
            return;
        }
        self.pending.extend_from_slice(input);
        self.drain(out);
    }

    fn drain(&mut self, out: &mut Vec<f32>) {
        let Some(inner) = self.inner.as_mut() else {
            return;
        };
        let mut pos = 0;
        while self.pending.len() - pos >= inner.input_frames_next() {
            let n_in = inner.input_frames_next();
            let n_out_max = inner.output_frames_next();
            let input = InterleavedSlice::new(&self.pending[pos..pos + n_in], 1, n_in)
                .expect("slice length equals frames");
            let output = &mut self.scratch[..n_out_max];
            let mut output = InterleavedSlice::new_mut(output, 1, n_out_max)
                .expect("slice length equals frames");
            let (used, made) = inner
                .process_into_buffer(&input, &mut output, None)
                .expect("buffers are sized from the resampler's own figures");
            pos += used;
            let skip = self.to_skip.min(made);
            self.to_skip -= skip;
            out.extend_from_slice(&self.scratch[skip..made]);
            self.produced += (made - skip) as u64;
        }
        self.pending.drain(..pos);
    }

    /// Number of output samples a stream of `consumed` input samples resamples to.
    fn expected_output(&self) -> u64 {
        let rate = self.rate as u128;
        ((self.consumed as u128 * SAMPLE_RATE as u128 + rate / 2) / rate) as u64
    }

    /// Flushes the filter's tail: after this, `out` has received exactly
    /// `round(n_in * 16000 / rate)` samples in all. The resampler is then reset for a new
    /// stream.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        let expected = self.expected_output();
        if let Some(chunk) = self.inner.as_ref().map(|r| r.input_frames_next()) {
            // Each chunk of zeros pushes a chunk's worth of the delayed signal out.
            while self.produced < expected {
                self.pending.resize(self.pending.len() + chunk, 0.0);
                self.drain(out);
            }
            let excess = (self.produced - expected) as usize;
            out.truncate(out.len() - excess);
        }
        if let Some(inner) = self.inner.as_mut() {
            inner.reset();
            self.to_skip = inner.output_delay();
        }
        self.pending.clear();
        self.consumed = 0;
        self.produced = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn sine(rate: u32, freq: f64, amplitude: f64, seconds: f64) -> Vec<f32> {
        let n = (rate as f64 * seconds) as usize;
        (0..n)
            .map(|i| (amplitude * (2.0 * PI * freq * i as f64 / rate as f64).sin()) as f32)
            .collect()
    }

    fn resample(rate: u32, input: &[f32]) -> Vec<f32> {
        let mut r = StreamResampler::new(rate).unwrap();
        let mut out = Vec::new();
        r.push(input, &mut out);
        r.finish(&mut out);
        out
    }

    /// RMS of `x` over its middle, away from the edges where the filter sees the signal start.
    fn middle_rms(x: &[f32]) -> f64 {
        let mid = &x[x.len() / 4..3 * x.len() / 4];
        (mid.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / mid.len() as f64).sqrt()
    }

    #[test]
    fn a_sine_keeps_its_frequency_amplitude_and_phase() {
        for rate in [
            8_000, 11_025, 22_050, 32_000, 44_056, 44_100, 48_000, 96_000,
        ] {
            for freq in [440.0, 1_000.0, 3_000.0, 7_000.0] {
                if freq > 0.45 * rate as f64 {
                    continue;
                }
                let out = resample(rate, &sine(rate, freq, 0.5, 2.0));
                let ideal = sine(SAMPLE_RATE, freq, 0.5, 2.0);
                assert_eq!(out.len(), ideal.len(), "{rate} Hz");
                let residual: Vec<f32> = out.iter().zip(&ideal).map(|(a, b)| a - b).collect();
                // Below 7 kHz the filter's passband is flat: what is left of the difference to
                // the ideal 16 kHz sine is below -60 dB of the signal.
                let ratio = middle_rms(&residual) / middle_rms(&ideal);
                assert!(
                    ratio < 1e-3,
                    "{freq} Hz at {rate} Hz: residual {ratio:e} of the signal"
                );
            }
        }
    }

    #[test]
    fn nothing_above_8_khz_aliases_into_the_output() {
        for rate in [22_050, 44_100, 48_000, 96_000] {
            for freq in [8_500.0, 10_000.0, 12_000.0] {
                if freq >= rate as f64 / 2.0 {
                    continue;
                }
                let out = resample(rate, &sine(rate, freq, 0.5, 2.0));
                let ratio = middle_rms(&out) / (0.5 / 2f64.sqrt());
                // A 12 kHz tone would alias to 4 kHz at full level without a filter.
                assert!(
                    ratio < 1e-4,
                    "{freq} Hz at {rate} Hz leaks {ratio:e} (-80 dB allowed)"
                );
            }
        }
    }

    #[test]
    fn output_length_is_the_rounded_ratio() {
        for (rate, n) in [
            (44_100, 88_217),
            (22_050, 1),
            (48_000, 47_999),
            (11_025, 12_345),
        ] {
            let out = resample(rate, &vec![0.1; n]);
            let expected = (n as f64 * SAMPLE_RATE as f64 / rate as f64).round() as usize;
            assert_eq!(out.len(), expected, "{n} samples at {rate} Hz");
        }
        assert_eq!(resample(16_000, &[0.25; 1234]), vec![0.25; 1234]);
    }

    #[test]
    fn streaming_in_odd_pieces_gives_the_same_samples() {
        let input = sine(44_100, 1_234.5, 0.3, 1.5);
        let whole = resample(44_100, &input);
        let mut r = StreamResampler::new(44_100).unwrap();
        let mut pieces = Vec::new();
        let mut rest = &input[..];
        for size in [1, 7, 4410, 333, 10_000, 2].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (head, tail) = rest.split_at((*size).min(rest.len()));
            r.push(head, &mut pieces);
            rest = tail;
        }
        r.finish(&mut pieces);
        assert_eq!(pieces, whole);
        // After finish, the resampler starts a new stream from a clean state.
        let mut again = Vec::new();
        r.push(&input, &mut again);
        r.finish(&mut again);
        assert_eq!(again, whole);
    }
}
