/**
 * Statistics used to check that a masked vector looks like noise (tests and audits): nothing
 * here is needed to run the protocol.
 */

/** Pearson correlation of two equally long vectors. */
export function pearson(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = a.length;
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < n; i++) {
    ma += a[i]! / n;
    mb += b[i]! / n;
  }
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    sab += (a[i]! - ma) * (b[i]! - mb);
    saa += (a[i]! - ma) ** 2;
    sbb += (b[i]! - mb) ** 2;
  }
  return sab / Math.sqrt(saa * sbb);
}

/**
 * Pearson χ² of ring elements (integers in [0, 2^48)) against the uniform distribution, over 256
 * equal bins (their top byte); 255 degrees of freedom, 0.1 % critical value 330.5.
 */
export function chiSquareTopByte(values: Float64Array): number {
  const bins = new Float64Array(256);
  for (const v of values) bins[Math.floor(v / 2 ** 40)]! += 1;
  const e = values.length / 256;
  return bins.reduce((s, o) => s + (o - e) ** 2 / e, 0);
}
