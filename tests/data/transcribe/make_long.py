"""Renders tests/data/transcribe/long.flac: the sentences of long.txt spoken by espeak-ng, in
order, joined by silences, about 5.3 minutes. The tests read the FLAC; nothing needs espeak-ng
to run them.

  python3 tests/data/transcribe/make_long.py   # from the repository root; needs espeak-ng
                                               # (Debian: espeak-ng) and flac (Debian: flac)

Each sentence: `espeak-ng -v en-us -s 160 -w S.wav "<sentence>"` (16-bit mono at espeak-ng's
22050 Hz); after sentence i, a digital silence of GAPS[i % 8] seconds (five of them 12 s long,
where a model may write text into the quiet). The samples are written losslessly (flac -8), at
22050 Hz as espeak-ng made them. The checked-in file was made with espeak-ng 1.51 (Debian 12)
and flac 1.4.2: 315.88 s, 41 sentences.
"""

import subprocess
import sys
import tempfile
import wave
from pathlib import Path

HERE = Path(__file__).resolve().parent
GAPS = [1.0, 2.0, 1.5, 3.0, 1.0, 2.5, 1.0, 12.0]
RATE = 22050


def main():
    sentences = [l for l in (HERE / "long.txt").read_text().splitlines() if l.strip()]
    samples = bytearray()
    with tempfile.TemporaryDirectory() as tmp:
        for i, sentence in enumerate(sentences):
            path = Path(tmp) / f"{i}.wav"
            subprocess.run(
                ["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(path), sentence], check=True
            )
            with wave.open(str(path)) as w:
                assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (RATE, 2, 1)
                samples += w.readframes(w.getnframes())
            samples += bytes(2 * int(GAPS[i % len(GAPS)] * RATE))
        joined = Path(tmp) / "long.wav"
        with wave.open(str(joined), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(bytes(samples))
        subprocess.run(
            ["flac", "-8", "--silent", "-f", "-o", str(HERE / "long.flac"), str(joined)], check=True
        )
    print(f"{len(samples) / 2 / RATE:.2f} s, {len(sentences)} sentences")


if __name__ == "__main__":
    sys.exit(main())
