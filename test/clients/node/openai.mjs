// The openai SDK, its key from OPENAI_API_KEY (a placeholder): JSON, then a stream.
import OpenAI from "openai";

const client = new OpenAI({ timeout: 60_000, maxRetries: 0 });
const messages = [{ role: "user", content: "hi" }];
const c = await client.chat.completions.create({ model: "gpt-test", messages });
console.log(c.choices[0].message.content);
const stream = await client.chat.completions.create({ model: "gpt-test", messages, stream: true });
for await (const chunk of stream) console.log(chunk.choices[0]?.delta?.content ?? "");
