import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
const { DataType } = onnx.TensorProto;
const { AttributeType } = onnx.AttributeProto;

export type ElemType = 'float' | 'double' | 'int32' | 'int64';
const ELEM: Record<ElemType, number> = { float: DataType.FLOAT, double: DataType.DOUBLE, int32: DataType.INT32, int64: DataType.INT64 };

/** Attribute values: integers become INT(S) unless the name is a float attribute, strings STRING. */
export type Attr = number | number[] | string;
const FLOAT_ATTRS = new Set(['epsilon', 'alpha', 'beta']);

function attribute(name: string, v: Attr): onnxProto.onnx.IAttributeProto {
  if (typeof v === 'string') return { name, type: AttributeType.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return FLOAT_ATTRS.has(name) ? { name, type: AttributeType.FLOATS, floats: v } : { name, type: AttributeType.INTS, ints: v };
  return FLOAT_ATTRS.has(name) ? { name, type: AttributeType.FLOAT, f: v } : { name, type: AttributeType.INT, i: v };
}

function valueInfo(name: string, elem: ElemType, dims?: (number | string)[]): onnxProto.onnx.IValueInfoProto {
  const shape = dims && { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) };
  return { name, type: { tensorType: { elemType: ELEM[elem], shape } } };
}

/** A tiny ONNX graph builder: every op call appends a node and returns its (first) output name. */
export class Graph {
  private readonly nodes: onnxProto.onnx.INodeProto[] = [];
  private readonly inits: onnxProto.onnx.ITensorProto[] = [];
  private readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly consts = new Map<string, string>();
  private readonly weightFeeds = new Map<string, { data: Float32Array; dims: number[] }>();
  private count = 0;

  input(name: string, elem: ElemType, dims: (number | string)[]): string {
    this.inputs.push(valueInfo(name, elem, dims));
    return name;
  }

  /** Marks `value` as a graph output called `name` (an Identity node renames it); shape left to inference if no dims. */
  output(name: string, value: string, elem: ElemType, dims?: (number | string)[]): void {
    this.nodes.push({ opType: 'Identity', input: [value], output: [name], name });
    this.outputs.push(valueInfo(name, elem, dims));
  }

  /**
   * A float32 weight, named apart from outputs that may carry the same path. Weights are graph inputs fed
   * from the caller's arrays (see `weights`), not initializers: nothing copies them into the serialized
   * model, so building and loading a session costs the same for a tiny model as for BERT-large.
   */
  weight(path: string, data: Float32Array, dims: number[]): string {
    const name = `param:${path}`;
    this.inputs.push(valueInfo(name, 'float', dims));
    this.weightFeeds.set(name, { data, dims });
    return name;
  }

  /** The weights to feed to every run, by input name. */
  get weights(): ReadonlyMap<string, { data: Float32Array; dims: number[] }> {
    return this.weightFeeds;
  }

  /** A small constant, shared between uses. */
  const(values: number[], elem: ElemType = 'float', dims: number[] = [values.length]): string {
    const key = `${elem}:${dims.join('x')}:${values.join(',')}`;
    let name = this.consts.get(key);
    if (!name) {
      name = `const_${this.consts.size}`;
      const data = elem === 'float' ? new Float32Array(values) : elem === 'int32' ? new Int32Array(values) : BigInt64Array.from(values, BigInt);
      this.inits.push({ name, dataType: ELEM[elem], dims, rawData: new Uint8Array(data.buffer) });
      this.consts.set(key, name);
    }
    return name;
  }

  scalar(v: number): string {
    return this.const([v], 'float', []);
  }

  ints(values: number[]): string {
    return this.const(values, 'int64');
  }

  /** Appends an op with several outputs. */
  opN(opType: string, inputs: string[], nOut: number, attrs: Record<string, Attr> = {}): string[] {
    const id = this.count++;
    const output = Array.from({ length: nOut }, (_, k) => `${opType}_${id}_${k}`);
    const attribute_ = Object.entries(attrs).map(([k, v]) => attribute(k, v));
    this.nodes.push({ opType, input: inputs, output, name: `${opType}_${id}`, attribute: attribute_ });
    return output;
  }

  op(opType: string, inputs: string[], attrs: Record<string, Attr> = {}): string {
    return this.opN(opType, inputs, 1, attrs)[0];
  }

  /** Serialized ModelProto (opset 17). */
  toBytes(): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'fisher-merge',
      opsetImport: [{ domain: '', version: 17 }],
      graph: { name: 'encoder', node: this.nodes, initializer: this.inits, input: this.inputs, output: this.outputs },
    });
    return onnx.ModelProto.encode(model).finish();
  }
}
