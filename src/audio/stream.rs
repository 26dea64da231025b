use super::{AudioError, AudioInfo, Decoder, Input, N_SAMPLES, SAMPLE_RATE, StreamResampler};

/// One 30 s window of 16 kHz mono audio, as the encoder sees it.
#[derive(Debug, Clone)]
pub struct Window {
    /// Position of the window in the stream, from 0.
    pub index: usize,
    /// The window's samples: [`N_SAMPLES`] of them, except for the last window of a stream,
    /// which holds what is left (the log-mel step pads it with zeros, as `pad_or_trim` does).
    pub samples: Vec<f32>,
}

impl Window {
    /// Start of the window in the stream, in seconds.
    pub fn start_seconds(&self) -> f64 {
        (self.index * N_SAMPLES) as f64 / SAMPLE_RATE as f64
    }

    /// Length of the real audio in the window, in seconds.
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / SAMPLE_RATE as f64
    }
}

/// Decodes, mixes and resamples an input as a stream of 30 s windows at 16 kHz.
///
/// Memory stays bounded by one window plus one decoded packet, whatever the input's length:
/// a window is produced on demand by decoding just enough of the input.
pub struct AudioStream {
    decoder: Decoder,
    resampler: StreamResampler,
    decoded: Vec<f32>,
    ready: Vec<f32>,
    next_index: usize,
    samples_out: u64,
    ended: bool,
}

impl AudioStream {
    /// Opens `input` for streaming.
    pub fn open(input: &Input) -> Result<AudioStream, AudioError> {
        AudioStream::new(Decoder::open(input)?)
    }

    /// Streams the audio of an opened decoder.
    pub fn new(decoder: Decoder) -> Result<AudioStream, AudioError> {
        let info = decoder.info();
        let resampler =
            StreamResampler::new(info.sample_rate).map_err(|err| AudioError::Resample {
                name: info.name.clone(),
                rate: info.sample_rate,
                detail: err.to_string(),
            })?;
        Ok(AudioStream {
            decoder,
            resampler,
            decoded: Vec::new(),
            ready: Vec::with_capacity(N_SAMPLES),
            next_index: 0,
            samples_out: 0,
            ended: false,
        })
    }

    /// What the container says about the track; `channels` is exact once decoding started.
    pub fn info(&self) -> &AudioInfo {
        self.decoder.info()
    }

    /// The decoder, for its counters.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// Seconds of 16 kHz audio produced so far.
    pub fn seconds(&self) -> f64 {
        self.samples_out as f64 / SAMPLE_RATE as f64
    }

    /// The next window, or `None` once the stream is exhausted.
    ///
    /// An input that decodes to no samples at all is an error ([`AudioError::NoSamples`]),
    /// never an empty sequence of windows.
    pub fn next_window(&mut self) -> Result<Option<Window>, AudioError> {
        while !self.ended && self.ready.len() < N_SAMPLES {
            self.decoded.clear();
            if self.decoder.decode_next(&mut self.decoded)? {
                self.resampler.push(&self.decoded, &mut self.ready);
            } else {
                self.resampler.finish(&mut self.ready);
                self.ended = true;
            }
        }
        if self.ready.is_empty() {
            return Ok(None);
        }
        let take = self.ready.len().min(N_SAMPLES);
        let rest = self.ready.split_off(take);
        let samples = std::mem::replace(&mut self.ready, rest);
        self.ready
            .reserve(N_SAMPLES.saturating_sub(self.ready.len()));
        self.samples_out += samples.len() as u64;
        let window = Window {
            index: self.next_index,
            samples,
        };
        self.next_index += 1;
        Ok(Some(window))
    }
}

impl Iterator for AudioStream {
    type Item = Result<Window, AudioError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_window().transpose()
    }
}

/// Decodes a whole input to 16 kHz mono samples in memory.
///
/// Meant for short clips and tests; long inputs should be streamed with [`AudioStream`].
pub fn load_audio(input: &Input) -> Result<(Vec<f32>, AudioInfo), AudioError> {
    let mut stream = AudioStream::open(input)?;
    let mut samples = Vec::new();
    while let Some(window) = stream.next_window()? {
        samples.extend_from_slice(&window.samples);
    }
    Ok((samples, stream.info().clone()))
}
