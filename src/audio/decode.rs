use std::fs::File;
use std::io::{self, ErrorKind};
use std::path::PathBuf;

use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream, ReadOnlySource};
use symphonia::core::meta::MetadataOptions;

use super::AudioError;
use super::mp4_edit::{Edit, audio_edit};

/// Where audio comes from: a file, standard input, or samples in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A file on disk.
    Path(PathBuf),
    /// Standard input, read once as a stream.
    Stdin,
    /// Mono samples at 16 kHz (Whisper's rate), in -1 to 1, already decoded.
    Samples(Samples),
}

/// Mono 16 kHz samples held in memory, shared (cloning an [`Input`] does not copy them).
#[derive(Debug, Clone)]
pub struct Samples(pub std::sync::Arc<[f32]>);

impl PartialEq for Samples {
    /// The same samples, bit for bit.
    fn eq(&self, other: &Samples) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(other.0.iter())
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

impl Eq for Samples {}

impl Input {
    /// Samples in memory: mono, at 16 kHz.
    pub fn samples(samples: impl Into<std::sync::Arc<[f32]>>) -> Input {
        Input::Samples(Samples(samples.into()))
    }

    /// The name used in messages: the path as given, `<stdin>` or `<samples>`.
    pub fn name(&self) -> String {
        match self {
            Input::Path(path) => path.display().to_string(),
            Input::Stdin => "<stdin>".to_string(),
            Input::Samples(_) => "<samples>".to_string(),
        }
    }
}

/// The most samples a float WAV's 32-bit sizes hold.
const MAX_WAV_SAMPLES: usize = (u32::MAX as usize - 36) / 4;

/// `samples` as a mono 16 kHz IEEE float WAV file, for [`Decoder::open`] (streams read
/// samples directly).
fn float_wav(samples: &[f32]) -> Vec<u8> {
    let data = (samples.len() * 4) as u32;
    let mut wav = Vec::with_capacity(44 + samples.len() * 4);
    wav.extend(b"RIFF");
    wav.extend((36 + data).to_le_bytes());
    wav.extend(b"WAVEfmt ");
    wav.extend(16u32.to_le_bytes());
    wav.extend(3u16.to_le_bytes()); // IEEE float
    wav.extend(1u16.to_le_bytes());
    wav.extend(16000u32.to_le_bytes());
    wav.extend((16000u32 * 4).to_le_bytes());
    wav.extend(4u16.to_le_bytes());
    wav.extend(32u16.to_le_bytes());
    wav.extend(b"data");
    wav.extend(data.to_le_bytes());
    for s in samples {
        wav.extend(s.to_le_bytes());
    }
    wav
}

/// What the container says about the audio track.
#[derive(Debug, Clone)]
pub struct AudioInfo {
    /// The input's name, as used in messages.
    pub name: String,
    /// The codec's short name (`flac`, `mp3`, `pcm_s16le`, ...).
    pub codec: String,
    /// Sample rate of the stream, in Hz.
    pub sample_rate: u32,
    /// Number of channels, mixed to mono by averaging.
    pub channels: usize,
    /// Frames (samples per channel) announced by the header, when it announces them.
    pub frames: Option<u64>,
}

/// A streaming decoder that yields mono `f32` samples at the stream's own rate.
///
/// Integer PCM is scaled the way ffmpeg scales it (`s16 / 32768`, `s24 / 2^23`, `s32 / 2^31`),
/// channels are averaged. Memory use is one packet, whatever the file's length.
pub struct Decoder {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    info: AudioInfo,
    planes: Vec<Vec<f32>>,
    edit: Option<Edit>,
    /// Frames the decoder produced, before the edit is applied.
    raw_frames: u64,
    decoded_frames: u64,
    packets: usize,
    skipped_packets: usize,
    finished: bool,
}

/// Packets a stream may lose to decode errors before it counts as damaged, as a fraction of
/// those seen. mp3 and aac files in the wild often carry a few bad frames that every player
/// skips; a file where most packets fail is not audio anymore.
const MAX_SKIPPED_SHARE: f64 = 0.05;

impl Decoder {
    /// Opens `input` and finds its first audio track.
    pub fn open(input: &Input) -> Result<Decoder, AudioError> {
        let name = input.name();
        let mut hint = Hint::new();
        let source: Box<dyn MediaSource> = match input {
            Input::Path(path) => {
                let file = File::open(path).map_err(|err| AudioError::Io {
                    name: name.clone(),
                    err,
                })?;
                let len = file
                    .metadata()
                    .map_err(|err| AudioError::Io {
                        name: name.clone(),
                        err,
                    })?
                    .len();
                if len == 0 {
                    return Err(AudioError::EmptyFile { name });
                }
                if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
                    hint.with_extension(ext);
                }
                Box::new(file)
            }
            Input::Stdin => Box::new(ReadOnlySource::new(io::stdin())),
            Input::Samples(samples) => {
                // Samples need no decoding; as a stream source they are a 32-bit float WAV,
                // whose sizes are 32-bit.
                if samples.0.len() > MAX_WAV_SAMPLES {
                    return Err(AudioError::Io {
                        name,
                        err: io::Error::new(
                            ErrorKind::InvalidInput,
                            format!(
                                "{} samples are more than {MAX_WAV_SAMPLES} (18.6 hours) held \
                                 in memory: pass a file instead",
                                samples.0.len()
                            ),
                        ),
                    });
                }
                Box::new(io::Cursor::new(float_wav(&samples.0)))
            }
        };
        let mut decoder = Decoder::from_source(name, source, &hint)?;
        if let Input::Path(path) = input
            && decoder.format.format_info().short_name == "isomp4"
        {
            decoder.edit = audio_edit(path, decoder.info.sample_rate);
            if let Some(edit) = decoder.edit {
                decoder.info.frames = Some(edit.frames);
            }
        }
        Ok(decoder)
    }

