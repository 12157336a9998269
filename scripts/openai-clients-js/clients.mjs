// OpenAI-API clients for JavaScript against Switchboard: the official
// `openai` package (streaming with tools) and Vercel's AI SDK
// (`streamText` with a tool, through @ai-sdk/openai-compatible).
//   node clients.mjs <base_url> <token>
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { stepCountIs, streamText, tool } from 'ai';
import { z } from 'zod';

const [baseURL, token] = process.argv.slice(2);
const tools = [{ type: 'function', function: { name: 'get_weather', description: 'The weather in a city',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];

const client = new OpenAI({ baseURL, apiKey: token, maxRetries: 0 });
const ask = [{ role: 'user', content: 'weather in Oslo?' }];
const stream = await client.chat.completions.create({ model: 'big', messages: ask, tools, stream: true });
let name, id, args = '', finish;
for await (const chunk of stream) {
  const choice = chunk.choices[0];
  if (!choice) continue;
  for (const delta of choice.delta.tool_calls ?? []) {
    name ??= delta.function?.name;
    id ??= delta.id;
    args += delta.function?.arguments ?? '';
  }
  finish = choice.finish_reason ?? finish;
}
assert.equal(name, 'get_weather');
assert.deepEqual(JSON.parse(args), { city: 'city' });
assert.equal(finish, 'tool_calls');
const answer = await client.chat.completions.create({ model: 'big', tools, messages: [...ask,
  { role: 'assistant', content: null, tool_calls: [{ id, type: 'function', function: { name, arguments: args } }] },
  { role: 'tool', tool_call_id: id, content: 'sunny' }] });
assert.equal(answer.choices[0].message.content, 'Model says: sunny');
console.log('openai (npm): a streamed tool call and its result');

const switchboard = createOpenAICompatible({ name: 'switchboard', baseURL, apiKey: token, includeUsage: true });
let ran = 0;
const result = streamText({
  model: switchboard('big'),
  prompt: 'weather in Oslo?',
  tools: {
    get_weather: tool({
      description: 'The weather in a city',
      inputSchema: z.object({ city: z.string() }),
      execute: async ({ city }) => { ran += 1; return `sunny in ${city}`; },
    }),
  },
  stopWhen: stepCountIs(3),
});
let text = '';
for await (const piece of result.textStream) text += piece;
assert.equal(ran, 1, 'the tool ran once');
assert.match(text, /^Model says: .*sunny in city/);
const usage = await result.totalUsage;
assert.ok(usage.totalTokens > 0, JSON.stringify(usage));
console.log(`ai (Vercel AI SDK): streamText ran its tool, then answered ${JSON.stringify(text)}; ${usage.totalTokens} tokens`);
