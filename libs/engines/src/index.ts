import { logEvent, UserError, type TokenBatch } from '@fisher-merge/core';
import { checkTokenBatch, type Engine, type EncoderWeights } from '@fisher-merge/model';

export type EngineKind = 'auto' | 'onnx' | 'tfjs';
export const ENGINE_KINDS: readonly EngineKind[] = ['auto', 'onnx', 'tfjs'];

export interface OpenEngineOptions {
  /** Where the choice is reported (default: stderr). */
  log?: (line: string) => void;
  /** onnx intra-op threads (default: every core); lets several workers share one machine. */
  threads?: number;
}

// Dynamic imports: an engine whose native runtime is missing must not break the others.
async function open(kind: 'onnx' | 'tfjs', weights: EncoderWeights, threads: number | undefined): Promise<Engine> {
  if (kind === 'onnx') return checkedBatches(await (await import('@fisher-merge/engine-onnx')).createOnnxEngine(weights, { threads }));
  return checkedBatches(await (await import('@fisher-merge/engine-tfjs')).createTfjsEngine(weights));
}

/** No batch reaches an engine with an id, token type or position outside the model's tables (engines would gather out of bounds). */
function checkedBatches(engine: Engine): Engine {
  const check = (batch: TokenBatch): void => checkTokenBatch(engine.config, batch);
  return {
    name: engine.name,
    config: engine.config,
    forward: async (batch) => (check(batch), engine.forward(batch)),
    maskGradients: async (batch) => (check(batch), engine.maskGradients(batch)),
    parameterFisher: async (batch, mode) => (check(batch), engine.parameterFisher(batch, mode)),
    ...(engine.inputGrams ? { inputGrams: async (batch: TokenBatch) => (check(batch), engine.inputGrams!(batch)) } : {}),
    dispose: () => engine.dispose(),
  };
}

/** Opens the requested engine; 'auto' is onnx when onnxruntime loads, tfjs otherwise. Says which on stderr (a log line). */
export async function openEngine(kind: EngineKind, weights: EncoderWeights, options: OpenEngineOptions = {}): Promise<Engine> {
  const log = options.log ?? ((line: string) => logEvent('engine', { message: line }));
  if (!ENGINE_KINDS.includes(kind)) throw new UserError(`unknown engine '${kind}' (known: ${ENGINE_KINDS.join(', ')})`);
  if (kind !== 'auto') {
    const engine = await open(kind, weights, options.threads);
    log(`engine: ${engine.name}`);
    return engine;
  }
  try {
    const engine = await open('onnx', weights, options.threads);
    log('engine: onnx (auto)');
    return engine;
  } catch (e) {
    const engine = await open('tfjs', weights, options.threads);
    log(`engine: tfjs (auto; onnx unavailable: ${e instanceof Error ? e.message.split('\n')[0] : String(e)})`);
    return engine;
  }
}
