// The emorec page: pick or capture a photo and a recording, send them, draw the answer.

const LABELS = JSON.parse(document.body.dataset.labels);
const MAX_RECORD_SECONDS = 60;
const $ = (id) => document.getElementById(id);
const percent = (p, digits = 0) => `${(100 * p).toFixed(digits)}%`;
const colour = (label) => getComputedStyle(document.documentElement).getPropertyValue(`--${label}`).trim();

const state = {
  image: null, imageName: "", picture: null, audio: null, audioName: "", video: null, videoName: "",
  videoDuration: 0, result: null, request: null,
};
let camera = null;
let recorder = null;
let filming = null;

function show(element, visible) {
  element.hidden = !visible;
}

function setStatus(text) {
  $("status").textContent = text;
}

function setError(text) {
  $("error").textContent = text;
  show($("error"), Boolean(text));
}

function describe(name, blob) {
  return `${name} · ${(blob.size / 1024).toFixed(blob.size < 10240 ? 1 : 0)} KB`;
}

// ---- inputs -------------------------------------------------------------------------------

async function setImage(blob, name) {
  stopCamera();
  clearVideo();
  state.image = blob;
  state.imageName = name;
  state.picture = null;
  $("image-name").textContent = describe(name, blob);
  try {
    state.picture = await createImageBitmap(blob);
    drawPhoto(null);
  } catch {
    // Not decodable here (e.g. BMP variants): the server still gets the file and decides.
    show($("photo-canvas"), false);
    show($("image-placeholder"), true);
  }
}

// Keep a chosen recording or video ("audio" or "video"): in the state, in its player, by name.
function load(kind, blob, name) {
  state[kind] = blob;
  state[`${kind}Name`] = name;
  const player = $(`${kind}-player`);
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(blob);
  show(player, true);
  show($(`${kind}-placeholder`), false);
  $(`${kind}-name`).textContent = describe(name, blob);
}

function setAudio(blob, name) {
  clearVideo();
  load("audio", blob, name);
  drawWaveform(blob);
}

async function drawWaveform(blob) {
  const canvas = $("waveform");
  let samples;
  try {
    const decoder = new OfflineAudioContext(1, 1, 16000);
    samples = (await decoder.decodeAudioData(await blob.arrayBuffer())).getChannelData(0);
  } catch {
    show(canvas, false); // not decodable here: the server still gets the file and decides
    return;
  }
  show(canvas, true);
  canvas.width = canvas.clientWidth * devicePixelRatio;
  canvas.height = canvas.clientHeight * devicePixelRatio;
  const context = canvas.getContext("2d");
  const middle = canvas.height / 2;
  const step = Math.max(1, Math.floor(samples.length / canvas.width));
  const peak = samples.reduce((most, sample) => Math.max(most, Math.abs(sample)), 1e-6);
  context.fillStyle = getComputedStyle(canvas).color;
  for (let x = 0; x < canvas.width; x += 1) {
    let low = 0;
    let high = 0;
    for (const sample of samples.subarray(x * step, (x + 1) * step)) {
      low = Math.min(low, sample);
      high = Math.max(high, sample);
    }
    context.fillRect(x, middle - (high / peak) * middle, 1, Math.max(1, ((high - low) / peak) * middle));
  }
}

// A video is sent alone: choosing one sets the photo and recording aside, and the other way round.
function setVideo(blob, name) {
  stopCamera();
  Object.assign(state, { image: null, imageName: "", picture: null, audio: null, audioName: "" });
  for (const id of ["image-name", "audio-name"]) $(id).textContent = "";
  for (const id of ["photo-canvas", "audio-player", "waveform"]) show($(id), false);
  for (const id of ["image-placeholder", "audio-placeholder"]) show($(id), true);
  load("video", blob, name);
  show($("video-timeline"), false);
}

