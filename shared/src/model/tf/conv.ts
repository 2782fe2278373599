import * as tf from '@tensorflow/tfjs-core';

/**
 * Frees, at the end of a custom gradient, what only that gradient still needed: the
 * incoming gradient `dy` and the tensors it saved. tfjs-core's backward pass keeps every
 * gradient tensor and every saved tensor until the whole pass ends (`backpropagateGradients`
 * in its tape.ts), so its peak holds all activations AND all their gradients at once; freed
 * here, both are released as the pass walks back. Safe because the engine reads a node's
 * output gradient only for that node and saves its own kept clones (disposing one releases
 * the data once no other reference holds it); it disposes them again, harmlessly, at the
 * end. Consequence for callers: a `dy` handed to `tf.grad(f)(x, dy)` through such a unit
 * is disposed.
 */
export function releaseGradientInputs(dy: tf.Tensor, saved: tf.Tensor[]): void {
  dy.dispose();
  for (const t of saved) t.dispose();
}

/**
 * `tf.conv2d` (NHWC, symmetric padding `pad`) whose gradient is the same two kernels
 * (Conv2DBackpropInput, Conv2DBackpropFilter) but releases its `dy` and saved tensors as
 * soon as it has run (see {@link releaseGradientInputs}). Runs on every backend.
 *
 * `inputGradient: false` (for the stem, whose input is the images): no gradient flows to
 * `x` and its input-gradient convolution is not run — a custom gradient must otherwise
 * compute one for every input, needed or not. `x` must then stay alive until the backward
 * pass has run (it is read there, not saved).
 */
export function conv2dUnit(
  x: tf.Tensor4D,
  w: tf.Tensor4D,
  stride: number,
  pad: number,
  opts: { inputGradient?: boolean } = {},
): tf.Tensor4D {
  const filterGrad = (sx: tf.Tensor4D, dy: tf.Tensor, filterShape: number[]) =>
    tf
      .engine()
      .runKernel(
        'Conv2DBackpropFilter',
        { x: sx, dy },
        { strides: [stride, stride], pad, dataFormat: 'NHWC', filterShape },
      ) as tf.Tensor4D;
  if (opts.inputGradient === false) {
    const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
      const wi = args[0] as tf.Tensor4D;
      return {
        value: tf.conv2d(x, wi, stride, pad),
        gradFunc: (dy: tf.Tensor) => {
          const dw = filterGrad(x, dy, wi.shape);
          releaseGradientInputs(dy, []);
          return [dw];
        },
      };
    });
    return f(w) as tf.Tensor4D;
  }
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[2] as tf.GradSaveFunc;
    const [xi, wi] = args as [tf.Tensor4D, tf.Tensor4D];
    save([xi, wi]);
    return {
      value: tf.conv2d(xi, wi, stride, pad),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sw] = saved as [tf.Tensor4D, tf.Tensor4D];
        const dx = tf.conv2dTranspose(dy as tf.Tensor4D, sw, sx.shape, stride, pad);
        const dw = filterGrad(sx, dy, sw.shape);
        releaseGradientInputs(dy, saved);
        return [dx, dw];
      },
    };
  });
  return f(x, w) as tf.Tensor4D;
}
