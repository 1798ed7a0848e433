export { createTfjsEngine, type TfjsEngine, type TfjsEngineOptions } from './engine.ts';
export { initTfjsBackend, tfjsBackend, type TfjsBackendName } from './backend.ts';
export { mapWeights, flattenWeights, type WeightsOf, type LinearOf, type NormOf, type LayerOf, type Visit } from './params.ts';
