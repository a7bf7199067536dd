// imagine: a little progressive enhancement. Everything works without it except live job pages.
"use strict";

function once(form) {
  form.addEventListener("submit", (event) => {
    const message = form.dataset.confirm;
    if (message && !window.confirm(message)) {
      event.preventDefault();
      return;
    }
    if (form.dataset.sent) {
      event.preventDefault();
      return;
    }
    form.dataset.sent = "1";
    for (const button of form.querySelectorAll("button[type=submit]")) {
      button.setAttribute("aria-busy", "true");
    }
  });
}

function seconds(value) {
  return value < 1 ? "under a second" : `about ${Math.round(value)} s`;
}

function followJob(section) {
  const id = section.dataset.job;
  const status = document.getElementById("job-status");
  const bar = document.getElementById("job-progress");
  const preview = document.getElementById("job-preview");
  const source = new EventSource(`/jobs/${encodeURIComponent(id)}/events`);
  const show = (text) => { status.textContent = text; };
  source.addEventListener("queued", (e) => {
    const data = JSON.parse(e.data);
    show(`Waiting in the queue: position ${data.position}, ${seconds(data.eta_s)}.`);
  });
  source.addEventListener("started", () => show("Generating…"));
  source.addEventListener("progress", (e) => {
    const data = JSON.parse(e.data);
    show(`Generating… step ${data.step} of ${data.total}.`);
    if (bar) { bar.max = data.total; bar.value = data.step; }
    if (preview && typeof data.preview === "string" && data.preview.startsWith("data:image/png;base64,")) {
      preview.src = data.preview;
      preview.hidden = false;
    }
  });
  const finish = (text) => {
    source.close();
    show(text);
    section.dataset.state = "ended";
    window.location.reload();
  };
  source.addEventListener("done", () => finish("Done."));
  source.addEventListener("failed", (e) => finish(`Failed: ${JSON.parse(e.data).error}`));
  source.addEventListener("cancelled", () => finish("Cancelled."));
  source.onerror = () => {
    // Refused (too many live pages, or the server restarting) or dropped for good: ask the
    // JSON API every few seconds instead, and show the result page once the job has ended.
    if (source.readyState === EventSource.CLOSED) {
      pollJob(id, show);
    }
  };
}

function pollJob(id, show) {
  const ask = async () => {
    try {
      const response = await fetch(`/api/v1/jobs/${encodeURIComponent(id)}`, { headers: { Accept: "application/json" } });
      if (response.ok) {
        const job = await response.json();
        if (["done", "failed", "cancelled"].includes(job.state)) {
          window.location.reload();
          return;
        }
        if (job.state === "queued" && job.position) {
          show(`Waiting in the queue: position ${job.position}.`);
        } else if (job.state === "running" && job.progress.total) {
          show(`Generating… step ${job.progress.step} of ${job.progress.total}.`);
        }
      }
    } catch (error) {
      // The server is restarting: try again at the next tick.
    }
    window.setTimeout(ask, 3000);
  };
  window.setTimeout(ask, 3000);
}

document.addEventListener("DOMContentLoaded", () => {
  // Wide screens have room for every filter; phones keep them folded behind "Filters".
  const filters = document.querySelector(".filters details.more");
  if (filters && window.matchMedia("(min-width: 700px)").matches) {
    filters.open = true;
  }
  for (const form of document.querySelectorAll("form[data-once], form[data-confirm]")) {
    once(form);
  }
  const job = document.getElementById("job");
  if (job && (job.dataset.state === "queued" || job.dataset.state === "running")) {
    followJob(job);
  }
});