    /// Opens an already opened media source; `name` is used in messages.
    pub fn from_source(
        name: String,
        source: Box<dyn MediaSource>,
        hint: &Hint,
    ) -> Result<Decoder, AudioError> {
        let stream = MediaSourceStream::new(source, Default::default());
        let format = symphonia::default::get_probe()
            .probe(
                hint,
                stream,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
            .map_err(|err| match err {
                SymphoniaError::Unsupported(what) if what.starts_with("core (probe)") => {
                    AudioError::UnknownFormat { name: name.clone() }
                }
                SymphoniaError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => {
                    AudioError::Damaged {
                        name: name.clone(),
                        detail: "the file ends before its headers do".to_string(),
                    }
                }
                SymphoniaError::IoError(err) => AudioError::Io {
                    name: name.clone(),
                    err,
                },
                other => AudioError::Damaged {
                    name: name.clone(),
                    detail: other.to_string(),
                },
            })?;
        let track = format
            .default_track(TrackType::Audio)
            .ok_or_else(|| AudioError::NoAudioTrack { name: name.clone() })?;
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .ok_or_else(|| AudioError::NoAudioTrack { name: name.clone() })?
            .clone();
        let track_id = track.id;
        let frames = track.num_frames;
        let registry = symphonia::default::get_codecs();
        let Some(registered) = registry.get_audio_decoder(params.codec) else {
            return Err(AudioError::UnsupportedCodec {
                name,
                codec: codec_name(params.codec),
            });
        };
        let codec = registered.codec.info.short_name.to_string();
        let sample_rate =
            params
                .sample_rate
                .filter(|&r| r > 0)
                .ok_or_else(|| AudioError::MissingParameter {
                    name: name.clone(),
                    what: "sample rate",
                })?;
        let decoder = registry
            .make_audio_decoder(&params, &AudioDecoderOptions::default())
            .map_err(|err| AudioError::UnsupportedCodec {
                name: name.clone(),
                codec: format!("{codec} ({err})"),
            })?;
        // Some containers only know the channel layout once the first packet is decoded.
        let channels = params.channels.as_ref().map(|c| c.count()).unwrap_or(0);
        Ok(Decoder {
            format,
            decoder,
            track_id,
            info: AudioInfo {
                name,
                codec,
                sample_rate,
                channels,
                frames,
            },
            planes: Vec::new(),
            edit: None,
            raw_frames: 0,
            decoded_frames: 0,
            packets: 0,
            skipped_packets: 0,
            finished: false,
        })
    }

    /// What the container says about the track.
    pub fn info(&self) -> &AudioInfo {
        &self.info
    }

    /// Frames decoded so far.
    pub fn decoded_frames(&self) -> u64 {
        self.decoded_frames
    }

    /// Packets skipped because the decoder reported them damaged.
    pub fn skipped_packets(&self) -> usize {
        self.skipped_packets
    }

    fn seconds(&self, frames: u64) -> f64 {
        frames as f64 / self.info.sample_rate as f64
    }

    fn corrupt(&self, detail: String) -> AudioError {
        AudioError::Corrupt {
            name: self.info.name.clone(),
            at: self.seconds(self.decoded_frames),
            detail,
        }
    }

    /// Decodes the next packet of the track and appends its samples, mixed to mono, to `out`.
    ///
    /// Returns `Ok(false)` once the stream has ended (and was complete), `Ok(true)` otherwise;
    /// a packet may legitimately yield no samples.
    pub fn decode_next(&mut self, out: &mut Vec<f32>) -> Result<bool, AudioError> {
        if self.finished {
            return Ok(false);
        }
        let packet = match self.format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => {
                self.finish()?;
                return Ok(false);
            }
            Err(SymphoniaError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                return Err(self.truncated());
            }
            Err(SymphoniaError::IoError(err)) => {
                return Err(AudioError::Io {
                    name: self.info.name.clone(),
                    err,
                });
            }
            Err(SymphoniaError::ResetRequired) => {
                return Err(self.corrupt(
                    "the stream changes its parameters mid-file (a chained stream); \
                     split it into separate files first"
                        .to_string(),
                ));
            }
            Err(err) => return Err(self.corrupt(err.to_string())),
        };
        if packet.track_id != self.track_id {
            return Ok(true);
        }
        self.packets += 1;
        let buffer = match self.decoder.decode(&packet) {
            Ok(buffer) => buffer,
            Err(SymphoniaError::DecodeError(_)) => {
                self.skipped_packets += 1;
                return Ok(true);
            }
            Err(SymphoniaError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                return Err(self.truncated());
            }
            Err(err) => return Err(self.corrupt(err.to_string())),
        };
        let frames = buffer.frames();
        if frames == 0 {
            return Ok(true);
        }
        let channels = buffer.spec().channels().count();
        if channels == 0 {
            return Err(AudioError::MissingParameter {
                name: self.info.name.clone(),
                what: "channel layout",
            });
        }
        self.info.channels = channels;
        buffer.copy_to_vecs_planar::<f32>(&mut self.planes);
        // The span of this packet's frames that the edit list keeps (all of them without one).
        let first = self.raw_frames;
        self.raw_frames += frames as u64;
        let (keep_from, keep_to) = match self.edit {
            Some(edit) => (edit.skip, edit.skip + edit.frames),
            None => (0, u64::MAX),
        };
        let lo = keep_from.clamp(first, self.raw_frames) - first;
        let hi = keep_to.clamp(first, self.raw_frames) - first;
        let range = lo as usize..hi as usize;
        let start = out.len();
        out.reserve(range.len());
        match self.planes.as_slice() {
            [mono] => out.extend_from_slice(&mono[range]),
            [left, right] => out.extend(
                left[range.clone()]
                    .iter()
                    .zip(&right[range])
                    .map(|(l, r)| (l + r) * 0.5),
            ),
            planes => {
                let scale = 1.0 / planes.len() as f32;
                out.extend(range.map(|i| planes.iter().map(|p| p[i]).sum::<f32>() * scale));
            }
        }
        let frames = out.len() - start;
        if let Some(bad) = out[start..].iter().position(|s| !s.is_finite()) {
            let what = if out[start + bad].is_nan() {
                "NaN"
            } else {
                "infinity"
            };
            return Err(AudioError::NonFinite {
                name: self.info.name.clone(),
                at: self.seconds(self.decoded_frames + bad as u64),
                what,
            });
        }
        self.decoded_frames += frames as u64;
        Ok(true)
    }

