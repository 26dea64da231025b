use super::{N_FFT, N_FREQS, SAMPLE_RATE};

/// A mel filter bank in sparse form: for each mel bin, the first FFT bin it covers and the
/// weights of the consecutive bins it covers.
///
/// The values are those of `librosa.filters.mel(sr=16000, n_fft=400, n_mels=N)` with librosa's
/// defaults (Slaney's mel scale, `norm="slaney"` area normalisation, `fmin=0`, `fmax=sr/2`),
/// computed in `f64` and rounded to `f32` as librosa does; OpenAI ships exactly these in
/// `whisper/assets/mel_filters.npz`.
#[derive(Debug, Clone)]
pub struct MelFilters {
    rows: Vec<(usize, Vec<f32>)>,
}

/// Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above
/// (27 mels per factor 6.4), as in librosa's `hz_to_mel(htk=False)`.
const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(hz: f64) -> f64 {
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / log_step()
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (log_step() * (mel - MIN_LOG_MEL)).exp()
    } else {
        F_SP * mel
    }
}

impl MelFilters {
    /// The Slaney filter bank with `n_mels` bins over 0..8 kHz for Whisper's 400-point FFT.
    pub fn new(n_mels: usize) -> MelFilters {
        let fmax = SAMPLE_RATE as f64 / 2.0;
        let (mel_min, mel_max) = (hz_to_mel(0.0), hz_to_mel(fmax));
        let mel_f: Vec<f64> = (0..n_mels + 2)
            .map(|i| mel_to_hz(mel_min + (mel_max - mel_min) * i as f64 / (n_mels + 1) as f64))
            .collect();
        let fft_freq = |k: usize| k as f64 * SAMPLE_RATE as f64 / N_FFT as f64;
        let rows = (0..n_mels)
            .map(|m| {
                let (lo, centre, hi) = (mel_f[m], mel_f[m + 1], mel_f[m + 2]);
                let enorm = 2.0 / (hi - lo);
                let weights: Vec<f32> = (0..N_FREQS)
                    .map(|k| {
                        let f = fft_freq(k);
                        let lower = (f - lo) / (centre - lo);
                        let upper = (hi - f) / (hi - centre);
                        (lower.min(upper).max(0.0) * enorm) as f32
                    })
                    .collect();
                let first = weights.iter().position(|&w| w != 0.0);
                match first {
                    Some(first) => {
                        let last = weights.iter().rposition(|&w| w != 0.0).unwrap_or(first);
                        (first, weights[first..=last].to_vec())
                    }
                    None => (0, Vec::new()),
                }
            })
            .collect();
        MelFilters { rows }
    }

    /// Number of mel bins.
    pub fn n_mels(&self) -> usize {
        self.rows.len()
    }

    /// The non-zero span of mel bin `m`: its first FFT bin and its weights.
    pub fn row(&self, m: usize) -> (usize, &[f32]) {
        let (start, weights) = &self.rows[m];
        (*start, weights)
    }

    /// The dense `[n_mels, 201]` matrix, row-major, as stored in OpenAI's `mel_filters.npz`.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut dense = vec![0.0; self.n_mels() * N_FREQS];
        for (m, (start, weights)) in self.rows.iter().enumerate() {
            dense[m * N_FREQS + start..][..weights.len()].copy_from_slice(weights);
        }
        dense
    }

    /// Applies the bank to one power spectrum of [`N_FREQS`] bins, writing `n_mels` values.
    #[inline]
    pub fn apply(&self, power: &[f32], out: &mut [f32]) {
        for ((start, weights), out) in self.rows.iter().zip(out) {
            *out = weights
                .iter()
                .zip(&power[*start..])
                .map(|(w, p)| w * p)
                .sum();
        }
    }
}
