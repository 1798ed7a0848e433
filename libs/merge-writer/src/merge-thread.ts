// The thread of mergeModelsInThread: one mergeModels with the options it was started with.
import { serveThread } from '@fisher-merge/core';
import { mergeModels } from './merge-models.ts';

await serveThread(mergeModels);
