// The dashboard in a real browser: Debian's Chromium, driven by
// playwright-core, against a real `errand serve` (SQLite, with a token).
//
//   cargo build && (cd tests/browser && npm ci && npm test)
//
// ERRAND_BIN picks the binary (default: target/debug/errand);
// ERRAND_SCREENSHOTS=docs/screenshots writes the pictures of each page that
// docs/dashboard.md shows (default: a temporary folder).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";
import { freePort, until } from "./common.mjs";

const root = resolve(import.meta.dirname, "../..");
const binary = process.env.ERRAND_BIN ?? join(root, "target/debug/errand");
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const token = "browser-test-token";
const shots = resolve(root, process.env.ERRAND_SCREENSHOTS ?? mkdtempSync(join(tmpdir(), "errand-shots-")));
mkdirSync(shots, { recursive: true });

let server;
let base;
let browser;
let folder;

async function api(path, init = {}) {
  const response = await fetch(base + path, {
    ...init,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...init.headers },
  });
  const body = await response.json();
  assert.ok(response.ok, `${path}: ${response.status} ${JSON.stringify(body)}`);
  return body;
}

/// A browser context that has logged in (holds the cookie), at phone or
/// desktop size.
async function loggedIn(viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport, colorScheme: "light" });
  const page = await context.newPage();
  await page.goto(base + "/ui/login");
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForURL(base + "/ui");
  return { context, page };
}

before(async () => {
  folder = mkdtempSync(join(tmpdir(), "errand-browser-"));
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  server = spawn(binary, ["serve", "--store", `sqlite://${join(folder, "errand.db")}`, "--bind", `127.0.0.1:${port}`], {
    env: { ...process.env, ERRAND_API_TOKEN: token, ERRAND_LOG: "warn", NO_COLOR: "1" },
    stdio: ["ignore", "inherit", "inherit"],
  });
  await until("errand serve to be ready", async () => {
    try {
      return (await fetch(base + "/api/health")).ok;
    } catch {
      return false;
    }
  });
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  if (server && server.exitCode === null) {
    server.kill("SIGTERM");
    await new Promise((r) => server.once("exit", r));
  }
  rmSync(folder, { recursive: true, force: true });
});

test("logging in with the token opens the dashboard; a wrong one is refused", async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  await page.goto(base + "/ui/stats");
  assert.equal(new URL(page.url()).pathname, "/ui/login");
  await page.screenshot({ path: join(shots, "login.png") });
  await page.fill("#token", "not-the-token");
  await page.click("button[type=submit]");
  assert.match(await page.textContent("[role=alert]"), /not right/);
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForURL(base + "/ui/stats");
  assert.equal(await page.textContent("h1"), "Stats");
  // The cookie is HttpOnly: scripts on the page cannot read the token.
  assert.equal(await page.evaluate(() => document.cookie), "");
  await page.click("text=Log out");
  await page.waitForURL(base + "/ui/login");
  await page.goto(base + "/ui");
  assert.equal(new URL(page.url()).pathname, "/ui/login");
  await context.close();
});

