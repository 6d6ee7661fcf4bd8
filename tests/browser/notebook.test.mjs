// The notebook example (examples/notebook) in a real browser: Debian's
// Chromium against real processes — `errand serve` on SQLite, a Python
// worker for the notebook's commands, and the app under uvicorn.
//
//   examples/notebook/ci target/debug/errand   # makes examples/notebook/.venv
//   (cd tests/browser && npm test)
//
// NOTEBOOK_VENV picks the Python environment (default examples/notebook/.venv);
// NOTEBOOK_SCREENSHOTS=examples/notebook/screenshots writes the pictures its
// README shows (default: a temporary folder). Without the environment the
// test is skipped, saying so, except under CI, where that is a failure.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join, resolve } from "node:path";
import { chromium } from "playwright-core";
import { freePort, until } from "./common.mjs";

const root = resolve(import.meta.dirname, "../..");
const example = join(root, "examples/notebook");
const binary = process.env.ERRAND_BIN ?? join(root, "target/debug/errand");
const venv = resolve(process.env.NOTEBOOK_VENV ?? join(example, ".venv"));
const python = join(venv, "bin/python");
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const shots = resolve(root, process.env.NOTEBOOK_SCREENSHOTS ?? mkdtempSync(join(tmpdir(), "notebook-shots-")));
const missing = existsSync(python) ? null : `no Python environment at ${venv}: run examples/notebook/ci first`;
if (missing && process.env.CI) throw new Error(missing);

const processes = [];
let folder;
let app;
let browser;

async function answers(url) {
  try {
    return (await fetch(url)).ok;
  } catch {
    return false;
  }
}

function start(args, env) {
  const child = spawn(args[0], args.slice(1), { cwd: example, env: { ...process.env, ...env }, stdio: ["ignore", "inherit", "inherit"] });
  processes.push(child);
  return child;
}

