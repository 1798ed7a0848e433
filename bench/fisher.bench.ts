// What the paper's method saves: time per example of the mask-node Fisher (batch mode, the paper's
// statistic) against full diagonal Fisher, both batched in one graph and as the classic batch-1 loop
// the paper compares with, on each fixture task model and its first training examples.
//   npx tsx bench/fisher.bench.ts [--examples 128] [--reps 2]
import { parseArgs } from 'node:util';
import type { TokenBatch } from '@fisher-merge/core';
import { glueTask, loadTokenizer } from '@fisher-merge/data';
import { createOnnxEngine } from '@fisher-merge/engine-onnx';
import { classicParameterFisher } from '@fisher-merge/fisher';
import { tokenizeEvalSplit } from '@fisher-merge/eval/evaluate';
import { loadEncoder } from '@fisher-merge/model';

const { values: args } = parseArgs({ options: { examples: { type: 'string', default: '128' }, reps: { type: 'string', default: '2' } } });
const examples = Number(args.examples);
const reps = Number(args.reps);

/** Seconds of the fastest of `reps` runs over all batches (after a warm-up run that builds the session). */
async function seconds(batches: readonly TokenBatch[], step: (b: TokenBatch) => Promise<unknown>): Promise<number> {
  const all = async () => {
    for (const b of batches) await step(b);
  };
  await all();
  let best = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    await all();
    best = Math.min(best, performance.now() - t0);
  }
  return best / 1000;
}

console.log(`first ${examples} training examples per task, onnx engine, best of ${reps}; ms per example (lower is better)`);
console.log('| task | mask Fisher (batch 32) | full Fisher, batched (batch 8) | full Fisher, classic batch-1 loop | classic loop / mask | batched / mask |');
console.log('|---|---|---|---|---|---|');
for (const name of ['sst2', 'cola', 'rte', 'stsb']) {
  const dir = `data/models/${name}`;
  const [model, tokenizer] = await Promise.all([loadEncoder(dir), loadTokenizer(dir)]);
  const split = (batchSize: number) => tokenizeEvalSplit({ data: `data/glue/${name}/train-00000-of-00001.parquet`, task: glueTask(name), limit: examples, batchSize }, tokenizer, model.config.padTokenId);
  const engine = await createOnnxEngine(model.weights);
  const mask = await seconds(await split(32), (b) => engine.maskGradients(b));
  const eights = await split(8);
  const batched = await seconds(eights, (b) => engine.parameterFisher(b, 'empirical'));
  const loop = await seconds(eights, (b) => classicParameterFisher(engine, b, 'empirical'));
  await engine.dispose();
  const ms = (s: number) => ((s * 1000) / examples).toFixed(2);
  console.log(`| ${name} | ${ms(mask)} | ${ms(batched)} | ${ms(loop)} | ${(loop / mask).toFixed(1)}x | ${(batched / mask).toFixed(1)}x |`);
}
