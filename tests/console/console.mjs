// The console driven in a real browser (Debian's chromium through playwright-core), one
// scenario per run: `node console.mjs <scenario>`. The Rust tests in
// tests/tests/console.rs start the stack, run a scenario and check the board afterwards.
// Environment: MC_LOGIN (a sign-in link), MC_CONSOLE (the base URL), MC_TICKET (a ticket
// id where the scenario needs one), MC_ARTIFACTS (where screenshots go), MC_PLAYWRIGHT
// (the playwright-core install), MC_CHROMIUM (the browser).
import { createRequire } from "module";
import fs from "fs";
import path from "path";

const require = createRequire(path.join(process.env.MC_PLAYWRIGHT, "package.json"));
const { chromium } = require("playwright-core");

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const base = env("MC_CONSOLE");
const artifacts = env("MC_ARTIFACTS");
const log = (...a) => console.error("[console.mjs]", ...a);
const result = {};

async function signedIn(browser) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => { log("page error:", e.message); result.pageErrors = (result.pageErrors || 0) + 1; });
  const r = await page.goto(env("MC_LOGIN"));
  if (!r.ok()) throw new Error(`sign-in answered ${r.status()}`);
  if (new URL(page.url()).pathname !== "/") throw new Error(`sign-in landed on ${page.url()}`);
  return page;
}

// Waits until fn() (run in the page) is truthy, polling; fails with what it last saw.
async function until(page, what, fn, arg, timeoutMs = 90000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await page.evaluate(fn, arg);
    if (last) return last;
    await page.waitForTimeout(50);
  }
  throw new Error(`timed out waiting for ${what}; last saw ${JSON.stringify(last)}`);
}

