// The tiny deterministic ONNX model the screening tests build themselves
// (the same graph as `screen::testmodel` in Rust): each colour channel's
// mean minus the mean of the other two, as labels `red`, `green`, `blue`.
// A red camera scores high on `red`; grey, blue or yellow ones do not.
// Written as ONNX protobuf by hand: a few fields, no weights, no library.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

function varint(n) {
  const out = [];
  let v = BigInt(n);
  while (v >= 0x80n) { out.push(Number((v & 0x7fn) | 0x80n)); v >>= 7n; }
  out.push(Number(v));
  return Buffer.from(out);
}
const fieldVarint = (f, v) => Buffer.concat([varint(f * 8), varint(v)]);
const fieldBytes = (f, b) => {
  const buf = Buffer.isBuffer(b) ? b : Buffer.from(b);
  return Buffer.concat([varint(f * 8 + 2), varint(buf.length), buf]);
};

function valueInfo(name, dims) {
  const shape = Buffer.concat(dims.map((d) => fieldBytes(1, typeof d === 'number' ? fieldVarint(1, d) : fieldBytes(2, d))));
  const tensor = Buffer.concat([fieldVarint(1, 1), fieldBytes(2, shape)]);
  return Buffer.concat([fieldBytes(1, name), fieldBytes(2, fieldBytes(1, tensor))]);
}

/** The ONNX file's bytes. */
export function colourModel() {
  const mix = Buffer.alloc(36);
  [1, -0.5, -0.5, -0.5, 1, -0.5, -0.5, -0.5, 1].forEach((v, i) => mix.writeFloatLE(v, i * 4));
  const initializer = Buffer.concat([fieldVarint(1, 3), fieldVarint(1, 3), fieldVarint(2, 1), fieldBytes(8, 'mix'), fieldBytes(9, mix)]);
  const axes = Buffer.concat([fieldBytes(1, 'axes'), fieldVarint(8, 2), fieldVarint(8, 3), fieldVarint(20, 7)]);
  const keepdims = Buffer.concat([fieldBytes(1, 'keepdims'), fieldVarint(3, 0), fieldVarint(20, 2)]);
  const reduce = Buffer.concat([fieldBytes(1, 'image'), fieldBytes(2, 'means'), fieldBytes(3, 'reduce'), fieldBytes(4, 'ReduceMean'),
    fieldBytes(5, axes), fieldBytes(5, keepdims)]);
  const matmul = Buffer.concat([fieldBytes(1, 'means'), fieldBytes(1, 'mix'), fieldBytes(2, 'scores'), fieldBytes(3, 'mix_channels'),
    fieldBytes(4, 'MatMul')]);
  const graph = Buffer.concat([fieldBytes(1, reduce), fieldBytes(1, matmul), fieldBytes(2, 'colour'), fieldBytes(5, initializer),
    fieldBytes(11, valueInfo('image', [1, 3, 'h', 'w'])), fieldBytes(12, valueInfo('scores', [1, 3]))]);
  const opset = Buffer.concat([fieldBytes(1, ''), fieldVarint(2, 13)]);
  return Buffer.concat([fieldVarint(1, 7), fieldBytes(2, 'duet tests'), fieldBytes(7, graph), fieldBytes(8, opset)]);
}

/** Its model config: the `red` category at the given thresholds. */
export function colourConfig({ width = 64, height = 48, review = 0.5, high = 0.6 } = {}) {
  return `id = "colour-test"
[input]
width = ${width}
height = ${height}
layout = "nchw"
[output]
kind = "classifier"
labels = ["red", "green", "blue"]
[[category]]
name = "red"
labels = ["red"]
review = ${review}
high = ${high}
report_category = "other"
`;
}

/** Writes both into `dir`; returns their paths. */
export function writeColourModel(dir, o) {
  const model = join(dir, 'colour.onnx');
  const config = join(dir, 'colour.toml');
  writeFileSync(model, colourModel());
  writeFileSync(config, colourConfig(o));
  return { model, config };
}
