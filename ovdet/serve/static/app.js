// ovdet web page: sends the image and class names to POST /v1/detect and draws the answer.
// Plain browser JavaScript, no build step, nothing fetched from the network but this server.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
                 "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075"];

let imageBlob = null;   // what is sent: the chosen file, a dropped or pasted one, or a snapshot
let imageName = "image";
let lastResult = null;  // the last answer of /v1/detect
let previewUrl = null;
let rerun = null;       // debounce timer of the threshold slider
let hasMasker = false;  // the server was started with --masks: ask for masks, as polygons

function headers() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", Boolean(isError));
}

function setImage(blob, name) {
  if (!blob) return;
  imageBlob = blob;
  imageName = name || "image";
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(blob);
  const img = $("preview");
  img.src = previewUrl;
  img.alt = "The image to search: " + imageName;
  img.hidden = false;
  clearResult();
  setStatus(imageName + " ready");
}

function clearResult() {
  lastResult = null;
  $("overlay").replaceChildren();
  $("detections").tBodies[0].replaceChildren();
  $("download").disabled = true;
}

async function detect() {
  if (!imageBlob) { setStatus("Choose, drop or snap an image first.", true); return; }
  const classes = $("classes").value.trim();
  if (!classes) { setStatus("Type at least one class name.", true); $("classes").focus(); return; }
  const form = new FormData();
  form.append("image", imageBlob, imageName);
  form.append("classes", classes);
  if ($("negatives").value.trim()) form.append("negatives", $("negatives").value.trim());
  form.append("threshold", $("threshold").value);
  if (hasMasker && $("masks").checked) { form.append("masks", "true"); form.append("mask_format", "polygon"); }
  setStatus("Detecting…");
  $("submit").disabled = true;
  try {
    const response = await fetch("/v1/detect", { method: "POST", body: form, headers: headers() });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      setStatus(`Error ${response.status} (${body.error || "unknown"}): ${body.message || response.statusText}`, true);
      return;
    }
    lastResult = body;
    render(body);
    setStatus(`${body.detections.length} detection(s) in ${body.width} x ${body.height} px`);
  } catch (err) {
    setStatus("The server cannot be reached: " + err, true);
  } finally {
    $("submit").disabled = false;
  }
}

function render(result) {
  const svg = $("overlay");
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${result.width} ${result.height}`);
  const line = Math.max(2, result.width / 300);
  const font = Math.max(12, result.width / 45);
  const rows = $("detections").tBodies[0];
  rows.replaceChildren();
  result.detections.forEach((d, i) => {
    const [x1, y1, x2, y2] = d.box;
    const colour = COLOURS[d.class_id % COLOURS.length];
    const g = document.createElementNS(SVG, "g");
    g.setAttribute("class", "box");
    g.dataset.className = d.class_name;
    g.dataset.score = d.score;
    const rect = document.createElementNS(SVG, "rect");
    Object.entries({ x: x1, y: y1, width: x2 - x1, height: y2 - y1, fill: "none", stroke: colour, "stroke-width": line })
      .forEach(([k, v]) => rect.setAttribute(k, v));
    const label = `${d.class_name} ${d.score.toFixed(2)}`;
    const bg = document.createElementNS(SVG, "rect");
    // the label sits above the box (inside it at the top edge), kept within the image
    const ty = y1 > font * 1.3 ? y1 - font * 0.3 : y1 + font;
    const labelWidth = label.length * font * 0.62 + font * 0.4;
    const lx = Math.max(0, Math.min(x1, result.width - labelWidth));
    Object.entries({ x: lx, y: ty - font, width: labelWidth, height: font * 1.25, fill: colour, class: "label-bg" })
      .forEach(([k, v]) => bg.setAttribute(k, v));
    const text = document.createElementNS(SVG, "text");
    Object.entries({ x: lx + font * 0.2, y: ty, "font-size": font }).forEach(([k, v]) => text.setAttribute(k, v));
    text.textContent = label;
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${label} at ${d.box.join(", ")}`;
    g.append(title);
    (d.polygons || []).forEach((flat) => {  // the mask, under the box
      const poly = document.createElementNS(SVG, "polygon");
      const points = [];
      for (let k = 0; k + 1 < flat.length; k += 2) points.push(`${flat[k]},${flat[k + 1]}`);
      Object.entries({ points: points.join(" "), fill: colour, "fill-opacity": 0.4, stroke: colour, class: "mask" })
        .forEach(([k, v]) => poly.setAttribute(k, v));
      g.append(poly);
    });
    g.append(rect, bg, text);
    svg.append(g);

    const tr = rows.insertRow();
    tr.insertCell().textContent = String(i + 1);
    const name = tr.insertCell();
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colour;
    name.append(swatch, d.class_name);
    tr.insertCell().textContent = d.score.toFixed(3);
    tr.insertCell().textContent = d.box.map((v) => v.toFixed(1)).join(", ");
  });
  $("download").disabled = false;
}

function download() {
  if (!lastResult) return;
  const blob = new Blob([JSON.stringify(lastResult, null, 2)], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = imageName.replace(/\.[^.]*$/, "") + ".detections.json";
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

async function startWebcam() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("This browser gives no webcam access here (it needs https or localhost).", true);
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true });
    $("webcam").srcObject = stream;
    $("webcam").hidden = false;
    $("snapshot").hidden = false;
  } catch (err) {
    setStatus("No webcam: " + err.message, true);
  }
}

function snapshot() {
  const video = $("webcam");
  if (!video.videoWidth) return;
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => setImage(blob, "webcam.jpg"), "image/jpeg", 0.92);
}

async function showModel() {
  try {
    const response = await fetch("/v1/model", { headers: headers() });
    if (response.status === 401) { $("model-info").textContent = "(this server needs an API key)"; return; }
    if (!response.ok) { $("model-info").textContent = "(model loading…)"; setTimeout(showModel, 2000); return; }
    const m = await response.json();
    $("model-info").textContent = `Model: ${m.preset || m.weights} (${m.backend}, ${m.device}, ${m.precision}).`;
    hasMasker = Boolean(m.masks);
    $("masks-row").hidden = !hasMasker;
    $("threshold").value = m.threshold;
    $("threshold-value").textContent = Number(m.threshold).toFixed(2);
  } catch (err) {
    $("model-info").textContent = "(server unreachable)";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("image").addEventListener("change", (e) => setImage(e.target.files[0], e.target.files[0] && e.target.files[0].name));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) setImage(file, file.name);
  });
  drop.addEventListener("click", () => $("image").click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("image").click(); } });
  document.addEventListener("paste", (e) => {
    const file = [...e.clipboardData.files].find((f) => f.type.startsWith("image/"));
    if (file) setImage(file, file.name || "pasted.png");
  });
  $("webcam-start").addEventListener("click", startWebcam);
  $("snapshot").addEventListener("click", snapshot);
  $("detect-form").addEventListener("submit", (e) => { e.preventDefault(); detect(); });
  $("threshold").addEventListener("input", () => {
    $("threshold-value").textContent = Number($("threshold").value).toFixed(2);
    if (lastResult) { clearTimeout(rerun); rerun = setTimeout(detect, 300); }
  });
  $("api-key").addEventListener("change", showModel);
  $("download").addEventListener("click", download);
  showModel();
});