test("a job submitted from the form goes new → running → completed live in the jobs table", async () => {
  const { context, page: jobs } = await loggedIn();
  await jobs.waitForSelector(".live.on");
  // Record every status and progress value the job's row shows, as the
  // page draws them, without the test polling the server.
  await jobs.evaluate(() => {
    window.seen = [];
    const note = () => {
      for (const row of document.querySelectorAll("tr[data-status]")) {
        const progress = row.querySelector("progress");
        const entry = { id: row.id, status: row.dataset.status, progress: progress ? Number(progress.value) : null };
        const last = window.seen.findLast((e) => e.id === entry.id);
        if (!last || last.status !== entry.status || last.progress !== entry.progress) window.seen.push(entry);
      }
    };
    new MutationObserver(note).observe(document.body, { subtree: true, childList: true });
  });

  const form = await context.newPage();
  await form.goto(base + "/ui/submit");
  await form.selectOption("select[name=command]", "demo.sleep");
  await form.waitForURL(/command=demo.sleep/);
  await form.fill("#field-secs", "3");
  await form.fill("#field-steps", "6");
  await form.click("details.options summary");
  await form.fill("#option-delay_secs", "1.5");
  await form.screenshot({ path: join(shots, "submit.png"), fullPage: true });
  await form.click("button:has-text('Submit')");
  await form.waitForURL(/\/ui\/jobs\//);
  const jobId = form.url().split("/ui/jobs/")[1];
  const rowId = `job-${jobId}`;

  await jobs.waitForSelector(`#${rowId}[data-status=new]`, { timeout: 10000 });
  await jobs.waitForSelector(`#${rowId}[data-status=running]`, { timeout: 10000 });
  await jobs.waitForSelector(`#${rowId}[data-status=completed]`, { timeout: 15000 });

  const seen = (await jobs.evaluate(() => window.seen)).filter((e) => e.id === rowId);
  const statuses = seen.map((e) => e.status).filter((s, i, all) => s !== all[i - 1]);
  assert.deepEqual(statuses, ["new", "running", "completed"], JSON.stringify(seen));
  const moving = seen.filter((e) => e.status === "running" && e.progress !== null).map((e) => e.progress);
  assert.ok(new Set(moving).size >= 2, `the progress bar moved: ${JSON.stringify(seen)}`);
  assert.deepEqual(moving, [...moving].sort((a, b) => a - b), "progress only goes forward");

  // The job page, followed live too, shows the end and the result.
  await form.waitForSelector("#job-state .status.completed", { timeout: 10000 });
  assert.match(await form.textContent("#job-state"), /Result/);
  assert.match(await form.textContent("#job-log"), /completed/);
  await form.screenshot({ path: join(shots, "job.png"), fullPage: true });
  await context.close();
});

test("a running job is canceled from its page, after a confirmation", async () => {
  const { context, page } = await loggedIn();
  const { job_id: jobId } = await api("/api/commands/jobs", {
    method: "POST",
    body: JSON.stringify({ command: "demo.sleep", input: { secs: 60, steps: 60 } }),
  });
  await page.goto(`${base}/ui/jobs/${jobId}`);
  await page.waitForSelector("#job-state .status.running", { timeout: 10000 });
  let asked = null;
  page.once("dialog", (dialog) => {
    asked = dialog.message();
    dialog.accept();
  });
  await page.click("#cancel");
  await page.waitForSelector("#job-state .status.canceled", { timeout: 15000 });
  assert.equal(asked, "Cancel this job?");
  const job = await api(`/api/commands/jobs/${jobId}`);
  assert.equal(job.status, "canceled");
  // Canceled jobs can be run again.
  assert.ok(await page.isVisible("#retry"));
  await context.close();
});

test("jobs are filtered by tag and context value, and a job's tag links to its tag's jobs", async () => {
  const { context, page } = await loggedIn();
  const submit = async (body) =>
    (await api("/api/commands/jobs", {
      method: "POST",
      body: JSON.stringify({ command: "demo.echo", input: {}, options: { delay_secs: 3600 }, ...body }),
    })).job_id;
  const first = await submit({ tags: ["podcast-bt", "urgent"], context: { notebook_id: 42 } });
  const second = await submit({ tags: ["podcast-bt"], context: { notebook_id: "7" } });
  await submit({ tags: ["other-bt"], context: { notebook_id: 42 } });
  const listed = async () =>
    page.$$eval("#jobs-table tbody tr[id^=job-]", (rows) => rows.map((row) => row.id.slice("job-".length)));

  await page.fill("input[name=tag]", "podcast-bt");
  await page.click("form.filters button[type=submit]");
  await page.waitForURL(/tag=podcast-bt/);
  assert.deepEqual(await listed(), [second, first]);
  await page.fill("input[name=context]", "notebook_id=42");
  await page.click("form.filters button[type=submit]");
  await page.waitForURL(/context=notebook_id/);
  assert.deepEqual(await listed(), [first]);
  assert.equal(await page.inputValue("input[name=context]"), "notebook_id=42", "the filter is kept");

  // Search by id: its start lists the jobs it begins, the whole id opens the job.
  await page.goto(`${base}/ui`);
  await page.fill("input[name=id]", second.slice(0, 30).toUpperCase());
  await page.click("form.filters button[type=submit]");
  await page.waitForURL(/id=/);
  assert.deepEqual(await listed(), [second]);
  await page.fill("input[name=id]", first);
  await page.click("form.filters button[type=submit]");
  await page.waitForURL(`${base}/ui/jobs/${first}`);

  await page.goto(`${base}/ui/jobs/${first}`);
  const tags = await page.$$eval("p.tags a.tag", (links) => links.map((a) => a.textContent));
  assert.deepEqual(tags, ["podcast-bt", "urgent"]);
  await page.click("p.tags a.tag:has-text('urgent')");
  await page.waitForURL(/tag=urgent/);
  assert.deepEqual(await listed(), [first]);
  await context.close();
});

test("a per-job link opens that job's live page with no token, and nothing else", async () => {
  const { job_id: jobId } = await api("/api/commands/jobs", {
    method: "POST",
    body: JSON.stringify({ command: "demo.sleep", input: { secs: 3, steps: 3 } }),
  });
  const { job_id: otherId } = await api("/api/commands/jobs", {
    method: "POST",
    body: JSON.stringify({ command: "demo.echo", input: { secret: "not yours" } }),
  });
  const link = await api(`/api/commands/jobs/${jobId}/links?ttl_secs=600`, { method: "POST" });
  assert.equal(link.job_id, jobId);
  // A fresh browser: no cookie, no token.
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: "light" });
  const page = await context.newPage();
  await page.goto(base + link.page_url);
  await page.waitForSelector("#connection:has-text('live')", { timeout: 10000 });
  await page.waitForSelector("#progress progress", { timeout: 10000 });
  await page.waitForSelector("#status .status.completed", { timeout: 20000 });
  assert.match(await page.textContent("#outcome"), /slept_secs/);
  assert.match(await page.textContent("#progress"), /100% step 3 of 3/);
  await page.waitForSelector("#connection:has-text('finished')");
  await page.screenshot({ path: join(shots, "follow.png"), fullPage: true });

  // The same link on another job, or on anything but reading this one, is refused.
  const query = link.page_url.slice(link.page_url.indexOf("?"));
  for (const [method, path] of [
    ["GET", `/api/commands/jobs/${otherId}${query}`],
    ["GET", `/api/commands/jobs/${otherId}/stream${query}`],
    ["GET", `/ui/follow/${otherId}${query}`],
    ["GET", `/api/commands/jobs${query}`],
    ["GET", `/ui/jobs/${jobId}${query}`],
    ["DELETE", `/api/commands/jobs/${jobId}${query}`],
    ["POST", `/api/commands/jobs/${jobId}/retry${query}`],
  ]) {
    const status = await page.evaluate(
      async ([m, p]) => (await fetch(p, { method: m, redirect: "manual" })).status,
      [method, path],
    );
    assert.ok([401, 0].includes(status) || (status >= 300 && status < 400), `${method} ${path}: ${status}`);
  }
  const own = await page.evaluate(async (p) => (await fetch(p)).json(), link.job_url);
  assert.equal(own.status, "completed");
  const forged = link.job_url.replace(/link=\d+\./, "link=9999999999.");
  assert.equal(await page.evaluate(async (p) => (await fetch(p)).status, forged), 401);
  await context.close();
});

