// The page of `densetasks serve`: choose a run, give an image, see every task; paint a Task
// Palette for a CompositeTasking run; compare two runs. Talks to the JSON API only.
import { greyPng } from "./png.js";
import { NO_TASK, Palette, taskColour } from "./palette.js";
import { decodeValues, formatValue, legendElement } from "./values.js";

const $ = (selector) => document.querySelector(selector);
const state = { runs: {}, image: null, answers: {}, paletteAnswer: null };
const palette = new Palette($("#paint-overlay"));

function status(text, error = false) {
  $("#status").textContent = text;
  $("#status").classList.toggle("error", error);
}

async function api(path, form) {
  const response = await fetch(path, form ? { method: "POST", body: form } : {});
  const body = await response.json();
  if (!response.ok) throw new Error(`${response.status}: ${body.error}`);
  return body;
}

const selectedRun = () => state.runs[$("#run").value];
const shownRuns = () => [$("#run").value, $("#compare").value].filter(Boolean);

async function start() {
  const { runs } = await api("/api/runs");
  for (const run of runs) {
    state.runs[run.id] = run;
    $("#run").add(new Option(`${run.id} (${run.architecture})`, run.id));
    $("#compare").add(new Option(run.id, run.id));
  }
  $("#run").addEventListener("change", () => { chooseRun(); predictAll(); });
  $("#compare").addEventListener("change", predictAll);
  $("#file").addEventListener("change", () => $("#file").files[0] && useImage($("#file").files[0]));
  $("#sample").addEventListener("change", useSample);
  setUpDrop();
  setUpPaletteTools();
  chooseRun();
  document.body.dataset.ready = "1";
}

function chooseRun() {
  const run = selectedRun();
  $("#run-info").textContent = `step ${run.step} · ${run.tasks.map((t) => t.name).join(", ")}`;
  $("#report").hidden = !run.report;
  if (run.report) $("#report").href = run.report;
  $("#sample").length = 1;
  for (let i = 0; i < run.samples; i++) $("#sample").add(new Option(`test image ${i}`, i));
  $("#palette").hidden = !run.palette;
  if (run.palette) buildPaletteTools(run);
}

function setUpDrop() {
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files[0]) useImage(event.dataTransfer.files[0]);
  });
}

async function useSample() {
  if ($("#sample").value === "") return;
  const response = await fetch(`/api/runs/${$("#run").value}/samples/${$("#sample").value}`);
  if (!response.ok) return status(`${response.status}: ${(await response.json()).error}`, true);
  useImage(await response.blob());
}

// A new input image: predicted by every shown run, the palette reset to "no task".
async function useImage(blob) {
  state.image = blob;
  const bitmap = await createImageBitmap(blob);
  state.bitmap = bitmap;
  for (const id of ["#paint-image", "#composite"]) {
    $(id).width = bitmap.width;
    $(id).height = bitmap.height;
  }
  $("#paint-image").getContext("2d").drawImage(bitmap, 0, 0);
  $("#composite").getContext("2d").clearRect(0, 0, bitmap.width, bitmap.height);
  palette.resize(bitmap.width, bitmap.height);
  await predictAll();
}

function form(runId, extra = {}) {
  const data = new FormData();
  data.append("run", runId);
  data.append("image", state.image, "image");
  data.append("raw", "1");
  for (const [key, value] of Object.entries(extra)) data.append(key, value);
  return data;
}

async function predictAll() {
  if (!state.image) return;
  $("#results").replaceChildren();
  state.answers = {};
  try {
    for (const runId of shownRuns()) {
      status(`predicting with ${runId} …`);
      state.answers[runId] = await api("/api/predict", form(runId));
      await showRow(runId, state.answers[runId]);
    }
    status("done");
  } catch (error) {
    status(error.message, true);
  }
}

async function drawPng(canvas, png) {
  const image = new Image();
  image.src = `data:image/png;base64,${png}`;
  await image.decode();
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext("2d").drawImage(image, 0, 0);
}

function figure(name, canvas, download) {
  const element = document.createElement("figure");
  const caption = document.createElement("figcaption");
  caption.textContent = name;
  if (download) {
    const link = document.createElement("a");
    Object.assign(link, { href: `data:image/png;base64,${download}`, download: `${name}.png` });
    link.textContent = "PNG";
    caption.append(link);
  }
  element.append(canvas, caption);
  return element;
}

function pictureCanvas(runId, task) {
  const canvas = document.createElement("canvas");
  canvas.className = "picture";
  Object.assign(canvas.dataset, { run: runId, task });
  canvas.addEventListener("mousemove", (event) => showValues(canvas, event));
  return canvas;
}

