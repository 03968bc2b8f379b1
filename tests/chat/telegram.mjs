// A Telegram Bot API on loopback (npm telegram-test-api) and the people who talk to the
// bot, one scenario per run: `node telegram.mjs <scenario>`. Prints "READY" once the API
// is up, then "RESULT <json>". Environment: MC_TELEGRAM (the install), MC_TG_PORT (where
// the bot is pointed: a proxy in front of the API), MC_TG_API_PORT (the API itself, where
// the people talk), MC_TG_TOKEN.
import { createRequire } from "module";
import http from "http";
import path from "path";

const require = createRequire(path.join(process.env.MC_TELEGRAM, "package.json"));
const TelegramServer = require("telegram-test-api");

const port = Number(process.env.MC_TG_PORT);
const apiPort = Number(process.env.MC_TG_API_PORT);
const token = process.env.MC_TG_TOKEN;
const server = new TelegramServer({ port: apiPort, host: "127.0.0.1", storage: "RAM", storeTimeout: 600 });
await server.start();

const result = { said: [], throttle: null };

// The bot talks to this proxy, which forwards to the API but answers the bot's first
// "created ticket" reply with a 429 (retry after 2 s), as Telegram does to a bot that sends
// too fast; it notes how long the bot waited before sending it again.
const proxy = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks);
    if (req.url.toLowerCase().endsWith("/sendmessage")) {
      let text = "";
      try { text = JSON.parse(body.toString()).text || ""; } catch (_) {}
      if (text.startsWith("created ticket")) {
        if (!result.throttle) {
          result.throttle = { refused_at: Date.now() };
          res.writeHead(429, { "content-type": "application/json" });
          res.end(JSON.stringify({ ok: false, error_code: 429, description: "Too Many Requests: retry after 2", parameters: { retry_after: 2 } }));
          return;
        }
        if (result.throttle.retried_after_ms === undefined) result.throttle.retried_after_ms = Date.now() - result.throttle.refused_at;
      }
    }
    const fwd = http.request({ host: "127.0.0.1", port: apiPort, path: req.url, method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    fwd.on("error", (e) => { res.writeHead(502); res.end(String(e)); });
    fwd.end(body);
  });
});
await new Promise((r) => proxy.listen(port, "127.0.0.1", r));
console.log("READY");

const person = (id, name) => server.getClient(token, { userId: id, chatId: id, firstName: name, userName: name, timeout: 500, interval: 50 });
const alice = person(1001, "alice");
const mallory = person(666, "mallory");

// Bot messages fetched but not yet waited for, per client: one fetch can bring several
// (the reply to a command and a notification racing it), and the server hands each out
// once, so the ones not matched yet must wait for a later `heard`.
const unheard = new Map();

// One look at the bot's messages to this person's chat (each is handed out once). Not the
// client's getUpdates: it polls on by itself until something comes, even after its timeout
// gave up, and such a poller left behind takes (and loses) the next message — a message
// the bot sent seconds later (after a 429) was never heard because of it.
async function updates(client) {
  const r = await fetch(`${client.url}/getUpdates`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token, chatId: client.chatId }),
  });
  const data = await r.json();
  return data.result || [];
}

// Waits for a bot message to this person's chat that matches; returns it.
async function heard(client, what, re, ms = 90000) {
  const deadline = Date.now() + ms;
  const queue = unheard.get(client) || [];
  unheard.set(client, queue);
  while (Date.now() < deadline) {
    // Messages come in any order (a reply held back by a 429 arrives after a notification
    // sent later): the first match is taken, the rest wait for their own `heard`.
    const i = queue.findIndex((u) => re.test(u.message.text));
    if (i >= 0) return queue.splice(i, 1)[0];
    let r;
    try { r = await updates(client); } catch (_) { await new Promise((ok) => setTimeout(ok, 50)); continue; }
    if (r.length === 0) await new Promise((ok) => setTimeout(ok, 50));
    for (const u of r) {
      result.said.push(u.message.text);
      queue.push(u);
    }
  }
  throw new Error(`never heard ${what} (${re}); the bot said: ${JSON.stringify(result.said)}`);
}