test("bulk actions retry, cancel and delete the filtered jobs, each after a confirmation", async () => {
  const { context, page } = await loggedIn();
  const submit = async (body) =>
    (await api("/api/commands/jobs", {
      method: "POST",
      body: JSON.stringify({ tags: ["bulk-bt"], ...body }),
    })).job_id;
  const failing = [];
  for (let i = 0; i < 3; i++) {
    failing.push(await submit({ command: "demo.fail", input: { times: 100 }, options: { max_attempts: 1 } }));
  }
  const waiting = [];
  for (let i = 0; i < 2; i++) {
    waiting.push(await submit({ command: "demo.echo", input: {}, options: { delay_secs: 3600 } }));
  }
  await submit({ command: "demo.echo", input: {}, tags: ["other-bulk-bt"], options: { delay_secs: 3600 } });
  for (const id of failing) {
    await until(`job ${id} to fail`, async () => (await api(`/api/commands/jobs/${id}`)).status === "failed");
  }
  await page.goto(`${base}/ui?tag=bulk-bt`);
  await page.waitForSelector("#jobs-table tbody tr[data-status=failed]");
  assert.match(await page.textContent("#jobs-table tbody tr[data-status=failed] td.error-cell"), /./, "the error column");

  const press = async (button) => {
    let asked = null;
    page.once("dialog", (dialog) => {
      asked = dialog.message();
      dialog.accept();
    });
    await page.click(button);
    await page.waitForSelector("#bulk-notice p");
    const notice = await page.textContent("#bulk-notice p");
    await page.evaluate(() => { document.getElementById("bulk-notice").innerHTML = ""; });
    return [asked, notice];
  };
  // Dismissed: nothing happens.
  page.once("dialog", (dialog) => dialog.dismiss());
  await page.click("#bulk-delete");
  await new Promise((r) => setTimeout(r, 300));
  assert.equal((await api(`/api/commands/jobs/${failing[0]}`)).status, "failed");

  let [asked, notice] = await press("#bulk-retry");
  assert.match(asked, /failed ones of every job these filters show/);
  assert.equal(notice, "Queued 3 failed jobs again.");
  for (const id of failing) {
    await until(`job ${id} to fail again`, async () => {
      const job = await api(`/api/commands/jobs/${id}`);
      return job.status === "failed" && job.attempt === 1;
    });
  }
  // The retried job's page tells its two runs' first attempts apart.
  await page.goto(`${base}/ui/jobs/${failing[0]}`);
  const runs = await page.$$eval("#attempts tbody tr", (rows) =>
    rows.map((row) => [...row.querySelectorAll("td")].map((td) => td.textContent.trim())));
  assert.deepEqual(runs.map((r) => [r[0], r[1]]), [["1", "1"], ["2", "1"]]);
  assert.match(runs[1][5], /^failed: /);
  await page.goto(`${base}/ui?tag=bulk-bt`);
  [asked, notice] = await press("#bulk-cancel");
  assert.match(asked, /Cancel every job these filters show that has not ended/);
  assert.equal(notice, "Canceled 2 jobs (running ones are told to stop).");
  for (const id of waiting) assert.equal((await api(`/api/commands/jobs/${id}`)).status, "canceled");

  [asked, notice] = await press("#bulk-delete");
  assert.match(asked, /cannot be undone/);
  assert.equal(notice, "Deleted 5 ended jobs.");
  const left = await api("/api/commands/jobs?tag=bulk-bt");
  assert.deepEqual(left.jobs, []);
  const other = await api("/api/commands/jobs?tag=other-bulk-bt");
  assert.equal(other.jobs.length, 1, "jobs outside the filters are untouched");
  await page.waitForSelector("#jobs-table tbody td:has-text('No jobs match.')");
  await context.close();
});

