export * from './dtype.ts';
export * from './safetensors.ts';
export * from './checkpoint.ts';
export * from './pytorch.ts';
