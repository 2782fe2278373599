/**
 * Registers the gradient of every tfjs-core op, once, on the one tfjs-core engine.
 *
 * tfjs-core ships its gradients only as ES modules with extensionless imports
 * (`dist/register_all_gradients.js`), which Node cannot load from CommonJS. The CommonJS node
 * bundle of the `@tensorflow/tfjs` union package (same pinned version) inlines all of them and
 * registers them on `require('@tensorflow/tfjs-core')` — the same engine the backends use — so
 * importing it for its side effects is what makes `tf.variableGrads` work here and under
 * tfjs-node, which loads the same package.
 */
import '@tensorflow/tfjs';