function clearVideo() {
  if (!state.video) return;
  state.video = null;
  const player = $("video-player");
  URL.revokeObjectURL(player.src);
  player.removeAttribute("src");
  show(player, false);
  show($("video-timeline"), false);
  show($("video-placeholder"), true);
  $("video-name").textContent = "";
}

function take(file) {
  if (file.type.startsWith("image/")) setImage(file, file.name);
  else if (file.type.startsWith("video/")) setVideo(file, file.name);
  else setAudio(file, file.name);
}

function dropZone(zone) {
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    [...event.dataTransfer.files].forEach(take);
  });
}

// ---- webcam snapshot ------------------------------------------------------------------------

async function startCamera() {
  setError("");
  try {
    camera = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" }, audio: false });
  } catch (error) {
    setError(`Camera unavailable: ${error.message}`);
    return;
  }
  const video = $("camera");
  video.srcObject = camera;
  await video.play();
  show(video, true);
  show($("photo-canvas"), false);
  show($("image-placeholder"), false);
  show($("snap-button"), true);
  $("camera-button").textContent = "Close camera";
}

function stopCamera() {
  if (!camera) return;
  camera.getTracks().forEach((track) => track.stop());
  camera = null;
  show($("camera"), false);
  show($("snap-button"), false);
  $("camera-button").textContent = "Use camera";
  show($("photo-canvas"), Boolean(state.picture));
  show($("image-placeholder"), !state.picture);
}

function snapshot() {
  const video = $("camera");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => setImage(blob, "snapshot.png"), "image/png");
}

// ---- microphone recording to a 16-bit WAV ----------------------------------------------------

async function startRecording() {
  setError("");
  let stream;
  let context;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    context = new AudioContext();
    await context.audioWorklet.addModule(document.body.dataset.worklet);
  } catch (error) {
    stream?.getTracks().forEach((track) => track.stop());
    context?.close();
    setError(`Microphone unavailable: ${error.message}`);
    return;
  }
  const node = new AudioWorkletNode(context, "pcm-capture");
  const chunks = [];
  node.port.onmessage = (event) => chunks.push(event.data);
  context.createMediaStreamSource(stream).connect(node).connect(context.destination);
  const started = performance.now();
  const timer = setInterval(() => {
    const seconds = (performance.now() - started) / 1000;
    $("record-time").textContent = `${seconds.toFixed(1)} s`;
    if (seconds >= MAX_RECORD_SECONDS) stopRecording();
  }, 100);
  recorder = { stream, context, chunks, timer };
  show($("recording"), true);
  show($("audio-placeholder"), false);
  show($("audio-player"), false);
  show($("waveform"), false);
  $("record-button").textContent = "Stop";
  $("record-button").classList.add("accent");
}

async function stopRecording() {
  if (!recorder) return;
  const { stream, context, chunks, timer } = recorder;
  recorder = null;
  clearInterval(timer);
  stream.getTracks().forEach((track) => track.stop());
  await context.close();
  show($("recording"), false);
  $("record-button").textContent = "Record";
  $("record-button").classList.remove("accent");
  setAudio(encodeWav(chunks, context.sampleRate), "recording.wav");
}

function encodeWav(chunks, sampleRate) {
  const count = chunks.reduce((total, chunk) => total + chunk.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * count));
  const text = (offset, value) => [...value].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + 2 * count, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true); // fmt chunk size
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, sampleRate, true);
  view.setUint32(28, 2 * sampleRate, true); // bytes per second
  view.setUint16(32, 2, true); // bytes per frame
  view.setUint16(34, 16, true); // bits per sample
  text(36, "data");
  view.setUint32(40, 2 * count, true);
  let offset = 44;
  for (const chunk of chunks) {
    for (const sample of chunk) {
      const clipped = Math.max(-1, Math.min(1, sample));
      view.setInt16(offset, clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff, true);
      offset += 2;
    }
  }
  return new Blob([view], { type: "audio/wav" });
}

