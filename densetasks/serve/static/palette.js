// The Task Palette being painted: one task id per image pixel (255 = no task), drawn as a
// translucent colour overlay over the image. A brush paints discs of one task id.

export const NO_TASK = 255;
export const TASK_COLOURS = [
  [230, 25, 75], [60, 180, 75], [67, 99, 216], [245, 130, 49], [145, 30, 180],
  [66, 212, 244], [240, 50, 230], [191, 239, 69], [250, 190, 212], [70, 153, 144],
];

export const taskColour = (id) => TASK_COLOURS[id % TASK_COLOURS.length];

export class Palette {
  constructor(canvas) {
    this.canvas = canvas;
    this.brush = 0;
    this.radius = 6;
    this.resize(1, 1);
    let last = null;
    canvas.addEventListener("pointerdown", (event) => {
      canvas.setPointerCapture(event.pointerId);
      last = this.pixel(event);
      this.dab(last);
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!last || !(event.buttons & 1)) return;
      const next = this.pixel(event);
      this.stroke(last, next);
      last = next;
    });
    canvas.addEventListener("pointerup", () => { last = null; });
  }

  resize(width, height) {
    this.width = width;
    this.height = height;
    this.canvas.width = width;
    this.canvas.height = height;
    this.ids = new Uint8Array(width * height).fill(NO_TASK);
    this.overlay = new ImageData(width, height);
  }

  // The image pixel under a pointer event (the canvas is scaled by CSS).
  pixel(event) {
    const box = this.canvas.getBoundingClientRect();
    const x = Math.floor(((event.clientX - box.left) / box.width) * this.width);
    const y = Math.floor(((event.clientY - box.top) / box.height) * this.height);
    return [Math.min(Math.max(x, 0), this.width - 1), Math.min(Math.max(y, 0), this.height - 1)];
  }

  stroke([x0, y0], [x1, y1]) {
    const steps = Math.max(1, Math.ceil(Math.hypot(x1 - x0, y1 - y0) / Math.max(1, this.radius / 2)));
    for (let i = 1; i <= steps; i++) {
      this.dab([Math.round(x0 + ((x1 - x0) * i) / steps), Math.round(y0 + ((y1 - y0) * i) / steps)]);
    }
  }

  // A disc of the brush's task id around (cx, cy); the overlay is redrawn there only.
  dab([cx, cy]) {
    const r = this.radius - 1;
    const left = Math.max(0, cx - r), right = Math.min(this.width - 1, cx + r);
    const top = Math.max(0, cy - r), bottom = Math.min(this.height - 1, cy + r);
    for (let y = top; y <= bottom; y++) {
      for (let x = left; x <= right; x++) {
        if ((x - cx) ** 2 + (y - cy) ** 2 <= r * r + r) this.ids[y * this.width + x] = this.brush;
      }
    }
    this.draw(left, top, right - left + 1, bottom - top + 1);
  }

  // Replace every id (a palette drawn by a rule, or a cleared one).
  set(ids) {
    this.ids.set(ids);
    this.draw(0, 0, this.width, this.height);
  }

  draw(left, top, width, height) {
    const data = this.overlay.data;
    for (let y = top; y < top + height; y++) {
      for (let x = left; x < left + width; x++) {
        const id = this.ids[y * this.width + x];
        const offset = 4 * (y * this.width + x);
        const colour = id === NO_TASK ? [0, 0, 0] : taskColour(id);
        data.set([...colour, id === NO_TASK ? 0 : 255], offset);
      }
    }
    this.canvas.getContext("2d").putImageData(this.overlay, 0, 0, left, top, width, height);
  }
}
