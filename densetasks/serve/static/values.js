// Reading a prediction: raw values under the mouse and each task's legend.
// The server sends values as {dtype, shape, data}: base64 of a little-endian C-order array,
// class ids as uint8, everything else as float32, in the unit the task's description names.

export function decodeValues(values) {
  const bytes = Uint8Array.from(atob(values.data), (c) => c.charCodeAt(0));
  const array = values.dtype === "uint8" ? bytes : new Float32Array(bytes.buffer);
  return { array, shape: values.shape };
}

// The channels of pixel (x, y) of a decoded [H, W] or [C, H, W] array.
function at(decoded, x, y) {
  const [height, width] = decoded.shape.slice(-2);
  const channels = decoded.shape.length === 3 ? decoded.shape[0] : 1;
  const out = [];
  for (let c = 0; c < channels; c++) out.push(decoded.array[c * height * width + y * width + x]);
  return out;
}

const fixed = (v, digits = 2) => v.toFixed(digits);

// One task's value at (x, y) as text, as the task's meaning says: a class name, or the
// channels with the task's digits and unit, e.g. "wall", "3.21 m", "(0.12, -0.50, 0.86)".
export function formatValue(task, decoded, x, y) {
  const v = at(decoded, x, y);
  if (task.classes) return task.classes[v[0]] ? task.classes[v[0]].name : `class ${v[0]}`;
  const numbers = v.map((c) => fixed(c, task.digits)).join(", ");
  const text = v.length > 1 ? `(${numbers})` : numbers;
  return task.unit ? `${text} ${task.unit}` : text;
}

const rgb = (colour) => `rgb(${colour.join(",")})`;

// A legend element: class swatches, a colour bar with its unit, or a line of text.
export function legendElement(task, legend) {
  const element = document.createElement("div");
  element.className = "legend";
  if (legend.kind === "classes") {
    for (const id of legend.ids) {
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = rgb(task.classes[id].colour);
      element.append(swatch, task.classes[id].name);
    }
  } else if (legend.kind === "colourbar" && legend.stops.length) {
    const bar = document.createElement("div");
    bar.className = "bar";
    const stops = legend.stops.map((s) => rgb(s.colour));
    bar.style.background = `linear-gradient(to right, ${stops.join(", ")})`;
    const ends = document.createElement("div");
    ends.className = "ends";
    const near = legend.stops[0].value;
    const far = legend.stops[legend.stops.length - 1].value;
    ends.innerHTML = `<span>${fixed(near)} ${legend.unit}</span><span>${fixed(far)} ${legend.unit}</span>`;
    element.append(bar, ends);
  } else {
    element.textContent = legend.text || "";
  }
  return element;
}
