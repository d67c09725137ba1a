"""What a Python model server (FastAPI, vLLM: json.loads on the raw bytes) reads from request bodies.

Reads JSON lines {"body": <base64>, "shape": <api>} on stdin and writes one JSON line per body:
{"ok": false, "error": ...} when json.loads refuses it, else the model, the output budgets and the
texts the server would tokenize, in body order. Used by test/differential.test.ts.
"""
import base64
import json
import sys

CHAT_SHAPES = ("openai.chat", "anthropic.messages")
MEDIA_KEYS = ("image_url", "source", "input_audio")


def walk(value, texts, with_keys):
    """Every string of a JSON value in order (and every key), as the filters feed tool definitions."""
    if isinstance(value, dict):
        for key, item in value.items():
            if with_keys:
                texts.append(key)
            walk(item, texts, with_keys)
    elif isinstance(value, list):
        for item in value:
            walk(item, texts, with_keys)
    elif isinstance(value, str):
        texts.append(value)


def content_texts(content, texts, counts):
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                for key, item in part.items():
                    if key == "text" and isinstance(item, str):
                        texts.append(item)
                    elif key in MEDIA_KEYS:
                        counts["media"] += 1


def budget(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return ["bool", str(value)]
    if isinstance(value, int):
        try:
            return ["int", str(value)]
        except ValueError:  # more digits than int -> str allows
            return ["int", "huge"]
    return [type(value).__name__, repr(value)[:40]]


def reading(body, shape):
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as err:
        return {"ok": False, "error": type(err).__name__ + ": " + str(err)[:120]}
    if not isinstance(data, dict):
        return {"ok": False, "error": "not an object"}
    model = data.get("model")
    texts = []
    counts = {"media": 0, "messages": 0, "token_ids": 0}
    for key, value in data.items():
        if key == "messages" and shape in CHAT_SHAPES and isinstance(value, list):
            for message in value:
                if isinstance(message, dict):
                    counts["messages"] += 1
                    if "content" in message:
                        content_texts(message["content"], texts, counts)
        elif key == "system" and shape == "anthropic.messages":
            content_texts(value, texts, counts)
        elif (key == "prompt" and shape == "openai.completions") or (key == "input" and shape == "openai.embeddings"):
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, str):
                    texts.append(item)
                elif isinstance(item, (int, float)) and not isinstance(item, bool):
                    # pydantic's lax mode takes 1e3 as token id 1000; 1.5 fails validation anyway.
                    counts["token_ids"] += 1
                elif isinstance(item, list):
                    counts["token_ids"] += len(item)
        elif key in ("tools", "functions"):
            walk(value, texts, True)
    return {
        "ok": True,
        "model": model if isinstance(model, str) else None,
        "modelType": type(model).__name__,
        "max_tokens": budget(data.get("max_tokens")),
        "max_completion_tokens": budget(data.get("max_completion_tokens")),
        "stream": data.get("stream"),
        "texts": texts,
        **counts,
    }


def main():
    for line in sys.stdin:
        request = json.loads(line)
        answer = reading(base64.b64decode(request["body"]), request["shape"])
        # ensure_ascii escapes lone surrogates, which UTF-8 output could not carry.
        sys.stdout.write(json.dumps(answer, ensure_ascii=True) + "\n")


main()
