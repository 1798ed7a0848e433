// The metrics only: scoring a model (engines, tokenizers) is @fisher-merge/eval/evaluate, so a command that needs an argmax loads no engine.
export * from './metrics.ts';
