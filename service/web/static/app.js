// The attnlab page: keeps the server-rendered job table and job detail fresh, follows a job's log,
// submits YAML configs and cancels jobs. Every call to the service carries the bearer token the user
// signed in with (any user's: the service decides what it may read and do); the token lives in
// sessionStorage only (gone when the browser session ends).
"use strict";

const TOKEN_KEY = "attnlab.token";
const LIST_EVERY_MS = 3000;
const DETAIL_EVERY_MS = 2000;
const LOG_TAIL_BYTES = 65536;
const LOG_KEEP_CHARS = 300000;
const CONFIRM_MS = 4000;

const $ = (selector, root = document) => root.querySelector(selector);
const view = { jobId: null, listHtml: "", detailHtml: "", detailTimer: null, logAbort: null, logAtEnd: true,
               keyNonce: "" };

// ---- the token and every call to the service -------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function withToken(headers = {}) {
  return token() ? { ...headers, Authorization: `Bearer ${token()}` } : headers;
}

function call(path, options = {}) {
  return fetch(path, { cache: "no-store", ...options, headers: withToken(options.headers) });
}

function signIn(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
  showSignedIn();
  notice("");
  whoAmI();
  refreshList();
  if (view.jobId !== null) openJob(view.jobId, { push: false });
}

function showSignedIn() {
  const signedIn = Boolean(token());
  $("#signin").hidden = signedIn;
  $("#signed").hidden = !signedIn;
  if (!signedIn) showRole(null);
}

// Whose token it is: shown beside "signed in"; a viewer's page has no Submit (its Cancel buttons are
// left out by the server, which asks the same question).
async function whoAmI() {
  let response;
  try {
    response = await call("/users/me");
  } catch (error) {
    return;
  }
  if (response.status === 401) {
    const body = await response.json().catch(() => ({}));
    askSignIn(`The service refused the token (${body.message || "unknown token"}); sign in again.`);
  } else if (response.ok) {
    showRole(await response.json());
  }
}

function showRole(me) {
  $("#who").textContent = me ? `${me.name} (${me.role})` : "signed in";
  document.body.dataset.role = me ? me.role : "";
  $("#open-submit").hidden = Boolean(me) && me.role === "viewer";
}

function askSignIn(message) {
  if (token()) sessionStorage.removeItem(TOKEN_KEY);  // it was refused: let the user type another
  showSignedIn();
  notice(message, "error");
  $("#token").focus();
}

function notice(text, kind = "info") {
  const box = $("#notice");
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = !text;
}

// ---- the job table ---------------------------------------------------------------------------

function listQuery() {
  const box = $("#jobs");
  const query = new URLSearchParams();
  for (const name of ["kind", "state", "limit"]) if (box.dataset[name]) query.set(name, box.dataset[name]);
  return query;
}

async function refreshList() {
  if (document.hidden) return;
  let response;
  try {
    response = await call(`/ui/jobs?${listQuery()}`);
  } catch (error) {
    notice(`The service does not answer (${error.message}); retrying.`, "error");
    return;
  }
  const html = await response.text();
  if (response.status === 401) {
    if (!token()) $("#jobs").innerHTML = html;
    else askSignIn("The service refused the token; sign in again.");
    return;
  }
  if (html !== view.listHtml) {
    view.listHtml = html;
    $("#jobs").innerHTML = html;
    localizeTimes($("#jobs"));
    markSelected();
  }
}

function markSelected() {
  for (const row of document.querySelectorAll(".job-row")) {
    row.classList.toggle("selected", Number(row.dataset.job) === view.jobId);
  }
}

// Made once: a formatter per call to toLocaleString cost ~0.1 ms, a tenth of a second for 1,000 rows.
const TIME_FORMATS = {
  long: new Intl.DateTimeFormat([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
                                      second: "2-digit", hourCycle: "h23" }),
  short: new Intl.DateTimeFormat([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
                                       hourCycle: "h23" }),
};

function localizeTimes(root) {
  for (const element of root.querySelectorAll("time[datetime]")) {
    element.title = element.textContent;
    element.textContent = TIME_FORMATS["short" in element.dataset ? "short" : "long"].format(new Date(element.dateTime));
  }
}

// ---- one job: detail, live progress, log -----------------------------------------------------

function openJob(jobId, { push = true } = {}) {
  view.jobId = jobId;
  view.detailHtml = "";
  document.body.classList.add("show-detail");
  if (push) {
    const query = listQuery();
    query.delete("limit");
    query.set("job", jobId);
    history.pushState({ job: jobId }, "", `/?${query}`);
  }
  markSelected();
  loadDetail();
  followLog(jobId);
}

function closeJob() {
  view.jobId = null;
  clearTimeout(view.detailTimer);
  if (view.logAbort) view.logAbort.abort();
  document.body.classList.remove("show-detail");
  $("#log-box").hidden = true;
  const query = new URLSearchParams(location.search);
  query.delete("job");
  history.pushState({}, "", query.size ? `/?${query}` : "/");
  markSelected();
}

