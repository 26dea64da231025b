"""Makes the reference spectrogram of tests/transcribe.rs: openai-whisper's own
`log_mel_spectrogram(audio, 80, padding=N_SAMPLES)`, as `transcribe()` computes it over a whole
input (its floor at max - 8 taken over the whole file), on tests/data/reference/transcribe/
news_en.flac (61 s, with an 8 s digital silence), read by
`whisper.load_audio` (ffmpeg: s16 / 32768, the FLAC's samples as they are).

  python3 tests/data/transcribe/make.py   # from the repository root, with openai-whisper
                                          # 20250625 and torch 2.15 (pip install openai-whisper)

Writes, next to this script:
  news_en.mel80_frames.npy    the frame indices kept (int64): every 37th frame, the first 210,
                              the 400 around the end of the audio, and frames 2990..3010
  news_en.mel80_values.npy    the spectrogram at those frames, [frames, 80] float32
"""

import sys
from pathlib import Path

import numpy as np
import torch
from whisper.audio import N_SAMPLES, load_audio, log_mel_spectrogram

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parents[1] / "reference"


def main():
    # ffmpeg decodes the FLAC's 16 kHz 16-bit samples as they are: s16 / 32768.
    audio = load_audio(str(REFERENCE / "transcribe" / "news_en.flac"))
    mel = log_mel_spectrogram(torch.from_numpy(audio), 80, padding=N_SAMPLES).numpy()
    content = mel.shape[-1] - 3000
    frames = set(range(0, content, 37)) | set(range(210)) | set(range(2990, 3010))
    frames |= set(range(content - 200, content))
    frames = np.array(sorted(f for f in frames if f < content), dtype=np.int64)
    np.save(HERE / "news_en.mel80_frames.npy", frames)
    np.save(HERE / "news_en.mel80_values.npy", np.ascontiguousarray(mel[:, frames].T))
    print(f"{len(frames)} of {content} frames, max {mel.max()}")


if __name__ == "__main__":
    sys.exit(main())