test("the API's 422 is shown next to the field it is about", async () => {
  const { context, page } = await loggedIn();
  await page.goto(base + "/ui/submit?command=demo.sleep");
  // A required field left empty is caught by the browser, from the schema.
  await page.fill("#field-secs", "");
  await page.click("button:has-text('Submit')");
  assert.equal(await page.evaluate(() => document.getElementById("field-secs").validity.valueMissing), true);
  assert.equal(new URL(page.url()).search, "?command=demo.sleep", "nothing was sent");
  // What only the API knows (steps has a minimum of 1) comes back as its 422.
  await page.fill("#field-secs", "0.1");
  await page.fill("#field-steps", "-1");
  await page.click("button:has-text('Submit')");
  const problem = page.locator("#field-steps ~ [role=alert]");
  assert.match(await problem.textContent(), /input\/steps: -1 is less than the minimum of 1/);
  assert.equal(await page.getAttribute("#field-steps", "aria-invalid"), "true");
  await page.fill("#field-steps", "2");
  await page.click("details.options summary");
  await page.fill("#option-max_attempts", "0");
  await page.click("button:has-text('Submit')");
  assert.match(await page.locator("#option-max_attempts ~ [role=alert]").textContent(), /max_attempts must be from 1 to 10000/);
  // What was typed is kept.
  assert.equal(await page.inputValue("#field-secs"), "0.1");
  await context.close();
});