// ---- webcam and microphone together, to a WebM video (MediaRecorder) ------------------------

async function startFilming() {
  setError("");
  stopCamera();
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" }, audio: true });
  } catch (error) {
    setError(`Camera or microphone unavailable: ${error.message}`);
    return;
  }
  const chunks = [];
  const mimeType = MediaRecorder.isTypeSupported("video/webm") ? "video/webm" : "";
  const film = new MediaRecorder(stream, { mimeType });
  film.ondataavailable = (event) => event.data.size && chunks.push(event.data);
  film.onstop = () => {
    stream.getTracks().forEach((track) => track.stop());
    const player = $("video-player");
    player.srcObject = null;
    player.muted = false;
    setVideo(new Blob(chunks, { type: film.mimeType || "video/webm" }), "recording.webm");
  };
  const player = $("video-player");
  player.srcObject = stream;
  player.muted = true; // no echo of the microphone while filming
  await player.play();
  show(player, true);
  show($("video-placeholder"), false);
  film.start();
  filming = { film, timer: setTimeout(stopFilming, MAX_RECORD_SECONDS * 1000) };
  $("film-button").textContent = "Stop";
  $("film-button").classList.add("accent");
}

function stopFilming() {
  if (!filming) return;
  clearTimeout(filming.timer);
  filming.film.stop();
  filming = null;
  $("film-button").textContent = "Record video";
  $("film-button").classList.remove("accent");
}

// ---- request ----------------------------------------------------------------------------------

function weights() {
  const face = Number($("weight").value) / 100;
  return { face, speech: 1 - face };
}

function showWeights() {
  const { face, speech } = weights();
  $("face-weight").textContent = percent(face);
  $("speech-weight").textContent = percent(speech);
}

async function analyse() {
  setError("");
  if (!state.image && !state.audio && !state.video) {
    setError("Choose a photo, a recording, both, or a video first.");
    return;
  }
  const form = new FormData();
  if (state.video) form.append("video", state.video, state.videoName);
  if (state.image) form.append("image", state.image, state.imageName);
  if (state.audio) form.append("audio", state.audio, state.audioName);
  const { face, speech } = weights();
  form.append("weights", `face=${face.toFixed(2)},speech=${speech.toFixed(2)}`);
  if (!state.video) form.append("crops", $("crops").checked ? "1" : "0");
  state.request?.abort();
  const request = (state.request = new AbortController());
  setStatus("Analysing…");
  $("analyse").disabled = true;
  const started = performance.now();
  try {
    const response = await fetch("/api/predict", { method: "POST", body: form, signal: request.signal });
    const body = await response.json().catch(() => ({ error: `server answered ${response.status}` }));
    if (!response.ok) throw new Error(body.error);
    state.result = body;
    render(body);
    setStatus(`Done in ${((performance.now() - started) / 1000).toFixed(1)} s.`);
  } catch (error) {
    if (error.name === "AbortError") return;
    setStatus("");
    setError(error.message);
  } finally {
    if (state.request === request) $("analyse").disabled = false;
  }
}

// ---- results ----------------------------------------------------------------------------------

function bars(container, probabilities, winner) {
  container.replaceChildren(...LABELS.map((label) => {
    const p = probabilities[label];
    const bar = document.createElement("div");
    bar.className = label === winner ? "bar best" : "bar";
    bar.dataset.label = label;
    bar.innerHTML = '<span class="bar-name"></span><span class="bar-track"><span class="bar-fill"></span></span>'
      + '<span class="bar-value"></span>';
    bar.querySelector(".bar-name").textContent = label;
    bar.querySelector(".bar-value").textContent = percent(p, 1);
    const fill = bar.querySelector(".bar-fill");
    fill.style.width = percent(p, 2);
    fill.style.background = `var(--${label})`;
    return bar;
  }));
}

