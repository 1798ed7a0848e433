import * as tf from '@tensorflow/tfjs';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { createRequire } from 'node:module';
import path from 'node:path';

/** 'tensorflow' is registered by @tensorflow/tfjs-node(-gpu) when one of them is installed. */
export type TfjsBackendName = 'tensorflow' | 'wasm' | 'cpu';

// Optional native bindings, GPU first; held in variables so the type checker does not need them installed.
const NATIVE_PACKAGES: string[] = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'];

let wasmPathsSet = false;
let defaultChoice: Promise<TfjsBackendName> | undefined;

async function tryNative(): Promise<boolean> {
  for (const spec of NATIVE_PACKAGES) {
    try {
      await import(spec);
    } catch (e) {
      // Installed but unloadable (e.g. no CUDA libraries) is worth a word; simply absent is the usual case.
      const code = (e as { code?: string }).code;
      if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') process.emitWarning(`${spec} failed to load, not using it: ${(e as Error).message}`);
      continue;
    }
    if (await tf.setBackend('tensorflow')) return true;
  }
  return false;
}

async function tryWasm(): Promise<boolean> {
  if (!wasmPathsSet) {
    // In Node the emscripten loader reads the .wasm files from disk: point it at the package's dist folder.
    const main = createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm');
    setWasmPaths(path.dirname(main) + path.sep);
    wasmPathsSet = true;
  }
  try {
    return await tf.setBackend('wasm');
  } catch {
    return false;
  }
}

async function activate(name: TfjsBackendName): Promise<boolean> {
  if (name === 'tensorflow') return tryNative();
  if (name === 'wasm') return tryWasm();
  return tf.setBackend('cpu');
}

/**
 * Selects the tfjs backend: the one asked for, else native TensorFlow (tfjs-node-gpu, then tfjs-node) when
 * installed, else WebAssembly, else the pure-JS 'cpu' backend. Returns the backend in use.
 */
export async function initTfjsBackend(prefer?: TfjsBackendName): Promise<TfjsBackendName> {
  if (prefer !== undefined) {
    if (!(await activate(prefer))) throw new Error(`tfjs backend '${prefer}' is not available`);
    return prefer;
  }
  defaultChoice ??= (async () => {
    for (const name of ['tensorflow', 'wasm', 'cpu'] as const) if (await activate(name)) return name;
    throw new Error('no tfjs backend could be initialised');
  })();
  const name = await defaultChoice;
  // Another caller may have switched backends since the choice was made.
  if (tf.getBackend() !== name) await activate(name);
  return name;
}

/** The tfjs backend currently active ('tensorflow', 'wasm' or 'cpu'), or undefined before initialisation. */
export function tfjsBackend(): string | undefined {
  return tf.engine().backendName ?? undefined;
}
