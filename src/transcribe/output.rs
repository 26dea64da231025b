//! The transcript's formats, as openai-whisper's writers (whisper/utils.py) write them.

use super::transcriber::{Segment, Transcript};

/// A transcript format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Plain text, a segment per line.
    Txt,
    /// SubRip subtitles.
    Srt,
    /// WebVTT subtitles.
    Vtt,
    /// Tab-separated start and end in milliseconds, and text.
    Tsv,
    /// Everything: segments with tokens and probabilities, language, model, timings.
    Json,
}

impl Format {
    /// Every format, in the order `all` writes them.
    pub const ALL: [Format; 5] = [
        Format::Txt,
        Format::Vtt,
        Format::Srt,
        Format::Tsv,
        Format::Json,
    ];

    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Txt => "txt",
            Format::Srt => "srt",
            Format::Vtt => "vtt",
            Format::Tsv => "tsv",
            Format::Json => "json",
        }
    }

    /// The format of a file extension.
    pub fn from_extension(ext: &str) -> Option<Format> {
        Format::ALL
            .into_iter()
            .find(|f| f.extension().eq_ignore_ascii_case(ext))
    }
}

/// `seconds` as `[HH:]MM:SS.mmm` (OpenAI's `format_timestamp`: milliseconds rounded half to
/// even, hours shown when asked or when there are any).
pub fn format_timestamp(seconds: f64, always_include_hours: bool, decimal_marker: char) -> String {
    let mut ms = (seconds.max(0.0) * 1000.0).round_ties_even() as u64;
    let hours = ms / 3_600_000;
    ms -= hours * 3_600_000;
    let minutes = ms / 60_000;
    ms -= minutes * 60_000;
    let secs = ms / 1000;
    ms -= secs * 1000;
    let hours = if always_include_hours || hours > 0 {
        format!("{hours:02}:")
    } else {
        String::new()
    };
    format!("{hours}{minutes:02}:{secs:02}{decimal_marker}{ms:03}")
}

/// The line printed for a segment as it is decoded: `[00:00.000 --> 00:07.740]  text`.
pub fn segment_line(segment: &Segment) -> String {
    format!(
        "[{} --> {}] {}",
        format_timestamp(segment.start, false, '.'),
        format_timestamp(segment.end, false, '.'),
        segment.text
    )
}

/// What the JSON output says besides the transcript.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JsonContext<'a> {
    /// The input's name.
    pub audio: &'a str,
    /// The model (as given on the command line, and the directory read).
    pub model: &'a str,
    /// The backend the encoder ran on.
    pub backend: &'a str,
}

/// The transcript in `format`.
pub fn render(transcript: &Transcript, format: Format, context: &JsonContext<'_>) -> String {
    let mut out = String::new();
    let subtitle_text = |s: &Segment| s.text.trim().replace("-->", "->");
    match format {
        Format::Txt => {
            for s in &transcript.segments {
                out.push_str(s.text.trim());
                out.push('\n');
            }
        }
        Format::Vtt => {
            out.push_str("WEBVTT\n\n");
            for s in &transcript.segments {
                out.push_str(&format!(
                    "{} --> {}\n{}\n\n",
                    format_timestamp(s.start, false, '.'),
                    format_timestamp(s.end, false, '.'),
                    subtitle_text(s)
                ));
            }
        }
        Format::Srt => {
            for (i, s) in transcript.segments.iter().enumerate() {
                out.push_str(&format!(
                    "{}\n{} --> {}\n{}\n\n",
                    i + 1,
                    format_timestamp(s.start, true, ','),
                    format_timestamp(s.end, true, ','),
                    subtitle_text(s)
                ));
            }
        }
        Format::Tsv => {
            out.push_str("start\tend\ttext\n");
            for s in &transcript.segments {
                out.push_str(&format!(
                    "{}\t{}\t{}\n",
                    (1000.0 * s.start).round_ties_even() as i64,
                    (1000.0 * s.end).round_ties_even() as i64,
                    s.text.trim().replace('\t', " ")
                ));
            }
        }
        Format::Json => {
            #[derive(serde::Serialize)]
            struct Json<'a> {
                text: &'a str,
                segments: &'a [Segment],
                language: &'a str,
                #[serde(skip_serializing_if = "Option::is_none")]
                language_probs: Option<&'a [(String, f64)]>,
                duration: f64,
                #[serde(flatten)]
                context: &'a JsonContext<'a>,
                timings: &'a super::transcriber::Timings,
            }
            let json = Json {
                text: &transcript.text,
                segments: &transcript.segments,
                language: &transcript.language,
                language_probs: transcript.language_probs.as_deref(),
                duration: transcript.duration,
                context,
                timings: &transcript.timings,
            };
            out = serde_json::to_string_pretty(&json).expect("the transcript serialises");
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_follow_openai() {
        assert_eq!(format_timestamp(7.74, false, '.'), "00:07.740");
        assert_eq!(format_timestamp(3725.5, false, '.'), "01:02:05.500");
        assert_eq!(format_timestamp(10.0, true, ','), "00:00:10,000");
        // Python's round() is half to even: 0.0005 s is 0.5 ms, which rounds to 0.
        assert_eq!(format_timestamp(0.0005, false, '.'), "00:00.000");
        assert_eq!(format_timestamp(0.0015, false, '.'), "00:00.002");
    }
}
