"""Transcribe many audio files across machines with Ray Data and amanuensis.

    python ray_transcribe.py INPUT OUTPUT [--model base] [--actors 2] [--backend auto]
                             [--threads 1] [--npus-per-actor 0] [--address ADDRESS]

INPUT is a directory (searched for audio files) or a manifest (a text file, one path a
line). The files go through an actor pool: each actor loads the model once (one model per
actor; with `--npus-per-actor 1`, one actor per NPU, each node declaring its NPU as a Ray
resource) and transcribes the files it is given.

Each file's transcript is written to OUTPUT/<its path under INPUT>.json, atomically: to
`<output>.partial` first, renamed into place once whole, so an output is whole or absent. A run
skips the files whose output exists, so a re-run after a failure does only what is left. An
actor that dies (killed, or its node lost) is restarted by Ray and its files retried (Ray
Data's actors have `max_restarts=-1`, `max_task_retries=-1`); a file it had finished is
skipped, one it had started is done again and written once (over its own partial file). A
file that cannot be transcribed (not audio, say) gets `<output>.error` with the reason instead,
the others go on, and the run ends with status 1 naming it; a re-run tries it again.

On a cluster: start Ray on every node (`ray start --head` on one, `ray start
--address=HEAD:6379` on the others; add `--resources='{"NPU": 1}'` on the nodes with an NPU),
install amanuensis on each, put INPUT and OUTPUT on storage every node sees (NFS, a shared
mount), and run this with `--address auto` (or `--address ray://HEAD:10001` from outside).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import socket
import sys

import numpy
import ray

AUDIO = {".wav", ".flac", ".mp3", ".ogg", ".oga", ".m4a", ".aac", ".mp4", ".mkv", ".webm",
         ".aiff", ".aif", ".caf"}


def inputs(source: pathlib.Path) -> list[tuple[str, str]]:
    """The audio files of `source`: (path, name under OUTPUT), in a stable order."""
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO and p.is_file())
        return [(str(p), str(p.relative_to(source))) for p in files]
    if source.is_file():
        lines = [l.strip() for l in source.read_text().splitlines()]
        paths = [pathlib.Path(l) for l in lines if l and not l.startswith("#")]
        base = source.parent
        # Absolute and normalised, so that a name under OUTPUT has no `..` to climb out.
        resolved = [(p if p.is_absolute() else base / p).resolve() for p in paths]
        return [(str(p), str(p).lstrip("/")) for p in resolved]
    raise SystemExit(f"{source}: no such directory or manifest")


def write_atomically(path: str, text: str) -> None:
    """`text` to `path`, whole or not at all: through `path.partial` (one name per output, so
    that a retry writes over what a killed worker left), readable as other files are."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


class Transcribe:
    """An actor: one model, loaded once, transcribing the files it is given."""

    def __init__(self, model: str, backend: str, threads: int | None, options: dict) -> None:
        import amanuensis

        self.model = amanuensis.Model(model, backend=backend, threads=threads)
        self.options = options
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict) -> dict:
        statuses = []
        for path, output in zip(batch["path"], batch["output"]):
            if os.path.exists(output):
                statuses.append("skipped")
                continue
            try:
                segments, info = self.model.transcribe(str(path), **self.options)
                segments = list(segments)
            except Exception as e:  # the file's own failure: said, and the others go on
                write_atomically(str(output)[: -len(".json")] + ".error", f"{e}\n")
                statuses.append(f"failed: {e}")
                continue
            segments = [dataclasses.asdict(s) for s in segments]
            error = str(output)[: -len(".json")] + ".error"
            if os.path.exists(error):
                os.remove(error)
            record = {
                "audio": str(path),
                "text": "".join(s["text"] for s in segments).strip(),
                "language": info.language,
                "duration": info.duration,
                "segments": segments,
                "model": self.model.path,
                "backend": self.model.backend,
                "worker": self.worker,
            }
            write_atomically(str(output), json.dumps(record, ensure_ascii=False, indent=1))
            statuses.append("done")
        return {"path": batch["path"], "status": numpy.array(statuses)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=pathlib.Path)
    parser.add_argument("output", type=pathlib.Path)
    parser.add_argument("--model", default="base")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads of each actor's model")
    parser.add_argument("--npus-per-actor", type=float, default=0)
    parser.add_argument("--language", default=None)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--address", default=None,
                        help="a Ray cluster (auto, or ray://HOST:10001); none starts a local one")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local cluster")
    args = parser.parse_args(argv)

    files = inputs(args.input)
    out = args.output.resolve()
    # Partial outputs of an earlier run that died: never complete, removed.
    if out.is_dir():
        for partial in out.rglob("*.partial"):
            partial.unlink()
    todo = [{"path": path, "output": str(out / (name + ".json"))} for path, name in files]
    todo = [t for t in todo if not os.path.exists(t["output"])]
    print(f"{len(files)} files, {len(files) - len(todo)} already transcribed", flush=True)
    if not todo:
        return 0

    ray.init(address=args.address, num_cpus=args.num_cpus)
    resources = {"NPU": args.npus_per_actor} if args.npus_per_actor else None
    options = {"language": args.language, "beam_size": args.beam_size}
    ds = ray.data.from_items(todo, override_num_blocks=len(todo)).map_batches(
        Transcribe,
        fn_constructor_kwargs={"model": args.model, "backend": args.backend,
                               "threads": args.threads, "options": options},
        batch_size=1,
        concurrency=args.actors,
        num_cpus=args.threads,
        resources=resources,
    )
    done = 0
    for row in ds.iter_rows():
        done += row["status"] == "done"
        print(f"{row['status']}: {row['path']}", flush=True)
    missing = [t["path"] for t in todo if not os.path.exists(t["output"])]
    print(f"{done} transcribed, {len(missing)} not transcribed", flush=True)
    for path in missing:
        print(f"not transcribed: {path}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
