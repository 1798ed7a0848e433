import { describe, expect, it } from 'vitest';
import { cpuFlags, fastestCoreTypes, judgeTorchPeer, torchPeerEnv, type TorchBlasProbe } from '../../bench/torch-peer.ts';

/** /proc/cpuinfo of a two-processor machine (the flags lines abridged). */
const cpuinfo = (flags: string) =>
  [0, 1].map((n) => `processor\t: ${n}\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu vme sse sse2 ${flags}\nbogomips\t: 4200.00\n`).join('\n');
const avx512 = cpuFlags(cpuinfo('avx avx2 fma avx512f avx512dq avx512bw avx512_bf16'));
const avx2 = cpuFlags(cpuinfo('avx avx2 fma'));
const old = cpuFlags(cpuinfo('ssse3 sse4_1'));

const probe = (over: Partial<TorchBlasProbe>): TorchBlasProbe => ({ torch: '1.13.0a0', blas_libraries: [], openblas_core: null, threads: 2, gemm_gflops: 100, ...over });
const OPENBLAS = ['/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3', '/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so'];

describe('the bench checks its PyTorch peer before timing it', () => {
  it('reads the CPU flags from /proc/cpuinfo and knows the fastest OpenBLAS core types for them', () => {
    expect(avx512.has('avx512f')).toBe(true);
    expect(avx2.has('avx512f')).toBe(false);
    expect(cpuFlags('processor : 0\n').size).toBe(0);
    expect(fastestCoreTypes(avx512)).toContain('SkylakeX');
    expect(fastestCoreTypes(avx2)).toEqual(expect.arrayContaining(['Haswell', 'Zen']));
    expect(fastestCoreTypes(old)).toBeUndefined();
  });

  it("sets OPENBLAS_CORETYPE=SkylakeX for the peer's command on AVX-512 CPUs only, keeping a core the caller chose", () => {
    const base = { PATH: '/usr/bin' };
    expect(torchPeerEnv(avx512, base)).toEqual({ PATH: '/usr/bin', OMP_WAIT_POLICY: 'PASSIVE', OPENBLAS_CORETYPE: 'SkylakeX' });
    expect(torchPeerEnv(avx2, base)).toEqual({ PATH: '/usr/bin', OMP_WAIT_POLICY: 'PASSIVE' });
    expect(torchPeerEnv(avx512, { ...base, OPENBLAS_CORETYPE: 'Cooperlake' }).OPENBLAS_CORETYPE).toBe('Cooperlake');
    // The caller's environment (the product's) is left as it was.
    expect(base).toEqual({ PATH: '/usr/bin' });
  });

  it('voids the ratios of a peer on reference BLAS, saying so with its GEMM rate', () => {
    const verdict = judgeTorchPeer(probe({ blas_libraries: ['/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0'], gemm_gflops: 4.96 }), avx512);
    expect(verdict.valid).toBe(false);
    expect(verdict.line).toBe(
      'torch 1.13.0a0 does not run OpenBLAS (/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0; fp32 GEMM 5.0 GFLOP/s on 2 threads): every ratio would be void, so torch is not timed (apt-get install libopenblas0-pthread)',
    );
    expect(judgeTorchPeer(probe({}), avx2).line).toMatch(/does not run OpenBLAS \(no BLAS library found mapped;/);
  });

  it('voids the ratios of OpenBLAS below the CPU (a Prescott core on AVX-512) and accepts its fastest kernels', () => {
    const prescott = judgeTorchPeer(probe({ blas_libraries: OPENBLAS, openblas_core: 'Prescott', gemm_gflops: 21.3 }), avx512);
    expect(prescott.valid).toBe(false);
    expect(prescott.line).toMatch(/OpenBLAS with the Prescott kernels, not the CPU's fastest \(SkylakeX, .*fp32 GEMM 21\.3 GFLOP\/s/);
    const skylake = judgeTorchPeer(probe({ blas_libraries: OPENBLAS, openblas_core: 'SkylakeX', gemm_gflops: 123.45 }), avx512);
    expect(skylake).toEqual({ valid: true, line: 'torch 1.13.0a0 on OpenBLAS (SkylakeX kernels), fp32 GEMM 123.5 GFLOP/s on 2 threads' });
    expect(judgeTorchPeer(probe({ blas_libraries: OPENBLAS, openblas_core: 'Haswell' }), avx2).valid).toBe(true);
    expect(judgeTorchPeer(probe({ blas_libraries: OPENBLAS, openblas_core: 'Haswell' }), avx512).valid).toBe(false);
    // A CPU without AVX2 has no faster kernels to ask for.
    expect(judgeTorchPeer(probe({ blas_libraries: OPENBLAS, openblas_core: 'Prescott' }), old).valid).toBe(true);
  });
});
