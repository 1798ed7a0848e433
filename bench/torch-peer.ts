// The PyTorch peer of the benches, checked before it is timed: a peer on reference BLAS (~5 GFLOP/s)
// or on OpenBLAS kernels below the CPU's (OpenBLAS 0.3.21 takes an AVX-512 Xeon for a Prescott)
// makes every onnx/torch ratio void. bench/torch_blas.py reports what torch runs; judgeTorchPeer
// decides; the benches print its line and the peer's GEMM GFLOP/s, and time torch only when it passes.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** What bench/torch_blas.py prints. */
export interface TorchBlasProbe {
  torch: string;
  blas_libraries: string[];
  openblas_core: string | null;
  threads: number;
  gemm_gflops: number;
}

export interface TorchPeerVerdict {
  /** Whether ratios against this peer mean anything. */
  valid: boolean;
  /** One line: the BLAS, its core type and GEMM GFLOP/s, and why the ratios are void where they are. */
  line: string;
}

/** The CPU's feature flags (the first `flags` line of /proc/cpuinfo). */
export function cpuFlags(cpuinfo: string): Set<string> {
  const line = /^flags\s*:(.*)$/m.exec(cpuinfo)?.[1] ?? '';
  return new Set(line.trim().split(/\s+/).filter(Boolean));
}

// OpenBLAS's core types for AVX-512 (the SkylakeX kernels; newer OpenBLAS names its successors) and AVX2.
const AVX512_CORES = ['SkylakeX', 'Cooperlake', 'SapphireRapids'];
const AVX2_CORES = ['Haswell', 'Zen', ...AVX512_CORES];

/** The OpenBLAS core types that use the CPU's widest vectors; undefined where any will do. */
export function fastestCoreTypes(flags: ReadonlySet<string>): string[] | undefined {
  if (flags.has('avx512f')) return AVX512_CORES;
  if (flags.has('avx2')) return AVX2_CORES;
  return undefined;
}

/**
 * The environment of the peer's command (never the product's): OpenMP threads that do not spin
 * against OpenBLAS's, and on AVX-512 CPUs OPENBLAS_CORETYPE=SkylakeX unless the caller set a core.
 */
export function torchPeerEnv(flags: ReadonlySet<string>, env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const coreType = flags.has('avx512f') && !env.OPENBLAS_CORETYPE ? { OPENBLAS_CORETYPE: 'SkylakeX' } : {};
  return { ...env, OMP_WAIT_POLICY: 'PASSIVE', ...coreType };
}

/** Whether the probed peer runs OpenBLAS with the fastest core type for the CPU. */
export function judgeTorchPeer(probe: TorchBlasProbe, flags: ReadonlySet<string>): TorchPeerVerdict {
  const gemm = `fp32 GEMM ${probe.gemm_gflops.toFixed(1)} GFLOP/s on ${probe.threads} threads`;
  const openblas = probe.blas_libraries.some((p) => /openblas/i.test(p));
  if (!openblas) {
    const what = probe.blas_libraries.length ? probe.blas_libraries.join(', ') : 'no BLAS library found mapped';
    return { valid: false, line: `torch ${probe.torch} does not run OpenBLAS (${what}; ${gemm}): every ratio would be void, so torch is not timed (apt-get install libopenblas0-pthread)` };
  }
  const fastest = fastestCoreTypes(flags);
  const core = probe.openblas_core ?? 'unknown';
  if (fastest && !fastest.includes(core)) {
    return { valid: false, line: `torch ${probe.torch} runs OpenBLAS with the ${core} kernels, not the CPU's fastest (${fastest.join(', ')}; ${gemm}): every ratio would be void, so torch is not timed` };
  }
  return { valid: true, line: `torch ${probe.torch} on OpenBLAS (${core} kernels), ${gemm}` };
}

export interface TorchPeer {
  python: string;
  env: NodeJS.ProcessEnv;
  verdict: TorchPeerVerdict;
  /** What torch_blas.py reported (undefined where it failed). */
  probe?: TorchBlasProbe;
}

/** The peer's Python and environment with its verdict, or undefined when torch does not import. */
export function checkTorchPeer(threads: number, cpuinfo = readFileSync('/proc/cpuinfo', 'utf8')): TorchPeer | undefined {
  const python = ['python3', '/usr/bin/python3'].find((p) => spawnSync(p, ['-c', 'import torch']).status === 0);
  if (!python) return undefined;
  const flags = cpuFlags(cpuinfo);
  const env = torchPeerEnv(flags);
  const run = spawnSync(python, ['bench/torch_blas.py', '--threads', String(threads)], { env, encoding: 'utf8' });
  if (run.status !== 0) return { python, env, verdict: { valid: false, line: `bench/torch_blas.py failed: ${run.stderr.trim().split('\n').pop()}` } };
  const probe = JSON.parse(run.stdout.trim().split('\n').pop()!) as TorchBlasProbe;
  return { python, env, verdict: judgeTorchPeer(probe, flags), probe };
}
