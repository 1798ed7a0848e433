// Throughput of the tfjs engine: npx tsx test/engine-tfjs/speed.ts [tiny|small|base|<model dir>] [seqLen] [batch] [backend]
import { createTfjsEngine, type TfjsBackendName } from '@fisher-merge/engine-tfjs';
import { loadEncoder, type EncoderWeights } from '@fisher-merge/model';
import { randomBatch, randomConfig, randomWeights, rng } from './random.ts';

const SIZES = {
  tiny: { numLayers: 2, hiddenSize: 128, numHeads: 2, intermediateSize: 512 },
  small: { numLayers: 4, hiddenSize: 512, numHeads: 8, intermediateSize: 2048 },
  base: { numLayers: 12, hiddenSize: 768, numHeads: 12, intermediateSize: 3072 },
} as const;

const [which = 'tiny', seqArg = '128', batchArg = '16', backendArg] = process.argv.slice(2);
const T = Number(seqArg);
const B = Number(batchArg);
let weights: EncoderWeights;
if (which in SIZES) {
  const size = SIZES[which as keyof typeof SIZES];
  const config = randomConfig(rng(1), {
    ...size, embeddingSize: size.hiddenSize, vocabSize: 30522, maxPositions: 512, typeVocabSize: 2, hiddenAct: 'gelu',
    positionStyle: 'absolute', padTokenId: 0, numLabels: 2, problemType: 'single_label_classification', layerNormEps: 1e-12,
  });
  weights = randomWeights(config, 1);
} else {
  weights = (await loadEncoder(which)).weights;
}
const engine = await createTfjsEngine(weights, backendArg ? { backend: backendArg as TfjsBackendName } : {});
const batch = randomBatch(weights.config, B, T, 3);
batch.attentionMask.fill(1); // full length: throughput at seqLen

async function rate(what: string, n: number, run: () => Promise<unknown>) {
  await run(); // warm-up
  const start = performance.now();
  for (let i = 0; i < n; i++) await run();
  const s = (performance.now() - start) / 1000;
  console.log(`${what.padEnd(22)} ${((n * B) / s).toFixed(2)} examples/s`);
}
console.log(`tfjs ${engine.backend}, ${which}, seqLen ${T}, batch ${B}`);
await rate('forward', 3, () => engine.forward(batch));
await rate('mask gradients', 2, () => engine.maskGradients(batch));
await rate('full Fisher (empirical)', 1, () => engine.parameterFisher(batch, 'empirical'));
await engine.dispose();
