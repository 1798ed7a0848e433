import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { glueTask } from '@fisher-merge/data';
import { readMaskFisher } from '@fisher-merge/fisher';
import { computeMaskFisher } from '@fisher-merge/merge-job';
import { cli, glueFile, modelDir } from '../reliability/support.ts';
import { tempDir } from '../support.ts';

describe('--threads', () => {
  it('fisher --threads 1 gives, bit for bit, the statistics of a 1-thread engine in process', async () => {
    const out = path.join(tempDir(), 'sst2.mask.safetensors');
    const run = cli(['fisher', '--model', modelDir('sst2'), '--data', glueFile('sst2', 'train'), '--task', 'sst2', '--samples', '40', '--batch-size', '8', '--threads', '1', '--out', out]);
    expect(run.status, run.stderr).toBe(0);
    const inProcess = await computeMaskFisher({ modelDir: modelDir('sst2'), data: glueFile('sst2', 'train'), task: glueTask('sst2'), samples: 40, batchSize: 8, mode: 'batch', engine: 'onnx', threads: 1 });
    const written = await readMaskFisher(out);
    // The file holds float32 sums.
    expect(Array.from(written.head)).toEqual(Array.from(inProcess.stats.head, Math.fround));
    expect(Array.from(written.neuron)).toEqual(Array.from(inProcess.stats.neuron, Math.fround));
  });

  it('eval, predict, fisher, stream and worker refuse a thread count that is not a positive integer, naming the flag', () => {
    for (const command of ['eval', 'predict', 'fisher', 'stream', 'worker']) {
      const run = cli([command, '--threads', '0']);
      expect(run.status).toBe(1);
      expect(run.stderr).toContain('--threads');
    }
  });
});
