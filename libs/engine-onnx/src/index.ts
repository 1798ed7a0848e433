export { createOnnxEngine, type OnnxEngineOptions } from './engine.ts';
export { buildGraph, ffnWidth, type GraphKind } from './model.ts';
export { Graph } from './graph.ts';
