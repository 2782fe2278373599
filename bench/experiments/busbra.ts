/**
 * Federated experiment on BUS-BRA: sites = scanners, patients never split, every arm.
 *
 *   npm run bench -- experiments/busbra [--budget-minutes 3 --seeds 1,2,3 --image-size 32
 *        --sites 4 --rounds 8 --smoke --resume --out DIR --img-dir docs/img]
 *
 * Data: ../shared/data/busbra (Gómez-Flores, Gregorio-Calas, Pereira, "BUS-BRA: A Breast
 * Ultrasound Dataset for Assessing Computer-aided Diagnosis Systems", Medical Physics 2023).
 * Downstream label Pathology; probe folds: the official patient-wise 5-fold-cv.csv.
 */
import { busbra } from './definitions';
import { parseExperimentArgs, runExperiment } from './experiment';

runExperiment(busbra, parseExperimentArgs(busbra, process.argv.slice(2))).catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
