"""Tool calls through moed-http with the real `openai` package (daemon/http/tests/requirements.txt)
over the unix socket: a named and a required call, whole and streamed, the arguments validated
by the library against each tool's pydantic model, and the conversation continued with the
call and its result. Run by daemon/http/tests/bridge.rs: tools_client.py SOCKET MODEL. The
model's weights are random: it calls only when the request requires it (moed's constrained
decoding), so every call here is `tool_choice` required or named."""

import json
import sys

import openai
from pydantic import BaseModel, Field

import unix_client


class GetWeather(BaseModel):
    """The weather in a city."""

    city: str = Field(max_length=12)


class GetTime(BaseModel):
    """The time in a time zone."""

    zone: str = Field(max_length=8)
    hours: int = Field(ge=0, le=23)


TOOLS = [openai.pydantic_function_tool(GetWeather), openai.pydantic_function_tool(GetTime)]
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
NAMED = {"type": "function", "function": {"name": "GetWeather"}}


def main(socket: str, model: str) -> None:
    client = unix_client.client(socket)
    # The library's strict schema from the pydantic model: additionalProperties false, the
    # property required, the length bounded (so any complete call is short).
    assert TOOLS[0]["function"]["parameters"]["required"] == ["city"], TOOLS[0]

    # Whole: the library's parse() validates the arguments with the pydantic model.
    whole = client.chat.completions.parse(
        model=model, messages=QUESTION, tools=TOOLS, tool_choice=NAMED,
        parallel_tool_calls=False, temperature=0, max_tokens=96,
    )
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1, choice.message
    call = calls[0]
    assert call.type == "function" and call.id, call
    assert call.function.name == "GetWeather", call
    assert isinstance(call.function.parsed_arguments, GetWeather), call
    assert set(json.loads(call.function.arguments)) == {"city"}, call.function.arguments
    assert choice.message.content in (None, ""), choice.message

    # Streamed, raw: the text deltas, then one chunk with the whole call, then the reason.
    stream = client.chat.completions.create(
        model=model, messages=QUESTION, tools=TOOLS, tool_choice=NAMED, temperature=0,
        max_tokens=96, stream=True, stream_options={"include_usage": True},
    )
    deltas, reasons, usage = [], [], None
    for chunk in stream:
        usage = chunk.usage or usage
        for c in chunk.choices:
            if c.delta.tool_calls:
                deltas.extend(c.delta.tool_calls)
            reasons.append(c.finish_reason)
    assert len(deltas) == 1, deltas
    streamed = deltas[0]
    assert streamed.index == 0 and streamed.type == "function", streamed
    assert streamed.function.name == "GetWeather", streamed
    assert streamed.function.arguments == call.function.arguments, (streamed, call)
    assert reasons[-1] == "tool_calls" and all(r is None for r in reasons[:-1]), reasons
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens, usage

    # Streamed through the library's helper, which assembles calls from deltas and parses them.
    with client.chat.completions.stream(
        model=model, messages=QUESTION, tools=TOOLS, tool_choice="required", temperature=0,
        max_tokens=96,
    ) as events:
        final = events.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    required = choice.message.tool_calls
    assert required is not None and len(required) == 1, choice.message
    parsed = required[0].function.parsed_arguments
    assert isinstance(parsed, (GetWeather, GetTime)), required[0]
    assert type(parsed).__name__ == required[0].function.name, required[0]

    # The call and its result go back; the model answers in text (tool_choice none).
    follow = QUESTION + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.function.name, "arguments": call.function.arguments}},
        ]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees."},
    ]
    answer = client.chat.completions.create(
        model=model, messages=follow, tools=TOOLS, tool_choice="none", temperature=0,
        max_tokens=4,
    )
    choice = answer.choices[0]
    assert choice.finish_reason in ("stop", "length"), choice
    assert isinstance(choice.message.content, str) and choice.message.tool_calls is None, choice
    # The call and the result were part of the prompt (rendered by the template).
    plain = client.chat.completions.create(
        model=model, messages=QUESTION, tools=TOOLS, tool_choice="none", temperature=0,
        max_tokens=4,
    )
    grown = answer.usage.prompt_tokens - plain.usage.prompt_tokens
    assert grown > 8, (answer.usage, plain.usage)
    # ... the call itself too: the same turns without it make a shorter prompt.
    uncalled = client.chat.completions.create(
        model=model, messages=follow[:1] + [{"role": "assistant", "content": ""}] + follow[2:],
        tools=TOOLS, tool_choice="none", temperature=0, max_tokens=1,
    )
    called = answer.usage.prompt_tokens - uncalled.usage.prompt_tokens
    assert called >= len(call.function.arguments) // 4, (answer.usage, uncalled.usage)
    # Whole and streamed alike: a streamed follow-up is answered.
    stream = client.chat.completions.create(
        model=model, messages=follow, tools=TOOLS, temperature=0, max_tokens=4, stream=True,
        tool_choice="none",
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == choice.message.content, (text, choice.message.content)

    # Refusals name the field.
    try:
        client.chat.completions.create(
            model=model, messages=QUESTION, tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "GetNews"}},
        )
        raise AssertionError("a tool_choice naming no tool was accepted")
    except openai.BadRequestError as e:
        assert e.body["param"] == "tool_choice.function.name", e.body
    try:
        client.chat.completions.create(
            model=model, messages=QUESTION, functions=[{"name": "f", "parameters": {}}],
        )
        raise AssertionError("legacy functions were accepted")
    except openai.BadRequestError as e:
        assert e.body["param"] == "functions" and e.body["code"] == "unsupported", e.body
    try:
        client.chat.completions.create(
            model=model, messages=QUESTION + [{"role": "tool", "content": "x"}], tools=TOOLS,
        )
        raise AssertionError("a tool result without tool_call_id was accepted")
    except openai.BadRequestError as e:
        assert e.body["param"] == "messages[1].tool_call_id", e.body
    try:
        client.chat.completions.create(
            model=model, messages=QUESTION, tools=[{"type": "function", "function": {
                "name": "bad", "parameters": {"type": 5}}}], tool_choice="required",
        )
        raise AssertionError("a tool whose parameters are no schema was accepted")
    except openai.BadRequestError as e:
        # moed's own check, mapped from org.moed.Moed1.Error.InvalidArgument.
        assert e.body["code"] == "invalid_argument" and "tools" in e.body["message"], e.body
    print("tools client: all checks passed")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
