"""moed-http with the real `openai` package (daemon/http/tests/requirements.txt) over the unix
socket: models, completions and chat completions whole and streamed, and refusals as the client
library's exception types. Run by daemon/http/tests/bridge.rs: openai_client.py SOCKET MODEL."""

import json
import sys
from typing import Literal

import openai
from pydantic import BaseModel, Field

import unix_client


class Person(BaseModel):
    """The structured-output check's schema: every field bounded, so any complete answer is short."""

    name: str = Field(max_length=6)
    age: int = Field(ge=0, le=99)
    color: Literal["red", "green", "blue"]


def main(socket: str, model: str) -> None:
    client = unix_client.client(socket)

    ids = [m.id for m in client.models.list()]
    assert model in ids, ids
    assert client.models.retrieve(model).id == model

    # Whole answers.
    chat = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_tokens=4,
        temperature=0,
    )
    choice = chat.choices[0]
    assert chat.object == "chat.completion", chat
    assert chat.id.startswith("chatcmpl-"), chat.id
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length"), choice.finish_reason
    assert chat.usage.completion_tokens >= 1 and chat.usage.prompt_tokens > 1, chat.usage
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens

    # A fixed length: ignore_eos is vLLM's extension, sent as an extra field.
    fixed = client.completions.create(
        model=model, prompt="Once upon a time", max_tokens=6, temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert fixed.object == "text_completion"
    assert fixed.choices[0].finish_reason == "length", fixed
    assert fixed.usage.completion_tokens == 6, fixed.usage

    # Streamed: the same text as whole, greedy.
    stream = client.completions.create(
        model=model, prompt="Once upon a time", max_tokens=6, temperature=0,
        extra_body={"ignore_eos": True}, stream=True,
    )
    pieces, reasons = [], []
    for chunk in stream:
        pieces.append(chunk.choices[0].text)
        reasons.append(chunk.choices[0].finish_reason)
    assert "".join(pieces) == fixed.choices[0].text, (pieces, fixed.choices[0].text)
    assert reasons[-1] == "length" and all(r is None for r in reasons[:-1]), reasons

    whole = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Count"}], max_tokens=5,
        temperature=0, extra_body={"ignore_eos": True},
    )
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Count"}], max_tokens=5,
        temperature=0, extra_body={"ignore_eos": True}, stream=True,
        stream_options={"include_usage": True},
    )
    content, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            content.append(c.delta.content or "")
            finish = c.finish_reason or finish
    assert "".join(content) == whole.choices[0].message.content, (content, whole)
    assert finish == "length", finish
    assert usage is not None and usage.completion_tokens == 5, usage

    # Structured output: the library's own parse() sends response_format json_schema (strict) from
    # the pydantic model and validates the answer with it; the fixture's weights are random, so
    # only moed's constrained decoding can make it parse.
    for temperature in (0, 1):
        parsed = client.chat.completions.parse(
            model=model, messages=[{"role": "user", "content": "Describe a person."}],
            response_format=Person, max_tokens=200, temperature=temperature, seed=3,
        )
        choice = parsed.choices[0]
        assert choice.finish_reason == "stop", choice
        assert isinstance(choice.message.parsed, Person), choice.message
    anything = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "x"}], max_tokens=300, temperature=0,
        response_format={"type": "json_object"},
    )
    if anything.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(anything.choices[0].message.content), dict), anything
    else:
        assert anything.choices[0].message.content.startswith("{"), anything
    try:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_schema", "json_schema": {"name": "bad", "schema": {"type": 5}}},
        )
        raise AssertionError("a schema of type 5 was accepted")
    except openai.BadRequestError as e:
        assert e.body["code"] == "invalid_argument" and "json_schema" in e.body["message"], e.body

    # Refusals arrive as the library's exception types, with OpenAI's error object.
    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as e:
        assert e.status_code == 404 and e.body["code"] == "model_not_found", e.body
    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], n=2)
        raise AssertionError("n=2 was accepted")
    except openai.BadRequestError as e:
        assert e.body["param"] == "n" and e.body["code"] == "unsupported", e.body
    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "a\0b"}])
        raise AssertionError("a NUL was accepted")
    except openai.BadRequestError as e:
        assert e.body["param"] == "messages[0].content" and "NUL" in e.body["message"], e.body
    try:
        client.completions.create(model=model, prompt="x", temperature=-1)
        raise AssertionError("a negative temperature was accepted")
    except openai.BadRequestError as e:
        # moed's own check, mapped from org.moed.Moed1.Error.InvalidArgument.
        assert e.body["code"] == "invalid_argument" and "temperature" in e.body["message"], e.body
    try:
        client.embeddings.create(model=model, input="x")
        raise AssertionError("embeddings were answered")
    except openai.APIStatusError as e:
        assert e.status_code == 501 and e.body["code"] == "unsupported", e.body
    print("openai client: all checks passed")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
