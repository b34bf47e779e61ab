// daemonkit supervisor page: polls /api/status every 2 s and updates the table in place
// (rows are kept and reused, so a button under the pointer is never replaced by a poll).
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const POLL_MS = 2000;
const LOG_POLL_MS = 1000;
const LOG_MAX_CHARS = 400000;
const rows = new Map();  // key -> <tr>
let logState = null;     // {name, offset, inode, timer}

function $(id) { return document.getElementById(id); }

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  let s = Math.floor(seconds);
  const d = Math.floor(s / 86400); s %= 86400;
  const h = Math.floor(s / 3600); s %= 3600;
  const m = Math.floor(s / 60); s %= 60;
  const pad = (n) => String(n).padStart(2, "0");
  if (d) return `${d}d ${h}h ${pad(m)}m`;
  if (h) return `${h}h ${pad(m)}m ${pad(s)}s`;
  if (m) return `${m}m ${pad(s)}s`;
  return `${s}s`;
}

function bytes(n) {
  if (n === null || n === undefined) return "";
  if (n >= 1 << 30) return (n / (1 << 30)).toFixed(1) + " GiB";
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MiB";
  return (n / 1024).toFixed(0) + " KiB";
}

const SIGNALS = {1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 6: "SIGABRT", 9: "SIGKILL",
                 11: "SIGSEGV", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM"};

function exitText(status) {
  if (status === null || status === undefined) return "";
  if (status < 0) return SIGNALS[-status] || `signal ${-status}`;
  return String(status);
}

function show(text, ok) {
  const result = $("result");
  result.textContent = text;
  result.className = ok ? "ok" : "error";
}

function button(label, verb, name, extra) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.dataset.verb = verb;
  b.dataset.name = name;
  if (extra) Object.assign(b.dataset, extra);
  return b;
}

function cells(tr, count) {
  for (let i = 0; i < count; i++) tr.appendChild(document.createElement("td"));
  return tr.children;
}

function programRow(program) {
  const key = "program " + program;
  let tr = rows.get(key);
  if (!tr) {
    tr = document.createElement("tr");
    tr.className = "program";
    tr.dataset.program = program;
    const c = cells(tr, 9);
    c[0].className = "name";
    c[0].textContent = program;
    c[1].className = "count";
    c[1].colSpan = 1;
    c[8].append(button("start", "start", program), button("stop", "stop", program),
                button("restart", "restart", program),
                button("add instance", "scale", program, {delta: "1", action: "add"}),
                button("remove instance", "scale", program, {delta: "-1", action: "remove"}),
                button("log", "log", program));
    rows.set(key, tr);
  }
  return tr;
}

function instanceRow(info, kind = "instance ") {
  const key = kind + info.name;
  let tr = rows.get(key);
  if (!tr) {
    tr = document.createElement("tr");
    tr.className = "instance";
    tr.dataset.name = info.name;
    const c = cells(tr, 9);
    ["name", "state-cell", "pid num", "uptime num", "restarts num", "exit num", "cpu num",
     "memory num", "actions"].forEach((cls, i) => { c[i].className = cls; });
    c[0].textContent = info.name;
    const badge = document.createElement("span");
    c[1].appendChild(badge);
    c[8].append(button("start", "start", info.name), button("stop", "stop", info.name),
                button("restart", "restart", info.name), button("log", "log", info.name));
    rows.set(key, tr);
  }
  const c = tr.children;
  const badge = c[1].firstChild;
  badge.textContent = info.state;
  badge.className = "state state-" + info.state;
  badge.title = info.error || info.waiting || "";  // waiting: held by depends_on
  tr.dataset.state = info.state;
  c[2].textContent = info.pid ?? "";
  c[3].textContent = info.state === "RUNNING" ? duration(info.uptime_s) : "";
  c[4].textContent = info.restarts ?? 0;
  c[5].textContent = exitText(info.exit_status);
  c[8].querySelector('[data-verb="log"]').hidden = !info.stdout_logfile;
  c[6].textContent = info.cpu_percent === null || info.cpu_percent === undefined
    ? "" : info.cpu_percent.toFixed(1) + " %";
  c[7].textContent = bytes(info.memory_rss);
  return tr;
}

function removedRow(info) {
  const tr = instanceRow({...info, stdout_logfile: null}, "removed ");
  tr.classList.add("removed");
  tr.children[0].textContent = `${info.name} (removed)`;
  for (const b of tr.children[8].querySelectorAll("button")) b.hidden = true;
  return tr;
}

