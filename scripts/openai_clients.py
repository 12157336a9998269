"""The official `openai` package against Switchboard: only base_url and
api_key differ from talking to OpenAI. The responder's openai engine is in
front of testkit's fake model server, whose record of every request it got
(<model>/_seen) shows what reached the model.
  python openai_clients.py <base_url> <token> <model_base_url>"""
import json
import sys
import urllib.request

import openai

base_url, token, model_url = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=30)


def last_seen():
    with urllib.request.urlopen(f"{model_url}/_seen") as response:
        return json.load(response)[-1]


models = [m.id for m in client.models.list()]
assert models == ["switchboard", "big"], models

question = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello from python"}]
whole = client.chat.completions.create(model="switchboard", messages=question)
text = whole.choices[0].message.content
assert text == "Model says: hello from python", repr(text)
assert whole.choices[0].finish_reason == "stop", whole.choices[0].finish_reason
assert whole.usage.prompt_tokens == 7 and whole.usage.total_tokens > 7, whole.usage

stream = client.chat.completions.create(
    model="switchboard", messages=question, stream=True, stream_options={"include_usage": True}
)
chunks = list(stream)
pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
assert "".join(pieces) == "Model says: hello from python", pieces
assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0, chunks[-1]

# Every parameter reaches the model as it was set; the model name maps upstream.
params = dict(
    temperature=0.3, top_p=0.9, seed=11, stop=["END"], presence_penalty=0.1, frequency_penalty=0.2,
    logit_bias={"42": 1}, response_format={"type": "json_object"}, user="end-user-1",
    max_tokens=50, logprobs=True, top_logprobs=2,
)
client.chat.completions.create(model="big", messages=question, **params)
seen = last_seen()
for field, value in params.items():
    assert seen[field] == value, (field, seen.get(field), value)
assert seen["model"] == "fake-big", seen["model"]
assert seen["messages"][0]["role"] == "system" and seen["messages"][1:] == question, seen["messages"]

# A tool loop: the model calls the tool, its result goes back, the model answers.
tools = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
ask = [{"role": "user", "content": "weather in Oslo?"}]
called = client.chat.completions.create(model="big", messages=ask, tools=tools, tool_choice="auto")
choice = called.choices[0]
assert choice.finish_reason == "tool_calls", choice.finish_reason
call = choice.message.tool_calls[0]
assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "city"}, call
assert last_seen()["tools"] == tools
result = ask + [choice.message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
answer = client.chat.completions.create(model="big", messages=result, tools=tools)
assert answer.choices[0].message.content == "Model says: sunny", answer.choices[0].message

# Streamed, the call comes in pieces.
stream = client.chat.completions.create(model="big", messages=ask, tools=tools, stream=True)
arguments, name, finish = "", None, None
for chunk in stream:
    if not chunk.choices:
        continue
    for delta in chunk.choices[0].delta.tool_calls or []:
        name = name or delta.function.name
        arguments += delta.function.arguments or ""
    finish = chunk.choices[0].finish_reason or finish
assert (name, json.loads(arguments), finish) == ("get_weather", {"city": "city"}, "tool_calls")

# An image part is passed on, never fetched.
image = [{"role": "user", "content": [
    {"type": "text", "text": "what is this?"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}]}]
client.chat.completions.create(model="switchboard", messages=image)
assert last_seen()["messages"][1:] == image

refused = openai.OpenAI(base_url=base_url, api_key="not-a-token", max_retries=0)
try:
    refused.chat.completions.create(model="switchboard", messages=question)
    raise AssertionError("a bad key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401 and e.body["code"] == "invalid_token", e.body
try:
    client.chat.completions.create(model="gpt-5", messages=question)
    raise AssertionError("a model not offered was accepted")
except openai.NotFoundError as e:
    assert e.body["code"] == "model_not_found", e.body
try:
    client.chat.completions.create(model="switchboard", messages=question, temperature=5)
    raise AssertionError("temperature 5 was accepted")
except openai.BadRequestError as e:
    assert e.body["code"] == "invalid_parameter" and e.body["param"] == "temperature", e.body

print(f"openai {openai.__version__}: models {models}; whole and streamed with usage; every parameter "
      f"reached the model; a tool loop whole and streamed; an image passed on; errors in their classes")
