"""Drives the broker's local endpoint with the official OpenAI Python SDK
(PyPI `openai`), unmodified and configured only through its environment:
OPENAI_BASE_URL (http://127.0.0.1:PORT/openai/v1) and OPENAI_API_KEY set to
the broker's stand-in key `aivault`.

The SDK sends its key as `Authorization: Bearer <key>`; the broker replaces
exactly `Bearer aivault` with the real credential and refuses any other
caller credential.

Usage: openai_client.py chat|stream|plain NONCE
  chat    one chat.completions.create; prints {"content", "model", "headers"}
  stream  the same with stream=True and the header x-hold-stream (the test
          upstream holds its last events until the test releases them):
          prints "first-content" as soon as the first content delta has
          arrived, then {"content", "chunks"} at the end.
  plain   chat with whatever key the environment gives (a test passes a
          key other than the stand-in): prints {"refused": STATUS} (null if
          it was not refused).
Prints JSON on the last line; the Rust test `tests/tests/broker.rs` makes
the assertions.
"""

import json
import sys

import openai
from openai import OpenAI


def main(mode, nonce):
    client = OpenAI(max_retries=0, timeout=120)
    messages = [{"role": "user", "content": f"say hello {nonce}"}]
    if mode == "chat":
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=messages
        )
        completion = raw.parse()
        print(
            json.dumps(
                {
                    "content": completion.choices[0].message.content,
                    "model": completion.model,
                    "headers": {k.lower(): v for k, v in raw.headers.items()},
                }
            )
        )
    elif mode == "stream":
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,
            stream=True,
            extra_headers={"x-hold-stream": "1"},
        )
        parts, chunks, said = [], 0, False
        for event in stream:
            chunks += 1
            for choice in event.choices:
                if choice.delta.content:
                    parts.append(choice.delta.content)
                    if not said:
                        print("first-content", flush=True)
                        said = True
        print(json.dumps({"content": "".join(parts), "chunks": chunks}), flush=True)
    elif mode == "plain":
        # A key other than the stand-in goes out as Authorization.
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            print(json.dumps({"refused": None}))
        except openai.APIStatusError as e:
            print(json.dumps({"refused": e.status_code}))
    else:
        sys.exit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: openai_client.py chat|stream|plain NONCE")
    main(sys.argv[1], sys.argv[2])