function card(name, part, note) {
  const found = Boolean(part?.label);
  const usable = found && part.status !== "no_speech"; // a no_speech clip still has (unused) probabilities
  $(`${name}-card`).classList.toggle("muted", !usable);
  $(`${name}-label`).textContent = found ? part.label : "–";
  $(`${name}-label`).style.color = usable ? `var(--${part.label})` : "";
  $(`${name}-confidence`).textContent = found ? percent(part.confidence) : "";
  $(`${name}-note`).textContent = note;
  if (found) bars($(`${name}-bars`), part.probabilities, part.label);
  else $(`${name}-bars`).replaceChildren();
}

function faceNote(face) {
  if (!face) return "No photo sent.";
  if (face.status === "no_face") return "No face found in the photo.";
  const count = face.faces.length;
  return count === 1 ? "One face found." : `${count} faces found; the bars show the largest.`;
}

function videoFaceNote(face) {
  if (face.status === "no_face") return "No face found in the video.";
  return `The main person, in view ${percent(face.presence)} of the time (${face.people} tracked).`;
}

function speechNote(speech) {
  if (!speech) return "No recording sent.";
  const length = `${speech.duration.toFixed(1)} s`;
  return speech.status === "no_speech"
    ? `No speech detected in the ${length} recording.`
    : `Speech over ${length}.`;
}

function leftOut(kind, part) {
  const [name, unsent, unfound] = kind === "face"
    ? ["face", "no photo sent", "no face found"]
    : ["voice", "no recording sent", "no speech detected"];
  if (!part) return unsent;
  return part.status === "ok" ? `${name} weighted 0%` : unfound;
}

function fusionNote({ face, speech, fusion }) {
  switch (fusion.status) {
    case "fused":
      return `Face and voice together, weighted ${percent(fusion.weights.face)} / `
        + `${percent(fusion.weights.speech)}; by their certainty, `
        + `${percent(fusion.effective_weights.face)} / ${percent(fusion.effective_weights.speech)}.`;
    case "face_only":
      return `Rests on the face only (${leftOut("speech", speech)}).`;
    case "speech_only":
      return `Rests on the voice only (${leftOut("face", face)}).`;
    default:
      return "Nothing to go on: no face found and no speech detected.";
  }
}

function drawPhoto(face) {
  const picture = state.picture;
  if (!picture) return;
  const canvas = $("photo-canvas");
  canvas.width = picture.width;
  canvas.height = picture.height;
  const context = canvas.getContext("2d");
  context.drawImage(picture, 0, 0);
  const line = Math.max(2, Math.round(Math.max(picture.width, picture.height) / 300));
  const size = Math.max(12, Math.round(Math.max(picture.width, picture.height) / 28));
  context.font = `600 ${size}px system-ui, sans-serif`;
  context.textBaseline = "bottom";
  for (const { box: [x, y, w, h], label, confidence } of face?.faces ?? []) {
    const tag = `${label} ${percent(confidence)}`;
    const tagWidth = context.measureText(tag).width + size * 0.6;
    const tagY = y - line >= size * 1.3 ? y - line / 2 : y + h + size * 1.3;
    context.strokeStyle = context.fillStyle = colour(label);
    context.lineWidth = line;
    context.strokeRect(x, y, w, h);
    context.fillRect(x - line / 2, tagY - size * 1.3, tagWidth, size * 1.3);
    context.fillStyle = "#fff";
    context.fillText(tag, x - line / 2 + size * 0.3, tagY - size * 0.15);
  }
  show(canvas, true);
  show($("image-placeholder"), false);
}

