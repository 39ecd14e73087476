// The skinlesion demo page: choose or drop a photo, POST it to /v1/predict, show the result.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = { maxBytes: 20 * 1024 * 1024, previewUrl: null, busy: false, trainShare: null };

  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = false;
    $("status").textContent = "";
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  async function loadModelCard() {
    try {
      const response = await fetch("/v1/model");
      if (!response.ok) throw new Error("HTTP " + response.status);
      const card = await response.json();
      state.maxBytes = Math.floor(card.limits.max_upload_mb * 1024 * 1024);
      $("model-info").textContent =
        "Model: " + card.model_id + " (" + card.spec.backbone + ", " + card.input.size + " px)";
      $("limits").textContent =
        "Up to " + card.limits.max_upload_mb + " MB. Decision rule: " + card.decision_rule + ".";
      $("intended-use-text").textContent = card.intended_use;
      if (card.metadata) {
        for (const [id, values] of [["meta-sex", card.metadata.sex_values],
                                    ["meta-site", card.metadata.site_values]]) {
          for (const v of values) {
            const opt = document.createElement("option");
            opt.value = v;
            opt.textContent = v;
            $(id).appendChild(opt);
          }
        }
        $("metadata").hidden = false;
      }
      const share = card.spec.train_prevalence;
      state.trainShare = typeof share === "number" ? share : null;
    } catch (err) {
      $("model-info").textContent = "Model: unavailable (" + err.message + ")";
    }
  }

  function percent(p) {
    // One decimal; never round a probability to a certainty it does not have.
    if (p > 0.999 && p < 1) return "> 99.9 %";
    if (p < 0.001 && p > 0) return "< 0.1 %";
    return (100 * p).toFixed(1) + " %";
  }

  async function analyse(file) {
    if (!file || state.busy) return;
    clearError();
    if (file.size > state.maxBytes) {
      showError(file.name + " is " + (file.size / 1048576).toFixed(1) +
                " MB, over the limit of " + (state.maxBytes / 1048576).toFixed(0) + " MB.");
      return;
    }
    state.busy = true;
    $("status").textContent = "Analysing " + file.name + "…";
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = URL.createObjectURL(file);

    const heatmap = $("opt-heatmap").checked;
    const tta = $("opt-tta").value;
    const body = new FormData();
    body.append("image", file, file.name);
    if (!$("metadata").hidden) {
      for (const [field, id] of [["age", "meta-age"], ["sex", "meta-sex"], ["site", "meta-site"]]) {
        if ($(id).value !== "") body.append(field, $(id).value);
      }
    }
    try {
      const response = await fetch(
        "/v1/predict?heatmap=" + heatmap + "&tta=" + encodeURIComponent(tta),
        { method: "POST", body: body });
      let payload = null;
      try { payload = await response.json(); } catch (_) { /* not JSON */ }
      if (!response.ok) {
        const detail = payload && payload.detail;
        throw new Error(typeof detail === "string" ? detail : "HTTP " + response.status);
      }
      render(payload, heatmap);
      $("status").textContent = "Done: " + payload.filename + " (" +
        Math.round(payload.elapsed_ms) + " ms, " + payload.tta + " view" +
        (payload.tta > 1 ? "s" : "") + ").";
    } catch (err) {
      $("result").hidden = true;
      showError("Could not analyse the photo: " + err.message);
    } finally {
      state.busy = false;
    }
  }

  function render(result, heatmapWanted) {
    $("probability").textContent = percent(result.probability);
    // The number is the model's score, anchored to its training data, not a patient's risk.
    $("probability-note").textContent =
      "This probability reflects the training data, " +
      (state.trainShare === null
        ? "whose malignant share this model does not record"
        : "in which " + (100 * state.trainShare).toFixed(1) + " % of images were malignant") +
      " (far more than among lesions seen in practice); it is not this patient's risk of " +
      "skin cancer.";
    const decision = $("decision");
    decision.textContent = result.decision;
    decision.className = "decision " + result.decision;
    let note = "Threshold " + percent(result.threshold);
    if (result.inconclusive_band > 0) {
      note += ", inconclusive within ±" + percent(result.inconclusive_band);
    }
    $("decision-note").textContent = note + ". Model " + result.model_id + ".";
    const list = $("diagnoses");
    list.replaceChildren();
    if (result.diagnoses) {
      for (const d of result.diagnoses.slice(0, 3)) {
        const item = document.createElement("li");
        item.textContent = d.diagnosis.replace(/_/g, " ") + ": " + percent(d.probability);
        list.appendChild(item);
      }
    }
    list.hidden = !result.diagnoses;
    $("preview").src = state.previewUrl;
    if (heatmapWanted && result.heatmap_png_base64) {
      $("heatmap").src = "data:image/png;base64," + result.heatmap_png_base64;
      $("heatmap-figure").hidden = false;
    } else {
      $("heatmap-figure").hidden = true;
      $("heatmap").removeAttribute("src");
    }
    $("result-warning").textContent = result.intended_use;
    $("result").hidden = false;
  }

  function setUp() {
    const zone = $("drop-zone");
    const input = $("file-input");
    input.addEventListener("change", () => {
      if (input.files.length) analyse(input.files[0]);
      input.value = "";  // choosing the same file again re-runs the analysis
    });
    ["dragenter", "dragover"].forEach((name) => zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("dragover");
    }));
    ["dragleave", "drop"].forEach((name) => zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.remove("dragover");
    }));
    zone.addEventListener("drop", (event) => {
      const files = event.dataTransfer && event.dataTransfer.files;
      if (files && files.length) analyse(files[0]);
    });
    zone.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        input.click();
      }
    });
    loadModelCard();
  }

  document.addEventListener("DOMContentLoaded", setUp);
})();
