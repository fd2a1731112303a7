// An 8-bit grey PNG of task ids, the Task Palette format that `densetasks predict --palette`
// and the server read (a canvas can only export RGBA, which a palette must not be).
// Compression is the browser's own zlib stream (CompressionStream "deflate").

const SIGNATURE = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);

const CRC_TABLE = new Uint32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const byte of bytes) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

async function deflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

// ids: Uint8Array of width * height values, row by row -> Blob "image/png".
export async function greyPng(ids, width, height) {
  const rows = new Uint8Array((width + 1) * height); // each row: filter byte 0, then pixels
  for (let y = 0; y < height; y++) {
    rows.set(ids.subarray(y * width, (y + 1) * width), y * (width + 1) + 1);
  }
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header[8] = 8; // bit depth; colour type 0 (grey), default compression, filter, no interlace
  const parts = [chunk("IHDR", header), chunk("IDAT", await deflate(rows)), chunk("IEND", [])];
  return new Blob([SIGNATURE, ...parts], { type: "image/png" });
}