function timeline(speech) {
  const segments = speech?.segments ?? [];
  show($("timeline"), speech?.status === "ok" && segments.length > 1);
  if (segments.length < 2) return;
  const total = speech.duration;
  $("timeline-end").textContent = `${total.toFixed(1)} s`;
  $("timeline-track").replaceChildren(...segments.map((segment, i) => {
    const end = Math.min(i + 1 < segments.length ? segments[i + 1].start : segment.end, total);
    const block = document.createElement("span");
    block.className = segment.confidence < 0.5 ? "segment weak" : "segment";
    block.dataset.label = segment.label;
    const span = `${segment.start.toFixed(2)}–${segment.end.toFixed(2)} s`;
    block.title = `${span}: ${segment.label} ${percent(segment.confidence)}`;
    block.style.left = percent(segment.start / total, 3);
    block.style.width = percent((end - segment.start) / total, 3);
    block.style.background = `var(--${segment.label})`;
    return block;
  }));
}

// The video's fused label at each step, under the player, with a marker that follows playback.
function videoTimeline({ video, timeline: steps }) {
  const total = Math.max(video.duration, steps.at(-1).time) || 1;
  state.videoDuration = total;
  $("video-end").textContent = `${total.toFixed(1)} s`;
  const blocks = steps.map((step, i) => {
    const end = i + 1 < steps.length ? steps[i + 1].time : total;
    const { label, confidence } = step.fusion;
    const block = document.createElement("span");
    block.className = "segment";
    block.dataset.label = label ?? "";
    block.title = `${step.time.toFixed(1)} s: ${label ? `${label} ${percent(confidence)}` : "nothing to go on"}`
      + ` (face ${step.face.label ?? "not in view"}, voice ${step.speech.status === "ok" ? step.speech.label : "silent"})`;
    block.style.left = percent(step.time / total, 3);
    block.style.width = percent((end - step.time) / total, 3);
    block.style.background = label ? `var(--${label})` : "transparent";
    return block;
  });
  $("video-track").replaceChildren(...blocks, $("video-marker"));
  moveMarker();
  show($("video-timeline"), true);
}

function moveMarker() {
  const share = Math.min(1, $("video-player").currentTime / (state.videoDuration || 1));
  $("video-marker").style.left = percent(share, 3);
}

function seek(event) {
  const track = $("video-track").getBoundingClientRect();
  $("video-player").currentTime = ((event.clientX - track.left) / track.width) * state.videoDuration;
}

function render(result) {
  const isVideo = Boolean(result.timeline);
  card("fusion", result.fusion, fusionNote(result));
  card("face", result.face, isVideo ? videoFaceNote(result.face) : faceNote(result.face));
  card("speech", result.speech, speechNote(result.speech));
  drawPhoto(result.face);
  timeline(result.speech);
  if (isVideo) videoTimeline(result);
  show($("results"), true);
}

// ---- wiring -----------------------------------------------------------------------------------

const picked = (set) => (event) => {
  const [file] = event.target.files;
  if (file) set(file, file.name);
};
$("image-input").addEventListener("change", picked(setImage));
$("audio-input").addEventListener("change", picked(setAudio));
$("video-input").addEventListener("change", picked(setVideo));
dropZone($("image-drop"));
dropZone($("audio-drop"));
dropZone($("video-drop"));
$("video-player").addEventListener("timeupdate", moveMarker);
$("video-player").addEventListener("seeked", moveMarker);
$("video-track").addEventListener("click", seek);
$("camera-button").addEventListener("click", () => (camera ? stopCamera() : startCamera()));
$("snap-button").addEventListener("click", snapshot);
$("record-button").addEventListener("click", () => (recorder ? stopRecording() : startRecording()));
$("film-button").addEventListener("click", () => (filming ? stopFilming() : startFilming()));
$("weight").addEventListener("input", showWeights);
$("weight").addEventListener("change", () => state.result && analyse());
$("crops").addEventListener("change", () => state.result && state.image && analyse());
$("form").addEventListener("submit", (event) => {
  event.preventDefault();
  analyse();
});
if (!navigator.mediaDevices?.getUserMedia) {
  for (const id of ["camera-button", "record-button", "film-button"]) {
    $(id).disabled = true;
    $(id).title = "needs HTTPS (or localhost) and a browser with camera and microphone access";
  }
}
showWeights();