async function loadDetail() {
  const jobId = view.jobId;
  clearTimeout(view.detailTimer);
  let response;
  try {
    response = await call(`/ui/jobs/${jobId}`);
  } catch (error) {
    view.detailTimer = setTimeout(loadDetail, DETAIL_EVERY_MS);
    return;
  }
  const html = await response.text();
  if (jobId !== view.jobId) return;
  if (html !== view.detailHtml) {
    view.detailHtml = html;
    $("#detail-info").innerHTML = html;
    localizeTimes($("#detail-info"));
    const message = $("#detail-info .message");  // a failure's last lines: the error is at the end
    if (message) message.scrollTop = message.scrollHeight;
    if (view.logAtEnd) $("#log").scrollTop = $("#log").scrollHeight;
  }
  if (response.status === 401) {
    askSignIn("Sign in with your token to follow this job.");
    return;
  }
  const article = $("#detail-info article");
  if (article && article.dataset.finished !== "true") view.detailTimer = setTimeout(loadDetail, DETAIL_EVERY_MS);
}

async function followLog(jobId) {
  if (view.logAbort) view.logAbort.abort();
  const controller = new AbortController();
  view.logAbort = controller;
  const log = $("#log");
  log.textContent = "";
  view.logAtEnd = true;
  $("#log-box").hidden = false;
  logState("following live");
  try {
    const response = await fetch(`/jobs/${jobId}/logs?follow=true&tail=${LOG_TAIL_BYTES}`,
                                 { headers: withToken(), signal: controller.signal, cache: "no-store" });
    if (!response.ok) {
      logState(response.status === 401 ? "sign in to read the log" : `unavailable (HTTP ${response.status})`);
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      appendLog(value);
    }
    logState("the job has ended");
    if (jobId === view.jobId) loadDetail();
  } catch (error) {
    if (error.name !== "AbortError") logState(`interrupted (${error.message})`);
  }
}

function appendLog(text) {
  const log = $("#log");
  log.append(text);
  if (log.textContent.length > LOG_KEEP_CHARS * 1.3) log.textContent = log.textContent.slice(-LOG_KEEP_CHARS);
  if (view.logAtEnd) log.scrollTop = log.scrollHeight;  // follow the end unless the reader scrolled up
}

function logState(text) {
  $("#log-state").textContent = `· ${text}`;
}

async function cancelJob(button) {
  if (!token()) {
    askSignIn("Cancelling needs your token: sign in first.");
    return;
  }
  if (button.dataset.armed !== "true") {  // a second click confirms
    button.dataset.armed = "true";
    button.textContent = "Confirm cancel";
    setTimeout(() => { button.dataset.armed = "false"; button.textContent = "Cancel"; }, CONFIRM_MS);
    return;
  }
  button.disabled = true;
  button.textContent = "Cancelling…";
  const response = await call(`/jobs/${button.dataset.cancel}/cancel`, { method: "POST" });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) askSignIn(`Cancel refused: ${body.message || "wrong token"}.`);
  else if (response.status === 403) notice(`Cancel refused: ${body.message}.`, "error");
  else if (!response.ok) notice(`Cancel failed: ${body.message || `HTTP ${response.status}`}`, "error");
  else notice(`Job ${body.id} is ${body.state}.`);
  loadDetail();
  refreshList();
}

// ---- submitting a config -------------------------------------------------------------------

const editor = { errorLines: new Set() };

function isSearch(text) {
  return /^search\s*:/m.test(text);
}

function escapeHtml(text) {
  return text.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
}

function drawEditor() {
  const text = $("#config").value;
  const lines = text.split("\n");
  $("#gutter").innerHTML = lines.map((_, i) =>
    editor.errorLines.has(i + 1) ? `<span class="bad">${i + 1}</span>` : String(i + 1)).join("\n");
  $("#backdrop").innerHTML = lines.map((line, i) =>
    editor.errorLines.has(i + 1) ? `<mark>${escapeHtml(line) || " "}</mark>` : escapeHtml(line)).join("\n") + "\n";
  $("#submit-kind").textContent = isSearch(text) ? "a search (attnlab tune)" : "a training run (attnlab train)";
  syncScroll();
}

function syncScroll() {
  const area = $("#config");
  $("#backdrop").scrollTop = area.scrollTop;
  $("#backdrop").scrollLeft = area.scrollLeft;
  $("#gutter").scrollTop = area.scrollTop;
}

function fieldOf(loc) {
  return (loc || []).filter((part) => !["body", "config", "image", "video"].includes(part)).join(".");
}

function showErrors(items) {
  const list = $("#errors");
  list.replaceChildren();
  editor.errorLines = new Set(items.filter((item) => item.line).map((item) => item.line));
  for (const item of items) {
    const entry = document.createElement("li");
    if (item.line) {
      const jump = document.createElement("button");
      jump.type = "button";
      jump.className = "line";
      jump.textContent = `line ${item.line}`;
      jump.addEventListener("click", () => goToLine(item.line));
      entry.append(jump, " ");
    }
    const field = fieldOf(item.loc);
    if (field) {
      const code = document.createElement("code");
      code.textContent = field;
      entry.append(code, " ");
    }
    entry.append(item.msg || item.message || String(item));
    list.append(entry);
  }
  drawEditor();
  if (items[0] && items[0].line) goToLine(items[0].line);
}