test("workers and stats pages, with the throughput chart, at desktop and phone width", async () => {
  for (let i = 0; i < 12; i++) {
    await api("/api/commands/jobs", { method: "POST", body: JSON.stringify({ command: "demo.echo", input: { n: i } }) });
  }
  await api("/api/commands/jobs", { method: "POST", body: JSON.stringify({ command: "demo.fail", input: { times: 9 }, options: { max_attempts: 1 } }) });
  const { job_id: sleeper } = await api("/api/commands/jobs", {
    method: "POST",
    body: JSON.stringify({ command: "demo.sleep", input: { secs: 8, steps: 16 } }),
  });
  const { context, page } = await loggedIn();
  await page.waitForSelector(`#job-${sleeper}[data-status=running] progress`, { timeout: 10000 });
  await page.waitForTimeout(1500);
  await page.screenshot({ path: join(shots, "jobs.png") });
  await page.goto(base + "/ui/workers");
  assert.match(await page.textContent("tbody"), /demo\.sleep/);
  assert.ok(await page.isVisible(`a[href="/ui/jobs/${sleeper}"]`), "the worker's running job is listed");
  await page.screenshot({ path: join(shots, "workers.png") });
  // Live: once the job ends, its worker's row no longer lists it, without a reload.
  await page.waitForSelector(`a[href="/ui/jobs/${sleeper}"]`, { state: "detached", timeout: 20000 });
  await until("the jobs to finish", async () => {
    const { commands } = await api("/api/commands/stats");
    return commands.some((s) => s.command === "fail" && s.counts.failed >= 1);
  });
  await page.goto(base + "/ui/stats");
  const description = await page.textContent("svg desc");
  const [, completed, failed] = description.match(/(\d+) completed and (\d+) failed/).map(Number);
  assert.ok(completed >= 13 && failed >= 1, description);
  assert.ok((await page.locator("svg rect.completed").count()) >= 1);
  await page.screenshot({ path: join(shots, "stats.png"), fullPage: true });
  // Live: a job that completes now is counted without a reload.
  const echoCompleted = async () =>
    Number(await page.textContent("#live-panel tbody tr:has(a[href='/ui?command=demo.echo']) td:nth-child(4)"));
  const before = await echoCompleted();
  await api("/api/commands/jobs", { method: "POST", body: JSON.stringify({ command: "demo.echo", input: { n: 99 } }) });
  await until("the stats page to count the new job", async () => (await echoCompleted()) === before + 1, 15000);
  await context.close();

  const phone = await loggedIn({ width: 390, height: 844 });
  await phone.page.screenshot({ path: join(shots, "jobs-phone.png") });
  const overflow = await phone.page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  assert.equal(overflow, false, "the page fits a phone's width");
  await phone.context.close();
});

