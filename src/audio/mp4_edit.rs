//! The edit list of an MP4 (m4a) audio track, which symphonia's demuxer does not apply.
//!
//! AAC encoders start a stream with priming samples (1024 for ffmpeg's, 2112 for Apple's) and
//! pad its end to a whole frame; the track's edit list (`moov/trak/edts/elst`, ISO/IEC 14496-12
//! 8.6.6) says which span of the decoded samples is the audio. ffmpeg, and so
//! `whisper.load_audio`, honours it; so must we, or every timestamp is late by the priming.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The span of decoded frames that is the audio, in frames at the track's sample rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Edit {
    /// Frames to drop at the start.
    pub skip: u64,
    /// Frames to keep after that.
    pub frames: u64,
}

/// Reads the edit list of the first audio track of the MP4 file at `path`, in frames at
/// `sample_rate`. `None` when the file is not an MP4, or its audio track has no usable edit.
pub(crate) fn audio_edit(path: &Path, sample_rate: u32) -> Option<Edit> {
    let mut file = File::open(path).ok()?;
    let moov = find_top_level(&mut file, b"moov")?;
    let movie_timescale = full_box_timescale(child(&moov, b"mvhd")?)?;
    for trak in children(&moov).filter(|(kind, _)| kind == b"trak") {
        let mdia = child(trak.1, b"mdia")?;
        let handler = child(mdia, b"hdlr")?;
        if handler.get(8..12)? != b"soun" {
            continue;
        }
        let media_timescale = full_box_timescale(child(mdia, b"mdhd")?)?;
        let elst = child(child(trak.1, b"edts")?, b"elst")?;
        let (duration, media_time) = first_media_edit(elst)?;
        let scale = |v: u64, from: u32| (v as u128 * sample_rate as u128 / from as u128) as u64;
        return Some(Edit {
            skip: scale(media_time, media_timescale),
            frames: scale(duration, movie_timescale),
        });
    }
    None
}

/// Reads the body of the first top-level box of `kind`, walking box headers only.
fn find_top_level(file: &mut File, kind: &[u8; 4]) -> Option<Vec<u8>> {
    let len = file.metadata().ok()?.len();
    let mut pos = 0u64;
    while pos + 8 <= len {
        file.seek(SeekFrom::Start(pos)).ok()?;
        let mut header = [0u8; 16];
        file.read_exact(&mut header[..8]).ok()?;
        let mut size = u32::from_be_bytes(header[..4].try_into().ok()?) as u64;
        let mut header_len = 8;
        if size == 1 {
            file.read_exact(&mut header[8..16]).ok()?;
            size = u64::from_be_bytes(header[8..16].try_into().ok()?);
            header_len = 16;
        } else if size == 0 {
            size = len - pos;
        }
        if size < header_len || pos + size > len {
            return None;
        }
        if &header[4..8] == kind {
            // A moov box is kilobytes to a few megabytes; refuse anything absurd.
            if size > 256 << 20 {
                return None;
            }
            let mut body = vec![0u8; (size - header_len) as usize];
            file.read_exact(&mut body).ok()?;
            return Some(body);
        }
        pos += size;
    }
    None
}

/// The child boxes of a container body: (kind, body).
fn children(body: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut rest = body;
    std::iter::from_fn(move || {
        if rest.len() < 8 {
            return None;
        }
        let size = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
        let kind: [u8; 4] = rest[4..8].try_into().ok()?;
        let (header, size) = match size {
            0 => (8, rest.len()),
            1 => {
                let large = u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?) as usize;
                (16, large)
            }
            n => (8, n),
        };
        if size < header || size > rest.len() {
            return None;
        }
        let child = &rest[header..size];
        rest = &rest[size..];
        Some((kind, child))
    })
}

fn child<'a>(body: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(body).find(|(k, _)| k == kind).map(|(_, b)| b)
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The timescale of an `mvhd` or `mdhd` box (they share the layout up to it).
fn full_box_timescale(body: &[u8]) -> Option<u32> {
    let at = if *body.first()? == 1 { 20 } else { 12 };
    be_u32(body, at).filter(|&t| t > 0)
}

/// (segment duration in movie timescale, media time in media timescale) of the first edit that
/// maps media (an empty edit, media time -1, only delays presentation).
fn first_media_edit(elst: &[u8]) -> Option<(u64, u64)> {
    let version = *elst.first()?;
    let count = be_u32(elst, 4)? as usize;
    let entry_len = if version == 1 { 20 } else { 12 };
    (0..count).find_map(|i| {
        let at = 8 + i * entry_len;
        let (duration, media_time) = if version == 1 {
            (be_u64(elst, at)?, be_u64(elst, at + 8)? as i64)
        } else {
            (
                be_u32(elst, at)? as u64,
                be_u32(elst, at + 4)? as i32 as i64,
            )
        };
        (media_time >= 0).then_some((duration, media_time as u64))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_edit_of_an_ffmpeg_m4a() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/speech-22k05-stereo.m4a");
        // ffmpeg's AAC encoder: 1024 priming frames, then exactly the 3 s that were encoded.
        assert_eq!(
            audio_edit(&path, 22_050),
            Some(Edit {
                skip: 1024,
                frames: 66_150
            })
        );
    }

    #[test]
    fn other_files_have_no_edit() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/speech-48k-mono.ogg");
        assert_eq!(audio_edit(&path, 48_000), None);
        assert_eq!(audio_edit(Path::new("/nonexistent"), 48_000), None);
    }
}
