// A Telegram Bot API on loopback (npm telegram-test-api) and the people who talk to the
// bot, one scenario per run: `node telegram.mjs <scenario>`. Prints "READY" once the API
// is up, then "RESULT <json>". Environment: MC_TELEGRAM (the install), MC_TG_PORT,
// MC_TG_TOKEN.
import { createRequire } from "module";
import path from "path";

const require = createRequire(path.join(process.env.MC_TELEGRAM, "package.json"));
const TelegramServer = require("telegram-test-api");

const port = Number(process.env.MC_TG_PORT);
const token = process.env.MC_TG_TOKEN;
const server = new TelegramServer({ port, host: "127.0.0.1", storage: "RAM", storeTimeout: 600 });
await server.start();
console.log("READY");

const result = { said: [] };
const person = (id, name) => server.getClient(token, { userId: id, chatId: id, firstName: name, userName: name, timeout: 500, interval: 50 });
const alice = person(1001, "alice");
const mallory = person(666, "mallory");

// Bot messages fetched but not yet waited for, per client: one fetch can bring several
// (the reply to a command and a notification racing it), and the server hands each out
// once, so the ones after the awaited match must wait for the next `heard`.
const unheard = new Map();

// Waits for a bot message to this person's chat that matches; returns it.
async function heard(client, what, re, ms = 90000) {
  const deadline = Date.now() + ms;
  const queue = unheard.get(client) || [];
  unheard.set(client, queue);
  while (Date.now() < deadline) {
    while (queue.length > 0) {
      const u = queue.shift();
      if (re.test(u.message.text)) return u;
    }
    let r;
    try { r = await client.getUpdates(); } catch (_) { continue; }
    for (const u of r.result) {
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
await server.stop();
process.exit(code);
