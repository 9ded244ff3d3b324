// Chorus web page: pick a voice, type, press Speak, hear it while it streams.
//
// Audio comes from POST synthesize/stream as MP3 and is appended to a MediaSource, so
// the <audio> element starts playing with the first sentence. Browsers without
// MediaSource (older Safari) fall back to the whole-response endpoint. All URLs are
// relative, so the page also works behind a reverse proxy under a path prefix.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("speak-form");
const voiceSelect = $("voice");
const keyRow = $("key-row");
const keyInput = $("api-key");
const speed = $("speed");
const player = $("player");

function setStatus(message, isError = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", isError);
}

function headers() {
  const result = { "Content-Type": "application/json" };
  if (keyInput.value) result.Authorization = `Bearer ${keyInput.value}`;
  return result;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.error ? `${body.error.message} (${body.error.code})` : response.statusText;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function loadVoices() {
  const response = await fetch("voices", { headers: headers() });
  if (response.status === 401) {
    keyRow.hidden = false;
    setStatus(keyInput.value ? "That API key was not accepted." : "Enter the API key.",
              Boolean(keyInput.value));
    return;
  }
  if (!response.ok) {
    setStatus(`Cannot list voices: ${await errorMessage(response)}`, true);
    return;
  }
  const { voices } = await response.json();
  const byLanguage = new Map();
  for (const voice of voices) {
    if (!byLanguage.has(voice.language)) byLanguage.set(voice.language, []);
    byLanguage.get(voice.language).push(voice);
  }
  voiceSelect.replaceChildren();
  for (const language of [...byLanguage.keys()].sort()) {
    const group = document.createElement("optgroup");
    group.label = language;
    for (const voice of byLanguage.get(language)) {
      const option = new Option(voice.name, voice.name, voice.default, voice.default);
      option.title = voice.description;
      group.append(option);
    }
    voiceSelect.append(group);
  }
  const installed = voices.filter((voice) => voice.installed).length;
  const later = voices.length - installed;  // --download-voices: installed when first used
  setStatus(`${installed} voice(s) installed` +
            (later ? `, ${later} more downloaded on first use.` : "."));
}

function showStats(firstMs, totalMs, audioSeconds) {
  $("latency").textContent = firstMs === null ? "–" : `${Math.round(firstMs)} ms`;
  $("duration").textContent = audioSeconds ? `${audioSeconds.toFixed(2)} s` : "–";
  $("rtf").textContent = audioSeconds ? (totalMs / 1000 / audioSeconds).toFixed(3) : "–";
}

function appendBuffer(sourceBuffer, chunk) {
  return new Promise((resolve, reject) => {
    sourceBuffer.addEventListener("updateend", resolve, { once: true });
    sourceBuffer.addEventListener("error", reject, { once: true });
    sourceBuffer.appendBuffer(chunk);
  });
}

async function speakStreaming(body, started) {
  const mediaSource = new MediaSource();
  player.src = URL.createObjectURL(mediaSource);
  await new Promise((resolve) => mediaSource.addEventListener("sourceopen", resolve, { once: true }));
  const response = await fetch("synthesize/stream", {
    method: "POST", headers: headers(), body: JSON.stringify({ ...body, format: "mp3" }),
  });
  if (!response.ok) throw new Error(await errorMessage(response));
  const sourceBuffer = mediaSource.addSourceBuffer("audio/mpeg");
  const reader = response.body.getReader();
  let firstMs = null;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    await appendBuffer(sourceBuffer, value);
    if (firstMs === null) {
      firstMs = performance.now() - started;
      showStats(firstMs, 0, 0);
      player.play().catch(() => setStatus("Press play to listen."));
    }
  }
  mediaSource.endOfStream();
  const buffered = sourceBuffer.buffered;
  const seconds = buffered.length ? buffered.end(buffered.length - 1) : 0;
  return { firstMs, seconds };
}

async function speakWhole(body, started) {
  const response = await fetch("synthesize", {
    method: "POST", headers: headers(), body: JSON.stringify({ ...body, format: "wav" }),
  });
  if (!response.ok) throw new Error(await errorMessage(response));
  const blob = await response.blob();
  const firstMs = performance.now() - started;
  player.src = URL.createObjectURL(blob);
  player.play().catch(() => setStatus("Press play to listen."));
  return { firstMs, seconds: Number(response.headers.get("X-Audio-Duration")) };
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text) {
    setStatus("Type some text first.", true);
    return;
  }
  const body = { text, voice: voiceSelect.value || undefined, speed: Number(speed.value) };
  const button = $("speak");
  button.disabled = true;
  setStatus("Speaking…");
  const started = performance.now();
  try {
    const streaming = "MediaSource" in window && MediaSource.isTypeSupported("audio/mpeg");
    const { firstMs, seconds } = await (streaming ? speakStreaming : speakWhole)(body, started);
    showStats(firstMs, performance.now() - started, seconds);
    setStatus("Done.");
  } catch (error) {
    setStatus(String(error.message || error), true);
  } finally {
    button.disabled = false;
  }
});

speed.addEventListener("input", () => { $("speed-value").textContent = `${Number(speed.value).toFixed(1)}×`; });
keyInput.addEventListener("change", loadVoices);
loadVoices().catch((error) => setStatus(`Cannot reach the server: ${error}`, true));
