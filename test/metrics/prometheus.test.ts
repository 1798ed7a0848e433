import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { outLayout, readStreamState } from '@fisher-merge/stream-job';
import { eventually } from '../support.ts';
import { tempDir, writeStreamConfig } from '../stream-job/helpers.ts';
import { incoming, RedisServer, startCli, startWorker, stopWorker } from '../queue/helpers.ts';

// A guard against a hang, not a speed requirement.
const HANG_GUARD_MS = 600_000;

/** A TCP port nobody listens on right now. */
async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, 'close');
  return port;
}

/** A real Prometheus server scraping `target` every second, with its own storage; stopped at exit. */
function startPrometheus(target: string, port: number): ChildProcess {
  const dir = tempDir('fisher-merge-prometheus-');
  const config = path.join(dir, 'prometheus.yml');
  writeFileSync(config, stringify({ global: { scrape_interval: '1s', scrape_timeout: '1s' }, scrape_configs: [{ job_name: 'fisher-merge', static_configs: [{ targets: [target] }] }] }));
  const child = spawn('prometheus', [`--config.file=${config}`, `--web.listen-address=127.0.0.1:${port}`, `--storage.tsdb.path=${path.join(dir, 'data')}`], { stdio: 'ignore' });
  process.once('exit', () => child.kill('SIGKILL'));
  return child;
}

/** The value of an instant query's single series, or undefined while it has none. */
async function query(port: number, expr: string): Promise<number | undefined> {
  const reply = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(expr)}`).catch(() => undefined);
  if (!reply?.ok) return undefined;
  const body = (await reply.json()) as { data: { result: { value: [number, string] }[] } };
  return body.data.result.length === 1 ? Number(body.data.result[0]!.value[1]) : undefined;
}

describe('Prometheus metrics', () => {
  it("a running stream job's folded-examples count reaches a real Prometheus server through metrics_port, equal to its checkpoint's", async () => {
    const dir = tempDir();
    const watch = await incoming(dir, ['sst2'], [29, 35]);
    const jobPort = await freePort();
    const file = writeStreamConfig(path.join(dir, 'config.yaml'), path.join(dir, 'out'), [{ task: 'sst2', watch: watch.sst2! }], { metrics_port: jobPort });
    const job = startCli(['stream', file]);
    const prometheusPort = await freePort();
    const prometheus = startPrometheus(`127.0.0.1:${jobPort}`, prometheusPort);
    try {
      expect((await job.line('metrics.serving')).port).toBe(jobPort);
      const health = await fetch(`http://127.0.0.1:${jobPort}/healthz`);
      expect(health.status).toBe(200);
      const checkpoint = outLayout(path.join(dir, 'out')).checkpoint;
      const folded = async () => (await readStreamState(checkpoint).catch(() => undefined))?.tasks.sst2?.stats;
      await eventually('every row folded', async () => (await folded())?.examples === 64, Infinity);
      const stats = (await folded())!;
      // The job keeps running (no drain): Prometheus scrapes it and answers what it scraped.
      await eventually('Prometheus has the count', async () => {
        if (job.child.exitCode !== null || prometheus.exitCode !== null) throw new Error(`exited: job ${job.child.exitCode}, prometheus ${prometheus.exitCode}\n${job.stderr()}`);
        return (await query(prometheusPort, 'fisher_merge_examples_total{task="sst2",job="fisher-merge"}')) === stats.examples;
      }, Infinity, 200);
      expect(await query(prometheusPort, 'fisher_merge_batches_folded_total{task="sst2"}')).toBe(stats.batches);
      job.child.kill('SIGTERM');
      const [code] = await once(job.child, 'exit');
      expect(code, job.stderr()).toBe(0);
    } finally {
      prometheus.kill('SIGTERM');
      if (prometheus.exitCode === null) await once(prometheus, 'exit');
      job.child.kill('SIGKILL');
    }
  }, HANG_GUARD_MS);

  it('worker --metrics-port serves /healthz and the worker series while it waits for a job', async () => {
    const redis = await RedisServer.start();
    const dir = tempDir();
    const port = await freePort();
    const file = writeStreamConfig(path.join(dir, 'config.yaml'), path.join(dir, 'out'), [{ task: 'sst2', watch: path.join(dir, 'in') }], { queue: { url: redis.socket, prefix: 'metrics' } });
    const worker = startWorker(file, ['--metrics-port', String(port)]);
    try {
      await worker.line('worker.waiting');
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      for (const series of ['fisher_merge_worker_batch_seconds histogram', 'fisher_merge_worker_batches_served_total counter', 'fisher_merge_redis_reconnects_total counter']) expect(text).toContain(`# TYPE ${series}`);
      expect((await fetch(`http://127.0.0.1:${port}/nothing`)).status).toBe(404);
      expect(await stopWorker(worker.child), worker.stderr()).toBe(0);
    } finally {
      await redis.stop();
    }
  }, HANG_GUARD_MS);
});
