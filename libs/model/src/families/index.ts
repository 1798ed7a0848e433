import type { FamilyDescription } from '../family.ts';
import { bert } from './bert.ts';
import { distilbert } from './distilbert.ts';
import { electra } from './electra.ts';
import { roberta } from './roberta.ts';

/** Every supported family; adding one means adding its description file and listing it here. */
export const FAMILIES: readonly FamilyDescription[] = [bert, roberta, distilbert, electra];

export { bert, distilbert, electra, roberta };