function render(status) {
  $("sup-pid").textContent = status.pid;
  $("sup-uptime").textContent = duration(status.uptime_s);
  $("sup-memory").textContent = bytes(status.supervisor_memory_rss);
  $("sup-config").textContent = status.config || "";
  const byProgram = new Map();
  for (const program of status.program_names || []) byProgram.set(program, []);
  for (const info of status.programs) {
    if (!byProgram.has(info.program)) byProgram.set(info.program, []);
    byProgram.get(info.program).push(info);
  }
  const wanted = [];
  for (const [program, instances] of byProgram) {
    const header = programRow(program);
    const running = instances.filter((i) => i.state === "RUNNING").length;
    header.children[1].textContent = `${running}/${instances.length} running`;
    header.querySelector('[data-verb="log"]').hidden = !instances.some((i) => i.stdout_logfile);
    wanted.push(header);
    for (const info of instances) wanted.push(instanceRow(info));
  }
  // removed programs or instances whose process is still stopping: shown until it exits
  for (const info of status.removed || []) wanted.push(removedRow(info));
  const body = $("program-rows");
  const keep = new Set(wanted);
  for (const [key, tr] of rows) {
    if (!keep.has(tr)) { tr.remove(); rows.delete(key); }
  }
  wanted.forEach((tr, i) => {
    if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
  });
  $("updated").textContent = new Date().toLocaleTimeString();
}

async function refresh() {
  try {
    const response = await fetch("/api/status", {cache: "no-store"});
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
    $("connection").hidden = true;
  } catch (err) {
    $("connection").hidden = false;
  }
}

async function poll() {
  await refresh();
  setTimeout(poll, POLL_MS);
}

async function act(target) {
  const {verb, name, delta, action} = target.dataset;
  const label = verb === "scale" ? `${action} instance of ${name}` : `${verb} ${name}`;
  const url = `/api/programs/${encodeURIComponent(name)}/${verb}`;
  const options = {method: "POST", headers: {"X-CSRF-Token": CSRF}};
  if (verb === "scale") {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify({delta: Number(delta)});
  }
  target.disabled = true;
  show(`${label}…`, true);
  try {
    const response = await fetch(url, options);
    const answer = await response.json();
    show(answer.ok ? `${label}: done` : `${label}: ${answer.error || response.status}`,
         answer.ok);
  } catch (err) {
    show(`${label}: ${err}`, false);
  } finally {
    target.disabled = false;
    refresh();
  }
}

function openLog(name) {
  if (logState) clearTimeout(logState.timer);
  logState = {name, offset: null, inode: null, timer: null};
  $("log-name").textContent = name;
  $("log-path").textContent = "";
  $("log-text").textContent = "";
  $("log-view").hidden = false;
  followLog(logState);
}

async function followLog(state) {
  if (logState !== state) return;
  let again = LOG_POLL_MS;
  try {
    const query = state.offset === null ? "" : `?offset=${state.offset}&inode=${state.inode}`;
    const response = await fetch(`/api/programs/${encodeURIComponent(state.name)}/log${query}`,
                                 {cache: "no-store"});
    const chunk = await response.json();
    if (logState !== state) return;
    const pre = $("log-text");
    if (!response.ok) {
      pre.textContent = chunk.error || `HTTP ${response.status}`;
    } else {
      $("log-path").textContent = chunk.path;
      if (chunk.reset) pre.textContent = chunk.text;
      else if (chunk.text) pre.append(chunk.text);
      if (pre.textContent.length > LOG_MAX_CHARS) {
        pre.textContent = pre.textContent.slice(-LOG_MAX_CHARS);
      }
      state.offset = chunk.offset;
      state.inode = chunk.inode;
      if (chunk.more) again = 0;
      if ($("log-follow").checked) pre.scrollTop = pre.scrollHeight;
    }
  } catch (err) {
    // the next poll retries; the status line already reports a lost connection
  }
  state.timer = setTimeout(() => followLog(state), again);
}

document.addEventListener("click", (event) => {
  const target = event.target.closest("button[data-verb]");
  if (!target) return;
  if (target.dataset.verb === "log") { openLog(target.dataset.name); return; }
  if (target.id === "stop-all" && !window.confirm("Stop every program?")) return;
  act(target);
});

$("log-close").addEventListener("click", () => {
  if (logState) clearTimeout(logState.timer);
  logState = null;
  $("log-view").hidden = true;
});

poll();
