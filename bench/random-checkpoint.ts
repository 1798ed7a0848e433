import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { TOKENIZER_FILES, writeSafetensors } from '@fisher-merge/checkpoint';
import { describeModel, toHfTensors, type EncoderConfig } from '@fisher-merge/model';
import { randomWeights } from '../test/engine-onnx/random.ts';

export interface EncoderShape {
  numLayers: number;
  hiddenSize: number;
  numHeads: number;
  intermediateSize: number;
}

/** A BertForSequenceClassification folder of the given shape with random weights and the fixtures' tokenizer and head. */
export async function writeRandomCheckpoint(dir: string, shape: EncoderShape, fixture = 'data/models/sst2'): Promise<EncoderConfig> {
  mkdirSync(dir, { recursive: true });
  const hf = JSON.parse(readFileSync(`${fixture}/config.json`, 'utf8'));
  Object.assign(hf, { hidden_size: shape.hiddenSize, num_attention_heads: shape.numHeads, num_hidden_layers: shape.numLayers, intermediate_size: shape.intermediateSize });
  writeFileSync(`${dir}/config.json`, JSON.stringify(hf, null, 2));
  for (const f of TOKENIZER_FILES) if (existsSync(`${fixture}/${f}`)) copyFileSync(`${fixture}/${f}`, `${dir}/${f}`);
  // Tensor names and layout from the fixture, shapes from the new config.
  const fixtureModel = await describeModel(fixture);
  const config = { ...fixtureModel.config, ...shape, embeddingSize: shape.hiddenSize };
  const weights = randomWeights(config, 7, undefined, 0.02);
  await writeSafetensors(`${dir}/model.safetensors`, toHfTensors({ ...fixtureModel, config }, weights));
  return config;
}