test("schedules: listed with their next run and last job, paused, resumed and deleted after a confirmation", async () => {
  await api("/api/schedules/nightly-report", {
    method: "PUT",
    body: JSON.stringify({ cron: "0 30 3 * * *", timezone: "Europe/Paris", missed: "run_once", job: { command: "demo.echo", input: { report: "nightly" } } }),
  });
  await api("/api/schedules/heartbeat", {
    method: "PUT",
    body: JSON.stringify({ cron: "* * * * * *", job: { command: "demo.echo", input: { beat: true } } }),
  });
  await until("the every-second schedule's first job", async () => {
    const schedule = await api("/api/schedules/heartbeat");
    return schedule.last_job_id;
  });
  const { context, page } = await loggedIn();
  await page.click("nav.main >> text=Schedules");
  await page.waitForURL(base + "/ui/schedules");
  const nightly = page.locator("tr", { hasText: "nightly-report" });
  assert.match(await nightly.textContent(), /0 30 3 \* \* \*/);
  assert.match(await nightly.textContent(), /Europe\/Paris, missed: run_once/);
  assert.match(await nightly.locator("time").textContent(), /^in \d+[smhd]$/);
  const beat = page.locator("tr", { hasText: "heartbeat" });
  const lastJob = beat.locator("a.id");
  assert.match(await lastJob.textContent(), /^[0-9a-f]{32}$/);
  await page.screenshot({ path: join(shots, "schedules.png") });

  await nightly.locator("button", { hasText: "Pause" }).click();
  await page.waitForURL(base + "/ui/schedules");
  assert.match(await page.locator("tr", { hasText: "nightly-report" }).textContent(), /paused/);
  assert.equal((await api("/api/schedules/nightly-report")).paused, true);
  await page.locator("tr", { hasText: "nightly-report" }).locator("button", { hasText: "Resume" }).click();
  await page.waitForURL(base + "/ui/schedules");
  assert.equal((await api("/api/schedules/nightly-report")).paused, false);

  let asked = null;
  page.once("dialog", (dialog) => {
    asked = dialog.message();
    dialog.accept();
  });
  await page.locator("tr", { hasText: "heartbeat" }).locator("button", { hasText: "Delete" }).click();
  await page.waitForFunction(() => !document.body.textContent.includes("heartbeat"));
  assert.equal(asked, "Delete the schedule heartbeat? Its jobs stay.");
  const { schedules } = await api("/api/schedules");
  assert.deepEqual(schedules.map((s) => s.name), ["nightly-report"]);
  await context.close();
});

test("queues: depth shown, paused and resumed from the page; limits listed", async () => {
  await api("/api/limits/demo.sleep", {
    method: "PUT",
    body: JSON.stringify({ key: "context.user", max_running: 2, max_starts: 60, per_secs: 60 }),
  });
  await api("/api/queues/reports/pause", { method: "POST" });
  await api("/api/commands/jobs", {
    method: "POST",
    body: JSON.stringify({ command: "demo.echo", input: { n: 1 }, options: { queue: "reports" } }),
  });
  const { context, page } = await loggedIn();
  await page.goto(base + "/ui/queues");
  const reports = page.locator("tr", { hasText: "reports" });
  assert.match(await reports.textContent(), /reports\s*1\s*0\s*paused/);
  assert.match(await page.locator("#limits tbody tr").textContent(), /demo\.sleep\s*context\.user\s*2\s*60 per 60 s/);
  await page.screenshot({ path: join(shots, "queues.png") });
  await reports.locator("button", { hasText: "Resume" }).click();
  await page.waitForURL(base + "/ui/queues");
  // The server's worker claims only from "default": the job still waits.
  assert.match(await page.locator("tr", { hasText: "reports" }).textContent(), /reports\s*1\s*0\s*active/);
  const { queues } = await api("/api/queues");
  assert.equal(queues.find((q) => q.name === "reports").paused, false);
  await fetch(base + "/api/limits/demo.sleep", { method: "DELETE", headers: { authorization: `Bearer ${token}` } });
  await context.close();
});
