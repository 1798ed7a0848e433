import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { readRunConfig, runJob, type RunResults } from '@fisher-merge/merge-job';
import { tempDir } from '../support.ts';

const root = path.resolve(import.meta.dirname, '../..');

/**
 * `run` over the embedded fixture tasks and pairs (`a_b` names) on the onnx engine, with the given
 * statistics and methods lines, keeping every merged folder. The config is written beside out, not in
 * it: an out that contains its own config file is refused.
 */
export async function runFixturePairs(name: string, pairs: readonly string[], lines: readonly string[]): Promise<{ out: string; results: RunResults }> {
  const dir = tempDir(`fisher-merge-${name}-`);
  const out = path.join(dir, 'out');
  const tasks = [...new Set(pairs.flatMap((p) => p.split('_')))].map(
    (t) => `  - task: ${t}\n    model: ${root}/data/models/${t}\n    train: ${root}/data/glue/${t}/train-00000-of-00001.parquet\n    validation: ${root}/data/glue/${t}/validation-00000-of-00001.parquet`,
  );
  const config = [`out: ${out}`, 'engine: onnx', 'tasks:', ...tasks, ...lines, 'save_models: all', 'merges:', ...pairs.map((p) => `  - [${p.split('_').join(', ')}]`)];
  writeFileSync(path.join(dir, `${name}.yaml`), config.join('\n'));
  return { out, results: await runJob(await readRunConfig(path.join(dir, `${name}.yaml`))) };
}