const scenarios = {
  // A ticket created from the board goes through dev_review_qa while the page watches:
  // every (lane, round, state) its card shows is recorded, with the activity rail.
  async journey(page) {
    await page.evaluate(() => { window.__sameDocument = "yes"; });
    await page.click("summary:has-text('New ticket')");
    await page.selectOption("#create select[name=project]", "web");
    await page.fill("#create input[name=title]", "Add a greeting");
    await page.fill("#create textarea[name=body]", "greeting.txt says hello, world");
    await page.click("#create button[type=submit]");
    const flash = await until(page, "the created flash", () => {
      const t = document.getElementById("flash").textContent;
      return /created ticket #(\d+)/.test(t) ? t : null;
    });
    const id = Number(/#(\d+)/.exec(flash)[1]);
    result.ticket = id;
    const seen = [];
    const deadline = Date.now() + 150000;
    for (;;) {
      const s = await page.evaluate((id) => {
        const card = document.querySelector(`.board article[data-ticket="${id}"]`);
        if (!card) return null;
        const cur = card.querySelector(".ribbon li.current");
        return {
          state: card.dataset.state,
          attempt: card.dataset.attempt || "",
          lane: cur ? cur.textContent.replace(/^[^a-z]+/, "").trim() : "",
          round: Number(card.querySelector(".ribbon")?.dataset.round || 0),
          roundText: card.querySelector(".ribbon .round")?.textContent || "",
        };
      }, id);
      if (s) {
        // The scripted agent of a running attempt waits until the page has shown it.
        if (s.state === "running" && s.attempt && process.env.MC_GATES) {
          fs.writeFileSync(path.join(process.env.MC_GATES, s.attempt), "seen");
        }
        delete s.attempt;
        const prev = seen[seen.length - 1];
        if (!prev || prev.state !== s.state || prev.lane !== s.lane || prev.round !== s.round) seen.push(s);
        if (s.state === "done" || s.state === "failed" || s.state === "escalated") break;
      }
      if (Date.now() > deadline) throw new Error("the ticket did not finish: " + JSON.stringify(seen));
      await page.waitForTimeout(40);
    }
    result.seen = seen;
    // The rail keeps following: the last events may land just after the card's state.
    await page.waitForTimeout(1500);
    result.rail = await page.evaluate((id) =>
      [...document.querySelectorAll("#activity li")]
        .filter((li) => li.querySelector("a")?.textContent === "#" + id)
        .map((li) => Number(li.dataset.event)), id);
    result.sameDocument = await page.evaluate(() => window.__sameDocument === "yes");
    await page.screenshot({ path: path.join(artifacts, "board.png"), fullPage: true });
    // Readable on a phone: one column, nothing wider than the screen.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(200);
    result.phoneOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    await page.screenshot({ path: path.join(artifacts, "board-phone.png"), fullPage: true });
    await page.setViewportSize({ width: 1400, height: 900 });
    // Usable with the keyboard: on a fresh page the first Tab reaches the skip link,
    // which moves focus to the main zone.
    await page.goto(base + "/");
    await page.keyboard.press("Tab");
    result.firstTab = await page.evaluate(() => document.activeElement?.textContent || "");
    await page.keyboard.press("Enter");
    result.afterSkip = await page.evaluate(() => document.activeElement?.id || "");
    await page.goto(`${base}/tickets/${id}`);
    await until(page, "the ticket page's terminal", () => {
      const t = document.getElementById("term");
      return t && !t.textContent.includes("waiting for output") ? t.textContent : null;
    });
    result.decisions = await page.evaluate(() => document.querySelectorAll("table.decisions tr").length);
    result.commitLog = await page.evaluate(() => [...document.querySelectorAll("ul.log li")].map((li) => li.textContent));
    await page.screenshot({ path: path.join(artifacts, "ticket.png"), fullPage: true });
  },

  // A question shows in the inbox and is answered from it.
  async question(page) {
    const id = env("MC_TICKET");
    await page.goto(`${base}/inbox`);
    await until(page, "the question in the inbox", (id) =>
      document.querySelector(`article.item[data-ticket="${id}"] form.answer`) !== null, id);
    result.question = await page.textContent(`article.item[data-ticket="${id}"] blockquote.question`);
    await page.fill(`article.item[data-ticket="${id}"] form.answer textarea`, "sqlite");
    await page.click(`article.item[data-ticket="${id}"] form.answer button`);
    result.flash = await until(page, "the answer's flash", () => {
      const t = document.getElementById("flash").textContent;
      return t ? t : null;
    });
    // The item leaves the inbox once the agent goes on, without a reload.
    await until(page, "the item to leave the inbox", (id) =>
      document.querySelector(`article.item[data-ticket="${id}"]`) === null, id);
  },

  // An escalation is resolved from the ticket page with points; the terminal shows the
  // agent's coloured output as a terminal would.
  async escalation(page) {
    const id = env("MC_TICKET");
    await page.goto(`${base}/tickets/${id}`);
    await until(page, "the resolve form", () => document.querySelector("form.resolve") !== null);
    result.term = await until(page, "the terminal's output", () => {
      const t = document.getElementById("term");
      return t && t.querySelector("span[style]") ? t.innerHTML : null;
    });
    await page.check("form.resolve input[value=return]");
    await page.fill("form.resolve textarea[name=points]", "put a comma after hello\nkeep it lowercase");
    await page.fill("form.resolve input[name=reason]", "close, one fix");
    await page.click("form.resolve button[type=submit]");
    result.flash = await until(page, "the resolve flash", () => document.getElementById("flash").textContent || null);
    await until(page, "the ticket to be done", () =>
      document.querySelector("section.ticket .badge")?.textContent === "done", undefined, 90000);
  },

  // Typing into the running agent's terminal from its page.
  async typing(page) {
    const id = env("MC_TICKET");
    await page.goto(`${base}/tickets/${id}`);
    await until(page, "the agent's prompt in the terminal", () =>
      document.getElementById("term")?.textContent.includes("say something:"));
    await page.fill("form.type input[name=text]", "hello there");
    await page.click("form.type button[type=submit]");
    result.flash = await until(page, "the typing flash", () => document.getElementById("flash").textContent || null);
    result.term = await until(page, "the agent's echo", () => {
      const t = document.getElementById("term")?.textContent || "";
      return t.includes("got: hello there") ? t : null;
    });
  },

  // The health grid: a worker's row turns lost when its agent is killed (the test kills
  // it after this prints READY).
  async lost(page) {
    const worker = env("MC_WORKER");
    await page.goto(`${base}/workers`);
    await until(page, "the worker connected", (w) =>
      document.querySelector(`tr[data-worker="${w}"]`)?.dataset.state === "connected", worker);
    await page.screenshot({ path: path.join(artifacts, "workers.png"), fullPage: true });
    await page.evaluate(() => { window.__sameDocument = "yes"; });
    console.log("READY");
    await until(page, "the worker's row to turn lost", (w) =>
      document.querySelector(`tr[data-worker="${w}"]`)?.dataset.state === "lost", worker, 90000);
    result.sameDocument = await page.evaluate(() => window.__sameDocument === "yes");
    await page.screenshot({ path: path.join(artifacts, "workers-lost.png"), fullPage: true });
  },
};

const name = process.argv[2];
if (!scenarios[name]) {
  console.error(`unknown scenario ${name}; one of ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.MC_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let code = 0;
const page = await signedIn(browser);
try {
  await scenarios[name](page);
} catch (e) {
  code = 1;
  result.error = String(e && e.stack || e);
  try { await page.screenshot({ path: path.join(artifacts, `${name}-failed.png`), fullPage: true }); } catch (_) {}
}
await browser.close();
console.log("RESULT " + JSON.stringify(result));
process.exit(code);
