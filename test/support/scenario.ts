/**
 * The run both end-to-end suites launch (real processes in test/e2e, containers in
 * test/containers): two short rounds of the tiny encoder, so a test run stays in seconds.
 */
export function twoRoundRun(name: string) {
  return {
    name,
    rounds: 2,
    minSites: 2,
    roundDeadlineSeconds: 300,
    strategy: 'fedavg',
    seed: 3,
    model: {
      arch: 'tiny',
      inputSize: 32,
      widths: [8, 16, 32],
      projectorHidden: 32,
      projectionDim: 16,
      metadataHidden: 16,
    },
    training: { localEpochs: 1, maxStepsPerRound: 2, batchSize: 8, learningRate: 0.01, metadataWeight: 0.5 },
  };
}

/**
 * The kill-and-resume test's run: the same tiny encoder as {@link twoRoundRun}, three rounds,
 * so a round in the middle (round 2) has both a published predecessor and a successor.
 */
export function threeRoundRun(name: string) {
  return { ...twoRoundRun(name), rounds: 3 };
}
