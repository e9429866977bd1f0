// Node's built-in fetch: one JSON request, one streamed, printed as they arrive.
const url = "https://api.openai.com/v1/chat/completions";
const headers = { Authorization: `Bearer ${process.env.OPENAI_API_KEY}`, "Content-Type": "application/json" };
const post = async (body) => {
  const r = await fetch(url, { method: "POST", headers, body: JSON.stringify(body) });
  if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
  return r;
};
const r = await post({ model: "gpt-test", messages: [] });
console.log((await r.json()).choices[0].message.content);
const s = await post({ model: "gpt-test", messages: [], stream: true });
const dec = new TextDecoder();
for await (const chunk of s.body) process.stdout.write(dec.decode(chunk, { stream: true }));
