import type { Command } from 'commander';
import { UserError } from '@fisher-merge/core';
import { nonNegativeInt, port, positiveNumber, threadsOption } from '../options.ts';

interface StreamFlags {
  exitWhenIdle?: number;
  threads?: number;
}

export function registerStream(program: Command): void {
  program
    .command('stream')
    .description('Continual merge: accumulate mask Fisher statistics from task data as it arrives and publish merged model versions (OUT/versions/N, OUT/latest). '
      + 'SIGHUP or OUT/control/publish publishes now; SIGINT, SIGTERM or OUT/control/stop stop after a checkpoint.')
    .argument('<config>', 'YAML config: tasks (task, model, watch DIR | ipc PATH|-), fisher, publish, out')
    .option('--exit-when-idle <ms>', 'drain: treat each input as finished once nothing new arrived for ms, count the last partial batch, publish and exit', nonNegativeInt('--exit-when-idle'))
    .addOption(threadsOption())
    .action(async (file: string, flags: StreamFlags) => {
      const { loadStreamConfig, runCoordinator, runStreamJob } = await import('@fisher-merge/stream-job');
      const { withMetricsServer } = await import('@fisher-merge/metrics');
      const config = await loadStreamConfig(file);
      const queue = config.queue;
      if (queue && flags.threads !== undefined) throw new UserError(`--threads: ${file} sets 'queue', so this process coordinates and runs no engine; give --threads to each worker`);
      await withMetricsServer(config.metricsPort, `${file}: metrics_port`, async (metrics) => {
        const options = { handleSignals: true, ...(flags.exitWhenIdle !== undefined ? { exitWhenIdleMs: flags.exitWhenIdle } : {}), ...(metrics ? { metrics } : {}) };
        await (queue ? runCoordinator({ ...config, queue }, options) : runStreamJob(config, { ...options, threads: flags.threads }));
      });
    });
}

export function registerWorker(program: Command): void {
  program
    .command('worker')
    .description("Compute mask Fisher contributions for a stream job's coordinator through Redis Streams (the config's queue:); any number, on any machine that reaches Redis and reads the models. Runs until SIGTERM or SIGINT.")
    .argument('<config>', "the stream job's YAML config (the same file as the coordinator's)")
    .addOption(threadsOption('; several workers on one machine take a share each'))
    .option('--stop-timeout-s <s>', 'after SIGTERM, finish the batches in hand for at most this long, then abandon them to other workers (default: queue.stop_timeout_s, 10)', positiveNumber('--stop-timeout-s'))
    .option('--metrics-port <port>', 'serve Prometheus metrics at /metrics and /healthz on this port', port('--metrics-port'))
    .action(async (file: string, flags: { threads?: number; stopTimeoutS?: number; metricsPort?: number }) => {
      const { loadStreamConfig, runWorker } = await import('@fisher-merge/stream-job');
      const config = await loadStreamConfig(file);
      const queue = config.queue;
      if (!queue) throw new UserError(`${file}: 'queue' is not set; a worker needs queue.url and queue.prefix`);
      const stop = new AbortController();
      const onSignal = (): void => stop.abort();
      process.once('SIGTERM', onSignal);
      process.once('SIGINT', onSignal);
      const { abandoned } = await runWorker({ ...config, queue }, stop.signal, flags);
      // An abandoned batch may still be computing in the engine's threads: do not wait for it.
      if (abandoned) process.exit(0);
    });
}
