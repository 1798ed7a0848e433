import { UserError } from '@fisher-merge/core';
import type { TensorFile } from './checkpoint.ts';

/** Reads a torch.save zip checkpoint (pytorch_model.bin). */
export function readPytorchBin(file: string): TensorFile {
  throw new UserError(`${file}: pytorch_model.bin is not supported yet`);
}