async function say(client, text, extra) {
  await client.sendMessage(client.makeMessage(text, extra));
}

const scenarios = {
  async journey() {
    await say(mallory, "/task web: Delete everything");
    await heard(mallory, "a refusal", /not allowed to use this bot/);
    await say(alice, "/task web: Choose a database\nthe app needs one");
    const created = await heard(alice, "the ticket created", /^created ticket #(\d+)/);
    const id = Number(/#(\d+)/.exec(created.message.text)[1]);
    result.ticket = id;
    const q = await heard(alice, "the question", new RegExp(`^❓ #${id} `));
    result.question = q.message.text;
    // Replying to the question's message answers that ticket.
    await say(alice, "sqlite", {
      reply_to_message: { message_id: q.messageId, date: Math.floor(Date.now() / 1000), chat: { id: 1001, type: "private" }, text: q.message.text },
    });
    await heard(alice, "the answer taken", new RegExp(`^answer sent to ticket #${id}$`));
    await heard(alice, "done", new RegExp(`^✅ #${id} `));
    // Then the pull request its branch became.
    result.pr = (await heard(alice, "the pull request", new RegExp(`^🔀 #${id} .*pull request opened: `))).message.text;
    await say(alice, "/status");
    result.status = (await heard(alice, "the status", /running, .* queued/)).message.text;
    await say(alice, `/logs ${id}`);
    result.logs = (await heard(alice, "the logs", new RegExp(`^ticket #${id}, last lines`))).message.text;
    await say(alice, "/budget");
    result.budget = (await heard(alice, "the budget", /^spent today/)).message.text;
    await say(alice, "/cancel 999");
    result.refused = (await heard(alice, "a refusal", /^refused: /)).message.text;
    await say(alice, "/frobnicate");
    result.unknown = (await heard(alice, "unknown", /^unknown command/)).message.text;
    // A second ticket: its question is in the inbox, and /answer answers it.
    await say(alice, "/task web: Pick a cache");
    const c2 = await heard(alice, "the second ticket", /^created ticket #(\d+)/);
    const id2 = Number(/#(\d+)/.exec(c2.message.text)[1]);
    await heard(alice, "its question", new RegExp(`^❓ #${id2} `));
    await say(alice, "/inbox");
    result.inbox = (await heard(alice, "the inbox", new RegExp(`#${id2} Pick a cache`))).message.text;
    await say(alice, `/answer ${id2} redis`);
    await heard(alice, "the answer taken", new RegExp(`^answer sent to ticket #${id2}$`));
    await heard(alice, "the second done", new RegExp(`^✅ #${id2} `));
    // A third: cancelled from chat (/resolve … cancel), then queued again (/retry).
    await say(alice, "/task web: Pick a queue");
    const c3 = await heard(alice, "the third ticket", /^created ticket #(\d+)/);
    const id3 = Number(/#(\d+)/.exec(c3.message.text)[1]);
    await heard(alice, "its question", new RegExp(`^❓ #${id3} `));
    await say(alice, `/resolve ${id3} cancel`);
    await heard(alice, "cancelled", new RegExp(`^ticket #${id3} cancelled$`));
    await say(alice, `/retry ${id3}`);
    await heard(alice, "queued again", new RegExp(`^ticket #${id3} queued again$`));
    result.more = [id2, id3];
    await say(alice, "/create shop");
    result.created = (await heard(alice, "the project created", /^project shop created on /)).message.text;
    await say(alice, "/help");
    result.help = (await heard(alice, "the help", /^Mission Control commands/)).message.text;
  },
};

let code = 0;
try {
  await scenarios[process.argv[2]]();
} catch (e) {
  code = 1;
  result.error = String(e && e.stack || e);
}
console.log("RESULT " + JSON.stringify(result));
proxy.close();
await server.stop();
process.exit(code);
