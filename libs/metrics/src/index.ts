import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { logEvent, UserError } from '@fisher-merge/core';

/**
 * The figures a platform scrapes from a stream job (single process or coordinator) and from its
 * workers, on one registry per process. Names follow Prometheus conventions; a process sets only
 * the ones it owns (a worker has no folded examples), and unset series are simply absent.
 */
export class JobMetrics {
  readonly registry = new Registry();
  /** Examples in each task's statistics: the checkpoint's count (a gauge, since decay can lower it). */
  readonly examples = new Gauge({ name: 'fisher_merge_examples_total', help: "Examples folded into the task's statistics (the checkpoint's count)", labelNames: ['task'], registers: [this.registry] });
  readonly batchesFolded = new Gauge({ name: 'fisher_merge_batches_folded_total', help: "Batches folded into the task's statistics", labelNames: ['task'], registers: [this.registry] });
  readonly pending = new Gauge({ name: 'fisher_merge_queue_pending_batches', help: 'Batches appended to the Redis stream and not yet folded', labelNames: ['task'], registers: [this.registry] });
  readonly dead = new Counter({ name: 'fisher_merge_batches_dead_total', help: 'Batches dead-lettered (their rows recorded as skipped)', labelNames: ['task'], registers: [this.registry] });
  readonly versions = new Counter({ name: 'fisher_merge_versions_published_total', help: 'Model versions published', registers: [this.registry] });
  readonly publishSeconds = new Histogram({ name: 'fisher_merge_publish_seconds', help: 'Seconds to build and publish one version', buckets: [0.1, 0.5, 1, 5, 15, 60, 180, 600], registers: [this.registry] });
  readonly workerBatchSeconds = new Histogram({ name: 'fisher_merge_worker_batch_seconds', help: "Seconds a worker computed one batch's contribution", labelNames: ['task'], buckets: [0.005, 0.02, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [this.registry] });
  readonly batchesServed = new Counter({ name: 'fisher_merge_worker_batches_served_total', help: 'Batches whose result a worker wrote', labelNames: ['task'], registers: [this.registry] });
  readonly redisReconnects = new Counter({ name: 'fisher_merge_redis_reconnects_total', help: 'Times a Redis connection was re-established', registers: [this.registry] });
}

/** An HTTP server of `/metrics` (Prometheus text) and `/healthz` on `port` (0: any free one); `option` names where the port came from. */
export async function serveMetrics(metrics: JobMetrics, port: number, option: string): Promise<{ port: number; close: () => Promise<void> }> {
  const server: Server = createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (url === '/metrics') {
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        (e: unknown) => res.writeHead(500).end(String(e)),
      );
    } else {
      res.writeHead(404).end('not found: /metrics and /healthz are served here\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new UserError(`${option}: cannot serve metrics on port ${port}: ${e.message}`)));
    server.listen(port, () => resolve());
  });
  // Keep-alive scrapers must not hold the process open after the job ends.
  server.unref();
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise((resolve) => {
      server.close(() => resolve());
      // A scraper's keep-alive connection would hold the close open.
      server.closeAllConnections();
    }),
  };
}

/** Runs `body` with the process's metrics served on `port` when one is given (none: no server, no metrics). */
export async function withMetricsServer<T>(port: number | undefined, option: string, body: (metrics: JobMetrics | undefined) => Promise<T>): Promise<T> {
  if (port === undefined) return body(undefined);
  const metrics = new JobMetrics();
  const server = await serveMetrics(metrics, port, option);
  logEvent('metrics.serving', { port: server.port, paths: ['/metrics', '/healthz'] });
  try {
    return await body(metrics);
  } finally {
    await server.close();
  }
}
