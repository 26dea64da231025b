"""OpenAI's official Python client against `amanuensis serve`.

Usage: openai_client.py BASE_URL API_KEY AUDIO TRANSCRIBE_MODEL TRANSLATE_MODEL OUT.json

Every response format of both routes, a streamed transcription, and the errors the client
raises, written to OUT.json as the client returned them; tests/serve_clients.rs compares them
with `amanuensis transcribe`'s output.
"""

import json
import sys

import openai

base_url, key, audio, model, translate_model, out = sys.argv[1:7]
client = openai.OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0)
FORMATS = ["json", "text", "srt", "vtt", "verbose_json"]


def result(value):
    """A response as JSON: the text formats are strings, the others pydantic models."""
    return value if isinstance(value, str) else value.model_dump(mode="json")


found = {"transcriptions": {}, "translations": {}, "errors": {}}
for response_format in FORMATS:
    with open(audio, "rb") as f:
        extra = {}
        if response_format == "verbose_json":
            extra["timestamp_granularities"] = ["word", "segment"]
        raw = client.audio.transcriptions.with_raw_response.create(
            model=model, file=f, response_format=response_format, **extra
        )
        found["transcriptions"][response_format] = result(raw.parse())
        found["backend"] = raw.headers.get("x-amanuensis-backend")
    with open(audio, "rb") as f:
        found["translations"][response_format] = result(
            client.audio.translations.create(
                model=translate_model, file=f, response_format=response_format
            )
        )

with open(audio, "rb") as f:
    events = []
    for event in client.audio.transcriptions.create(model=model, file=f, stream=True):
        events.append(event.model_dump(mode="json"))
    found["stream"] = events

# Errors, as the client raises them.
cases = {
    "unknown_model": lambda f: client.audio.transcriptions.create(model="large-v9", file=f),
    "bad_format": lambda f: client.audio.transcriptions.create(
        model=model, file=f, response_format="docx"
    ),
    "not_audio": lambda f: client.audio.transcriptions.create(
        model=model, file=("notes.txt", b"not audio at all " * 100)
    ),
    "wrong_key": lambda f: openai.OpenAI(
        base_url=base_url + "/v1", api_key="wrong", max_retries=0
    ).audio.transcriptions.create(model=model, file=f),
}
for name, call in cases.items():
    with open(audio, "rb") as f:
        try:
            call(f)
            found["errors"][name] = None
        except openai.APIStatusError as e:
            found["errors"][name] = {
                "class": type(e).__name__,
                "status": e.status_code,
                "message": e.message,
                "body": e.body,
            }

models = client.models.list()
found["models"] = [m.id for m in models.data]

with open(out, "w") as f:
    json.dump(found, f, indent=1)
