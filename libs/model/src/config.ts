import { shown, UserError } from '@fisher-merge/core';
import type { HfConfig } from '@fisher-merge/checkpoint';
import type { ConfigValue, FamilyDescription } from './family.ts';
import type { Activation, EncoderConfig } from './types.ts';

// Hugging Face ACT2FN names -> the activations engines implement.
const ACTIVATIONS: Record<string, Activation> = {
  gelu: 'gelu',
  gelu_new: 'gelu_new',
  gelu_pytorch_tanh: 'gelu_new',
  relu: 'relu',
  tanh: 'tanh',
};

function readValue<T>(hfConfig: HfConfig, spec: ConfigValue<T>, label: string): { value: unknown; key: string } {
  if ('value' in spec) return { value: spec.value, key: '(fixed)' };
  const raw = hfConfig[spec.key];
  if (raw === undefined || raw === null) {
    if (spec.default === undefined) throw new UserError(`${label}: missing "${spec.key}"`);
    return { value: spec.default, key: spec.key };
  }
  return { value: raw, key: spec.key };
}

function readInteger(hfConfig: HfConfig, spec: ConfigValue<number>, label: string, min: number): number {
  const { value, key } = readValue(hfConfig, spec, label);
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new UserError(`${label}: "${key}" must be an integer >= ${min}, got ${shown(value)}`);
  }
  return value;
}

/** Number of labels as Hugging Face's PretrainedConfig derives it: id2label's size, else num_labels, else 2. */
export function numLabelsFromConfig(hfConfig: HfConfig, label = 'config.json'): number {
  const id2label = hfConfig.id2label;
  if (typeof id2label === 'object' && id2label !== null) return Object.keys(id2label).length;
  const n = hfConfig.num_labels;
  if (n === undefined || n === null) return 2;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1) throw new UserError(`${label}: "num_labels" must be a positive integer, got ${shown(n)}`);
  return n;
}

/** A classifier's labels as config.json names them. */
export interface ConfigLabels {
  /** Name of each class index: id2label, else Hugging Face's default LABEL_k. */
  names: string[];
  /** Class index of each name: label2id, else id2label inverted. */
  ids: Record<string, number>;
}

/** The class names and ids of config.json (id2label, label2id), checked against the number of labels. */
export function labelsFromConfig(hfConfig: HfConfig, label = 'config.json'): ConfigLabels {
  const numLabels = numLabelsFromConfig(hfConfig, label);
  const names = Array.from({ length: numLabels }, (_, k) => `LABEL_${k}`);
  const id2label = hfConfig.id2label;
  if (id2label !== undefined && id2label !== null) {
    for (const [key, name] of Object.entries(id2label as Record<string, unknown>)) {
      const k = Number(key);
      if (!(Number.isInteger(k) && k >= 0 && k < numLabels) || typeof name !== 'string') {
        throw new UserError(`${label}: id2label entry ${shown(key)}: ${shown(name)} must map a class index in [0, ${numLabels - 1}] to a name`);
      }
      names[k] = name;
    }
  }
  const label2id = hfConfig.label2id;
  if (label2id === undefined || label2id === null) return { names, ids: Object.fromEntries(names.map((n, k) => [n, k])) };
  if (typeof label2id !== 'object' || Array.isArray(label2id)) throw new UserError(`${label}: "label2id" must be an object of names to class indices, got ${shown(label2id)}`);
  const ids: Record<string, number> = {};
  for (const [name, k] of Object.entries(label2id as Record<string, unknown>)) {
    if (typeof k !== 'number' || !Number.isInteger(k) || k < 0 || k >= numLabels) {
      throw new UserError(`${label}: label2id ${shown(name)} is ${shown(k)}, expected a class index in [0, ${numLabels - 1}]`);
    }
    ids[name] = k;
  }
  return { names, ids };
}

/** Problem type as Hugging Face decides it: config's problem_type, else regression when num_labels == 1. */
export function problemTypeFromConfig(hfConfig: HfConfig, numLabels: number, label = 'config.json'): EncoderConfig['problemType'] {
  const p = hfConfig.problem_type;
  if (p === undefined || p === null) return numLabels === 1 ? 'regression' : 'single_label_classification';
  if (p === 'regression' || p === 'single_label_classification') return p;
  throw new UserError(`${label}: problem_type ${shown(p)} is not supported (supported: single_label_classification, regression)`);
}

/**
 * Reads an EncoderConfig from config.json through the family's key mapping. `numLabels` is the
 * size of the checkpoint's classifier (0 when it has none).
 */
export function encoderConfigFromHf(family: FamilyDescription, hfConfig: HfConfig, numLabels: number, label = 'config.json'): EncoderConfig {
  const c = family.config;
  const hiddenSize = readInteger(hfConfig, c.hiddenSize, label, 1);
  const numHeads = readInteger(hfConfig, c.numHeads, label, 1);
  if (hiddenSize % numHeads !== 0) throw new UserError(`${label}: hidden size ${hiddenSize} is not a multiple of the number of attention heads ${numHeads}`);
  const eps = readValue(hfConfig, c.layerNormEps, label);
  if (typeof eps.value !== 'number' || !(eps.value > 0) || !Number.isFinite(eps.value)) {
    throw new UserError(`${label}: "${eps.key}" must be a positive number, got ${shown(eps.value)}`);
  }
  const act = readValue(hfConfig, c.hiddenAct, label);
  const hiddenAct = typeof act.value === 'string' ? ACTIVATIONS[act.value] : undefined;
  if (hiddenAct === undefined) {
    throw new UserError(`${label}: "${act.key}" ${shown(act.value)} is not supported (supported: ${Object.keys(ACTIVATIONS).join(', ')})`);
  }
  const positionType = hfConfig.position_embedding_type;
  if (positionType !== undefined && positionType !== null && positionType !== 'absolute') {
    throw new UserError(`${label}: position_embedding_type ${shown(positionType)} is not supported (only "absolute")`);
  }
  const vocabSize = readInteger(hfConfig, c.vocabSize, label, 1);
  const padTokenId = readInteger(hfConfig, c.padTokenId, label, 0);
  if (padTokenId >= vocabSize) throw new UserError(`${label}: pad token id ${padTokenId} is outside the vocabulary (vocab_size ${vocabSize})`);
  return {
    family: family.name,
    numLayers: readInteger(hfConfig, c.numLayers, label, 1),
    hiddenSize,
    numHeads,
    intermediateSize: readInteger(hfConfig, c.intermediateSize, label, 1),
    vocabSize,
    maxPositions: readInteger(hfConfig, c.maxPositions, label, 1),
    typeVocabSize: family.hasTokenTypes ? readInteger(hfConfig, c.typeVocabSize, label, 1) : 0,
    embeddingSize: c.embeddingSize ? readInteger(hfConfig, c.embeddingSize, label, 1) : hiddenSize,
    layerNormEps: eps.value,
    hiddenAct,
    padTokenId,
    positionStyle: family.positionStyle,
    numLabels,
    problemType: problemTypeFromConfig(hfConfig, numLabels, label),
  };
}
