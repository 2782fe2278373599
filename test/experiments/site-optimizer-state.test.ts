import { describe, expect, it } from 'vitest';
import type { NamedTensors } from '@fedssl/shared/codec';
import { modelConfigSchema, trainingConfigSchema, type TrainingConfig } from '@fedssl/shared/model';
import type { SiteData } from '../../bench/experiments/data';
import { simulateFederation } from '../../bench/experiments/simulate';
import type { TrainingDataset } from '../../site-agent/src/data/dataset';

/**
 * `training.siteOptimizerState: 'keep'` through the experiments' simulator: the run config
 * carries it to every agent's TaskRunner (signed task, trainRound, local state file), with
 * FedAvg and with FedEMA's local update, and it changes nothing the sites upload.
 */

const model = modelConfigSchema.parse({
  arch: 'tiny',
  inputSize: 16,
  widths: [4, 8, 8, 8],
  projectorHidden: 16,
  projectionDim: 8,
  metadataHidden: 8,
});

function site(id: string, phase: number): SiteData {
  const count = 8;
  const size = 16;
  const pixels = new Float32Array(count * size * size);
  for (let i = 0; i < count; i++)
    for (let p = 0; p < size * size; p++)
      pixels[i * size * size + p] = 0.5 + 0.4 * Math.sin((p * (i + 1) + phase) / 7);
  const dataset: TrainingDataset = {
    count,
    height: size,
    width: size,
    pixels,
    metadataLabels: Int32Array.from({ length: count }, (_, i) => i % 2),
    metadataClasses: 2,
  };
  return { id, name: id, dataset, positives: 0 };
}

const sites = [site('site-a', 0), site('site-b', 3)];

const run = (training: Partial<TrainingConfig>) =>
  simulateFederation({
    sites,
    model,
    training: trainingConfigSchema.parse({
      batchSize: 4,
      learningRate: 1e-2,
      augmentation: { multiCrop: { localViews: 0 } },
      ...training,
    }),
    rounds: 2,
    seed: 5,
    stepsPerRound: () => 2,
  });

const same = (a: NamedTensors, b: NamedTensors) =>
  a.every((t, i) => t.data.every((v, j) => v === b[i]!.data[j]));

describe("siteOptimizerState 'keep' in a simulated federation", () => {
  it('reaches the agents: round 1 as a reset run, round 2 continues Adam; uploads unchanged', async () => {
    const reset = await run({});
    const keep = await run({ siteOptimizerState: 'keep' });
    expect(keep.publishedRounds).toBe(2);
    expect(keep.acceptedUpdates).toBe(4);
    // No state to continue from in round 1: the same global model, bit for bit.
    expect(same(keep.roundWeights[0]!, reset.roundWeights[0]!)).toBe(true);
    // Round 2 starts Adam from round 1's moments on every site: another model.
    expect(same(keep.roundWeights[1]!, reset.roundWeights[1]!)).toBe(false);
    // The optimizer state stays on the site: the sealed uploads are the same size (±
    // the metric digits in the signed header), not 2 × parameters × 4 bytes larger.
    keep.bytes.upload.forEach((round, r) =>
      round.forEach((bytes, s) => expect(Math.abs(bytes - reset.bytes.upload[r]![s]!)).toBeLessThan(64)),
    );
  }, 120_000);

  it('works with FedEMA: μ is applied to the weights, Adam continues underneath', async () => {
    const reset = await run({ localUpdate: 'fedema' });
    const keep = await run({ localUpdate: 'fedema', siteOptimizerState: 'keep' });
    expect(keep.publishedRounds).toBe(2);
    expect(keep.rounds[1]!.every((p) => p.state === 'accepted' && p.fedemaMu !== undefined)).toBe(true);
    expect(same(keep.roundWeights[0]!, reset.roundWeights[0]!)).toBe(true);
    expect(same(keep.roundWeights[1]!, reset.roundWeights[1]!)).toBe(false);
  }, 120_000);
});
