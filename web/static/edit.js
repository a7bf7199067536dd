// imagine: the mask editor of an image's edit page. Paint what to repaint; "Vary region" sends
// the mask (white = repaint, black = keep, the image's own size) as a PNG file with the form.
// Pointer events, so a mouse, a pen and a finger all draw. No inline script: the app sends a CSP.
"use strict";

const MAX_UNDO = 30;

function setUpEditor(form) {
  const canvas = document.getElementById("mask-canvas");
  const fileInput = document.getElementById("mask-file");
  const sizeInput = document.getElementById("brush-size");
  const sizeOutput = document.getElementById("brush-size-value");
  const undoButton = document.getElementById("mask-undo");
  const clearButton = document.getElementById("mask-clear");
  const status = document.getElementById("mask-status");
  if (!canvas || !fileInput || !canvas.getContext) {
    return;
  }
  const context = canvas.getContext("2d");
  const history = [];
  let stroke = null;
  let isSending = false;

  const tool = () => {
    const picked = form.querySelector("input[name=tool]:checked");
    return picked ? picked.value : "brush";
  };
  // The brush size is in screen pixels; the canvas holds the image's pixels.
  const scale = () => canvas.width / canvas.getBoundingClientRect().width;
  const radius = () => (Number(sizeInput.value) || 24) * scale() / 2;
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return {
      x: (event.clientX - box.left) * (canvas.width / box.width),
      y: (event.clientY - box.top) * (canvas.height / box.height),
    };
  };
  const say = (text) => { if (status) { status.textContent = text; } };
  const updateButtons = () => {
    undoButton.disabled = history.length === 0;
    clearButton.disabled = history.length === 0 && !isPainted();
  };
  const isPainted = () => {
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 3; i < pixels.length; i += 4) {
      if (pixels[i] > 0) {
        return true;
      }
    }
    return false;
  };
  const remember = () => {
    history.push(context.getImageData(0, 0, canvas.width, canvas.height));
    if (history.length > MAX_UNDO) {
      history.shift();
    }
  };
  const dab = (from, to) => {
    context.globalCompositeOperation = tool() === "eraser" ? "destination-out" : "source-over";
    context.strokeStyle = "#00e5ff";
    context.fillStyle = "#00e5ff";
    context.lineWidth = radius() * 2;
    context.lineCap = "round";
    context.lineJoin = "round";
    context.beginPath();
    if (from.x === to.x && from.y === to.y) {
      context.arc(to.x, to.y, radius(), 0, Math.PI * 2);
      context.fill();
    } else {
      context.moveTo(from.x, from.y);
      context.lineTo(to.x, to.y);
      context.stroke();
    }
  };

  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 && event.pointerType === "mouse") {
      return;
    }
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    remember();
    stroke = { id: event.pointerId, last: point(event) };
    dab(stroke.last, stroke.last);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!stroke || stroke.id !== event.pointerId) {
      return;
    }
    const next = point(event);
    dab(stroke.last, next);
    stroke.last = next;
  });
  const end = (event) => {
    if (!stroke || stroke.id !== event.pointerId) {
      return;
    }
    stroke = null;
    updateButtons();
    say(isPainted() ? "Region marked." : "Nothing marked yet.");
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);

  sizeInput.addEventListener("input", () => {
    if (sizeOutput) {
      sizeOutput.textContent = `${sizeInput.value} px`;
    }
  });
  undoButton.addEventListener("click", () => {
    const last = history.pop();
    if (last) {
      context.putImageData(last, 0, 0);
    }
    updateButtons();
    say(last ? "Undone." : "Nothing to undo.");
  });
  clearButton.addEventListener("click", () => {
    remember();
    context.clearRect(0, 0, canvas.width, canvas.height);
    updateButtons();
    say("Mask cleared.");
  });

  // The mask file: black everywhere, white where painted (any opacity counts as painted).
  const maskBlob = () => new Promise((resolve) => {
    const out = document.createElement("canvas");
    out.width = canvas.width;
    out.height = canvas.height;
    const paint = out.getContext("2d");
    const source = context.getImageData(0, 0, canvas.width, canvas.height).data;
    const target = paint.createImageData(canvas.width, canvas.height);
    for (let i = 0; i < source.length; i += 4) {
      const value = source[i + 3] > 0 ? 255 : 0;
      target.data[i] = value;
      target.data[i + 1] = value;
      target.data[i + 2] = value;
      target.data[i + 3] = 255;
    }
    paint.putImageData(target, 0, 0);
    out.toBlob(resolve, "image/png");
  });

  form.addEventListener("submit", async (event) => {
    const submitter = event.submitter;
    if (isSending) {
      event.preventDefault();
      return;
    }
    if (!submitter || submitter.value !== "vary") {
      isSending = true;
      if (submitter) { submitter.setAttribute("aria-busy", "true"); }
      return;
    }
    if (form.dataset.maskReady === "1") {
      isSending = true;
      return;
    }
    event.preventDefault();
    if (!isPainted()) {
      say("Paint the region to vary first.");
      return;
    }
    submitter.setAttribute("aria-busy", "true");
    const blob = await maskBlob();
    const files = new DataTransfer();
    files.items.add(new File([blob], "mask.png", { type: "image/png" }));
    fileInput.files = files.files;
    form.dataset.maskReady = "1";
    form.requestSubmit(submitter);
  });
  updateButtons();
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("edit-form");
  if (form) {
    setUpEditor(form);
  }
});
