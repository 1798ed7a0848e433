export { createTfjsEngine, type TfjsEngine, type TfjsEngineOptions } from './engine.ts';
export { initTfjsBackend, tfjsBackend, type TfjsBackendName } from './backend.ts';
