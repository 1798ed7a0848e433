export * from './dtype.ts';
export * from './bytes.ts';
export * from './safetensors.ts';
export * from './checkpoint.ts';
export * from './zip.ts';
export * from './pickle.ts';
export * from './pytorch.ts';
