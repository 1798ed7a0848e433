// The parts of parquetjs-lite 0.8 (untyped) that this library and its bench use.
declare module 'parquetjs-lite' {
  export type ParquetFieldType = 'UTF8' | 'INT32' | 'INT64' | 'FLOAT' | 'DOUBLE' | 'BOOLEAN';
  /** A leaf column, or a group of fields ('LIST' marks a group as a Parquet list). */
  export type ParquetField =
    | { type: ParquetFieldType; optional?: boolean; repeated?: boolean; compression?: ParquetCompression }
    | { type?: 'LIST'; optional?: boolean; repeated?: boolean; fields: Record<string, ParquetField> };
  export class ParquetSchema {
    constructor(fields: Record<string, ParquetField>);
  }
  export type ParquetCompression = 'UNCOMPRESSED' | 'SNAPPY' | 'GZIP' | 'BROTLI';
  export interface ParquetWriterOptions {
    rowGroupSize?: number;
    useDataPageV2?: boolean;
    pageIndex?: boolean;
  }
  export class ParquetWriter {
    static openStream(schema: ParquetSchema, stream: NodeJS.WritableStream, options?: ParquetWriterOptions): Promise<ParquetWriter>;
    appendRow(row: Record<string, unknown>): Promise<void>;
    close(): Promise<void>;
  }
  export interface ParquetCursor {
    next(): Promise<Record<string, unknown> | null>;
  }
  export class ParquetReader {
    static openFile(path: string): Promise<ParquetReader>;
    getCursor(columns?: string[]): ParquetCursor;
    getRowCount(): number;
    close(): Promise<void>;
  }
  const parquet: { ParquetSchema: typeof ParquetSchema; ParquetWriter: typeof ParquetWriter; ParquetReader: typeof ParquetReader };
  export default parquet;
}
