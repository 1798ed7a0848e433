import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { glueTask } from '@fisher-merge/data';
import type { MaskFisher } from '@fisher-merge/fisher';
import { computeMaskFisher } from '@fisher-merge/merge-job';
import { queueStatus } from '@fisher-merge/queue';
import { formatStreamStatus, outLayout, readStreamState, readStreamStatus } from '@fisher-merge/stream-job';
import { logLines, type LogLine } from '../support.ts';
import { expectSameStats, maskFisherOf, modelDir, publishParquet, taskRows, tempDir, writeStreamConfig } from '../stream-job/helpers.ts';
import { eventually, incoming, RedisServer, startCli, startWorker, statsWithout, stopWorker } from './helpers.ts';

// A guard against a hang, not a speed requirement: these runs start many processes on a loaded machine.
const HANG_GUARD_MS = 900_000;

const TASK = 'sst2';
const PARTS = [37, 64, 29, 62];
const ROWS = PARTS.reduce((a, b) => a + b, 0);
const BATCH = 8;

let allRows: string;
let reference: MaskFisher;
beforeAll(async () => {
  allRows = path.join(tempDir(), `${TASK}.parquet`);
  publishParquet(allRows, await taskRows(TASK, ROWS));
  reference = (await computeMaskFisher({ modelDir: modelDir(TASK), data: allRows, task: glueTask(TASK), batchSize: BATCH, mode: 'batch', engine: 'onnx' })).stats;
});

async function setup(redis: RedisServer, name: string, queue: Record<string, unknown> = {}) {
  const dir = tempDir();
  const watch = await incoming(dir, [TASK], PARTS);
  const out = path.join(dir, 'out');
  const file = writeStreamConfig(path.join(dir, 'config.yaml'), out, [{ task: TASK, watch: watch[TASK]! }], {
    fisher: { mode: 'batch', batch_size: BATCH },
    queue: { url: redis.socket, prefix: name, max_pending: 2, claim_idle_ms: 300, ...queue },
  });
  return { file, out, keys: { batches: `${name}:{${TASK}}:batches`, dead: `${name}:{${TASK}}:dead` } };
}

const stats = async (out: string): Promise<MaskFisher> => maskFisherOf((await readStreamState(outLayout(out).checkpoint))!.tasks[TASK]!.stats);
const events = (stderr: string, event: string): LogLine[] => logLines(stderr).filter((l) => l.event === event);

/** The fields of the stream's first entry (one the coordinator appended), to forge entries from. */
async function firstEntry(client: Redis, stream: string): Promise<Map<string, Buffer>> {
  await eventually('a batch appended', async () => (await client.xlen(stream)) > 0);
  const [[, flat]] = (await client.xrangeBuffer(stream, '-', '+', 'COUNT', 1)) as [Buffer, Buffer[]][];
  const fields = new Map<string, Buffer>();
  for (let i = 0; i < flat!.length; i += 2) fields.set(flat![i]!.toString(), flat![i + 1]!);
  return fields;
}

const forge = (client: Redis, stream: string, fields: Map<string, Buffer>) => client.xadd(stream, '*', ...[...fields].flat());

