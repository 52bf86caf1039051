// node (V8 JIT, libuv's thread pool): a BigInt compute loop that also hashes on the
// thread pool (crypto.pbkdf2) every step; one line per step.
const crypto = require('crypto');
const steps = Number(process.argv[2] || 30);
let s = 0n;
function step(i) {
  if (i === steps) return;
  for (let j = 0; j < 300000; j++) s = (s * 31n + BigInt(j)) % 1000000007n;
  crypto.pbkdf2('mos' + i, 'salt', 2000, 16, 'sha256', (err, key) => {
    if (err) throw err;
    console.log(i, s.toString(), key.toString('hex'));
    setTimeout(() => step(i + 1), 20);
  });
}
step(0);
