"""LangChain's ChatOpenAI against Switchboard: bind_tools and a two-step
tool loop, with usage.  python langchain_client.py <base_url> <token>"""
import sys

import langchain_openai
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

base_url, token = sys.argv[1], sys.argv[2]


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


llm = ChatOpenAI(base_url=base_url, api_key=token, model="big", max_retries=0, timeout=30)
bound = llm.bind_tools([get_weather])
messages = [HumanMessage("weather in Oslo?")]
called = bound.invoke(messages)
assert called.tool_calls and called.tool_calls[0]["name"] == "get_weather", called
assert called.tool_calls[0]["args"] == {"city": "city"}, called.tool_calls
messages.append(called)
for call in called.tool_calls:
    messages.append(get_weather.invoke(call))
answer = bound.invoke(messages)
assert answer.content == "Model says: sunny", answer
assert answer.usage_metadata and answer.usage_metadata["total_tokens"] > 0, answer.usage_metadata
streamed = "".join(chunk.content for chunk in llm.stream("hello from langchain"))
assert streamed == "Model says: hello from langchain", streamed
print(f"langchain-openai {langchain_openai.__version__ if hasattr(langchain_openai, '__version__') else ''}: "
      f"a two-step tool loop, usage {answer.usage_metadata['total_tokens']} tokens, streamed")
