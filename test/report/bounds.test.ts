// The report's work and size are bounded whatever a Fisher file's shape (it used to overflow the
// stack at H = 200000 and write 230 MB of HTML at L = 20000); shapes past libs/model's limits are refused.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { encodeSafetensors } from '@fisher-merge/checkpoint';
import { MASK_FISHER_FORMAT, readMaskFisher } from '@fisher-merge/fisher';
import { ENCODER_LIMITS } from '@fisher-merge/model';
import { HEAD_BUCKETS, LAYER_BUCKETS, NEURON_BUCKETS, renderReport } from '@fisher-merge/report';
import { tempDir } from '../support.ts';

/** A report of one Fisher of shape L x H x I whose value at each cell is its column index + 1. */
function report(L: number, H: number, I: number): string {
  const ramp = (n: number) => Float64Array.from({ length: L * n }, (_, k) => (k % n) + 1);
  return renderReport({ title: 't', fishers: [{ task: 'x', numLayers: L, numHeads: H, intermediateSize: I, head: ramp(H), neuron: ramp(I), examples: 1 }] });
}
const cells = (html: string, kind: string) => html.split(`data-heatmap="${kind}"`)[1]!.split('</svg>')[0]!.match(/<rect class="cell"/g)!.length;

describe('report bounds', () => {
  it('draws at most LAYER_BUCKETS x HEAD_BUCKETS and LAYER_BUCKETS x NEURON_BUCKETS cells, means over each bucket', () => {
    const big = report(ENCODER_LIMITS.numLayers, ENCODER_LIMITS.numHeads, ENCODER_LIMITS.intermediateSize);
    expect(cells(big, 'head')).toBe(LAYER_BUCKETS * HEAD_BUCKETS);
    expect(cells(big, 'neuron')).toBe(LAYER_BUCKETS * NEURON_BUCKETS);
    // 512 heads in 64 buckets of 8: the first bucket of a ramp 1..512 averages 1..8.
    expect(big).toContain('<title>layer 0-7, heads 0-7: 4.50</title>');
    // A page of the largest shape accepted is no larger than one of a shape that fills the buckets exactly.
    const filled = report(LAYER_BUCKETS, HEAD_BUCKETS, NEURON_BUCKETS);
    expect(big.length).toBeLessThan(filled.length * 1.2);
    // A real encoder (BERT-base: 12 layers, 12 heads) is drawn cell for cell.
    expect(cells(report(12, 12, 3072), 'head')).toBe(144);
  });

  it('a Fisher file with H = 200000 or L = 20000 is refused in one line naming the file, before anything is drawn', async () => {
    const dir = tempDir();
    for (const [L, H] of [[2, 200_000], [20_000, 2]] as const) {
      const file = path.join(dir, `L${L}-H${H}.safetensors`);
      writeFileSync(file, Buffer.concat(encodeSafetensors({
        head_fisher: { dtype: 'F32', shape: [L, H], data: new Float32Array(L * H) },
        neuron_fisher: { dtype: 'F32', shape: [L, 4], data: new Float32Array(L * 4) },
      }, { fisher_merge: MASK_FISHER_FORMAT, mode: 'batch', batch_size: '8', examples: '8', batches: '1' })));
      await expect(readMaskFisher(file)).rejects.toThrow(new RegExp(`${file}: (numHeads 200000|numLayers 20000) is beyond the largest encoder these tools accept`));
    }
  });
});