function goToLine(line) {
  const area = $("#config");
  const lines = area.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((sum, text) => sum + text.length + 1, 0);
  area.focus();
  area.setSelectionRange(start, start + (lines[line - 1] || "").length);
  const lineHeight = parseFloat(getComputedStyle(area).lineHeight) || 18;
  area.scrollTop = Math.max(0, (line - 3) * lineHeight);
  syncScroll();
}

async function idempotencyKey(text) {
  // The same text sent twice from one opening of the dialog (a double click, a retry) is one job.
  if (!window.crypto || !crypto.subtle) return null;
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(view.keyNonce + text));
  return "web-" + Array.from(new Uint8Array(digest).slice(0, 16), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function submitConfig(event) {
  event.preventDefault();
  const typed = $("#submit-token").value.trim();
  if (typed) {
    $("#submit-token").value = "";
    signIn(typed);
  }
  const text = $("#config").value;
  if (!text.trim()) {
    showErrors([{ msg: "Paste a config or choose a file first." }]);
    return;
  }
  const search = isSearch(text);
  const headers = { "Content-Type": "application/yaml" };
  const key = await idempotencyKey(text);
  if (key) headers["Idempotency-Key"] = key;
  const button = $("#submit-button");
  button.disabled = true;
  button.textContent = "Checking…";
  let response;
  try {
    response = await call(search ? "/searches" : "/jobs", { method: "POST", headers, body: text });
  } catch (error) {
    showErrors([{ msg: `The service does not answer: ${error.message}` }]);
    return;
  } finally {
    button.disabled = false;
    button.textContent = "Submit";
  }
  const body = await response.json().catch(() => ({ message: `HTTP ${response.status}` }));
  if (response.ok) {
    $("#submit").close();
    $("#config").value = "";
    showErrors([]);
    notice(`Submitted ${search ? "search" : "training job"} #${body.id} (${body.name}): ${body.state}.`);
    view.listHtml = "";
    await refreshList();
    openJob(body.id);
    return;
  }
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignedIn();
    $("#submit-token-row").hidden = false;
    $("#submit-token").focus();
    showErrors([{ msg: `Submitting needs your token (${body.message}). Type it above.` }]);
    return;
  }
  if (response.status === 403) {
    showErrors([{ msg: `Refused: ${body.message}. Sign in with a user's or an admin's token to submit.` }]);
    return;
  }
  showErrors(Array.isArray(body.detail) ? body.detail : [{ msg: body.message || String(body.detail) }]);
}

function openSubmit() {
  view.keyNonce = String(Date.now()) + Math.random();
  $("#submit-token-row").hidden = Boolean(token());
  $("#submit").showModal();
  drawEditor();
  $("#config").focus();
}

// ---- wiring ----------------------------------------------------------------------------------

function wire() {
  $("#signin").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("#token").value.trim();
    $("#token").value = "";
    if (value) signIn(value);
  });
  $("#signout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignedIn();
  });
  document.addEventListener("click", (event) => {
    const opener = event.target.closest("[data-open]");
    if (opener && !event.metaKey && !event.ctrlKey) {
      event.preventDefault();
      openJob(Number(opener.dataset.open));
      return;
    }
    const row = event.target.closest(".job-row");
    if (row && !event.target.closest("a")) {
      openJob(Number(row.dataset.job));
      return;
    }
    const cancel = event.target.closest("[data-cancel]");
    if (cancel) cancelJob(cancel);
    if (event.target.closest("[data-back]")) closeJob();
  });
  window.addEventListener("popstate", () => {
    const job = new URLSearchParams(location.search).get("job");
    if (job) openJob(Number(job), { push: false });
    else if (view.jobId !== null) closeJob();
  });
  $("#open-submit").addEventListener("click", openSubmit);
  $("#close-submit").addEventListener("click", () => $("#submit").close());
  $("#submit-form").addEventListener("submit", submitConfig);
  $("#config").addEventListener("input", () => {
    editor.errorLines.clear();  // the lines moved: the marks would point at the wrong ones
    drawEditor();
  });
  $("#config").addEventListener("scroll", syncScroll);
  $("#log").addEventListener("scroll", () => {
    const log = $("#log");
    view.logAtEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 48;
  });
  $("#config-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (!file) return;
    $("#config").value = await file.text();
    showErrors([]);
    event.target.value = "";
  });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshList(); });
}

function start() {
  wire();
  showSignedIn();
  if (token()) whoAmI();
  localizeTimes(document);
  view.listHtml = "";
  const job = new URLSearchParams(location.search).get("job");
  if (job) openJob(Number(job), { push: false });
  if ($("#jobs").dataset.needsToken === "true" && token()) refreshList();
  setInterval(refreshList, LIST_EVERY_MS);
}

start();
