// Engine selection and the `predict` command end to end, against the golden validation logits.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { readSafetensors } from '@fisher-merge/checkpoint';
import { loadEncoder } from '@fisher-merge/model';
import { openEngine } from '@fisher-merge/engines';

describe('openEngine', () => {
  it("picks onnx for 'auto' and says so", async () => {
    const { weights } = await loadEncoder('data/models/sst2');
    const lines: string[] = [];
    const engine = await openEngine('auto', weights, { log: (l) => lines.push(l) });
    expect(engine.name).toBe('onnx');
    expect(lines).toEqual(['engine: onnx (auto)']);
    await engine.dispose();
  });
});

describe('fisher-merge predict', () => {
  for (const task of ['sst2', 'stsb']) {
    it(`prints the golden logits of the first 16 ${task} validation examples in file order`, async () => {
      const { stdout, stderr } = await promisify(execFile)('node', [
        'bin/fisher-merge.mjs', 'predict', '--model', `data/models/${task}`, '--data', `data/glue/${task}/validation-00000-of-00001.parquet`,
        '--task', task, '--limit', '16', '--batch-size', '5', '--engine', 'onnx',
      ]);
      expect(stderr).toContain('engine: onnx');
      const rows = stdout.trim().split('\n').map((l) => JSON.parse(l) as { logits: number[] });
      const want = readSafetensors(`test/fixtures/golden/${task}/val16_inputs_logits.safetensors`).float64('logits_f64');
      expect(rows).toHaveLength(16);
      const got = rows.flatMap((r) => r.logits);
      expect(got).toHaveLength(want.length);
      got.forEach((v, i) => expect(Math.abs(v - want[i]), `logit ${i}`).toBeLessThanOrEqual(1e-4));
    });
  }
});
