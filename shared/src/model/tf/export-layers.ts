import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import type { NamedTensors } from '../../codec/types';
import { encoderPlan, groupNormGroups } from '../architecture';
import { tfjsExportInputSize } from '../export/tfjs-input-size';
import type { ModelConfig } from '../config';
import { sharedParamSpecs } from '../spec';
import { BN_EPS } from './batch-norm';
import { matchWeights } from './params';

export const TFJS_MODEL_FILE = 'model.json';
export const TFJS_WEIGHTS_FILE = 'weights.bin';

/** Options of {@link buildEncoderLayersModel}. */
export interface EncoderLayersOptions {
  /**
   * Side of the square input the graph is built for; default `config.inputSize`. Group-norm
   * graphs take only this size (their reshapes are static); batch-norm graphs take any size
   * and only check it. The weights do not depend on it: export at 224 to fine-tune at 224 px.
   */
  inputSize?: number;
}

/**
 * A TensorFlow.js LayersModel of the encoder in inference mode, built with stock `tf.layers`
 * from the published shared weights (it loads with a plain `tf.loadLayersModel`, nothing to
 * register). Input `[N, H, W, 1]`, output the globally average-pooled features
 * `[N, featureDim]`, identical to `encoderForward(config, params, x, { training: false })`.
 *
 * Batch norm uses the published running statistics; the graph takes any H, W. tf.layers has
 * no group norm, so each one is built as Reshape `[H, W, C]` → `[H·W, G, C/G]`,
 * LayerNormalization over axes 1 and 3 (no affine), Reshape back, then γ/β as a 1×1
 * DepthwiseConv2D with bias; the reshapes fix H and W, so a group-norm graph takes only
 * `opts.inputSize` (default `config.inputSize`). G is the forward pass's `groupNormGroups(C)`.
 *
 * Layers are named like torchvision modules without the `encoder.` prefix (`conv1`, `bn1`,
 * `layer1.0.conv1`, `layer2.0.downsample.0`, …; a group norm's γ/β layer carries the norm's
 * name). PyTorch's symmetric padding is reproduced with explicit ZeroPadding2D + `valid`
 * convolutions (TF's `same` pads asymmetrically for stride 2); the stem max-pool pads with
 * zeros, which equals −∞ padding after a ReLU. The caller owns the model (`model.dispose()`).
 * @throws FedsslError MODEL_CONFIG_INVALID for an `inputSize` outside [16, 512];
 *   MODEL_WEIGHTS_MISMATCH when an encoder tensor is missing or misshapen.
 */
