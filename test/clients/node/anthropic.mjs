// The Anthropic SDK, its key from ANTHROPIC_API_KEY (a placeholder): JSON, then a stream.
import Anthropic from "@anthropic-ai/sdk";

const client = new Anthropic({ timeout: 60_000, maxRetries: 0 });
const req = { model: "claude-test", max_tokens: 16, messages: [{ role: "user", content: "hi" }] };
const m = await client.messages.create(req);
console.log(m.content[0].text);
const stream = await client.messages.create({ ...req, stream: true });
for await (const ev of stream) {
  if (ev.type === "content_block_delta") console.log(ev.delta.text);
}