before(async () => {
  if (missing) return;
  mkdirSync(shots, { recursive: true });
  folder = mkdtempSync(join(tmpdir(), "notebook-browser-"));
  // An espeak-ng that takes a breath before each line, so that a short
  // episode runs long enough for the page to show its progress moving.
  const slow = join(folder, "bin");
  mkdirSync(slow);
  writeFileSync(join(slow, "espeak-ng"), `#!/bin/sh\nsleep 0.4\nexec /usr/bin/espeak-ng "$@"\n`);
  chmodSync(join(slow, "espeak-ng"), 0o755);
  const [errandPort, appPort] = [await freePort(), await freePort()];
  const errandUrl = `http://127.0.0.1:${errandPort}`;
  app = `http://127.0.0.1:${appPort}`;
  const env = { NOTEBOOK_DATA: join(folder, "data"), ERRAND_URL: errandUrl, ERRAND_LOG: "warn" };
  start([binary, "serve", "--no-worker", "--bind", `127.0.0.1:${errandPort}`, "--store", `sqlite://${join(folder, "errand.db")}`], env);
  await until("errand serve", () => answers(errandUrl + "/api/ready"), 60000);
  start([python, "-m", "errand", "worker", "--import-modules", "notebook.commands"], {
    ...env,
    PATH: `${slow}${delimiter}${join(venv, "bin")}${delimiter}${process.env.PATH}`,
  });
  start([python, "-m", "uvicorn", "notebook.app:app", "--port", String(appPort), "--log-level", "warning"], env);
  await until("the notebook app", () => answers(app + "/api/episode-profiles"), 60000);
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  for (const child of processes.reverse()) {
    if (child.exitCode === null) {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
  }
  if (folder) rmSync(folder, { recursive: true, force: true });
});

const TEXT = [
  "# How a durable queue works",
  "",
  "A job queue keeps work safe when a server stops.",
  "Each job waits in a table until a worker takes it.",
  "The worker holds a lease and sends a heartbeat while it runs.",
  "If the worker dies, the lease runs out and another worker takes the job again.",
  "A checkpoint lets the new worker start where the old one stopped.",
  "Every change of state is a compare and set, so no job runs twice at the same time.",
].join("\n");

test("upload a source, generate a podcast from it, watch it progress live, play it, transcribe it", { skip: missing ?? false }, async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: "light" });
  const page = await context.newPage();

  // A source, uploaded with the form; its row turns completed by itself.
  await page.goto(app + "/");
  await page.setInputFiles("input[name=file]", { name: "queues.md", mimeType: "text/markdown", buffer: Buffer.from(TEXT) });
  await page.fill("input[name=title]", "How a durable queue works");
  await page.click("text=Upload and process");
  await page.waitForSelector("#flash [role=status]");
  await page.waitForSelector("#sources tr[data-source] .status[data-status=completed]");
  assert.match(await page.textContent("#sources"), /\d+ chunks/);
  await page.screenshot({ path: join(shots, "sources.png"), fullPage: true });

  // A wrong file type is refused on the page, not with a stack trace.
  await page.setInputFiles("input[name=file]", { name: "notes.docx", mimeType: "application/octet-stream", buffer: Buffer.from("PK") });
  await page.click("text=Upload and process");
  assert.match(await (await page.waitForSelector("#flash [role=alert]")).textContent(), /notes\.docx: a source is a/);

  // A podcast from that source: the page notes every progress value its
  // table draws, as the live stream makes it redraw.
  await page.goto(app + "/podcasts");
  await page.evaluate(() => {
    window.seen = [];
    const note = () => {
      const row = document.querySelector("#episodes tr[data-episode]");
      const bar = row?.querySelector("progress");
      const entry = `${row?.dataset.status}:${bar ? bar.value : "-"}`;
      if (row && window.seen.at(-1) !== entry) window.seen.push(entry);
    };
    new MutationObserver(note).observe(document.body, { subtree: true, childList: true, attributes: true });
  });
  await page.fill("input[name=episode_name]", "Durable queues");
  await page.selectOption("select[name=episode_profile]", "deep_dive");
  await page.selectOption("select[name=source_id]", { label: "How a durable queue works" });
  await page.click("text=Generate");
  await page.waitForSelector("#episodes tr[data-episode] .status[data-status=running]");
  await page.waitForFunction(() => window.seen.filter((s) => /^running:[\d.]+$/.test(s)).length >= 3);
  await page.screenshot({ path: join(shots, "podcasts.png"), fullPage: true });
  await page.waitForSelector("#episodes tr[data-episode] .status[data-status=completed]", { timeout: 120000 });
  const running = (await page.evaluate(() => window.seen)).filter((s) => /^running:[\d.]+$/.test(s)).map((s) => Number(s.split(":")[1]));
  assert.ok(running.length >= 3, `progress drawn: ${running}`);
  assert.ok(running.every((v, i) => i === 0 || v >= running[i - 1]), `progress went back: ${running}`);
  assert.ok(running.at(-1) > running[0], `progress did not move: ${running}`);

  // The audio plays in the page.
  const played = await page.evaluate(async () => {
    const audio = document.querySelector("#episodes audio");
    audio.muted = true;
    await audio.play();
    await new Promise((r) => setTimeout(r, 700));
    return { duration: audio.duration, time: audio.currentTime, error: audio.error };
  });
  assert.equal(played.error, null);
  assert.ok(played.duration > 10 && played.time > 0, JSON.stringify(played));

  // The episode's page: outline, transcript, errand's event log.
  await page.click("#episodes tr[data-episode] a");
  await page.waitForSelector("h2:text('Event log')");
  assert.match(await page.textContent(".transcript"), /A job queue keeps work safe/);
  assert.ok((await page.$$(".events tbody tr")).length > 10);
  await page.screenshot({ path: join(shots, "episode.png"), fullPage: true });
  const audioUrl = await page.getAttribute("audio", "src");
  const audio = Buffer.from(await (await fetch(app + audioUrl)).arrayBuffer());

  // Transcribe the episode: the page follows the job and swaps in the text.
  await page.goto(app + "/transcribe");
  await page.setInputFiles("input[name=file]", { name: "episode.wav", mimeType: "audio/wav", buffer: audio });
  await page.click("button:text(\"Transcribe\")");
  await page.waitForURL(/\/transcriptions\//);
  const transcript = await page.waitForSelector("#transcript", { timeout: 300000 });
  assert.match(await transcript.textContent(), /\bjob\b/);
  await page.screenshot({ path: join(shots, "transcription.png"), fullPage: true });
  await context.close();
});