export function buildEncoderLayersModel(
  config: ModelConfig,
  weights: NamedTensors,
  opts: EncoderLayersOptions = {},
): tfl.LayersModel {
  const plan = encoderPlan(config);
  const size = tfjsExportInputSize(config, opts.inputSize);
  const specs = sharedParamSpecs(config).filter((s) => s.part === 'encoder');
  const byName = matchWeights(
    weights.filter((t) => t.name.startsWith('encoder.')),
    specs,
  );
  // layer name → its weights in setWeights order (parameter name, and the layer's shape if it differs)
  const values = new Map<string, { name: string; shape?: number[] }[]>();
  const torch = (n: string): string => n.replace(/^encoder\./, '');

  const batchNorm = (x: tfl.SymbolicTensor, bn: string) => {
    values.set(torch(bn), [
      { name: `${bn}.weight` },
      { name: `${bn}.bias` },
      { name: `${bn}.running_mean` },
      { name: `${bn}.running_var` },
    ]);
    return tfl.layers
      .batchNormalization({ axis: -1, epsilon: BN_EPS, name: torch(bn) })
      .apply(x) as tfl.SymbolicTensor;
  };
  const groupNorm = (x: tfl.SymbolicTensor, gn: string) => {
    const [, h, w, c] = x.shape as number[];
    const g = groupNormGroups(c!);
    // Rank 4 on purpose: tf.layers' LayerNormalization normalizes ranks 2-4 only.
    let y = tfl.layers
      .reshape({ targetShape: [h! * w!, g, c! / g], name: `${torch(gn)}.group` })
      .apply(x) as tfl.SymbolicTensor;
    y = tfl.layers
      .layerNormalization({
        axis: [1, 3],
        epsilon: BN_EPS,
        center: false,
        scale: false,
        name: `${torch(gn)}.norm`,
      })
      .apply(y) as tfl.SymbolicTensor;
    y = tfl.layers
      .reshape({ targetShape: [h!, w!, c!], name: `${torch(gn)}.ungroup` })
      .apply(y) as tfl.SymbolicTensor;
    values.set(torch(gn), [{ name: `${gn}.weight`, shape: [1, 1, c!, 1] }, { name: `${gn}.bias` }]);
    return tfl.layers
      .depthwiseConv2d({ kernelSize: 1, depthMultiplier: 1, useBias: true, name: torch(gn) })
      .apply(y) as tfl.SymbolicTensor;
  };

  const convBn = (
    x: tfl.SymbolicTensor,
    conv: string,
    bn: string,
    k: number,
    stride: number,
    out: number,
  ) => {
    let h = x;
    const pad = Math.floor(k / 2);
    if (pad > 0)
      h = tfl.layers
        .zeroPadding2d({ padding: pad, name: `${torch(conv)}.pad` })
        .apply(h) as tfl.SymbolicTensor;
    h = tfl.layers
      .conv2d({
        filters: out,
        kernelSize: k,
        strides: stride,
        padding: 'valid',
        useBias: false,
        name: torch(conv),
      })
      .apply(h) as tfl.SymbolicTensor;
    values.set(torch(conv), [{ name: `${conv}.weight` }]);
    return plan.norm === 'group' ? groupNorm(h, bn) : batchNorm(h, bn);
  };
  const relu = (x: tfl.SymbolicTensor, name: string) =>
    tfl.layers.reLU({ name }).apply(x) as tfl.SymbolicTensor;

  const input = tfl.input({
    shape: plan.norm === 'group' ? [size, size, 1] : [null, null, 1],
    name: 'image',
  });
  let h = relu(
    convBn(input, 'encoder.conv1', 'encoder.bn1', plan.stem.kernel, plan.stem.stride, plan.stem.outChannels),
    'relu',
  );
  if (plan.stem.pool) {
    h = tfl.layers.zeroPadding2d({ padding: 1, name: 'maxpool.pad' }).apply(h) as tfl.SymbolicTensor;
    h = tfl.layers
      .maxPooling2d({ poolSize: 3, strides: 2, padding: 'valid', name: 'maxpool' })
      .apply(h) as tfl.SymbolicTensor;
  }
  for (const b of plan.blocks) {
    const p = b.prefix;
    let out: tfl.SymbolicTensor;
    if (b.kind === 'basic') {
      out = relu(convBn(h, `${p}.conv1`, `${p}.bn1`, 3, b.stride, b.midChannels), `${torch(p)}.relu1`);
      out = convBn(out, `${p}.conv2`, `${p}.bn2`, 3, 1, b.outChannels);
    } else {
      out = relu(convBn(h, `${p}.conv1`, `${p}.bn1`, 1, 1, b.midChannels), `${torch(p)}.relu1`);
      out = relu(convBn(out, `${p}.conv2`, `${p}.bn2`, 3, b.stride, b.midChannels), `${torch(p)}.relu2`);
      out = convBn(out, `${p}.conv3`, `${p}.bn3`, 1, 1, b.outChannels);
    }
    const shortcut = b.downsample
      ? convBn(h, `${p}.downsample.0`, `${p}.downsample.1`, 1, b.stride, b.outChannels)
      : h;
    h = relu(
      tfl.layers.add({ name: `${torch(p)}.add` }).apply([out, shortcut]) as tfl.SymbolicTensor,
      `${torch(p)}.relu`,
    );
  }
  const features = tfl.layers.globalAveragePooling2d({ name: 'avgpool' }).apply(h) as tfl.SymbolicTensor;
  const model = tfl.model({ inputs: input, outputs: features, name: 'fedssl_encoder' });
  for (const [layer, params] of values) {
    const tensors = params.map((p) => {
      const t = byName.get(p.name)!;
      return tf.tensor(t.data, p.shape ?? t.shape, 'float32');
    });
    model.getLayer(layer).setWeights(tensors);
    tf.dispose(tensors);
  }
  return model;
}

/**
 * Saves a LayersModel as `model.json` + `weights.bin` in `dir` through a custom save
 * handler (pure tfjs has no `file://` saver without tfjs-node). Files are written to
 * temporary names and renamed into place.
 */
export async function saveLayersModelToDir(
  model: tfl.LayersModel,
  dir: string,
  metadata: Record<string, unknown> = {},
): Promise<{ modelPath: string; weightsPath: string }> {
  mkdirSync(dir, { recursive: true });
  const modelPath = join(dir, TFJS_MODEL_FILE);
  const weightsPath = join(dir, TFJS_WEIGHTS_FILE);
  model.setUserDefinedMetadata(metadata);
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const data = artifacts.weightData
        ? tf.io.CompositeArrayBuffer.join(artifacts.weightData)
        : new ArrayBuffer(0);
      const json = {
        format: 'layers-model',
        generatedBy: artifacts.generatedBy,
        convertedBy: 'fedssl',
        modelTopology: artifacts.modelTopology,
        weightsManifest: [{ paths: [TFJS_WEIGHTS_FILE], weights: artifacts.weightSpecs ?? [] }],
        userDefinedMetadata: artifacts.userDefinedMetadata,
      };
      writeFileSync(`${weightsPath}.tmp`, new Uint8Array(data));
      writeFileSync(`${modelPath}.tmp`, JSON.stringify(json));
      renameSync(`${weightsPath}.tmp`, weightsPath);
      renameSync(`${modelPath}.tmp`, modelPath);
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    }),
  );
  return { modelPath, weightsPath };
}

/**
 * An IOHandler that loads `model.json` + the weight files it names from `dir` (for
 * `tf.loadLayersModel` without tfjs-node).
 * @example const model = await tf.loadLayersModel(fileLoadHandler('/models/run-1.r20/tfjs'));
 */
export function fileLoadHandler(dir: string): tf.io.IOHandler {
  return {
    load: async () => {
      const json = JSON.parse(readFileSync(join(dir, TFJS_MODEL_FILE), 'utf8')) as tf.io.ModelJSON;
      return tf.io.getModelArtifactsForJSON(json, async (manifest) => {
        const specs = manifest.flatMap((g) => g.weights);
        const buffers = manifest.flatMap((g) =>
          g.paths.map((p) => {
            const b = readFileSync(join(dir, p));
            return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
          }),
        );
        return [specs, tf.io.concatenateArrayBuffers(buffers)];
      });
    },
  };
}
