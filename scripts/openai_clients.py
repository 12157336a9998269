"""The official `openai` package against Switchboard: only base_url and
api_key differ from talking to OpenAI.  python openai_clients.py <base_url> <token>"""
import sys

import openai

base_url, token = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=30)

models = [m.id for m in client.models.list()]
assert "switchboard" in models, models

question = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello from python"}]
whole = client.chat.completions.create(model="switchboard", messages=question)
text = whole.choices[0].message.content
assert text == "Echo: hello from python", repr(text)
assert whole.choices[0].finish_reason == "stop", whole.choices[0].finish_reason

stream = client.chat.completions.create(model="switchboard", messages=question, stream=True)
pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
assert "".join(pieces) == "Echo: hello from python", pieces

refused = openai.OpenAI(base_url=base_url, api_key="not-a-token", max_retries=0)
try:
    refused.chat.completions.create(model="switchboard", messages=question)
    raise AssertionError("a bad key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401 and e.body["code"] == "invalid_token", e.body

print(f"openai {openai.__version__}: models {models}; whole {text!r}; streamed in {len(pieces)} chunks; bad key refused")