    fn truncated(&self) -> AudioError {
        match self.info.frames {
            Some(expected) => AudioError::Truncated {
                name: self.info.name.clone(),
                expected: self.seconds(expected),
                decoded: self.seconds(self.decoded_frames),
            },
            None => self.corrupt("the stream ends in the middle of a packet".to_string()),
        }
    }

    /// Checks, at the end of the stream, that it was whole.
    fn finish(&mut self) -> Result<(), AudioError> {
        self.finished = true;
        if self.decoded_frames == 0 {
            return Err(if self.skipped_packets > 0 {
                self.corrupt(format!(
                    "all {} packets failed to decode",
                    self.skipped_packets
                ))
            } else {
                AudioError::NoSamples {
                    name: self.info.name.clone(),
                }
            });
        }
        if self.skipped_packets as f64 > MAX_SKIPPED_SHARE * self.packets as f64 {
            return Err(self.corrupt(format!(
                "{} of {} packets failed to decode",
                self.skipped_packets, self.packets
            )));
        }
        if let Some(expected) = self.info.frames {
            // A header's count is exact for wav and flac, an estimate for some mp3 and aac:
            // allow a tenth of a second and a packet of slack before calling it truncated.
            let slack = (self.info.sample_rate as u64 / 10).max(8192);
            if self.decoded_frames + slack < expected && self.skipped_packets == 0 {
                return Err(self.truncated());
            }
        }
        Ok(())
    }
}

fn codec_name(id: symphonia::core::codecs::audio::AudioCodecId) -> String {
    use symphonia::core::codecs::audio::well_known::*;
    let known = [
        (CODEC_ID_OPUS, "Opus"),
        (CODEC_ID_SPEEX, "Speex"),
        (CODEC_ID_WMA, "WMA"),
        (CODEC_ID_AC3, "AC-3"),
        (CODEC_ID_EAC3, "E-AC-3"),
        (CODEC_ID_DCA, "DTS"),
        (CODEC_ID_ATRAC3, "ATRAC3"),
        (CODEC_ID_MUSEPACK, "Musepack"),
    ];
    known
        .iter()
        .find(|(known, _)| *known == id)
        .map(|(_, name)| name.to_string())
        .unwrap_or_else(|| format!("unknown ({id})"))
}