// One run's row: the input, then every task's picture with its legend, and the timing.
async function showRow(runId, answer) {
  const run = state.runs[runId];
  const row = document.createElement("div");
  row.className = "row";
  row.dataset.run = runId;
  const title = document.createElement("h2");
  title.textContent = `${runId} · forward ${answer.timing.forward_ms.toFixed(1)} ms`;
  const tiles = document.createElement("div");
  tiles.className = "tiles";
  row.append(title, tiles);
  $("#results").append(row);
  const input = pictureCanvas(runId, "input");
  input.width = state.bitmap.width;
  input.height = state.bitmap.height;
  input.getContext("2d").drawImage(state.bitmap, 0, 0);
  tiles.append(figure("input", input));
  for (const task of run.tasks) {
    const entry = answer.tasks[task.name];
    entry.decoded = decodeValues(entry.values);
    const canvas = pictureCanvas(runId, task.name);
    await drawPng(canvas, entry.png);
    const tile = figure(task.name, canvas, entry.png);
    tile.append(legendElement(task, entry.legend));
    tiles.append(tile);
    canvas.dataset.ready = "1";
  }
  row.dataset.ready = "1";
}

// The values of every shown run's tasks at the pixel under the mouse.
function showValues(canvas, event) {
  const box = canvas.getBoundingClientRect();
  const x = Math.floor(((event.clientX - box.left) / box.width) * canvas.width);
  const y = Math.floor(((event.clientY - box.top) / box.height) * canvas.height);
  const lines = [`pixel (${x}, ${y})`];
  for (const [runId, answer] of Object.entries(state.answers)) {
    const parts = state.runs[runId].tasks.map(
      (task) => `${task.name}: ${formatValue(task, answer.tasks[task.name].decoded, x, y)}`,
    );
    lines.push(`${runId} — ${parts.join(" · ")}`);
  }
  const composite = state.paletteAnswer;
  if (composite && canvas.id === "composite") {
    const id = palette.ids[y * palette.width + x];
    const task = selectedRun().tasks[id];
    const value = task && formatValue(task, composite.tasks[task.name].decoded, x, y);
    lines.push(`composite — ${task ? `${task.name}: ${value}` : "no task"}`);
  }
  $("#hover").innerText = lines.join("\n");
}

function setUpPaletteTools() {
  $("#brush-size").addEventListener("input", () => { palette.radius = +$("#brush-size").value; });
  palette.radius = +$("#brush-size").value;
  $("#composite").addEventListener("mousemove", (event) => showValues($("#composite"), event));
  $("#clear-palette").addEventListener("click", () => palette.set(new Uint8Array(palette.ids.length).fill(NO_TASK)));
  $("#run-palette").addEventListener("click", async () => {
    await runPalette({ palette: await greyPng(palette.ids, palette.width, palette.height) });
  });
  for (const button of document.querySelectorAll("#palette .tools > button[data-rule]")) {
    button.addEventListener("click", () => runPalette({ rule: button.dataset.rule, seed: $("#seed").value }));
  }
  $("#download-palette").addEventListener("click", async (event) => {
    const link = event.currentTarget;
    if (link.dataset.fresh) return; // the blob made for this click; let it download
    event.preventDefault();
    link.href = URL.createObjectURL(await greyPng(palette.ids, palette.width, palette.height));
    link.dataset.fresh = "1";
    link.click();
    delete link.dataset.fresh;
  });
}

function buildPaletteTools(run) {
  const brushes = $("#brushes");
  const rules = $("#rules-s");
  brushes.replaceChildren();
  rules.replaceChildren();
  const tools = [...run.tasks.map((task, id) => [task.name, id]), ["eraser", NO_TASK]];
  for (const [name, id] of tools) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = name;
    button.dataset.brush = id;
    if (id !== NO_TASK) button.style.borderBottom = `4px solid rgb(${taskColour(id).join(",")})`;
    button.addEventListener("click", () => {
      palette.brush = id;
      for (const other of brushes.children) other.classList.toggle("active", other === button);
    });
    brushes.append(button);
  }
  brushes.firstChild.click();
  for (const task of run.tasks) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `S ${task.name}`;
    button.addEventListener("click", () => runPalette({ rule: "S", task: task.name }));
    rules.append(button);
  }
}

// Predict with a painted palette or a rule's; a rule's palette replaces the painted one.
async function runPalette(extra) {
  if (!state.image) return status("give an image first", true);
  const runId = $("#run").value;
  try {
    status(`running ${runId} with the palette …`);
    const answer = await api("/api/predict", form(runId, extra));
    for (const entry of Object.values(answer.tasks)) entry.decoded = decodeValues(entry.values);
    state.paletteAnswer = answer;
    if (extra.rule) palette.set(Uint8Array.from(atob(answer.palette.ids), (c) => c.charCodeAt(0)));
    await drawPng($("#composite"), answer.composite.png);
    $("#composite").dataset.version = (+$("#composite").dataset.version || 0) + 1;
    $("#download-composite").href = `data:image/png;base64,${answer.composite.png}`;
    $("#download-composite").hidden = false;
    $("#palette-timing").textContent = `forward ${answer.timing.forward_ms.toFixed(1)} ms`;
    status("done");
  } catch (error) {
    status(error.message, true);
  }
}

start().catch((error) => status(error.message, true));
