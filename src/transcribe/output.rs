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

/// How subtitles are cut from words (openai-whisper's subtitle writer options; they need
/// word timestamps).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubtitleOptions {
    /// Underline each word as it is spoken: one cue a word, the whole line shown.
    pub highlight_words: bool,
    /// Characters in a line before it is broken.
    pub max_line_width: Option<usize>,
    /// Lines in a cue (with `max_line_width`; a pause of more than 3 s also starts a cue).
    pub max_line_count: Option<usize>,
    /// Words in a cue (no effect with `max_line_width`).
    pub max_words_per_line: Option<usize>,
}

/// A subtitle cue: start, end, text.
type Cue = (f64, f64, String);

/// A word of a cue, as the writer changes it (stripped, or after a line break).
struct CueWord {
    word: String,
    start: f64,
    end: f64,
}

/// The cues cut from the words of `segments`: openai-whisper's `iterate_subtitles`
/// (whisper/utils.py, release 20250625). A cue keeps to a segment unless both a line width
/// and a line count are given; lengths are in characters.
fn word_cues(segments: &[Segment], options: &SubtitleOptions) -> Vec<Vec<CueWord>> {
    fn words_of(s: &Segment) -> &[super::timing::Word] {
        s.words.as_deref().unwrap_or(&[])
    }
    let preserve_segments = options.max_line_count.is_none() || options.max_line_width.is_none();
    let max_line_width = options.max_line_width.unwrap_or(1000);
    let max_words_per_line = options.max_words_per_line.unwrap_or(1000);
    let mut cues = Vec::new();
    let mut line_len = 0usize;
    let mut line_count = 1usize;
    let mut cue: Vec<CueWord> = Vec::new();
    let mut last = segments
        .iter()
        .flat_map(|s| words_of(s).first())
        .map(|w| w.start)
        .next()
        .or_else(|| segments.first().map(|s| s.start))
        .unwrap_or(0.0);
    for segment in segments {
        let words = words_of(segment);
        let mut chunk_index = 0;
        let mut words_count = max_words_per_line;
        while chunk_index < words.len() {
            let remaining = words.len() - chunk_index;
            if max_words_per_line > remaining {
                words_count = remaining;
            }
            let end = (chunk_index + words_count).min(words.len());
            for (i, w) in words[chunk_index..end].iter().enumerate() {
                let mut word = w.word.clone();
                let len = word.chars().count();
                let long_pause = !preserve_segments && w.start - last > 3.0;
                let has_room = line_len + len <= max_line_width;
                let seg_break = i == 0 && !cue.is_empty() && preserve_segments;
                if line_len > 0 && has_room && !long_pause && !seg_break {
                    line_len += len;
                } else {
                    word = word.trim().to_string();
                    if (!cue.is_empty()
                        && options.max_line_count.is_some()
                        && (long_pause || Some(line_count) >= options.max_line_count))
                        || seg_break
                    {
                        cues.push(std::mem::take(&mut cue));
                        line_count = 1;
                    } else if line_len > 0 {
                        line_count += 1;
                        word = format!("\n{word}");
                    }
                    line_len = word.trim().chars().count();
                }
                cue.push(CueWord {
                    word,
                    start: w.start,
                    end: w.end,
                });
                last = w.start;
            }
            chunk_index += max_words_per_line;
        }
    }
    if !cue.is_empty() {
        cues.push(cue);
    }
    cues
}

/// The cues of a subtitle file, timestamps formatted by `format`: from the words when the
/// segments have them (openai-whisper's `iterate_result`), else a segment a cue.
fn cues(
    transcript: &Transcript,
    options: &SubtitleOptions,
    format: impl Fn(f64) -> String,
) -> Vec<(String, String, String)> {
    let segments = &transcript.segments;
    if segments.first().is_none_or(|s| s.words.is_none()) {
        let plain: Vec<Cue> = segments
            .iter()
            .map(|s| (s.start, s.end, s.text.trim().replace("-->", "->")))
            .collect();
        return plain
            .into_iter()
            .map(|(a, b, t)| (format(a), format(b), t))
            .collect();
    }
    let mut out = Vec::new();
    for cue in word_cues(segments, options) {
        let start = format(cue[0].start);
        let end = format(cue[cue.len() - 1].end);
        let text: String = cue.iter().map(|w| w.word.as_str()).collect();
        if !options.highlight_words {
            out.push((start, end, text));
            continue;
        }
        let mut last = start;
        for (i, this) in cue.iter().enumerate() {
            let (start, end) = (format(this.start), format(this.end));
            if last != start {
                out.push((last, start.clone(), text.clone()));
            }
            let underlined: String = cue
                .iter()
                .enumerate()
                .map(|(j, w)| {
                    if j == i {
                        let rest = w.word.trim_start();
                        let space = &w.word[..w.word.len() - rest.len()];
                        format!("{space}<u>{rest}</u>")
                    } else {
                        w.word.clone()
                    }
                })
                .collect();
            out.push((start, end.clone(), underlined));
            last = end;
        }
    }
    out
}

/// The transcript in `format`; subtitles (srt, vtt) cut from the words as `subtitles` says
/// when the segments have words.
pub fn render(
    transcript: &Transcript,
    format: Format,
    context: &JsonContext<'_>,
    subtitles: &SubtitleOptions,
) -> String {
    let mut out = String::new();
    match format {
        Format::Txt => {
            for s in &transcript.segments {
                out.push_str(s.text.trim());
                out.push('\n');
            }
        }
        Format::Vtt => {
            out.push_str("WEBVTT\n\n");
            for (start, end, text) in
                cues(transcript, subtitles, |t| format_timestamp(t, false, '.'))
            {
                out.push_str(&format!("{start} --> {end}\n{text}\n\n"));
            }
        }
        Format::Srt => {
            let cues = cues(transcript, subtitles, |t| format_timestamp(t, true, ','));
            for (i, (start, end, text)) in cues.into_iter().enumerate() {
                out.push_str(&format!("{}\n{start} --> {end}\n{text}\n\n", i + 1));
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