describe('poison entries and dead letters', () => {
  it('each malformed kind is refused with one line (dead letter, stale run, foreign seq); workers go on and the statistics equal the uninterrupted run', async () => {
    const redis = await RedisServer.start();
    const client = redis.client();
    try {
      const { file, out, keys } = await setup(redis, 'poison');
      const coordinator = startCli(['stream', file, '--exit-when-idle', '200']);
      const real = await firstEntry(client, keys.batches);
      const vocab = JSON.parse(readFileSync(path.join(modelDir(TASK), 'config.json'), 'utf8')).vocab_size as number;
      const variant = (change: (f: Map<string, Buffer>) => void): Map<string, Buffer> => {
        const f = new Map([...real].map(([k, v]) => [k, Buffer.from(v)]));
        change(f);
        return f;
      };
      // Forged from a real entry of this run, so each is wrong in exactly one way.
      const missing = variant((f) => f.delete('labels'));
      const short = variant((f) => f.set('input_ids', f.get('input_ids')!.subarray(4)));
      const beyond = variant((f) => f.get('input_ids')!.writeInt32LE(vocab, 0));
      const earlier = variant((f) => f.set('run', Buffer.from('an-earlier-run')));
      const ahead = variant((f) => f.set('seq', Buffer.from('1000000')));
      for (const f of [missing, short, beyond, earlier, ahead]) await forge(client, keys.batches, f);

      const workers = [startWorker(file), startWorker(file)];
      const [code] = await once(coordinator.child, 'exit');
      expect(code, coordinator.stderr()).toBe(0);
      expectSameStats(await stats(out), reference);

      const workerLog = workers.map((w) => w.stderr()).join('');
      const reasons = events(workerLog, 'worker.dead_letter').map((l) => String(l.reason)).sort();
      expect(reasons).toEqual([
        `field 'input_ids' holds ${BATCH * Number(real.get('seq_len')) - 1} values, expected batch_size x seq_len = ${BATCH} x ${real.get('seq_len')} = ${BATCH * Number(real.get('seq_len'))}`,
        "has no field 'labels'",
        `input_ids[0] = ${vocab} is outside the vocabulary (vocab_size ${vocab})`,
      ].sort());
      expect(events(workerLog, 'worker.stale_entry').map((l) => l.run)).toEqual(['an-earlier-run']);
      const refused = events(coordinator.stderr(), 'queue.result_refused');
      expect(refused).toHaveLength(1);
      expect(refused[0]!.reason).toMatch(/^seq 1000000 is not a batch this run appended/);
      // Nothing of the job was lost: no batch of this run died.
      expect(events(coordinator.stderr(), 'stream.batch_dead')).toEqual([]);

      // The dead letters name the entry, the reason and the worker; status counts them.
      const letters = await client.xrange(keys.dead, '-', '+');
      expect(letters).toHaveLength(3);
      for (const [, f] of letters) expect(workers.map((w) => `${hostname()}:${w.child.pid}`)).toContain(f[f.indexOf('worker') + 1]);
      expect((await queueStatus(client, 'poison', [TASK]))[TASK]!.dead).toBe(3);
      expect(formatStreamStatus(await readStreamStatus(out))).toMatch(/dead-lettered/);
      // The workers are alive, and stop cleanly when told.
      for (const w of workers) expect(await stopWorker(w.child), w.stderr()).toBe(0);
    } finally {
      client.disconnect();
      await redis.stop();
    }
  }, HANG_GUARD_MS);

  it('a batch delivered more than queue.max_deliveries times (its workers died on it) is dead-lettered; the job folds past it and holds every other batch exactly', async () => {
    const redis = await RedisServer.start();
    const client = redis.client();
    try {
      const { file, out, keys } = await setup(redis, 'killer', { max_deliveries: 1 });
      const coordinator = startCli(['stream', file, '--exit-when-idle', '200']);
      await firstEntry(client, keys.batches);
      // Kill workers while they hold an entry, until one died holding one: its second delivery is one too many.
      const holds = async (pid: number) => ((await queueStatus(client, 'killer', [TASK]))[TASK]!.consumers.find((c) => c.name === `${hostname()}:${pid}`)?.pending ?? 0) > 0;
      let orphaned = false;
      const victims: ReturnType<typeof startWorker>[] = [];
      for (let attempt = 0; attempt < 5 && !orphaned; attempt++) {
        const victim = startWorker(file);
        victims.push(victim);
        await eventually('the worker holds an entry', () => holds(victim.child.pid!));
        victim.child.kill('SIGKILL');
        await once(victim.child, 'exit');
        orphaned = await holds(victim.child.pid!);
      }
      expect(orphaned).toBe(true);
      const rescuer = startWorker(file);
      const [code] = await once(coordinator.child, 'exit');
      expect(code, coordinator.stderr()).toBe(0);

      const dead = events([...victims, rescuer].map((w) => w.stderr()).join(''), 'worker.dead_letter');
      expect(dead.length).toBeGreaterThan(0);
      for (const l of dead) expect(l.reason).toBe('delivered 2 times, more than queue.max_deliveries (1): a batch its workers died on');
      const deadSeqs = new Set((await client.xrange(keys.dead, '-', '+')).map(([, f]) => Number(f[f.indexOf('seq') + 1])));
      expect(deadSeqs.size).toBe(dead.length);
      // One line per batch passed over, naming its rows; the statistics hold every other batch, bit for bit.
      const passed = events(coordinator.stderr(), 'stream.batch_dead');
      expect(passed.map((l) => l.rows)).toEqual([...deadSeqs].map(() => BATCH));
      const got = await stats(out);
      expect(got.examples).toBe(ROWS - BATCH * deadSeqs.size);
      expectSameStats(got, await statsWithout(TASK, allRows, BATCH, deadSeqs));
      expect(await stopWorker(rescuer.child), rescuer.stderr()).toBe(0);
    } finally {
      client.disconnect();
      await redis.stop();
    }
  }, HANG_GUARD_MS);
});
