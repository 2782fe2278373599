/**
 * Federated experiment on PneumoniaMNIST: 4 sites with Dirichlet(α = 0.5) label skew, every arm.
 *
 *   npm run bench -- experiments/pneumonia [--budget-minutes 3 --seeds 1,2,3 --image-size 28
 *        --sites 4 --rounds 8 --alpha 0.5 --smoke --resume --out DIR --img-dir docs/img]
 *
 * Data: the MedMNIST v2 `pneumoniamnist.npz` in ../shared/data/medmnist (train split), Yang et
 * al., "MedMNIST v2", Scientific Data 2023. See experiment.ts for the options and arms.ts for
 * the arms and the compute budget.
 */
import { pneumonia } from './definitions';
import { parseExperimentArgs, runExperiment } from './experiment';

runExperiment(pneumonia, parseExperimentArgs(pneumonia, process.argv.slice(2))).catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
